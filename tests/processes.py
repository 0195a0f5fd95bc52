"""`cti serve` as a child process in the tests that need a real process (JSON logs on
stderr, a clean SIGTERM, an installed wheel): one way to pick its ports, stop it and
read what it logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def killed_on_exit(process: asyncio.subprocess.Process) -> AsyncIterator[None]:
    """Whatever the test does, the process does not outlive it."""
    try:
        yield
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: asyncio.subprocess.Process, within_s: float) -> bytes:
    """SIGTERM, then its stderr once it has exited (within ``within_s``)."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), within_s)
    return stderr


def json_log(stderr: bytes) -> list[dict[str, Any]]:
    """Its log lines; every line must be JSON (``CTI_LOG_FORMAT=json``)."""
    return [json.loads(line) for line in stderr.decode().splitlines()]
