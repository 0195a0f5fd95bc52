"""Every report definition on hand-built offers, with the edges at the thresholds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cti.reports.definitions import (
    DEFINITIONS,
    MEASURES,
    Thresholds,
    Totals,
    add,
    figures,
    queue_thresholds,
    sql_select,
    zero,
)

T = Thresholds(sl_threshold_s=20, short_abandon_s=5)


@dataclass(frozen=True)
class Off:
    outcome: str
    wait_s: float
    talk_s: float = 0.0
    hold_s: float = 0.0
    wrapup_s: float = 0.0


def totals(*offers: Off, transfers: int = 0) -> Totals:
    t = zero()
    for offer in offers:
        add(t, offer, T, transfers)
    return t


def test_ciscos_worked_example_gives_77_8_70_and_80_percent():
    offers = [Off("answered", 10)] * 70 + [Off("abandoned", 10)] * 10 + [Off("answered", 60)] * 20
    f = figures(totals(*offers))
    assert (f["offered"], f["answered_in_sl"], f["abandoned_in_sl"]) == (100, 70, 10)
    assert f["sl_ignore_abandons"] == pytest.approx(77.78)
    assert f["sl_abandons_negative"] == 70.0
    assert f["sl_abandons_positive"] == 80.0


def test_abandoned_exactly_at_the_thresholds():
    f = figures(
        totals(
            Off("abandoned", 4.99),
            Off("abandoned", 5.0),
            Off("abandoned", 20.0),
            Off("abandoned", 20.01),
        )
    )
    # Short: wait < 5 s. Within the threshold: wait <= 20 s.
    assert (f["short_abandoned"], f["abandoned"], f["abandoned_in_sl"], f["offered"]) == (
        1,
        3,
        2,
        3,
    )
    assert f["avg_abandon_s"] == pytest.approx(round((5 + 20 + 20.01) / 3, 1))


def test_answered_exactly_at_the_threshold_is_within_it():
    f = figures(totals(Off("answered", 20.0), Off("answered", 20.5)))
    assert (f["answered"], f["answered_in_sl"], f["asa_s"], f["max_wait_s"]) == (2, 1, 20.2, 20.5)


def test_short_abandons_are_not_offered_nor_waited():
    f = figures(totals(Off("abandoned", 2), Off("answered", 10)))
    assert (f["offered"], f["short_abandoned"], f["avg_wait_s"], f["max_wait_s"]) == (
        1,
        1,
        10.0,
        10.0,
    )


def test_outcomes_add_up_to_offered():
    f = figures(
        totals(
            Off("answered", 1), Off("abandoned", 30), Off("timed_out", 300),
            Off("sent_elsewhere", 60), Off("transferred_out", 5),
        )
    )  # fmt: skip
    assert f["offered"] == 5
    assert (f["timed_out"], f["sent_elsewhere"], f["transfers_out"]) == (1, 1, 1)
    assert f["avg_wait_s"] == pytest.approx(round((1 + 30 + 300 + 60 + 5) / 5, 1))


def test_handle_time_is_talk_plus_hold_plus_wrapup_per_answered():
    f = figures(
        totals(Off("answered", 5, 100, 20, 30), Off("answered", 5, 50, 0, 0), Off("abandoned", 9))
    )
    assert f["aht_s"] == 100.0  # (150 + 20 + 30) / 2
    assert (f["avg_talk_s"], f["avg_hold_s"], f["avg_wrapup_s"]) == (75.0, 10.0, 15.0)


def test_transfers_out_count_the_answering_legs_transfers():
    assert figures(totals(Off("answered", 5), transfers=2))["transfers_out"] == 2


def test_nothing_offered_is_zeros_and_empty_service_levels():
    f = figures(zero())
    assert f["offered"] == 0 and f["asa_s"] == 0.0 and f["aht_s"] == 0.0
    assert f["sl_ignore_abandons"] is None and f["sl_abandons_negative"] is None


def test_every_definition_has_words_and_every_measure_has_sql():
    assert all(d.words.strip() and d.words.endswith(".") for d in DEFINITIONS)
    assert len({d.name for d in DEFINITIONS}) == len(DEFINITIONS)
    select = sql_select()
    assert all(f" AS {m.name}" in select for m in MEASURES)


def test_thresholds_default_per_queue():
    got = queue_thresholds(["a", "b"], {"b": Thresholds(30, 3)})
    assert got == {"a": Thresholds(20, 5), "b": Thresholds(30, 3)}
