"""Processes of the end-to-end test bed: the daemon (``cti serve``), SIPp agents and callers.

Every process is started by us, tracked by its pid and stopped by that pid (SIGTERM,
then SIGKILL after a grace period). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as redis

from cti.agent_phones import wait_until_registered
from cti.loadtest import spawn_agent_phone, stop_process, udp_port_bound, wait_until_bound
from cti.sandbox_pbxes import HOME, SandboxPbx
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
SANDBOX = REPO / "scripts" / "asterisk-sandbox"
CALLER_XML = REPO / "sipp" / "caller.xml"
AGENT_XML = REPO / "sipp" / "agent.xml"
QUEUES_CONF = REPO / "asterisk" / "etc" / "queues.conf"
ASTERISK = "127.0.0.1:5060"
TRUNK_PORT = 5080  # the trunk is recognised by this source port (pjsip.conf)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    if preferred is not None and port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def tcp_listening(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


def queue_members(conf: Path = QUEUES_CONF) -> dict[str, set[str]]:
    """queue name -> member interfaces, read from queues.conf (``member => PJSIP/2001,...``)."""
    members: dict[str, set[str]] = {}
    queue = None
    for raw in conf.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if header := re.match(r"^\[([^\]]+)\]", line):
            queue = None if line.endswith("(!)") or header[1] == "general" else header[1]
            if queue:
                members.setdefault(queue, set())
        elif queue and (member := re.match(r"^member\s*=>\s*([^,\s]+)", line)):
            members[queue].add(member[1])
    return members


# ------------------------------------------------------------------ Asterisk
async def run_sandbox(command: str, env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """``scripts/asterisk-sandbox COMMAND`` with ``env`` added: (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        str(SANDBOX),
        command,
        env=os.environ | env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await stop_process(proc, 5)
        return -1, f"scripts/asterisk-sandbox {command} did not finish within {timeout_s}s"
    return proc.returncode or 0, out.decode(errors="replace")


# ------------------------------------------------------------------ Redis
@dataclass
class RedisServer:
    """A private redis-server, so that a test may restart it (the shared one is not ours)."""

    port: int
    workdir: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        probe = redis.Redis(port=self.port)
        try:
            await until(self.answers(probe), within_s=10)
        finally:
            await probe.aclose()

    @staticmethod
    def answers(probe: redis.Redis) -> Callable[[], Awaitable[bool]]:
        """A condition for :func:`until`: ``probe`` gets an answer (it reconnects)."""

        async def ping() -> bool:
            try:
                return bool(await probe.ping())
            except (redis.ConnectionError, OSError):
                return False

        return ping

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc, 5)
            self.proc = None


# ------------------------------------------------------------------ the daemon
@dataclass
class Daemon:
    """A ``cti serve`` subprocess."""

    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    async def start(
        cls,
        *,
        port: int,
        env: dict[str, str],
        log: Path,
        ready_file: Path | None = None,
        timeout_s: float = 20,
    ) -> Daemon:
        """Start it and wait until it accepts FastAGI (and ``ready_file`` exists, if given)."""
        cti = Path(sys.executable).with_name("cti")
        argv = [str(cti), "serve"] if cti.exists() else [sys.executable, "-m", "cti", "serve"]
        full_env = (
            {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
            | {"CTI_AGI_BIND": f"127.0.0.1:{port}", "CTI_LOG_FORMAT": "json"}
            | env
        )
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=full_env,
                start_new_session=True,
            )
        daemon = cls(proc, port, log)
        deadline = time.monotonic() + timeout_s
        while not (
            await tcp_listening("127.0.0.1", port)
            and (ready_file is None or await asyncio.to_thread(ready_file.exists))
        ):
            if proc.returncode is not None:
                raise RuntimeError(
                    f"cti serve exited with {proc.returncode} during start-up:\n{tail(log)}"
                )
            if time.monotonic() > deadline:
                await daemon.stop()
                raise RuntimeError(f"cti serve not ready within {timeout_s}s:\n{tail(log)}")
            await asyncio.sleep(0.1)
        return daemon

    async def stop(self, grace_s: float = 15) -> int | None:
        return await stop_process(self.proc, grace_s)


# ------------------------------------------------------------------ SIPp
@dataclass
class Agents:
    """SIPp agent phones (sipp/agent.xml): agent 200N on 127.0.0.1:507N, registered
    with Asterisk with its password (sipp/agent-register.xml). ``pbx``: the sandbox PBX
    they register with (b's phones are on 517N); one workdir per PBX, since the phones'
    logs are named by agent number."""

    workdir: Path
    passwords: dict[int, str]
    running: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    pbx: SandboxPbx = HOME

    async def start(self, *agents: int, ring_ms: int = 300) -> None:
        for agent in agents:
            if agent not in self.running:
                self.running[agent] = await spawn_agent_phone(
                    agent,
                    sipp="sipp",
                    scenario=AGENT_XML,
                    host="127.0.0.1",
                    ring_ms=ring_ms,
                    workdir=self.workdir,
                    asterisk=self.pbx.sip_address,
                    password=self.passwords[agent],
                    pbx=self.pbx,
                )
        started = {agent: self.running[agent] for agent in agents}
        await wait_until_bound(started, pbx=self.pbx)
        await wait_until_registered(started, self.workdir)

    async def stop_all(self) -> None:
        procs, self.running = list(self.running.values()), {}
        await asyncio.gather(*(stop_process(p, 3) for p in procs))


@dataclass
class CallBatch:
    """One SIPp caller (sipp/caller.xml) placing ``len(rows)`` calls from the trunk port."""

    proc: asyncio.subprocess.Process
    workdir: Path
    name: str

    @classmethod
    async def start(
        cls,
        workdir: Path,
        rows: list[tuple[str, ...]],
        *,
        hold_ms: int,
        rate: float = 2,
        name: str = "calls",
        scenario: Path = CALLER_XML,
    ) -> CallBatch:
        """``rows``: (ANI, DNIS, IVR account, IVR intent[, more fields ``scenario`` reads]);
        ``rate`` calls per second."""
        if udp_port_bound(TRUNK_PORT):
            raise RuntimeError(f"UDP port {TRUNK_PORT} (the trunk) is already in use")
        csv = workdir / f"{name}.csv"
        csv.write_text("SEQUENTIAL\n" + "".join(";".join(row) + "\n" for row in rows))
        proc = await asyncio.create_subprocess_exec(
            "sipp",
            ASTERISK,
            "-sf",
            str(scenario),
            "-inf",
            str(csv),
            "-i",
            "127.0.0.1",
            "-p",
            str(TRUNK_PORT),
            "-m",
            str(len(rows)),
            "-r",
            f"{rate:g}",
            "-rp",
            "1000",
            "-d",
            str(hold_ms),
            "-nostdin",
            "-timeout",
            "120s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(workdir / f"{name}-errors.log"),
            "-trace_screen",
            "-screen_file",
            str(workdir / f"{name}-screen.log"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,
        )
        return cls(proc, workdir, name)

    async def wait(self, timeout_s: float) -> None:
        """Wait for every call to end; fail unless SIPp says all of them succeeded."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            await stop_process(self.proc, 3)
            raise AssertionError(
                f"SIPp caller {self.name} still running after {timeout_s}s"
            ) from None
        if code != 0:
            raise AssertionError(
                f"SIPp caller {self.name} exited with {code} (not every call succeeded):\n"
                f"{tail(self.workdir / f'{self.name}-errors.log', 15)}\n"
                f"{tail(self.workdir / f'{self.name}-screen.log', 40)}"
            )

    async def stop(self) -> None:
        await stop_process(self.proc, 3)
