"""The supervisor actions' rules, without sockets: which reasons and queues the plan
allows, the ChanSpy options of each mode, and which leg a supervisor spies on (found
in the call model replayed from a recorded capture)."""

from __future__ import annotations

import pytest

from cti.agents.supervision import SPY_CHANNEL, SPY_OPTIONS, check_plan_queue, check_plan_reason
from cti.calls.control import CallControl
from cti.calls.sink import CallModelSink
from cti.errors import DomainError
from cti.routing.table import RoutingTable
from tests.plans import PLAN
from tests.unit.ami_replay import load, parse


@pytest.mark.parametrize("reason", ["lunch", "training", None])
def test_the_plans_reasons_are_allowed(reason: str | None) -> None:
    assert check_plan_reason(PLAN, reason) == reason


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("nap", "not_in_plan"),  # well formed, not the plan's (it may be one day)
        ("Lunch", "not_in_plan"),  # names are exact
        ("lunch ", "not_in_plan"),
        ("wrap-up", "not_in_plan"),  # cti's own, never a person's choice
        ("lunch\r\nAction: Hangup", "invalid"),  # refused for its characters first
        ("l" * 65, "invalid"),
    ],
)
def test_any_other_reason_is_refused(reason: str, code: str) -> None:
    with pytest.raises(DomainError) as refused:
        check_plan_reason(PLAN, reason)
    assert (refused.value.code, refused.value.field) == (code, "reason")


def test_a_plan_without_reasons_allows_none_and_says_so() -> None:
    with pytest.raises(DomainError, match="none are defined"):
        check_plan_reason(RoutingTable(), "lunch")


def test_only_the_plans_queues_are_allowed() -> None:
    assert check_plan_queue(PLAN, "support") == "support"
    for queue in ("billing", "Support", ""):
        with pytest.raises(DomainError) as refused:
            check_plan_queue(PLAN, queue)
        assert (refused.value.code, refused.value.field) == ("not_in_plan", "queue")


def test_every_mode_is_quiet_and_ends_with_the_agents_leg() -> None:
    assert SPY_OPTIONS == {"listen": "qES", "whisper": "qESw", "barge": "qESB"}
    assert SPY_CHANNEL.fullmatch("PJSIP/2001-0000001a")
    for name in ("PJSIP/2001-1,B", "PJSIP/2001 x", "Local/2001@agents-1;1|x"):
        assert not SPY_CHANNEL.fullmatch(name)


def test_the_leg_spied_on_is_the_one_the_agent_talks_on_now() -> None:
    sink = CallModelSink()
    control = CallControl(None, sink.model)  # type: ignore[arg-type]  # no action is sent
    messages = parse(load("answered_call"))
    legs = []
    for msg in messages:
        sink.apply(msg)
        try:
            legs.append(control.talking_leg("PJSIP/2001").name)
        except DomainError as exc:
            assert exc.code == "not_on_call"
    assert legs, "alice never talked"
    assert set(legs) == {legs[0]} and legs[0].startswith("PJSIP/2001-")
    with pytest.raises(DomainError) as refused:  # the call is over
        control.talking_leg("PJSIP/2001")
    assert refused.value.code == "not_on_call"
    with pytest.raises(DomainError) as refused:
        control.talking_leg("PJSIP/2002")
    assert refused.value.code == "not_on_call"
    with pytest.raises(DomainError) as refused:
        control.talking_leg("not a device")
    assert refused.value.code == "invalid"
