#!/usr/bin/env python3
"""Record real AMI traffic from the Asterisk test bed: tests/fixtures/ami/<name>.txt.

The unit tests of the call model (tests/unit/test_call_model*.py) replay these files.
Each is the byte stream one AMI session received, from the greeting and its Login to
its Logoff, CRLF kept, preceded by one ``# <name>: ...`` line that says how it was
recorded. The recording session sends only Login, the scenario's own actions
(BlindTransfer, Atxfer, Hangup, QueuePause, QueueAdd, QueueRemove) and Logoff; the
actions are not in the file, their responses are (ActionID ``login-1``, ``xfer-1``,
..., ``logoff-1``).

Usage (as root, like the e2e tests: the sandbox uses chroot; PostgreSQL and Redis as
for the tests, CTI_TEST_PG / CTI_RECORD_REDIS to point elsewhere)::

    .venv/bin/python tools/record_ami.py --list
    .venv/bin/python tools/record_ami.py local_member interleaved_calls
    .venv/bin/python tools/record_ami.py --out /tmp/caps --all

What one run does, and undoes at the end (also on failure):

1. a fresh database ``cti_record_<hex>``: migrated, the demo data (cti.demo.seed), and the
   demo routing plan plus DNIS 5550600 -> queue ``local`` (queues.conf: its member is
   the Local channel ``Local/2006@agents/n``);
2. ``cti serve`` on the FastAGI port (4573 when free), as tests/e2e does (stack.py);
3. ``scripts/asterisk-sandbox up`` with a random AMI secret and the dialplan pointed at
   that daemon (``--use-running``: an Asterisk already up is used and left up; its
   global CTI_AGI_ADDR is pointed at our daemon);
4. for every scenario: wait until Asterisk has no channel, start the SIPp agent phones
   it needs (sipp/agent*.xml, agent 200N on 127.0.0.1:507N, registered with the
   sandbox's agent passwords: cti.agent_phones), log in, start the SIPp
   caller(s) (sipp/caller.xml from the trunk port 5080), send the scenario's AMI actions
   when their moment comes (e.g. 2 s after AgentConnect), wait until every caller
   ended, every channel hung up and AMI was quiet for a moment, log off, check the
   bytes parse strictly, write the file, stop the phones (by pid).

A scenario fails (and writes nothing) when a SIPp caller or a one-call phone did not
end successfully; their logs stay in the work folder printed at the start (kept when a
scenario failed, or with ``--keep``; the special phones also log every SIP message).

Re-recording: timestamps, Uniqueids and the CTI_CALL_ID differ at every run, and
Asterisk's order of simultaneous events may too (Hangups; once an AttendedTransfer
without TransferTarget*, kept as attended_transfer_ami_no_target.txt). The captures of
the first four scenarios are tested for agents, queues, order and kinds only
(tests/unit/test_call_model_captures.py). The six older ones were recorded before this
tool, with ``channelvars = CTI_CALL_ID`` only; their tests (test_call_model.py) pin
call ids and ``priority None``, so re-recording them means updating those tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make cti and tests importable
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import redis.asyncio as redis  # noqa: E402

from cti.agent_phones import password_of, register_once, wait_until_registered  # noqa: E402
from cti.ami.protocol import AmiParser, Message, encode_action  # noqa: E402
from cti.db.migrate import migrate  # noqa: E402
from cti.demo.seed import seed_demo  # noqa: E402
from cti.loadtest import (  # noqa: E402
    agent_port,
    spawn_agent_phone,
    stop_process,
    udp_port_bound,
    wait_until_bound,
)
from cti.routing import plan as routing_plan  # noqa: E402
from cti.routing.plan_store import write_plan  # noqa: E402
from tests.e2e.ami import Ami  # noqa: E402
from tests.e2e.stack import CallBatch, Daemon, free_port, run_sandbox  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "ami"
SIPP_DIR = REPO / "sipp"
PG_SERVER = os.environ.get("CTI_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("CTI_RECORD_REDIS", "redis://127.0.0.1:6379/12")
AMI_HOST, AMI_PORT, AMI_USER = "127.0.0.1", 5038, "cti"
LOCAL_DNIS = "5550600"  # -> queue "local" (added to the demo plan for the recording)
DEMO_CUSTOMERS = 2_000

Predicate = Callable[[Message], bool]


def is_event(name: str, **fields: str) -> Predicate:
    """Event ``name`` whose headers equal ``fields`` (keys case-insensitive)."""
    return lambda m: m.is_event and m.name == name and all(m.get(k) == v for k, v in fields.items())


def dials(device: str, status: str = "ANSWER") -> Predicate:
    """DialEnd of a leg of ``device`` (``PJSIP/2003``) with ``status``."""
    return lambda m: (
        m.is_event
        and m.name == "DialEnd"
        and m.get("DialStatus") == status
        and (m.get("DestChannel") or "").startswith(device + "-")
    )


# ------------------------------------------------------------------ the recording session
class Recording:
    """One AMI session whose received bytes are kept exactly (``raw``).

    A plain TCP socket (asyncio streams); every chunk read is appended to ``raw`` and
    also parsed (cti.ami.protocol) so the scenario can wait for events. Channels are
    followed by Newchannel / Hangup to know when Asterisk is idle again.
    """

    def __init__(self) -> None:
        self.raw = bytearray()
        self.events: list[Message] = []
        self.live: set[str] = set()
        self.last_event_at = time.monotonic()
        self._parser = AmiParser()
        self._responses: dict[str, Message] = {}
        self._changed = asyncio.Condition()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, host: str, port: int, username: str, secret: str) -> Recording:
        self = cls()
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        self._task = asyncio.create_task(self._read(), name="ami-recording")
        reply = await self.action("Login", "login-1", Username=username, Secret=secret)
        if reply.get("Response") != "Success":
            raise ConnectionError(f"AMI login refused: {reply.get('Message')}")
        return self

    async def _read(self) -> None:
        assert self._reader is not None
        while chunk := await self._reader.read(65536):
            self.raw += chunk
            messages = self._parser.feed(chunk)
            async with self._changed:
                for msg in messages:
                    if msg.is_response and msg.action_id:
                        self._responses[msg.action_id] = msg
                    elif msg.is_event:
                        self.events.append(msg)
                        self.last_event_at = time.monotonic()
                        uniqueid = msg.get("Uniqueid")
                        if msg.name == "Newchannel" and uniqueid:
                            self.live.add(uniqueid)
                        elif msg.name == "Hangup" and uniqueid:
                            self.live.discard(uniqueid)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._task is None or self._task.done()

    async def _until(self, check: Callable[[], object], within_s: float, what: str) -> object:
        try:
            async with asyncio.timeout(within_s), self._changed:
                while not (result := check()):
                    if self.closed:
                        raise ConnectionError(f"AMI connection closed while waiting for {what}")
                    await self._changed.wait()
                return result
        except TimeoutError:
            names = [m.name for m in self.events[-30:]]
            raise RuntimeError(f"no {what} within {within_s}s; last events: {names}") from None

    async def action(self, name: str, action_id: str, within_s: float = 10, **fields: str):
        """Send an action (not recorded: only what Asterisk sends is) and return its
        response (recorded)."""
        assert self._writer is not None
        self._writer.write(encode_action(name, fields, action_id))
        await self._writer.drain()
        reply = await self._until(
            lambda: self._responses.get(action_id), within_s, f"response to {name}"
        )
        assert isinstance(reply, Message)
        return reply

    async def wait_event(self, predicate: Predicate, within_s: float, what: str) -> Message:
        """The first event (since the Login) that matches."""
        found = await self._until(
            lambda: next((m for m in self.events if predicate(m)), None), within_s, what
        )
        assert isinstance(found, Message)
        return found

    async def settle(self, quiet_s: float = 1.5, within_s: float = 60) -> None:
        """Wait until no channel is up and no event came for ``quiet_s``."""
        deadline = time.monotonic() + within_s
        while self.live or time.monotonic() - self.last_event_at < quiet_s:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Asterisk not idle within {within_s}s: {sorted(self.live)}")
            await asyncio.sleep(0.1)

    async def logoff(self) -> None:
        """Logoff (its Goodbye is the last thing recorded); Asterisk then closes."""
        if not self.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                await self.action("Logoff", "logoff-1", within_s=5)
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), 3)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


# ------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Phone:
    """A SIPp agent phone: agent 200N on 127.0.0.1:507N, RTP on 160N0."""

    agent: int
    ms: int = 1000  # -d: ring time (agent.xml), talk time (agent-refer/-atxfer.xml)
    scenario: str = "agent.xml"
    keys: tuple[tuple[str, str], ...] = ()  # -key NAME VALUE
    one_call: bool = False  # -m 1: must end with exactly one successful call


Call = tuple[str, str, str, str]  # ANI, DNIS, IVR account, IVR intent (sipp/caller.xml)


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str  # the header's "Scenario: ..." text (the observed route is added)
    phones: tuple[Phone, ...]
    calls: tuple[Call, ...]
    hold_ms: int  # how long each caller stays (sipp/caller.xml -d; re-INVITEs restart it)
    rate: float = 1.0  # calls per second
    drive: Callable[[Recording], Awaitable[None]] | None = None  # the AMI actions
    within_s: float = 120
    #: AMI actions before the callers start (a pause, a member added)
    prepare: Callable[[Recording], Awaitable[None]] | None = None


async def _ok(rec: Recording, action: str, action_id: str, **fields: str) -> None:
    reply = await rec.action(action, action_id, **fields)
    if reply.get("Response") != "Success":
        raise RuntimeError(f"{action} refused: {reply.get('Message')}")


async def _transfer_after_connect(rec: Recording, action: str, action_id: str, exten: str) -> str:
    connect = await rec.wait_event(is_event("AgentConnect"), 60, "AgentConnect")
    agent_leg = connect["DestChannel"]
    await asyncio.sleep(2)
    await _ok(rec, action, action_id, Channel=agent_leg, Context="agents", Exten=exten)
    return agent_leg


async def blind_transfer_to_2002(rec: Recording) -> None:
    await _transfer_after_connect(rec, "BlindTransfer", "xfer-1", "2002")


async def blind_transfer_to_sales(rec: Recording) -> None:
    await _transfer_after_connect(rec, "BlindTransfer", "xfer-1", "sales")


async def atxfer_to_2003_then_hang_up(rec: Recording) -> None:
    agent_leg = await _transfer_after_connect(rec, "Atxfer", "atxfer-1", "2003")
    await rec.wait_event(dials("PJSIP/2003"), 30, "agent 2003 answering the consult call")
    await asyncio.sleep(2)
    await rec.action("Hangup", "hangup-1", Channel=agent_leg)


async def pause_2001_for_lunch(rec: Recording) -> None:
    await _ok(rec, "QueuePause", "pause-1", Interface="PJSIP/2001", Paused="true", Reason="lunch")


async def unpause_2001_after_the_call(rec: Recording) -> None:
    await rec.wait_event(is_event("AgentComplete"), 60, "AgentComplete")
    await _ok(rec, "QueuePause", "pause-2", Interface="PJSIP/2001", Paused="false")


async def _pause_in_support(
    rec: Recording, agents: tuple[int, ...], first_id: int, **fields: str
) -> None:
    """QueuePause in support for each of ``agents`` (ActionID pause-<first_id>, ...)."""
    for n, agent in enumerate(agents, first_id):
        await _ok(
            rec, "QueuePause", f"pause-{n}", Queue="support", Interface=f"PJSIP/{agent}", **fields
        )


async def add_2004_to_support(rec: Recording) -> None:
    # a lingering registration of 2001-2003 must not ring
    await _pause_in_support(rec, (2001, 2002, 2003), 1, Paused="true", Reason="recording")
    await _ok(
        rec,
        "QueueAdd",
        "add-1",
        Queue="support",
        Interface="PJSIP/2004",
        MemberName="Agent 2004",
        StateInterface="PJSIP/2004",
    )


async def remove_2004_after_the_call(rec: Recording) -> None:
    await rec.wait_event(is_event("AgentComplete"), 60, "AgentComplete")
    await _ok(rec, "QueueRemove", "remove-1", Queue="support", Interface="PJSIP/2004")
    await _pause_in_support(rec, (2001, 2002, 2003), 4, Paused="false")


async def short_queue_timeout(rec: Recording) -> None:
    await _ok(rec, "Setvar", "timeout-1", Variable="QUEUE_TIMEOUT", Value="3")


async def restore_queue_timeout(rec: Recording) -> None:
    await rec.wait_event(is_event("QueueCallerLeave"), 60, "QueueCallerLeave")
    await _ok(rec, "Setvar", "timeout-2", Variable="QUEUE_TIMEOUT", Value="300")


SUPPORT = "5550100"


def one_support_call(
    name: str,
    story: str,
    phones: tuple[Phone, ...],
    hold_ms: int,
    *,
    drive: Callable[[Recording], Awaitable[None]] | None = None,
    prepare: Callable[[Recording], Awaitable[None]] | None = None,
) -> Scenario:
    """A scenario with one caller, 2120000002 (no IVR input), to support (5550100)."""
    calls = (("2120000002", SUPPORT, "", ""),)
    return Scenario(name, story, phones, calls, hold_ms, drive=drive, prepare=prepare)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        # -- the four that were missing -------------------------------------------------
        one_support_call(
            "attended_transfer_phone",
            "agent 2001 runs sipp/agent-atxfer.xml -key target 2003 -d 2000: answers after "
            "1 s ring, talks 2 s, holds the caller (re-INVITE a=sendonly), calls 2003 from "
            "the same phone (a second dialog, its own channel and Linkedid), 2003 "
            "(sipp/agent.xml) answers after 1 s, 2 s later 2001 sends REFER with "
            "Refer-To: <sip:2003@...?Replaces=<consult dialog>> (attended transfer from "
            "the phone), answers the NOTIFYs and hangs up; the caller then talks to 2003 "
            "and hangs up",
            (
                Phone(2001, 2000, "agent-atxfer.xml", (("target", "2003"),), one_call=True),
                Phone(2003, 1000),
            ),
            hold_ms=16000,
        ),
        one_support_call(
            "blind_transfer_to_queue",
            "agent 2001 (sipp/agent.xml) answers after 1 s; 2 s after AgentConnect the client "
            "sends Action: BlindTransfer Channel: <agent 2001 leg> Context: agents Exten: "
            "sales (ActionID xfer-1), which runs cti-queue,sales: the caller queues again, "
            "in sales, keeping its CTI_CALL_ID and CTI_PRIORITY; agent 2004 "
            "(sipp/agent.xml) answers after 1 s; the caller hangs up",
            (Phone(2001), Phone(2004)),
            hold_ms=14000,
            drive=blind_transfer_to_sales,
        ),
        Scenario(
            "local_member",
            "queue local (queues.conf: member => Local/2006@agents/n,0,Agent 2006 via "
            "Local,PJSIP/2006; DNIS 5550600 routed to it by the recording's plan): the queue "
            "rings Local/2006@agents-...;1, its ;2 runs agents,2006 and dials PJSIP/2006 "
            "(sipp/agent.xml, rings 1 s, answers); the pair is never optimised away (/n); "
            "the caller hangs up",
            (Phone(2006),),
            (("2120000002", LOCAL_DNIS, "", ""),),
            hold_ms=8000,
        ),
        Scenario(
            "interleaved_calls",
            "three concurrent calls from one SIPp caller, 0.5 s apart, each staying 8 s: "
            "2120000002 and 2120000003 to 5550100 (support, linear: the first to agent "
            "2001, the second, 2001 being busy, to 2002) and 2120000005 to 5550300 "
            "(collections, agent 2005); agents sipp/agent.xml ring 1 s; their events "
            "interleave in the one recording",
            (Phone(2001), Phone(2002), Phone(2005)),
            (
                ("2120000002", SUPPORT, "", ""),
                ("2120000003", SUPPORT, "", ""),
                ("2120000005", "5550300", "", ""),
            ),
            hold_ms=8000,
            rate=2,
        ),
        # -- agent states (issue 11) ------------------------------------------------------
        one_support_call(
            "pause_with_reason",
            "before the call the client sends Action: QueuePause Interface: PJSIP/2001 "
            "Paused: true Reason: lunch (ActionID pause-1, every queue of 2001); a caller to "
            "support skips 2001 and agent 2002 (sipp/agent.xml, rings 1 s) answers; after "
            "AgentComplete the client unpauses 2001 (pause-2)",
            (Phone(2001), Phone(2002)),
            hold_ms=4000,
            prepare=pause_2001_for_lunch,
            drive=unpause_2001_after_the_call,
        ),
        one_support_call(
            "member_added_removed",
            "before the call the client sends Action: QueueAdd Queue: support Interface: "
            "PJSIP/2004 MemberName: Agent 2004 StateInterface: PJSIP/2004 (ActionID add-1), "
            "after pausing 2001-2003 in support (Reason: recording, pause-1..3: they have no "
            "phone); a caller to support is answered by 2004 (sipp/agent.xml, rings 1 s); "
            "after AgentComplete the client sends QueueRemove (remove-1) and unpauses "
            "2001-2003 in support (pause-4..6)",
            (Phone(2004),),
            hold_ms=4000,
            prepare=add_2004_to_support,
            drive=remove_2004_after_the_call,
        ),
        # -- reports (issue 14) --------------------------------------------------------
        Scenario(
            "queue_timeout",
            "before the call the client sets the global QUEUE_TIMEOUT to 3 (Action: Setvar, "
            "ActionID timeout-1); a caller to 5550300 (collections, whose agent 2005 has no "
            "phone) waits, Queue() returns after 3 s with QUEUESTATUS=TIMEOUT "
            "(QueueCallerLeave, no QueueCallerAbandon), the dialplan plays tt-allbusy and "
            "hangs up; after QueueCallerLeave the client sets QUEUE_TIMEOUT back to 300 "
            "(timeout-2)",
            (),
            (("2120000005", "5550300", "", ""),),
            hold_ms=15000,
            prepare=short_queue_timeout,
            drive=restore_queue_timeout,
        ),
        # -- the older captures, re-recordable the same way -----------------------------
        Scenario(
            "answered_call",
            "agent 2001 sipp/agent.xml rings 1 s then answers; the caller hangs up first",
            (Phone(2001),),
            (("2120000002", SUPPORT, "A0000002", "billing"),),
            hold_ms=5000,
        ),
        Scenario(
            "abandoned_call",
            "the caller hangs up after 6 s while still in queue; agent 2005 (sipp/agent.xml "
            "-d 60000) rings and never answers in time, so the ring is cancelled (DialEnd "
            "CANCEL) and QueueCallerAbandon follows",
            (Phone(2005, 60000),),
            (("2120000005", "5550300", "", ""),),
            hold_ms=6000,
        ),
        Scenario(
            "ring_no_answer",
            "queue strategy linear, member timeout 15 s, retry 1 s: agent 2001 "
            "(sipp/agent.xml -d 60000) rings 15 s without answering (AgentRingNoAnswer, "
            "CANCEL), then agent 2002 (rings 1 s) answers; the caller hangs up",
            (Phone(2001, 60000), Phone(2002)),
            (("2120000003", SUPPORT, "", ""),),
            hold_ms=22000,
        ),
        Scenario(
            "blind_transfer_ami",
            "agent 2001 answers after 1 s; 2 s after AgentConnect the client sends Action: "
            "BlindTransfer Channel: <agent 2001 leg> Context: agents Exten: 2002 (ActionID "
            "xfer-1); agent 2002 answers after 1 s; the caller hangs up",
            (Phone(2001), Phone(2002)),
            (("2120000003", SUPPORT, "", ""),),
            hold_ms=12000,
            drive=blind_transfer_to_2002,
        ),
        Scenario(
            "blind_transfer_refer",
            "agent 2001 runs sipp/agent-refer.xml: answers, talks 3 s, sends SIP REFER "
            "Refer-To sip:2002@127.0.0.1:5060 (resolved in the endpoint context agents); "
            "agent 2002 (sipp/agent.xml, rings 1 s) answers; the caller hangs up",
            (
                Phone(2001, 3000, "agent-refer.xml", (("target", "2002"),), one_call=True),
                Phone(2002),
            ),
            (("2120000003", SUPPORT, "", ""),),
            hold_ms=12000,
        ),
        Scenario(
            "attended_transfer_ami",
            "agent 2001 answers after 1 s; 2 s after AgentConnect the client sends Action: "
            "Atxfer Channel: <agent 2001 leg> Context: agents Exten: 2003 (ActionID "
            "atxfer-1); after transferdigittimeout (3 s) a Local/2003@agents pair dials "
            "agent 2003, which answers after 1 s; 2 s later the client sends Action: Hangup "
            "for the agent 2001 leg (ActionID hangup-1), which completes the transfer; the "
            "caller then hangs up",
            (Phone(2001), Phone(2003)),
            (("2120000001", SUPPORT, "", ""),),
            hold_ms=20000,
            drive=atxfer_to_2003_then_hang_up,
        ),
    )
}


# ------------------------------------------------------------------ phones
def uses_standard_phone(phone: Phone) -> bool:
    """sipp/agent.xml answering every call: the phone of cti.loadtest, which registers
    and refreshes by itself; the others register once before their scenario starts."""
    return phone.scenario == "agent.xml" and not phone.keys and not phone.one_call


async def start_phone(phone: Phone, workdir: Path) -> asyncio.subprocess.Process:
    if uses_standard_phone(phone):
        return await spawn_agent_phone(
            phone.agent,
            sipp="sipp",
            scenario=SIPP_DIR / "agent.xml",
            host="127.0.0.1",
            ring_ms=phone.ms,
            workdir=workdir,
        )
    port = agent_port(phone.agent)
    if udp_port_bound(port):
        raise RuntimeError(f"UDP port {port} (agent {phone.agent}) is already in use")
    # Asterisk rings agents at their registered contact: register this port once (the
    # registration outlasts a recording), then run the scenario on it.
    await register_once(
        phone.agent, sipp="sipp", host="127.0.0.1", port=port, asterisk="127.0.0.1:5060",
        password=password_of(phone.agent), workdir=workdir,
    )  # fmt: skip
    name = f"agent-{phone.agent}"
    argv = ["sipp", "-sf", str(SIPP_DIR / phone.scenario), "-i", "127.0.0.1", "-p", str(port)]
    argv += ["-s", str(phone.agent), "-au", str(phone.agent), "-ap", password_of(phone.agent)]
    argv += ["-mp", f"160{phone.agent - 2000}0", "-d", str(phone.ms), "-nostdin"]
    for key, value in phone.keys:
        argv += ["-key", key, value]
    if phone.one_call:
        argv += ["-m", "1"]
    argv += ["-trace_err", "-error_file", str(workdir / f"{name}-errors.log")]
    argv += ["-trace_msg", "-message_file", str(workdir / f"{name}-messages.log")]
    argv += ["-trace_logs", "-log_file", str(workdir / f"{name}-logs.log")]
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=workdir,
        start_new_session=True,
    )


# ------------------------------------------------------------------ the test bed
@dataclass
class Testbed:
    workdir: Path
    ami: Ami  # a second, unrecorded session: idle checks, version, Setvar
    secret: str
    version: str = "?"


def recording_plan() -> routing_plan.RoutingPlan:
    """The demo plan plus queue ``local`` behind DNIS 5550600 (rules without a queue
    send the caller to the dialled number's default queue)."""
    text = resources.files("cti.demo").joinpath("routing.toml").read_text()
    text += (
        '\n[[queues]]\nname = "local"\ndescription = "Local-channel member (recordings)"\n'
        f'\n[[numbers]]\ndnis = "{LOCAL_DNIS}"\nservice = "support"\n'
        'default_queue = "local"\ntimezone = "America/New_York"\n'
    )
    return routing_plan.loads(text)


@contextlib.asynccontextmanager
async def testbed(workdir: Path, use_running: bool) -> AsyncIterator[Testbed]:
    async with contextlib.AsyncExitStack() as stack:
        # 1. the database
        name = f"cti_record_{uuid.uuid4().hex[:12]}"
        url = f"{PG_SERVER}/{name}"

        async def drop() -> None:
            admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

        stack.push_async_callback(drop)
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            await seed_demo(conn, customers=DEMO_CUSTOMERS)
            await write_plan(conn, recording_plan())
        finally:
            await conn.close()
        client = redis.from_url(REDIS_URL)
        await client.ping()
        await client.aclose()

        # 2. the daemon
        agi_port = free_port(preferred=4573)
        plan_cache = workdir / "routing-plan.toml"
        env = {
            "CTI_DATABASE_URL": url,
            "CTI_REDIS_URL": REDIS_URL,
            "CTI_PLAN_CACHE": str(plan_cache),
            "CTI_LOG_LEVEL": "info",
        }
        daemon = await Daemon.start(
            port=agi_port, env=env, log=workdir / "daemon.log", ready_file=plan_cache
        )
        stack.push_async_callback(daemon.stop)
        agi_addr = f"127.0.0.1:{agi_port}"

        # 3. Asterisk
        code, _ = await run_sandbox("status", {}, 30)
        if code == 0 and not use_running:
            raise RuntimeError("Asterisk already runs: stop it, or pass --use-running")
        if code == 0:
            _, out = await run_sandbox("env", {}, 30)
            found = re.search(r"^CTI_AMI_SECRET=(.*)$", out, re.M)
            secret = found[1].strip("'\"") if found else ""
        else:
            secret = secrets.token_hex(16)
            sandbox_env = {"CTI_AMI_SECRET": secret, "CTI_AGI_ADDR": agi_addr}

            async def down() -> None:
                code, out = await run_sandbox("down", sandbox_env, 60)
                if code != 0:
                    print(f"scripts/asterisk-sandbox down failed ({code}):\n{out}")

            stack.push_async_callback(down)
            code, out = await run_sandbox("up", sandbox_env, 300)
            if code != 0:
                raise RuntimeError(f"scripts/asterisk-sandbox up failed ({code}):\n{out}")
        ami = await Ami.connect(AMI_HOST, AMI_PORT, AMI_USER, secret)
        stack.push_async_callback(ami.close)
        reply = await ami.action("Setvar", Variable="CTI_AGI_ADDR", Value=agi_addr)
        if reply.get("Response") != "Success":
            raise RuntimeError(f"Setvar CTI_AGI_ADDR refused: {reply}")
        settings = await ami.action("CoreSettings")
        yield Testbed(workdir, ami, secret, _upstream(settings.get("AsteriskVersion", "?")))


def _upstream(version: str) -> str:
    """``22.10.1+dfsg+~cs6.17.60671434-1`` (Debian's) -> ``22.10.1``."""
    found = re.match(r"\d+(\.\d+)*", version)
    return found[0] if found else version


async def wait_idle(ami: Ami, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while await ami.list_action("CoreShowChannels"):
        if time.monotonic() > deadline:
            raise RuntimeError("Asterisk still has channels up")
        await asyncio.sleep(0.3)


# ------------------------------------------------------------------ one scenario
def observed_route(events: list[Message]) -> str:
    """What the FastAGI route did, as the recording shows it (QueueCallerJoin)."""
    dialled: dict[str, str] = {}
    parts: list[str] = []
    seen: set[tuple[str, str]] = set()
    for m in events:
        uniqueid = m.get("Uniqueid") or ""
        if m.name == "Newchannel" and m.get("Context") == "from-trunk":
            dialled[uniqueid] = m.get("Exten") or "?"
        elif m.name == "QueueCallerJoin" and (uniqueid, m.get("Queue") or "") not in seen:
            seen.add((uniqueid, m.get("Queue") or ""))
            chanvars = m.chanvars
            parts.append(
                f"{m.get('CallerIDNum')} -> {dialled.get(uniqueid, '?')} joins {m.get('Queue')}"
                f" (CTI_PRIORITY={chanvars.get('CTI_PRIORITY', '')!s}"
                f"{', CTI_CALL_ID set' if chanvars.get('CTI_CALL_ID') else ''})"
            )
    return "; ".join(parts) or "no caller queued"


def header(scenario: Scenario, version: str, events: list[Message]) -> str:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return (
        f"# {scenario.name}: raw AMI from Asterisk {version} (Debian sid, "
        "scripts/asterisk-sandbox, asterisk/etc as committed), user cti "
        f"read=system,call,agent,user, recorded {today} by tools/record_ami.py (a Python "
        "socket client) from its Login (its own actions, which it sent, are not shown; "
        "responses are) to its Logoff; bytes as received, CRLF kept. Scenario: FastAGI "
        "route (cti serve, demo plan) via sipp/caller.xml callers (ANI -> DNIS): "
        f"{observed_route(events)}; {scenario.story}.\n"
    )


async def record(scenario: Scenario, bed: Testbed, out_dir: Path) -> Path:
    workdir = bed.workdir / scenario.name
    workdir.mkdir(parents=True, exist_ok=True)
    await wait_idle(bed.ami)
    phones: dict[int, asyncio.subprocess.Process] = {}
    try:
        for phone in scenario.phones:
            phones[phone.agent] = await start_phone(phone, workdir)
        await wait_until_bound(phones)
        standard = {p.agent for p in scenario.phones if uses_standard_phone(p)}
        await wait_until_registered({a: phones[a] for a in standard}, workdir)
        rec = await Recording.open(AMI_HOST, AMI_PORT, AMI_USER, bed.secret)
        try:
            if scenario.prepare is not None:
                await scenario.prepare(rec)
            callers = await CallBatch.start(
                workdir,
                list(scenario.calls),
                hold_ms=scenario.hold_ms,
                rate=scenario.rate,
                name="callers",
            )
            driver = asyncio.create_task(scenario.drive(rec)) if scenario.drive else None
            try:
                await callers.wait(scenario.within_s)
                if driver is not None:
                    await asyncio.wait_for(driver, 5)
            finally:
                if driver is not None and not driver.done():
                    driver.cancel()
                    await asyncio.gather(driver, return_exceptions=True)
                await callers.stop()
            for phone in scenario.phones:
                if phone.one_call:
                    proc = phones[phone.agent]
                    code = await asyncio.wait_for(proc.wait(), 30)
                    if code != 0:
                        raise RuntimeError(
                            f"phone {phone.agent} ({phone.scenario}) exited with {code}: see "
                            f"{workdir}/agent-{phone.agent}-*.log"
                        )
            await rec.settle()
        finally:
            await rec.logoff()
    finally:
        await asyncio.gather(*(stop_process(p, 3) for p in phones.values()))
    data = bytes(rec.raw)
    if not data.endswith(b"\r\n\r\n") or b"Response: Goodbye\r\nActionID: logoff-1" not in data:
        raise RuntimeError(f"{scenario.name}: the recording did not end with the Logoff")
    check = AmiParser()
    check.feed(data)
    if check.buffered or check.stats.garbage_lines or check.stats.decode_errors:
        raise RuntimeError(f"{scenario.name}: the bytes do not parse cleanly: {check.stats}")
    out = out_dir / f"{scenario.name}.txt"
    out.write_bytes(header(scenario, bed.version, rec.events).encode() + data)
    return out


# ------------------------------------------------------------------ command line
async def main_async(args: argparse.Namespace) -> int:
    names = list(SCENARIOS) if args.all else args.scenarios
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        print(f"unknown or no scenario: {unknown}; --list shows them", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("run as root: scripts/asterisk-sandbox uses chroot and mount", file=sys.stderr)
        return 2
    if shutil.which("sipp") is None:
        print("sipp not found: install Debian's sip-tester package", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="record-ami-"))
    print(f"work folder (logs): {workdir}")
    failed = 0
    try:
        async with testbed(workdir, args.use_running) as bed:
            for name in names:
                started = time.monotonic()
                try:
                    path = await record(SCENARIOS[name], bed, args.out)
                except Exception as exc:  # one scenario's failure does not stop the rest
                    failed += 1
                    print(f"{name}: FAILED: {exc}", file=sys.stderr)
                    continue
                took = time.monotonic() - started
                print(f"{name}: {path} ({path.stat().st_size} bytes, {took:.0f} s)")
    finally:
        if not args.keep and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Record AMI traffic of the test bed into tests/fixtures/ami/<name>.txt.",
        epilog="Scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("scenarios", nargs="*", help="scenario names (see --list)")
    parser.add_argument("--all", action="store_true", help="record every scenario")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="folder (default: fixtures)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--use-running", action="store_true", help="use an Asterisk sandbox already up"
    )
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name}\n    {scenario.story}\n")
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
