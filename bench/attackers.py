"""The login flood of bench/attack_bench.py, and its legitimate agent.

Run as its own process (another host would be), bounded in time:

    python -m bench.attackers PORT --logins 200 --user bench-victim

``--logins`` workers each post a wrong password for ``--user`` to ``/api/login`` again
and again, ``--pause-s`` apart, whatever the answer (issue 9, finding 4). On SIGTERM or
after ``--seconds`` it prints one JSON line of counts (answers by status, errors by
type). The idle HTTP connections that go with it come from tests/fakes/agi_flood.py
``--http``. :func:`legit_logins` is the agent at her desk, used by the bench's process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

LOGIN_TIMEOUT_S = 10.0  # one attempt
RETRY_CAP_S = 5.0  # a refused legitimate login waits Retry-After, at most this


def raise_nofile() -> None:
    """Our own descriptor table must hold the connections we open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _guesser(
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    counts: Counter[str],
    stop: asyncio.Event,
) -> None:
    guess = 0
    while not stop.is_set():
        guess += 1
        body = {"username": args.user, "password": f"wrong-{guess}"}
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as r:
                await r.read()
                counts[f"login_{r.status}"] += 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            counts[f"login_error_{type(exc).__name__}"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.pause_s)


async def attack(args: argparse.Namespace) -> Counter[str]:
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    connector = aiohttp.TCPConnector(local_addr=(args.source, 0), force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://{args.host}:{args.port}/api/login"
        tasks = [
            asyncio.create_task(_guesser(session, url, args, counts, stop))
            for _ in range(args.logins)
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.seconds)
        stop.set()
        _done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    counts["cut_at_end"] = len(pending)
    return counts


# -- the agent at her desk (runs in the bench's process) -------------------------------------
@dataclass(slots=True)
class Logins:
    """Legitimate logins: time from the first attempt to a token, retries included."""

    seconds: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # of every attempt
    gave_up: int = 0


async def legit_logins(
    port: int,
    username: str,
    password: str,
    source: str,
    interval_s: float,
    stop: asyncio.Event,
    logins: Logins,
) -> None:
    """Log in every ``interval_s`` until ``stop``. A refusal (429, 503) is retried after
    its Retry-After, as the page does; a login that has no token after ``RETRY_CAP_S``
    (or got 401) counts as given up."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True, limit=0)
    url = f"http://127.0.0.1:{port}/api/login"
    body = {"username": username, "password": password}
    async with aiohttp.ClientSession(connector=connector) as session:
        while not stop.is_set():
            started = time.perf_counter()
            token = False
            while not token and time.perf_counter() - started < RETRY_CAP_S:
                retry_after = 0.5
                try:
                    async with session.post(
                        url, json=body, timeout=aiohttp.ClientTimeout(total=LOGIN_TIMEOUT_S)
                    ) as response:
                        await response.read()
                        logins.statuses[str(response.status)] += 1
                        token = response.status == 200
                        if response.status == 401:
                            break
                        with contextlib.suppress(TypeError, ValueError):
                            retry_after = float(response.headers.get("Retry-After", "0.5"))
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    logins.statuses[type(exc).__name__] += 1
                if not token:
                    await asyncio.sleep(min(retry_after, RETRY_CAP_S))
            if token:
                logins.seconds.append(time.perf_counter() - started)
            else:
                logins.gave_up += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--source", default="127.0.0.1", help="the attackers' address")
    parser.add_argument("--logins", type=int, default=200, help="concurrent wrong-password logins")
    parser.add_argument("--user", default="bench-victim", help="whose password is guessed")
    parser.add_argument("--pause-s", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=120.0, help="ends by then at the latest")
    args = parser.parse_args()
    raise_nofile()
    print(json.dumps(asyncio.run(attack(args))), flush=True)


if __name__ == "__main__":
    main()
