"""Agent states on several PBXes (cti.agents.state, cti.agents.news): one board per PBX,
fed that PBX's AMI traffic (recorded captures, tests/fixtures/ami) through that PBX's
call model; a PBX other than the home one names its agents ``PJSIP/2001@b``, so the
same capture on two PBXes makes two sets of agents that never collide."""

from __future__ import annotations

import hashlib
import json

import pytest

from cti.agents.news import agent_event
from cti.agents.state import AgentBoard, AgentChanged, AgentState, status_to_json
from cti.ami.protocol import Message, MessageKind
from cti.calls.tracker import model_for
from cti.pbx import Pbx
from tests.unit import ami_replay
from tests.unit.test_agent_state import feed, history

S = AgentState
HOME = Pbx("a", "127.0.0.1", 5038, "cti", home=True)
B = Pbx("b", "127.0.0.1", 5039, "cti", home=False)


def replay(name: str, pbx: Pbx, wrapup_s: int = 30) -> tuple[AgentBoard, list[AgentChanged]]:
    """The capture through ``pbx``'s call model and board, as the daemon feeds them."""
    board = AgentBoard(wrapup_s=lambda q: wrapup_s if q else 0, clock=lambda: 1000.0, pbx=pbx)
    return board, feed(name, model_for(pbx), board)


def event(name: str, **fields: str) -> Message:
    return Message(MessageKind.EVENT, name, {k.lower(): v for k, v in fields.items()})


@pytest.mark.parametrize("capture", ["answered_call", "attended_transfer_phone", "local_member"])
def test_a_pbx_b_capture_names_every_agent_of_b(capture: str) -> None:
    board, changes = replay(capture, B)
    names = {c.status.agent for c in changes} | set(board.snapshot())
    assert names and all(name.endswith("@b") for name in names), names
    assert {c.status.pbx for c in changes} == {"b"}
    home, home_changes = replay(capture, HOME)
    home_names = {c.status.agent for c in home_changes} | set(home.snapshot())
    # The same devices on the home PBX keep their plain names: two sets, no collision.
    assert home_names == {name.removesuffix("@b") for name in names}
    assert not home_names & names
    for name in home_names:
        assert history(home_changes, name) == history(changes, name + "@b")


def test_an_answered_call_on_b_rings_talks_and_wraps_up_2001_at_b() -> None:
    board, changes = replay("answered_call", B)
    assert history(changes, "PJSIP/2001@b") == [S.RINGING, S.ON_CALL, S.WRAP_UP]
    status = board.snapshot()["PJSIP/2001@b"]
    assert (status.queue, status.pbx) == ("support", "b")
    assert board.wrap_up("PJSIP/2001@b") is not None
    assert board.due(status.wrapup_until or 0) == ["PJSIP/2001@b"]
    # What QueuePause must name on b: the member's interface as b knows it.
    assert set(board.interfaces("PJSIP/2001@b").values()) == {"PJSIP/2001"}


def test_roster_and_device_states_of_b_are_qualified_and_interfaces_kept() -> None:
    board = AgentBoard(pbx=B, clock=lambda: 5.0)
    member = {"Queue": "support", "Status": "1", "Paused": "0"}
    board.apply(event("QueueMemberStatus", Interface="PJSIP/2001", **member))
    board.apply(
        event(
            "QueueMember",
            Location="Local/2006@agents/n",
            StateInterface="PJSIP/2006",
            **member,
        )
    )
    assert set(board.snapshot()) == {"PJSIP/2001@b", "PJSIP/2006@b"}
    assert board.interfaces("PJSIP/2006@b") == {"support": "Local/2006@agents/n"}
    [changed] = board.apply(event("DeviceStateChange", Device="PJSIP/2001", State="INUSE"))
    assert (changed.status.agent, changed.status.state) == ("PJSIP/2001@b", S.ON_CALL)
    [paused] = board.apply(
        event(
            "QueueMemberPause",
            Queue="support",
            Interface="PJSIP/2006@b",  # already qualified: stays as it is
            Paused="1",
            PausedReason="lunch",
        )
    )
    assert (paused.status.agent, paused.status.state) == ("PJSIP/2006@b", S.PAUSED)


def test_each_board_owns_its_pbxs_agents_only() -> None:
    home, b = AgentBoard(pbx=HOME), AgentBoard(pbx=B)
    assert home.owns("PJSIP/2001") and not home.owns("PJSIP/2001@b")
    assert b.owns("PJSIP/2001@b") and not b.owns("PJSIP/2001")
    assert not b.owns("PJSIP/2001@c")
    assert (b.device("PJSIP/2001"), b.device("PJSIP/2001@b")) == ("PJSIP/2001@b",) * 2
    assert home.device("PJSIP/2001") == "PJSIP/2001"
    assert AgentBoard().pbx_name == "default"


def test_agent_state_events_carry_the_pbx_and_never_share_a_fingerprint() -> None:
    _, on_b = replay("answered_call", B)
    _, on_a = replay("answered_call", HOME)
    _, alone = replay("answered_call", Pbx("default", "h", 1, "u"))
    events_b = [agent_event(c) for c in on_b]
    events_a = [agent_event(c) for c in on_a]
    assert {(e.pbx, e.call_key) for e in events_b} == {("b", "agent:PJSIP/2001@b")}
    assert {e.recipients for e in events_b} == {("PJSIP/2001@b",)}
    assert all(e.fingerprint.startswith("@b|state|") for e in events_b)
    assert all(e.fingerprint.startswith("state|") for e in events_a)
    assert not {e.fingerprint for e in events_a} & {e.fingerprint for e in events_b}
    wire = events_b[0].as_json()
    assert (wire["pbx"], wire["agent"]) == ("b", "PJSIP/2001@b")
    # The one PBX of a deployment without CTI_PBXES: the fingerprints it always had
    # (the status without its pbx), and its events say "default".
    plain = AgentBoard(wrapup_s=lambda q: 30 if q else 0, clock=lambda: 1000.0)
    model = model_for(None)
    legacy = []
    for msg in ami_replay.parse(ami_replay.load("answered_call")):
        legacy += plain.apply_effects(model.apply(msg))
        legacy += plain.apply(msg)
    assert [agent_event(c).fingerprint for c in legacy] == [
        agent_event(c).fingerprint for c in alone
    ]
    assert {agent_event(c).pbx for c in legacy} == {"default"}
    before_pbxes = {k: v for k, v in status_to_json(legacy[0].status).items() if k != "pbx"}
    digest = hashlib.sha1(
        json.dumps(before_pbxes, sort_keys=True, separators=(",", ":")).encode(),
        usedforsecurity=False,
    ).hexdigest()
    assert agent_event(legacy[0]).fingerprint == f"state|{digest}"
