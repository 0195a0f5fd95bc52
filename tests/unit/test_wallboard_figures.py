"""The wallboard's figures from hand-built event sequences with known outcomes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from cti.wallboard.figures import AgentView, Figures, QueueTargets

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 12, 6, 10, 0, 0, tzinfo=PARIS).timestamp()


def queued(key, at, queue="support", tier="gold", rule="gold-first"):
    event = {"event": "queued", "call_key": key, "at": at, "queue": queue}
    return {**event, "tier": tier, "rule": rule}


def connected(key, at, agent="PJSIP/2001", queue="support"):
    return {"event": "connected", "call_key": key, "at": at, "agent": agent, "queue": queue}


def abandoned(key, at, queue="support", hold=None):
    return {"event": "abandoned", "call_key": key, "at": at, "queue": queue, "hold_time_s": hold}


def ended(key, at):
    return {"event": "ended", "call_key": key, "at": at, "agent": None}


def agent_state(agent, at, state, reason=None, members=(("support", None),)):
    """An agent_state event as cti.agents.news makes it (members: (queue, state))."""
    return {
        "event": "agent_state",
        "call_key": f"agent:{agent}",
        "at": at,
        "agent": agent,
        "state": state,
        "reason": reason,
        "since": at,
        "memberships": [
            {"queue": q, "state": s or state, "reason": reason, "since": at, "paused": False}
            for q, s in members
        ],
    }


def run(figures, events):
    for event in events:
        figures.apply(event)


def test_service_level_counts_the_thresholds_exactly():
    figures = Figures(PARIS)
    run(
        figures,
        [
            queued("a", T0),
            connected("a", T0 + 20.0),  # exactly the threshold: within
            queued("b", T0 + 1),
            connected("b", T0 + 1 + 20.001, agent="PJSIP/2002"),  # just after: not within
            queued("c", T0 + 2),
            abandoned("c", T0 + 2 + 5.0),  # exactly the short-abandon threshold: short
            queued("d", T0 + 3),
            abandoned("d", T0 + 3 + 5.5),  # after it: counted
            queued("e", T0 + 4),  # still waiting
        ],
    )
    view = figures.queue_view("support", T0 + 30)
    today = view["today"]
    assert today["offered"] == 5
    assert today["answered"] == 2
    assert today["answered_within"] == 1
    assert today["abandoned"] == 2
    assert today["short_abandoned"] == 1
    assert today["service_level"] == pytest.approx(1 / 3)  # 1 / (2 + 1)
    assert today["abandon_rate"] == pytest.approx(1 / 3)
    assert today["asa_s"] == pytest.approx((20.0 + 20.001) / 2)
    assert view["waiting"] == 1
    assert view["oldest_wait_since"] == T0 + 4
    assert view["rolling_30m"] == today


def test_targets_come_from_the_plan_per_queue():
    figures = Figures(PARIS, lambda q: QueueTargets(10, 2) if q == "sales" else QueueTargets())
    run(figures, [queued("a", T0, "sales"), connected("a", T0 + 15, queue="sales")])
    run(figures, [queued("b", T0, "support"), connected("b", T0 + 15)])
    assert figures.queue_view("sales", T0 + 20)["today"]["service_level"] == 0
    assert figures.queue_view("support", T0 + 20)["today"]["service_level"] == 1
    assert figures.queue_view("sales", T0 + 20)["sl_threshold_s"] == 10


def test_no_denominator_means_no_service_level():
    figures = Figures(PARIS)
    run(figures, [queued("a", T0), abandoned("a", T0 + 1)])
    today = figures.queue_view("support", T0 + 2)["today"]
    assert today["service_level"] is None and today["abandon_rate"] is None
    assert today["abandoned"] == today["short_abandoned"] == 1


def test_per_tier_and_rule_waiting_and_average_wait():
    figures = Figures(PARIS)
    run(
        figures,
        [
            queued("g1", T0, tier="gold", rule="vip"),
            connected("g1", T0 + 4),
            queued("g2", T0, tier="gold", rule="vip"),
            connected("g2", T0 + 6, agent="PJSIP/2002"),
            queued("b1", T0, tier="bronze", rule="default"),
            abandoned("b1", T0 + 30),
            queued("b2", T0 + 40, tier="bronze", rule="default"),
        ],
    )
    view = figures.queue_view("support", T0 + 50)
    assert view["tiers"]["gold"] == {"waiting": 0, "waited_today": 2, "avg_wait_s": 5.0}
    assert view["tiers"]["bronze"] == {"waiting": 1, "waited_today": 1, "avg_wait_s": 30.0}
    assert view["rules"]["vip"]["avg_wait_s"] == 5.0
    assert view["rules"]["default"]["waiting"] == 1


def test_today_is_the_local_day_not_utc():
    # Paris is UTC+1 in December: 00:10 on the 7th in Paris is still the 6th in UTC,
    # so a UTC day would not have turned yet.
    late = datetime(2026, 12, 6, 23, 50, tzinfo=PARIS).timestamp()
    after_midnight = datetime(2026, 12, 7, 0, 10, tzinfo=PARIS).timestamp()
    figures = Figures(PARIS)
    run(figures, [queued("a", late), connected("a", late + 10), queued("b", late + 60)])
    assert figures.queue_view("support", late + 70)["today"]["offered"] == 2
    # A snapshot after local midnight, before any event: nothing today, rolling still.
    view = figures.queue_view("support", after_midnight)
    assert view["today"]["offered"] == 0
    assert view["rolling_30m"]["offered"] == 2  # no reset gap in the rolling window
    assert view["waiting"] == 1  # a call waiting across midnight still waits
    # The call that waited across midnight is answered on the new day: counted there.
    run(figures, [connected("b", after_midnight + 5)])
    view = figures.queue_view("support", after_midnight + 6)
    assert view["today"]["offered"] == 0
    assert view["today"]["answered"] == 1
    assert view["rolling_30m"]["answered"] == 2
    assert figures.day == "2026-12-07"
    assert datetime.fromtimestamp(after_midnight, ZoneInfo("UTC")).day == 6


def test_rolling_window_drops_minutes_older_than_thirty():
    figures = Figures(PARIS)
    run(figures, [queued("a", T0), connected("a", T0 + 1)])
    run(figures, [queued("b", T0 + 29 * 60), connected("b", T0 + 29 * 60 + 1)])
    assert figures.rolling("support", T0 + 29 * 60 + 2).answered == 2
    assert figures.rolling("support", T0 + 30 * 60 + 2).answered == 1
    assert figures.rolling("support", T0 + 59 * 60 + 2).answered == 0


def test_agents_current_call_handled_today_and_pause_over_max():
    figures = Figures(PARIS)
    run(figures, [queued("a", T0, tier="gold"), connected("a", T0 + 3)])
    status = AgentView("PJSIP/2001", "on_call", None, T0 + 3, ("support",))
    view = figures.agent_view("PJSIP/2001", T0 + 10, status)
    assert view["call"] == {"queue": "support", "tier": "gold", "talk_since": T0 + 3}
    assert view["handled_today"] == 1
    run(figures, [ended("a", T0 + 60)])
    assert figures.agent_view("PJSIP/2001", T0 + 61, status)["call"] is None
    paused = AgentView("PJSIP/2001", "paused", "lunch", T0 + 60, ("support",), max_minutes=30)
    assert not figures.agent_view("PJSIP/2001", T0 + 60 + 30 * 60, paused)["pause_over_max"]
    assert figures.agent_view("PJSIP/2001", T0 + 61 + 30 * 60, paused)["pause_over_max"]


def test_agents_by_state_and_pause_reason_per_queue():
    figures = Figures(PARIS)
    agents = [
        AgentView("PJSIP/2001", "available", None, T0, ("support", "sales")),
        AgentView("PJSIP/2002", "paused", "lunch", T0, ("support",)),
        AgentView("PJSIP/2003", "paused", "training", T0, ("support",)),
        AgentView("PJSIP/2004", "wrap_up", "wrap-up", T0, ("sales",)),
    ]
    snap = figures.snapshot(T0, agents)
    support = snap["queues"]["support"]
    assert support["agents"]["available"] == 1 and support["agents"]["paused"] == 2
    assert support["paused_by_reason"] == {"lunch": 1, "training": 1}
    assert snap["queues"]["sales"]["agents"]["wrap_up"] == 1
    assert set(snap["agents"]) == {"PJSIP/2001", "PJSIP/2002", "PJSIP/2003", "PJSIP/2004"}
    assert snap["timezone"] == "Europe/Paris" and "Service level" in snap["formula"]


def test_state_round_trips_and_a_takeover_continues_the_counts():
    figures = Figures(PARIS)
    run(figures, [queued("a", T0), connected("a", T0 + 3), queued("b", T0 + 5)])
    copy = Figures(PARIS)
    copy.load_state(figures.to_state())
    assert copy.snapshot(T0 + 6) == figures.snapshot(T0 + 6)
    run(copy, [abandoned("b", T0 + 30)])
    today = copy.queue_view("support", T0 + 31)["today"]
    assert (today["offered"], today["answered"], today["abandoned"]) == (2, 1, 1)


def test_abandon_of_an_unknown_call_uses_asterisks_hold_time():
    figures = Figures(PARIS)
    run(figures, [abandoned("x", T0, hold=3), abandoned("y", T0, hold=9)])
    today = figures.queue_view("support", T0)["today"]
    assert (today["abandoned"], today["short_abandoned"]) == (2, 1)


def test_malformed_events_change_nothing():
    figures = Figures(PARIS)
    for event in ({}, {"event": "queued"}, {"event": "queued", "call_key": "a", "at": "x"}):
        assert not figures.apply(event)
    assert figures.snapshot(T0)["queues"] == {}


def test_agent_states_come_from_their_events_and_survive_a_takeover():
    figures = Figures(PARIS, pause_max=lambda reason: 15 if reason == "lunch" else None)
    changed = figures.apply(
        agent_state("PJSIP/2001", T0, "on_call", members=(("support", None), ("sales", None)))
    )
    assert changed.agents == {"PJSIP/2001"} and changed.queues == {"support", "sales"}
    figures.apply(agent_state("PJSIP/2002", T0, "paused", "lunch"))
    figures.apply(
        agent_state(
            "PJSIP/2003", T0, "paused", "training", (("support", "paused"), ("sales", "available"))
        )
    )
    snap = figures.snapshot(T0 + 16 * 60)
    assert snap["queues"]["support"]["agents"]["on_call"] == 1
    assert snap["queues"]["support"]["paused_by_reason"] == {"lunch": 1, "training": 1}
    assert snap["queues"]["sales"]["agents"]["available"] == 1  # 2003's own state there
    lunch = snap["agents"]["PJSIP/2002"]
    assert lunch["max_minutes"] == 15 and lunch["pause_over_max"]
    assert not snap["agents"]["PJSIP/2003"]["pause_over_max"]  # no maximum for training
    # A move between queues changes both.
    changed = figures.apply(
        agent_state("PJSIP/2001", T0 + 1, "available", None, (("sales", None),))
    )
    assert changed.queues == {"support", "sales"}
    copy = Figures(PARIS, pause_max=figures.pause_max)
    copy.load_state(figures.to_state())
    assert copy.snapshot(T0 + 20 * 60) == figures.snapshot(T0 + 20 * 60)


def test_a_caller_the_queue_let_go_is_no_longer_waiting_nor_abandoned():
    figures = Figures(PARIS)
    left = {"event": "queue_left", "call_key": "t", "at": T0 + 20, "queue": "support"}
    run(figures, [queued("t", T0), {**left, "reason": "timeout"}, queued("w", T0 + 21)])
    view = figures.queue_view("support", T0 + 30)
    assert view["tiers"]["gold"]["waiting"] == 1  # "w" only
    assert view["today"]["abandoned"] == 0


def test_a_call_that_crossed_pbxes_ends_part_by_part() -> None:
    """a's agent blind-transfers the call to b's queue; a's part ends (its ``ended``,
    pbx a) while the caller waits on b, then b's agent answers: the caller stays waiting
    on b until then, and a's end never clears b's agent."""
    figures = Figures(PARIS)

    def on(pbx, event):
        return {**event, "pbx": pbx}

    run(
        figures,
        [
            on("a", queued("x", T0)),
            on("a", connected("x", T0 + 2, agent="PJSIP/2001")),
            on("b", queued("x", T0 + 30)),
            on("a", ended("x", T0 + 31)),
        ],
    )
    assert figures.queue_view("support", T0 + 32)["waiting"] == 1
    run(figures, [on("b", connected("x", T0 + 40, agent="PJSIP/2001@b"))])
    run(figures, [on("a", ended("x", T0 + 41))])  # a late or repeated end of a's part
    status = AgentView("PJSIP/2001@b", "on_call", None, T0 + 40, ("support",))
    assert figures.agent_view("PJSIP/2001@b", T0 + 42, status)["call"] is not None
    run(figures, [on("b", ended("x", T0 + 90))])
    assert figures.agent_view("PJSIP/2001@b", T0 + 91, status)["call"] is None
    assert figures.queue_view("support", T0 + 91)["waiting"] == 0
