"""Call control over several PBXes (cti.calls.control): which PBX's model knows a call
key, and which PBX an action goes to. The AMI clients are never connected: an action
that reaches one is refused ``ami_unavailable`` naming that PBX, which is how these
tests see where it went (the sockets' side is tests/integration/test_several_pbxes.py).
"""

from __future__ import annotations

import pytest

from cti.ami import AmiClient
from cti.calls.control import CallControl, PbxLine, model_key
from cti.calls.effects import AgentConnected
from cti.calls.sink import CallModelSink
from cti.calls.tracker import model_for
from cti.errors import DomainError
from cti.pbx import Pbx
from tests.unit.ami_replay import parse, renamed_events

A = Pbx("a", "127.0.0.1", 1, "cti", home=True)
B = Pbx("b", "127.0.0.1", 1, "cti", home=False)


def test_a_call_id_is_the_same_key_on_every_pbx() -> None:
    assert model_key("0b7e-call-id", "a", home=True) == "0b7e-call-id"
    assert model_key("0b7e-call-id", "b", home=False) == "0b7e-call-id"


def test_a_linkedid_key_belongs_to_its_own_pbx_only() -> None:
    assert model_key("L:1795.12", "a", home=True) == "1795.12"
    assert model_key("L:1795.12", "b", home=False) is None
    assert model_key("L:1795.12@b", "b", home=False) == "1795.12"
    assert model_key("L:1795.12@b", "a", home=True) is None


def control() -> tuple[CallControl, CallModelSink]:
    sink_b = CallModelSink(model_for(B))
    lines = [
        PbxLine(pbx.name, AmiClient("127.0.0.1", 1, "cti", "x", events_sink=CallModelSink()), model)
        for pbx, model in ((A, model_for(A)), (B, sink_b.model))
    ]
    return CallControl.over(lines), sink_b


async def refused_on(action) -> str:
    with pytest.raises(DomainError) as refused:
        await action
    assert refused.value.code == "ami_unavailable", refused.value
    return str(refused.value)


async def test_each_action_goes_to_the_pbx_its_device_names() -> None:
    calls, _ = control()
    assert "Asterisk b" in await refused_on(calls.pause("PJSIP/2001@b", True))
    assert "Asterisk a" in await refused_on(calls.pause("PJSIP/2001", True))
    assert "Asterisk b" in await refused_on(calls.send("QueueAdd", Interface="PJSIP/2001@b"))
    assert "Asterisk a" in await refused_on(calls.send("Originate", Channel="PJSIP/3001"))
    assert "Asterisk b" in await refused_on(calls.send("Ping", pbx="b"))


async def test_devices_of_two_pbxes_in_one_action_or_an_unknown_pbx_are_invalid() -> None:
    calls, _ = control()
    for action in (
        calls.send("Originate", Channel="PJSIP/3001@b", Interface="PJSIP/2001"),
        calls.send("Originate", pbx="a", Channel="PJSIP/3001@b"),
        calls.pause("PJSIP/2001@c", True),
    ):
        with pytest.raises(DomainError) as refused:
            await action
        assert refused.value.code == "invalid"


async def test_the_agents_leg_is_found_on_its_own_pbx() -> None:
    calls, sink_b = control()
    for msg in parse(b"".join(renamed_events("answered_call", "x")[:24])):
        sink_b.apply(msg)
    [connected] = [e for e in sink_b.effects if isinstance(e, AgentConnected)]
    call_id = connected.call_id
    assert call_id and connected.agent == "PJSIP/2001@b"
    leg = calls.agent_leg(call_id, "PJSIP/2001@b")
    assert leg.name.startswith("PJSIP/2001-") and leg.agent == "PJSIP/2001@b"
    assert calls.talking_leg("PJSIP/2001@b") is leg and calls.where("PJSIP/2001@b") == "b"
    with pytest.raises(DomainError) as refused:
        calls.agent_leg(call_id, "PJSIP/2001")  # a's 2001 is another phone
    assert refused.value.code == "not_on_call"
    assert "Asterisk b" in await refused_on(calls.hangup(call_id, "PJSIP/2001@b"))
