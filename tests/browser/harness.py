"""What the browser tests drive: the back end in place of Asterisk and the route, and
signed-in sidebars.

Pops are made the way production makes them: call data created with
:meth:`CallDataStore.create_many` (as the route does), call events published with the
real :class:`EventPublisher` under the AMI lease (as the AMI follower does). AMI actions
(pause, transfer, hang-up) go to a :class:`Recorder` in place of Asterisk.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import redis.asyncio as redis

from cti.calldata.store import CallDataStore
from cti.calls import CallModel
from cti.calls.control import CallControl
from cti.calls.events import LINKEDID_PREFIX, CallEvent
from cti.calls.publisher import EventPublisher
from cti.screenpop import ws

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, WebSocket

#: The lease owner the tests publish as (the publisher's script checks it).
OWNER = "browser-tests"
PASSWORD = "correct horse battery"
#: A sidebar's size: the width of a column beside a softphone.
VIEWPORT = {"width": 380, "height": 800}

#: username, endpoint, display name, role
AGENTS = (
    ("alice", "PJSIP/2001", "Alice Martin", "agent"),
    ("bob", "PJSIP/2002", "Bob Okafor", "agent"),
    ("carol", "PJSIP/2009", "Carol Nguyen", "supervisor"),
)
ENDPOINT = {username: endpoint for username, endpoint, _name, _role in AGENTS}

ALAN = {
    "id": 2,
    "account_number": "A0000002",
    "name": "Alan Turing",
    "tier": "gold",
    "status": "active",
    "language": "en",
}


def call_document(
    call_id: str,
    *,
    customer: dict[str, Any] | None = ALAN,
    ani: str = "+12120000002",
    dnis: str = "5550100",
    service: str = "support",
    queue: str = "support",
    rule: str = "gold",
    priority: int = 10,
    ivr: dict[str, str] | None = None,
    notes: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """A call's data as the route makes it (cti.router.call_document)."""
    return {
        "call_id": call_id,
        "version": 1,
        "created_at": "2025-11-23T10:00:00+00:00",
        "channel": "PJSIP/trunk-00000001",
        "uniqueid": f"{time.time():.2f}",
        "ani": ani,
        "dnis": dnis,
        "service": service,
        "customer": customer,
        "routing": {
            "route": "queue",
            "queue": queue,
            "priority": priority,
            "rule": rule,
            "tier": customer["tier"] if customer else "unknown",
            "fail_open": None,
        },
        "ivr": dict(ivr or {}),
        "notes": list(notes),
        "disposition": None,
        "tags": [],
        "attributes": {},
    }


class CallScript:
    """The events of one call, shaped as cti.calls.events makes them from AMI."""

    def __init__(self, *, routed: bool = True) -> None:
        """``routed=False``: a call that never went through the route (no call id, no call
        data), known by its Linkedid."""
        self.linkedid = f"{time.time():.6f}"
        self._call_id = str(uuid.uuid4()) if routed else None
        self.call_key = self._call_id or LINKEDID_PREFIX + self.linkedid
        self._n = 0

    @property
    def call_id(self) -> str:
        """The route's call id (a routed call's key)."""
        assert self._call_id is not None, "an unrouted call has no call id"
        return self._call_id

    def _event(
        self,
        kind: str,
        fingerprint: str,
        *,
        agent: str | None = None,
        data: dict[str, Any] | None = None,
        recipients: tuple[str, ...] = (),
        to_call_agents: bool = False,
    ) -> CallEvent:
        self._n += 1
        return CallEvent(
            kind=kind,
            call_key=self.call_key,
            call_id=self._call_id,
            linkedid=self.linkedid,
            fingerprint=f"{fingerprint}|{self._n}",
            at=time.time(),
            agent=agent,
            data=data or {},
            recipients=recipients,
            to_call_agents=to_call_agents,
        )

    def channel(self, agent: str) -> str:
        return f"{agent}-{abs(hash((self.call_key, agent))) % 10**8:08x}"

    def ringing(self, agent: str, queue: str = "support") -> CallEvent:
        return self._event(
            "ringing",
            "ringing",
            agent=agent,
            data={"queue": queue, "member_name": agent, "channel": self.channel(agent)},
            recipients=(agent,),
        )

    def ring_stopped(self, agent: str) -> CallEvent:
        return self._event(
            "ring_stopped",
            "ring_stopped",
            agent=agent,
            data={"reason": "NOANSWER", "channel": self.channel(agent)},
            recipients=(agent,),
        )

    def connected(self, agent: str, queue: str = "support") -> CallEvent:
        return self._event(
            "connected",
            "connected",
            agent=agent,
            data={
                "queue": queue,
                "member_name": agent,
                "channel": self.channel(agent),
                "via": [],
            },
            recipients=(agent,),
        )

    def transferred(self, from_agent: str, to: str, kind: str = "blind") -> CallEvent:
        return self._event(
            "transferred",
            "transferred",
            agent=from_agent,
            data={
                "kind": kind,
                "from": from_agent,
                "to": to,
                "context": "agents",
                "to_channel": None,
            },
            to_call_agents=True,
        )

    def left(self, agent: str) -> CallEvent:
        return self._event(
            "left", "left", agent=agent, data={"channel": self.channel(agent)}, recipients=(agent,)
        )

    def ended(self) -> CallEvent:
        return self._event(
            "ended",
            "ended",
            data={"cause": 16, "cause_txt": "Normal Clearing", "abandoned": False, "agents": []},
            to_call_agents=True,
        )


