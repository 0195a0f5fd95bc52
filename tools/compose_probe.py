#!/usr/bin/env python3
"""The agent's side of scripts/compose-check: sign in to the sidebar of the compose
stack and see that a call was popped there.

Why a probe of its own rather than curl: "popped" means the agent's screen received
the call, which is the WebSocket's replay of the agent's Redis stream, and a sidebar
that serves its page and signs agents in but never pushes a call would still pass any
plain HTTP check. So, as the sidebar page does, it:

1. fetches ``/`` (the page) and ``/readyz`` (PostgreSQL, Redis and AMI all up, no record
   writer stuck);
2. signs in with ``POST /api/login`` as the agent who answered the call;
3. reads the call with ``GET /api/calls/{call_id}`` (the call data document, 200);
4. opens ``/ws?token=…`` and waits for an ``event`` frame about that call.

Usage (the project's venv has aiohttp)::

    .venv/bin/python tools/compose_probe.py BASE_URL USERNAME CALL_ID   # password on stdin

Exit status 0 when every step passed, 1 otherwise (the message says which step).
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

TIMEOUT_S = 60.0  # generous: the stack runs on a loaded 2-core CI machine


class ProbeFailed(Exception):
    """A step of the probe did not see what a working stack shows."""


async def _json(response: aiohttp.ClientResponse, step: str, expect: int = 200) -> dict:
    body = await response.text()
    if response.status != expect:
        raise ProbeFailed(f"{step}: HTTP {response.status}, expected {expect}: {body[:300]}")
    return await response.json(content_type=None)


async def probe(base: str, username: str, password: str, call_id: str) -> list[str]:
    """Run the four steps; return one line per step for the log."""
    done: list[str] = []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(base, timeout=timeout) as http:
        async with http.get("/") as page:
            text = await page.text()
            if page.status != 200 or "<html" not in text.lower():
                raise ProbeFailed(f"GET /: HTTP {page.status}, not the sidebar page")
        async with http.get("/readyz") as ready:
            state = await _json(ready, "GET /readyz")
        stores = {name: state.get(name) for name in ("postgres", "redis", "ami")}
        stuck = {
            name: writer["stuck_since"]
            for name, writer in state.get("writers", {}).items()
            if writer.get("stuck_since") is not None
        }
        if stores != {"postgres": True, "redis": True, "ami": True} or stuck:
            raise ProbeFailed(f"GET /readyz: {state}")
        done.append(f"sidebar page served; /readyz {stores}, no writer stuck")

        login = {"username": username, "password": password}
        async with http.post("/api/login", json=login) as response:
            signed_in = await _json(response, f"POST /api/login as {username}")
        token = signed_in["token"]
        headers = {"Authorization": f"Bearer {token}"}
        done.append(f"signed in as {username} ({signed_in['agent']['endpoint']})")

        async with http.get(f"/api/calls/{call_id}", headers=headers) as response:
            read = await _json(response, f"GET /api/calls/{call_id}")
        call = read["call"]
        if call.get("call_id") != call_id:
            raise ProbeFailed(f"GET /api/calls/{call_id}: the document is of {call.get('call_id')}")
        routing = call.get("routing") or {}
        customer = (call.get("customer") or {}).get("name", "unknown caller")
        done.append(
            f"read call {call_id}: {customer}, {routing.get('route')} "
            f"{routing.get('queue') or ''} (rule {routing.get('rule')})".replace("  ", " ")
        )

        # Without after=, the socket replays the agent's retained stream: the pop.
        async with http.ws_connect("/ws", params={"token": token}) as ws:
            kinds = []
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise ProbeFailed(f"/ws: {message.type.name} before the call's events")
                frame = message.json()
                event = frame.get("event") or {}
                if frame.get("type") == "event" and event.get("call_id") == call_id:
                    kinds.append(str(event.get("event")))
                    break
        if not kinds:
            raise ProbeFailed(f"/ws: the socket closed before any event of call {call_id}")
        done.append(f"popped: /ws replayed {kinds[0]!r} of call {call_id} to {username}")
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base, username, call_id = argv[1:]
    password = sys.stdin.readline().rstrip("\n")
    try:
        lines = asyncio.run(asyncio.wait_for(probe(base, username, password, call_id), 120))
    except (ProbeFailed, aiohttp.ClientError, TimeoutError, KeyError) as exc:
        print(f"compose-probe: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"compose-probe: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
