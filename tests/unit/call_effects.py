"""Model effects for one hand-built call, and :func:`events` to turn them into the
timeline events the daemon stores (through :func:`cti.calls.events.to_events`).

Times are seconds after :data:`T0`; ``queue`` defaults to ``"sales"``."""

from __future__ import annotations

from cti.calls import effects as fx
from cti.calls.events import CallEvent, to_events

T0 = 1_700_000_000.0
CALL = {"call_id": "3f1c9a52-5d7e-4a3b-9c1d-2b7f8e6a4c10", "linkedid": "1700000000.1"}
ALICE, BOB, CAROL, DAVE = "PJSIP/2001", "PJSIP/2002", "PJSIP/2003", "PJSIP/2004"
#: Each agent's channel (its leg) in the call.
LEG = {a: f"{a}-0000000{i}" for i, a in enumerate((ALICE, BOB, CAROL, DAVE))}


def events(*effects: fx.Effect) -> list[CallEvent]:
    return [event for effect in effects for event in to_events(effect, now=T0 + 9_999)]


def queued(t: float, queue: str = "sales") -> fx.CallQueued:
    return fx.CallQueued(**CALL, at=T0 + t, queue=queue, position=1, priority=10)


def ringing(t: float, agent: str, queue: str | None = "sales") -> fx.AgentRinging:
    return fx.AgentRinging(
        **CALL, at=T0 + t, agent=agent, member_name=None, channel=LEG[agent], queue=queue
    )


def no_answer(t: float, agent: str) -> fx.AgentRingNoAnswer:
    return fx.AgentRingNoAnswer(
        **CALL, at=T0 + t, agent=agent, member_name=None, channel=LEG[agent], queue="sales",
        ring_time_ms=None,
    )  # fmt: skip


def connected(
    t: float, agent: str, queue: str | None = "sales", via: tuple[str, ...] = ()
) -> fx.AgentConnected:
    return fx.AgentConnected(
        **CALL, at=T0 + t, agent=agent, member_name=None, channel=LEG[agent], queue=queue, via=via
    )


def left(t: float, agent: str) -> fx.AgentLeft:
    return fx.AgentLeft(**CALL, at=T0 + t, agent=agent, channel=LEG[agent])


def held(t: float, agent: str) -> fx.CallHeld:
    return fx.CallHeld(**CALL, at=T0 + t, by=agent, channel=LEG[agent])


def unheld(t: float, agent: str) -> fx.CallUnheld:
    return fx.CallUnheld(**CALL, at=T0 + t, by=agent, channel=LEG[agent])


def ended(t: float, *agents: str, abandoned: bool = False) -> fx.CallEnded:
    return fx.CallEnded(
        **CALL, at=T0 + t, cause="16", cause_txt="Normal Clearing", abandoned=abandoned,
        agents=agents,
    )  # fmt: skip


def abandoned(t: float, queue: str = "sales") -> fx.CallAbandoned:
    return fx.CallAbandoned(
        **CALL, at=T0 + t, queue=queue, position=1, original_position=1, hold_time_s=int(t)
    )


def blind(t: float, agent: str, to: str) -> fx.CallTransferred:
    return fx.CallTransferred(
        **CALL, at=T0 + t, kind=fx.TransferKind.BLIND, from_agent=agent, to=to, context="agents"
    )


def attended(t: float, agent: str, to: str) -> fx.CallTransferred:
    return fx.CallTransferred(
        **CALL, at=T0 + t, kind=fx.TransferKind.ATTENDED, from_agent=agent, to=to,
        to_channel=LEG[to],
    )  # fmt: skip
