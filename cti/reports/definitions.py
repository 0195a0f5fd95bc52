"""What every report figure means: one definition each, with its formula in words.

Reports count **offers**. For the ``queues`` report an offer is a queue visit
(:class:`cti.reports.segments.QueueVisit`: a call that visits two queues is offered to
each); for ``tiers``, ``rules``, ``dnis`` and ``services`` it is the call's journey
(:class:`cti.reports.segments.Journey`: from the first queue joined to the first answer,
so a call counts once). Thresholds are the offer's queue's (for a journey: its first
queue's), read when the report is made: a changed threshold restates history.

**Interval attribution**: every figure of an offer counts in the interval in which the
offer *entered* its queue, even when it was answered, abandoned or talked in the next
one. So a row's ``offered`` equals its answered + abandoned + timed out + sent elsewhere
+ transferred out, and a report re-run later gives the same rows.

Base measures (:data:`MEASURES`) are counts, sums or maxima over offers; each has its
predicate or value in Python (the reference, used by the tests) and the same in SQL (used
to aggregate a month of calls inside PostgreSQL); an integration test holds the two
equal. Figures (:data:`DEFINITIONS`) are computed from the measures by :func:`figures`.
A ratio with nothing to divide is ``None`` (an empty cell), a count or time of nothing 0.
Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cti.routing.plan import DEFAULT_SHORT_ABANDON_S, DEFAULT_SL_THRESHOLD_S


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A queue's service-level threshold and short-abandon limit, in seconds."""

    sl_threshold_s: float = float(DEFAULT_SL_THRESHOLD_S)
    short_abandon_s: float = float(DEFAULT_SHORT_ABANDON_S)


def queue_thresholds(
    queues: Iterable[str], configured: Mapping[str, Thresholds] | None = None
) -> dict[str, Thresholds]:
    """Each queue's thresholds: the plan's where it sets them (``configured``, from the
    plan's ``[[queues]]``), else the defaults (20 s and 5 s)."""
    configured = configured or {}
    return {queue: configured.get(queue, Thresholds()) for queue in queues}


class Offer(Protocol):
    """What a definition reads of an offer (a queue visit or a journey)."""

    @property
    def outcome(self) -> str: ...
    @property
    def wait_s(self) -> float: ...
    @property
    def talk_s(self) -> float: ...
    @property
    def hold_s(self) -> float: ...
    @property
    def wrapup_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Measure:
    """A base measure: ``kind`` is count, sum or max; ``value`` is the offer's
    contribution (1/0 for a count); ``sql`` the same over the columns of
    ``report_offers`` (``wait_s``, ``outcome``, ``talk_s``, …, ``transfers``) and the
    offer's thresholds ``sl`` and ``short``."""

    name: str
    kind: str
    words: str
    value: Callable[[Offer, Thresholds, int], float]
    sql: str


def _short(o: Offer, t: Thresholds) -> bool:
    return o.outcome == "abandoned" and o.wait_s < t.short_abandon_s


def _abandoned(o: Offer, t: Thresholds) -> bool:
    return o.outcome == "abandoned" and o.wait_s >= t.short_abandon_s


_SHORT_SQL = "outcome = 'abandoned' AND wait_s < short"
_ABANDONED_SQL = "outcome = 'abandoned' AND wait_s >= short"

