"""The routing plan's agent-facing parts (cti.routing.plan): each queue's wrap-up and
service-level timers and the ``[[pause_reasons]]`` list: defaults, mistakes with their
place, and the round trip through plan_to_document / dumps."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from cti.routing.plan import (
    PauseReason,
    PlanError,
    QueueSpec,
    dumps,
    loads,
    parse_plan,
    plan_to_document,
)
from cti.routing.table import RoutingTable
from tests.plans import PAUSE_REASONS_TEXT

PLAN = (
    """
[[queues]]
name = "support"
wrapup_s = 30
sl_threshold_s = 15
short_abandon_s = 3

[[queues]]
name = "sales"
"""
    + PAUSE_REASONS_TEXT
)


def test_queue_timers_and_pause_reasons() -> None:
    plan = loads(PLAN)
    assert plan.queues == (
        QueueSpec("support", wrapup_s=30, sl_threshold_s=15, short_abandon_s=3),
        QueueSpec("sales", wrapup_s=0, sl_threshold_s=20, short_abandon_s=5),
    )
    assert plan.pause_reasons == (
        PauseReason("lunch", productive=False, max_minutes=60),
        PauseReason("training", productive=True, max_minutes=None),
    )
    assert plan.queue("support") == plan.queues[0]
    assert plan.queue("nowhere") is None


def test_round_trip_keeps_everything() -> None:
    plan = loads(PLAN)
    assert loads(dumps(plan)) == plan
    assert parse_plan(plan_to_document(plan)) == plan
    doc = plan_to_document(plan)
    assert doc["queues"][1] == {"name": "sales"}  # defaults are left out
    assert doc["pause_reasons"][0] == {"name": "lunch", "productive": False, "max_minutes": 60}


def test_a_plan_without_pause_reasons_writes_none() -> None:
    plan = loads('[[queues]]\nname = "q"\n')
    assert plan.pause_reasons == ()
    assert "pause_reasons" not in plan_to_document(plan)


def test_the_demo_plan_has_wrapup_and_reasons() -> None:
    text = resources.files("cti.demo").joinpath("routing.toml").read_text()
    plan = loads(text)
    for name in ("support", "sales", "billing"):
        spec = plan.queue(name)
        assert spec is not None and spec.wrapup_s > 0
    assert {r.name for r in plan.pause_reasons} >= {"lunch", "break", "training", "meeting"}
    assert loads(dumps(plan)) == plan


def test_routing_table_carries_queues_and_reasons() -> None:
    table = RoutingTable.from_plan(loads(PLAN))
    assert table.wrapup_s("support") == 30
    assert table.wrapup_s("sales") == 0
    assert table.wrapup_s("unknown") == 0
    assert table.wrapup_s(None) == 0
    assert [r.name for r in table.pause_reasons] == ["lunch", "training"]
    assert RoutingTable().wrapup_s("support") == 0


def _queue(**extra: Any) -> dict[str, Any]:
    return {"queues": [{"name": "support", **extra}]}


def _reason(**fields: Any) -> dict[str, Any]:
    return {"pause_reasons": [{"name": "lunch"}, fields]}


@pytest.mark.parametrize(
    ("doc", "where", "what"),
    [
        pytest.param(_queue(wrapup_s=-1), 'queues[1] "support".wrapup_s', "between", id="neg"),
        pytest.param(_queue(wrapup_s=3601), 'queues[1] "support".wrapup_s', "3600", id="big"),
        pytest.param(_queue(wrapup_s="30"), 'queues[1] "support".wrapup_s', "whole", id="str"),
        pytest.param(_queue(wrapup_s=True), 'queues[1] "support".wrapup_s', "whole", id="bool"),
        pytest.param(_queue(wrapup_s=1.5), 'queues[1] "support".wrapup_s', "whole", id="float"),
        pytest.param(
            _queue(sl_threshold_s=-5), 'queues[1] "support".sl_threshold_s', "between", id="sl"
        ),
        pytest.param(
            _queue(short_abandon_s="x"), 'queues[1] "support".short_abandon_s', "whole", id="sa"
        ),
        pytest.param(_queue(wrapup=30), "queues[1]", "wrapup", id="unknown-queue-key"),
        pytest.param(_reason(name="Lunch Time"), "pause_reasons[2].name", "word", id="spaces"),
        pytest.param(_reason(name="Lunch"), "pause_reasons[2].name", "lower-case", id="upper"),
        pytest.param(_reason(name="x" * 33), "pause_reasons[2].name", "32", id="long"),
        pytest.param(_reason(), "pause_reasons[2].name", "None", id="missing"),
        pytest.param(_reason(name="wrap-up"), "pause_reasons[2].name", "cti's own", id="wrapup"),
        pytest.param(_reason(name="lunch"), "pause reason 'lunch'", "twice", id="twice"),
        pytest.param(
            _reason(name="gym", productive="yes"),
            'pause_reasons[2] "gym".productive',
            "true or false",
            id="productive",
        ),
        pytest.param(
            _reason(name="gym", max_minutes=0),
            'pause_reasons[2] "gym".max_minutes',
            "between 1",
            id="zero-minutes",
        ),
        pytest.param(
            _reason(name="gym", max_minutes=True),
            'pause_reasons[2] "gym".max_minutes',
            "whole",
            id="bool-minutes",
        ),
        pytest.param(
            _reason(name="gym", limit=5), "pause_reasons[2]", "limit", id="unknown-reason-key"
        ),
        pytest.param({"pause_reasons": {"name": "x"}}, "pause_reasons", "array", id="not-array"),
        pytest.param({"pause_reasons": ["x"]}, "pause_reasons[1]", "table", id="not-table"),
    ],
)
def test_mistakes_say_where(doc: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(doc)
    assert where in str(caught.value)
    assert what in str(caught.value)


def test_too_many_pause_reasons() -> None:
    doc = {"pause_reasons": [{"name": f"r{i}"} for i in range(101)]}
    with pytest.raises(PlanError, match="at most 100"):
        parse_plan(doc)