@dataclass
class Recorder:
    """Stands in for Asterisk: records the AMI actions and call-control requests made."""

    actions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    is_connected: bool = True

    async def action(self, name: str, timeout_s: float | None = None, **fields: Any) -> dict:
        self.actions.append((name, fields))
        return {"Response": "Success"}

    async def blind_transfer(self, call_key: str, agent: str, target: str) -> None:
        self.actions.append(("blind_transfer", {"call": call_key, "agent": agent, "to": target}))

    async def attended_transfer(self, call_key: str, agent: str, target: str) -> None:
        self.actions.append(("attended_transfer", {"call": call_key, "agent": agent, "to": target}))

    async def complete_transfer(self, call_key: str, agent: str) -> None:
        self.actions.append(("complete_transfer", {"call": call_key, "agent": agent}))

    async def cancel_transfer(self, call_key: str, agent: str) -> None:
        self.actions.append(("cancel_transfer", {"call": call_key, "agent": agent}))

    async def hangup(self, call_key: str, agent: str) -> None:
        self.actions.append(("hangup", {"call": call_key, "agent": agent}))

    async def pause(self, agent: str, paused: bool, reason: str | None = None) -> None:
        """The real pause (it needs no call), its AMI action recorded by :meth:`action`."""
        control = CallControl(self, CallModel())  # type: ignore[arg-type]  # AMI stand-in
        await control.pause(agent, paused, reason)


@dataclass
class Backend:
    """The running back end and what a test does to it in place of Asterisk and the route."""

    url: str
    app: Any
    redis: redis.Redis
    pool: asyncpg.Pool
    store: CallDataStore
    publisher: EventPublisher
    asterisk: Recorder
    http: aiohttp.ClientSession

    async def publish(self, *events: CallEvent) -> None:
        await self.publisher.publish_many(events, OWNER)

    async def create_call(self, document: dict[str, Any]) -> None:
        await self.store.create_many([document])

    async def document(self, call_id: str) -> dict[str, Any]:
        document = await self.store.get(call_id)
        assert document is not None
        return document

    async def api(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            return response.status, await response.json()

    async def token(self, username: str) -> str:
        status, body = await self.api(
            "POST", "/api/login", body={"username": username, "password": PASSWORD}
        )
        assert status == 200, body
        return body["token"]

    async def close_sockets(self) -> None:
        """What a restarting server does: every client must reconnect."""
        await self.app[ws.SOCKETS].close_all()


@dataclass
class Sidebars:
    """Opens sidebars, each in a browser context of its own (its own sessionStorage, like
    a separate browser), records what their WebSockets carry, and checks they raised no
    script error."""

    browser: Browser
    backend: Backend
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Per page: every frame its sockets received (decoded), and each socket's URL.
    frames: dict[Page, list[dict[str, Any]]] = field(default_factory=dict)
    sockets: dict[Page, list[str]] = field(default_factory=dict)

    async def blank(self) -> Page:
        context = await self.browser.new_context(viewport=VIEWPORT)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        # The page must work under its Content-Security-Policy: whatever the policy
        # blocks (an inline script or style, another origin) is a failure of the page.
        page.on("console", lambda message: self._refused_by_policy(page, message))
        frames: list[dict[str, Any]] = []
        sockets: list[str] = []
        self.frames[page], self.sockets[page] = frames, sockets

        def on_socket(socket: WebSocket) -> None:
            sockets.append(socket.url)

            def on_frame(payload: str | bytes) -> None:
                with contextlib.suppress(ValueError):
                    frames.append(json.loads(payload))

            socket.on("framereceived", on_frame)

        page.on("websocket", on_socket)
        await page.goto(self.backend.url)
        return page

    def _refused_by_policy(self, page: Page, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(f"{page.url}: {message.text}")

    async def signed_in(self, username: str) -> Page:
        from playwright.async_api import expect

        page = await self.blank()
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
        return page

    def event_ids(self, page: Page) -> list[str]:
        """The stream ids of the events the page received, in order."""
        return [f["id"] for f in self.frames[page] if f.get("type") == "event"]
