"""A bare asyncio FastAGI responder: the floor ``route_bench`` compares the daemon against.

It does what the daemon's ``route`` script does on the wire and nothing else: read the
request block up to the blank line, then send the same ``EXEC MSet`` command, read
its reply, and close. No lookup, no rule engine, no records, no logging. It uses the
same asyncio streams (``readline``, ``write``/``drain``) and the same event loop
(uvloop when installed, as ``cti serve`` does) as the daemon, so the difference
between the two is the cost of our own work, not of a faster I/O style.

Standard library (plus uvloop if present); run as a script so that it starts the
same way from any working directory:

    python bench/bare_agi.py --port 0    # prints "listening HOST PORT", serves until
                                         # SIGTERM/SIGINT or its stdin closes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

MAX_HEADER_LINES = 256
MAX_LINE = 8 * 1024

#: The daemon's answer for a known bronze customer: the seven variables in one
#: ``EXEC MSet``, the same single exchange the ``route`` script makes.
COMMANDS: tuple[bytes, ...] = (
    b'EXEC MSet "__CTI_CALL_ID=0b9f4a52-6d1e-4f3a-9a57-2f1c3e5d7b80,CTI_QUEUE=support,'
    b'CTI_PRIORITY=1,CTI_TIER=bronze,CTI_CUSTOMER_ID=12345,CTI_RULE=bronze,CTI_ROUTE=queue"\n',
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(MAX_HEADER_LINES):
            line = await reader.readline()
            if not line.endswith(b"\n"):
                return  # the peer went away before the blank line
            if line in (b"\n", b"\r\n"):
                break
        else:
            return
        for command in COMMANDS:
            writer.write(command)
            await writer.drain()
            if not (await reader.readline()).endswith(b"\n"):
                return
    except (ConnectionError, ValueError):
        return
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_stdin() -> None:  # the bench holds our stdin open; EOF means it is gone
        with contextlib.suppress(OSError):
            if os.read(0, 4096):
                return
        loop.remove_reader(0)
        stop.set()

    if not sys.stdin.isatty():
        loop.add_reader(0, on_stdin)
    server = await asyncio.start_server(handle, host, port, limit=MAX_LINE)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]} {bound[1]}", flush=True)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
