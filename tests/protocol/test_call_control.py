"""Call control (cti.calls.control) over a real AMI socket against the fake Asterisk.

The model is fed a recorded call (agent 2001 talking to a caller), then the sidebar's
actions go out as AMI actions on the agent's own leg; every refusal is a clear
:class:`~cti.errors.DomainError` and sends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cti.ami import AmiClient, Message
from cti.calls.control import CallControl
from cti.calls.effects import AgentConnected
from cti.calls.sink import CallModelSink
from cti.errors import DomainError
from tests.fakes.ami_server import FakeAmi
from tests.unit.ami_replay import load, parse
from tests.waiting import until


def talking_call(sink: CallModelSink) -> tuple[str, str]:
    """Feed answered_call up to the agent's connection; (call id, agent leg name)."""
    for msg in parse(load("answered_call")):
        sink.apply(msg)
        connected = [e for e in sink.effects if isinstance(e, AgentConnected)]
        if connected:
            assert connected[0].call_id
            return connected[0].call_id, connected[0].channel
    raise AssertionError("the capture has no AgentConnected")


@pytest.fixture
async def setup() -> AsyncIterator[tuple[FakeAmi, AmiClient, CallControl, str, str]]:
    fake = await FakeAmi().start()
    sink = CallModelSink()
    client = AmiClient("127.0.0.1", fake.port, "cti", "s3cret", events_sink=sink)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    await until(lambda: client.is_connected)
    await until(lambda: sink.up)
    call_id, leg = talking_call(sink)
    yield fake, client, CallControl(client, sink.model), call_id, leg
    stop.set()
    await asyncio.wait_for(task, 5)
    await fake.close()


def sent(fake: FakeAmi, name: str) -> list[Message]:
    return fake.actions(name)


async def test_blind_transfer_acts_on_the_agents_own_leg(setup) -> None:
    fake, _client, control, call_id, leg = setup
    fake.responses["BlindTransfer"] = {"Message": "Transfer succeeded"}
    await control.blind_transfer(call_id, "PJSIP/2001", "sales")
    (action,) = sent(fake, "BlindTransfer")
    assert action.get("Channel") == leg and leg.startswith("PJSIP/2001-")
    assert action.get("Context") == "agents" and action.get("Exten") == "sales"


async def test_attended_transfer_then_complete(setup) -> None:
    fake, _client, control, call_id, leg = setup
    fake.responses["Atxfer"] = {"Message": "Atxfer successfully queued"}
    fake.responses["Hangup"] = {"Message": "Channel Hungup"}
    await control.attended_transfer(call_id, "PJSIP/2001", "2003")
    await control.complete_transfer(call_id, "PJSIP/2001")
    (atxfer,) = sent(fake, "Atxfer")
    assert (atxfer.get("Channel"), atxfer.get("Exten")) == (leg, "2003")
    assert [m.get("Channel") for m in sent(fake, "Hangup")] == [leg]


@pytest.mark.parametrize(
    ("call", "agent", "target", "code"),
    [
        ("no-such-call", "PJSIP/2001", "sales", "unknown_call"),
        (None, "PJSIP/2002", "sales", "not_on_call"),  # another agent's call
        (None, "PJSIP/2001", "sales;Hangup", "invalid"),  # injection into the dialplan
        (None, "PJSIP/2001", "", "invalid"),
        (None, "PJSIP/2001", "x" * 33, "invalid"),
        (None, "PJSIP 2001\r\nAction: Hangup", "sales", "invalid"),  # header injection
    ],
)
async def test_refusals_send_nothing(setup, call, agent, target, code) -> None:
    fake, _client, control, call_id, _leg = setup
    with pytest.raises(DomainError) as caught:
        await control.blind_transfer(call or call_id, agent, target)
    assert caught.value.code == code and caught.value.message
    assert sent(fake, "BlindTransfer") == []


async def test_asterisk_refusal_is_reported(setup) -> None:
    fake, _client, control, call_id, _leg = setup
    fake.responses["BlindTransfer"] = {"Response": "Error", "Message": "No such channel"}
    with pytest.raises(DomainError) as caught:
        await control.blind_transfer(call_id, "PJSIP/2001", "sales")
    assert caught.value.code == "refused" and "No such channel" in caught.value.message


async def test_no_ami_connection_is_reported(setup) -> None:
    fake, client, control, call_id, _leg = setup
    await fake.close()
    await until(lambda: not client.is_connected)
    with pytest.raises(DomainError) as caught:
        await control.hangup(call_id, "PJSIP/2001")
    assert caught.value.code == "ami_unavailable"


async def test_pause_goes_out_on_the_agents_device_with_its_reason(setup) -> None:
    fake, _client, control, _call_id, _leg = setup
    fake.responses["QueuePause"] = {"Message": "Interface paused successfully"}
    await control.pause("PJSIP/2001", True, "lunch")
    await control.pause("PJSIP/2001", False, "")
    paused, resumed = sent(fake, "QueuePause")
    assert (paused.get("Interface"), paused.get("Paused"), paused.get("Reason")) == (
        "PJSIP/2001",
        "true",
        "lunch",
    )
    assert (resumed.get("Paused"), resumed.get("Reason"), resumed.get("Queue")) == (
        "false",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("agent", "reason", "field"),
    [
        ("PJSIP/2001", "lunch\r\nAction: Hangup", "reason"),  # header injection
        ("PJSIP/2001", "r" * 65, "reason"),
        ("PJSIP 2001\r\nAction: Hangup", None, None),
    ],
)
async def test_pause_refusals_send_nothing(setup, agent, reason, field) -> None:
    fake, _client, control, _call_id, _leg = setup
    with pytest.raises(DomainError) as caught:
        await control.pause(agent, True, reason)
    assert (caught.value.code, caught.value.field) == ("invalid", field)
    assert sent(fake, "QueuePause") == []


async def test_a_pause_asterisk_refuses_is_reported(setup) -> None:
    fake, _client, control, _call_id, _leg = setup
    fake.responses["QueuePause"] = {"Response": "Error", "Message": "Interface not found"}
    with pytest.raises(DomainError) as caught:
        await control.pause("PJSIP/2001", True)
    assert caught.value.code == "refused" and "Interface not found" in caught.value.message
