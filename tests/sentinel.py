"""A private Redis replication group watched by Sentinel: a master, a replica and three
sentinels (Debian's redis-server and redis-sentinel) on free ports in a temporary
directory, for the failover tests.

Three sentinels with a quorum of two, as in production: one sentinel could promote on
its own, but then the test would not exercise the vote that a real failover needs.
Every process is started in a session of its own and killed at the end, whatever the
test did.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as redis

from tests.processes import free_port
from tests.waiting import until

SERVICE = "cti-test"
#: A master that does not answer for this long is subjectively down; the sentinels then
#: vote and promote the replica, typically within a few seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
#: Deadlines only bound a test that would otherwise hang: generous on a loaded machine.
START_S = 30
FAILOVER_S = 90


@dataclass
class SentinelGroup:
    workdir: Path
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_ports: tuple[int, ...] = field(
        default_factory=lambda: (free_port(), free_port(), free_port())
    )
    processes: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    async def start(self) -> None:
        await self._server(self.master_port)
        await self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        await until(self._replica_linked, within_s=START_S, every_s=0.1)
        for port in self.sentinel_ports:
            await self._sentinel(port)
        await until(self._sentinels_ready, within_s=START_S, every_s=0.2)

    def kill_master(self) -> None:
        """SIGKILL: no goodbye to the replica or the clients."""
        self.processes[self.master_port].send_signal(signal.SIGKILL)

    async def cut_off_replica(self) -> None:
        """Make the replica miss what the master takes from now on: the replica is
        frozen (SIGSTOP: it cannot reconnect and resync) and the master drops its link
        (so nothing waits in a socket for it either). :meth:`thaw_replica` undoes the
        freeze; the writes in between are the master's alone, the replication window
        of a real failover stretched to as long as the test needs."""
        self.processes[self.replica_port].send_signal(signal.SIGSTOP)
        async with redis.Redis(port=self.master_port, socket_timeout=5) as master:
            await master.execute_command("CLIENT", "KILL", "TYPE", "replica")

            async def unlinked() -> bool:
                info = await master.info("replication")
                return int(info.get("connected_slaves", 0)) == 0

            await until(unlinked, within_s=START_S, every_s=0.05)

    def thaw_replica(self) -> None:
        self.processes[self.replica_port].send_signal(signal.SIGCONT)

    async def master_addr(self) -> tuple[str, int] | None:
        """The master as the first sentinel that answers sees it now."""
        for port in self.sentinel_ports:
            async with redis.Redis(port=port, socket_timeout=2) as sentinel:
                with contextlib.suppress(redis.RedisError, OSError):
                    addr = await sentinel.sentinel_get_master_addr_by_name(SERVICE)
                    if addr:
                        host, master_port = addr
                        host = host.decode() if isinstance(host, bytes) else host
                        return host, int(master_port)
        return None

    async def promoted(self) -> bool:
        """The replica is the master, for the sentinels and in its own eyes."""
        if await self.master_addr() != ("127.0.0.1", self.replica_port):
            return False
        async with redis.Redis(port=self.replica_port, socket_timeout=2) as replica:
            info = await replica.info("replication")
        return info.get("role") == "master"

    async def stop(self) -> None:
        for proc in self.processes.values():
            if proc.returncode is None:
                proc.kill()
        for proc in self.processes.values():
            await proc.wait()
        self.processes.clear()

    async def _server(self, port: int, *extra: str) -> None:
        data = self.workdir / f"redis-{port}"
        data.mkdir()
        await self._spawn(
            port,
            "redis-server",
            "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(data),
            "--logfile", str(data / "redis.log"),
            *extra,
        )  # fmt: skip

    async def _sentinel(self, port: int) -> None:
        conf = self.workdir / f"sentinel-{port}.conf"  # sentinel rewrites it: our own copy
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"logfile {self.workdir / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        await self._spawn(port, "redis-sentinel", str(conf))

    async def _spawn(self, port: int, *argv: str) -> None:
        self.processes[port] = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )

    async def _replica_linked(self) -> bool:
        async with redis.Redis(port=self.replica_port, socket_timeout=2) as replica:
            try:
                info = await replica.info("replication")
            except (redis.RedisError, OSError):
                return False
        return info.get("master_link_status") == "up"

    async def _sentinels_ready(self) -> bool:
        """Each sentinel knows the master, the replica and the two other sentinels."""
        for port in self.sentinel_ports:
            async with redis.Redis(port=port, socket_timeout=2) as sentinel:
                try:
                    state = await sentinel.sentinel_master(SERVICE)
                except (redis.RedisError, OSError):
                    return False
            if int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True


@contextlib.asynccontextmanager
async def sentinel_group(workdir: Path) -> AsyncIterator[SentinelGroup]:
    group = SentinelGroup(workdir)
    try:
        await group.start()
        yield group
    finally:
        await group.stop()


async def replicated(client: redis.Redis, within_ms: int = 10_000) -> bool:
    """Every write the master acknowledged so far has reached the replica.

    ``WAIT`` only waits for the writes of its own connection, so it is sent after a write
    on the same one (a pipeline holds one connection); everything acknowledged before
    that write is earlier in the replication stream."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.set("cti:test:replicated", "1")
        pipe.wait(1, within_ms)
        _set, replicas = await pipe.execute()
    return bool(replicas == 1)