MEASURES: tuple[Measure, ...] = (
    Measure(
        "short_abandoned",
        "count",
        "offers abandoned before the queue's short-abandon limit (wait < short_abandon_s);"
        " they are not offered, not abandoned",
        lambda o, t, n: float(_short(o, t)),
        _SHORT_SQL,
    ),
    Measure(
        "offered",
        "count",
        "offers that entered the queue, less short abandons",
        lambda o, t, n: float(not _short(o, t)),
        f"NOT ({_SHORT_SQL})",
    ),
    Measure(
        "answered",
        "count",
        "offers an agent answered from the queue",
        lambda o, t, n: float(o.outcome == "answered"),
        "outcome = 'answered'",
    ),
    Measure(
        "answered_in_sl",
        "count",
        "answered offers that waited at most the threshold (wait <= sl_threshold_s)",
        lambda o, t, n: float(o.outcome == "answered" and o.wait_s <= t.sl_threshold_s),
        "outcome = 'answered' AND wait_s <= sl",
    ),
    Measure(
        "abandoned",
        "count",
        "offers whose caller hung up in the queue after the short-abandon limit"
        " (wait >= short_abandon_s)",
        lambda o, t, n: float(_abandoned(o, t)),
        _ABANDONED_SQL,
    ),
    Measure(
        "abandoned_in_sl",
        "count",
        "abandoned offers (not short) that waited at most the threshold",
        lambda o, t, n: float(_abandoned(o, t) and o.wait_s <= t.sl_threshold_s),
        f"{_ABANDONED_SQL} AND wait_s <= sl",
    ),
    Measure(
        "timed_out",
        "count",
        "offers the queue let go unanswered after which the call ended (no other queue or agent)",
        lambda o, t, n: float(o.outcome == "timed_out"),
        "outcome = 'timed_out'",
    ),
    Measure(
        "sent_elsewhere",
        "count",
        "offers that left the queue unanswered for another queue or an agent outside it",
        lambda o, t, n: float(o.outcome == "sent_elsewhere"),
        "outcome = 'sent_elsewhere'",
    ),
    Measure(
        "transfers_out",
        "sum",
        "transfers (blind or attended) made by the agents who answered the offers, plus"
        " offers redirected out of the queue while waiting",
        lambda o, t, n: float(n + (o.outcome == "transferred_out")),
        "transfers + (outcome = 'transferred_out')::int",
    ),
    Measure(
        "wait_sum",
        "sum",
        "seconds waited by offered offers",
        lambda o, t, n: 0.0 if _short(o, t) else o.wait_s,
        f"CASE WHEN {_SHORT_SQL} THEN 0 ELSE wait_s END",
    ),
    Measure(
        "wait_max",
        "max",
        "longest wait of an offered offer",
        lambda o, t, n: 0.0 if _short(o, t) else o.wait_s,
        f"CASE WHEN {_SHORT_SQL} THEN 0 ELSE wait_s END",
    ),
    Measure(
        "answer_wait_sum",
        "sum",
        "seconds answered offers waited",
        lambda o, t, n: o.wait_s if o.outcome == "answered" else 0.0,
        "CASE WHEN outcome = 'answered' THEN wait_s ELSE 0 END",
    ),
    Measure(
        "abandon_wait_sum",
        "sum",
        "seconds abandoned offers waited before hanging up",
        lambda o, t, n: o.wait_s if _abandoned(o, t) else 0.0,
        f"CASE WHEN {_ABANDONED_SQL} THEN wait_s ELSE 0 END",
    ),
    Measure(
        "talk_sum", "sum", "talk seconds of answered offers", lambda o, t, n: o.talk_s, "talk_s"
    ),
    Measure(
        "hold_sum", "sum", "hold seconds of answered offers", lambda o, t, n: o.hold_s, "hold_s"
    ),
    Measure(
        "wrapup_sum",
        "sum",
        "wrap-up seconds of answered offers",
        lambda o, t, n: o.wrapup_s,
        "wrapup_s",
    ),
)

Totals = dict[str, float]


def zero() -> Totals:
    return {m.name: 0.0 for m in MEASURES}


def add(totals: Totals, offer: Offer, thresholds: Thresholds, transfers: int = 0) -> None:
    """Count one offer into ``totals`` (the Python reference of the SQL aggregate)."""
    for m in MEASURES:
        value = m.value(offer, thresholds, transfers)
        if m.kind == "max":
            totals[m.name] = max(totals[m.name], value)
        else:
            totals[m.name] += value


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return None if den <= 0 else round(num * scale / den, 2)


def _avg(num: float, den: float) -> float:
    return 0.0 if den <= 0 else round(num / den, 1)


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    words: str
    formula: Callable[[Totals], float | int | None]


def _count(name: str) -> Callable[[Totals], int]:
    return lambda t: int(t[name])


def _measure_words(name: str) -> str:
    return next(m.words for m in MEASURES if m.name == name)


#: The figures of a row, in column order after the row's keys.
DEFINITIONS: tuple[Definition, ...] = (
    *(
        Definition(name, _measure_words(name).capitalize() + ".", _count(name))
        for name in (
            "offered",
            "answered",
            "answered_in_sl",
            "abandoned",
            "abandoned_in_sl",
            "short_abandoned",
            "timed_out",
            "sent_elsewhere",
        )
    ),
    Definition(
        "sl_ignore_abandons",
        "Service level, abandons ignored (Cisco): answered_in_sl / (offered −"
        " abandoned_in_sl), in percent.",
        lambda t: _ratio(t["answered_in_sl"], t["offered"] - t["abandoned_in_sl"], 100),
    ),
    Definition(
        "sl_abandons_negative",
        "Service level, abandons count against (Cisco): answered_in_sl / offered, in percent.",
        lambda t: _ratio(t["answered_in_sl"], t["offered"], 100),
    ),
    Definition(
        "sl_abandons_positive",
        "Service level, abandons count for (Cisco): (answered_in_sl + abandoned_in_sl) /"
        " offered, in percent.",
        lambda t: _ratio(t["answered_in_sl"] + t["abandoned_in_sl"], t["offered"], 100),
    ),
    Definition(
        "asa_s",
        "Average speed of answer: seconds answered offers waited / answered.",
        lambda t: _avg(t["answer_wait_sum"], t["answered"]),
    ),
    Definition(
        "avg_wait_s",
        "Average wait: seconds waited by offered offers (any outcome) / offered.",
        lambda t: _avg(t["wait_sum"], t["offered"]),
    ),
    Definition(
        "max_wait_s",
        "Longest wait of an offered offer, seconds.",
        lambda t: round(t["wait_max"], 1),
    ),
    Definition(
        "avg_abandon_s",
        "Average abandon time: seconds abandoned offers waited / abandoned.",
        lambda t: _avg(t["abandon_wait_sum"], t["abandoned"]),
    ),
    Definition(
        "aht_s",
        "Average handle time: (talk + hold + wrap-up seconds of answered offers) / answered.",
        lambda t: _avg(t["talk_sum"] + t["hold_sum"] + t["wrapup_sum"], t["answered"]),
    ),
    Definition(
        "avg_talk_s",
        "Average talk: talk seconds of answered offers / answered.",
        lambda t: _avg(t["talk_sum"], t["answered"]),
    ),
    Definition(
        "avg_hold_s",
        "Average hold: hold seconds of answered offers / answered.",
        lambda t: _avg(t["hold_sum"], t["answered"]),
    ),
    Definition(
        "avg_wrapup_s",
        "Average wrap-up: wrap-up seconds after answered offers (the answering agents'"
        " wrap-up intervals of the call, from agent states) / answered.",
        lambda t: _avg(t["wrapup_sum"], t["answered"]),
    ),
    Definition(
        "transfers_out", _measure_words("transfers_out").capitalize() + ".", _count("transfers_out")
    ),
)


def figures(totals: Totals) -> dict[str, float | int | None]:
    """A row's figures from its measures."""
    return {d.name: d.formula(totals) for d in DEFINITIONS}


def sql_select() -> str:
    """The aggregate columns of the measures, over ``report_offers`` joined to the
    thresholds (``sl``, ``short``)."""
    parts = []
    for m in MEASURES:
        if m.kind == "count":
            parts.append(f"count(*) FILTER (WHERE {m.sql}) AS {m.name}")
        elif m.kind == "sum":
            parts.append(f"coalesce(sum({m.sql}), 0) AS {m.name}")
        else:
            parts.append(f"coalesce(max({m.sql}), 0) AS {m.name}")
    return ",\n       ".join(parts)
