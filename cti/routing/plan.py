"""The routing plan: queues, dialled numbers and ordered rules, as humans write them.

One parser serves the TOML file that operators edit (``cti rules load``) and the rows
stored in PostgreSQL, so a rule means the same thing wherever it comes from. Every
mistake is reported with where it is (``rules[3] "gold": match.tier: ...``) and
unknown keys are errors: a misspelt condition must not quietly match every caller.

The file looks like::

    [[queues]]
    name = "support"
    wrapup_s = 30            # cti pauses an agent this long after a call (0: no wrap-up)
    sl_threshold_s = 20      # service level: answered within this many seconds
    short_abandon_s = 5      # an abandon this quick does not count against it

    [[pause_reasons]]
    name = "lunch"
    productive = false       # lunch is not work
    max_minutes = 60         # a longer pause is flagged to supervisors (absent: no limit)

    [[numbers]]
    dnis = "5550100"
    service = "support"
    default_queue = "support"
    timezone = "America/New_York"
    hours = { mon = ["08:00-20:00"], sat = ["09:00-13:00"] }   # absent: 24/7

    [[rules]]
    name = "gold-first"
    match = { tier = ["gold", "platinum"], service = ["support"] }
    route = "queue"          # queue | selfservice | afterhours
    enabled = true           # false keeps the rule but skips it
    queue = "support"        # absent: the dialled number's default queue
    priority = 10
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, AnyStr

import tomli_w

from cti.routing.hours import DAYS, HoursError, OpeningHours, TimeWindow, zone
from cti.routing.model import STATUSES, TIERS, UNKNOWN_TIER, DialledNumber, Match, RouteKind, Rule
from cti.routing.phone import normalize_dnis
from cti.text import brief

#: Queue, rule and service names (cti/db/migrations/001_routing.sql checks the same).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")  # \Z: no trailing newline
_WORD = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")
MAX_PRIORITY = 1000
MAX_RULES = 10_000
#: The largest plan file read: a plan of MAX_RULES rules of a few lines each is about
#: 1.5 MB, and tomllib holds a whole file (and its document) in memory.
MAX_PLAN_BYTES = 4 * 2**20
#: Python refuses to convert an integer of more digits than this (sys.int_info).
#: (The look-behind starts a match only where a run of digits starts: linear time.)
_DIGITS_LIMIT = sys.get_int_max_str_digits() or 4300
_LONG_NUMBER = re.compile(rf"(?<![0-9_])[0-9][0-9_]{{{_DIGITS_LIMIT},}}")

_MATCH_LISTS = {
    "service": "services",
    "tier": "tiers",
    "status": "statuses",
    "language": "languages",
    "intent": "intents",
}
_MATCH_KEYS = {*_MATCH_LISTS, "known", "hours", "days", "time"}
_RULE_KEYS = {"name", "enabled", "match", "route", "queue", "priority"}
_NUMBER_KEYS = {"dnis", "service", "default_queue", "timezone", "hours"}
_QUEUE_KEYS = {"name", "description", "wrapup_s", "sl_threshold_s", "short_abandon_s"}
_PAUSE_KEYS = {"name", "productive", "max_minutes"}
_PLAN_KEYS = {"queues", "numbers", "rules", "pause_reasons"}
#: Upper bounds of the queue timers (an hour of wrap-up is already absurd).
MAX_WRAPUP_S = 3600
MAX_THRESHOLD_S = 3600
MAX_PAUSE_MINUTES = 24 * 60
MAX_PAUSE_REASONS = 100
#: A pause reason travels in QueuePause's Reason header and in the sidebar's button:
#: one short word.
PAUSE_REASON = re.compile(r"^[a-z][a-z0-9_\-]{0,31}\Z")
#: The reason cti gives Asterisk while it holds an agent in wrap-up; a plan may not
#: reuse it for a pause of its own.
WRAPUP_REASON = "wrap-up"
DEFAULT_SL_THRESHOLD_S = 20
DEFAULT_SHORT_ABANDON_S = 5


class PlanError(ValueError):
    """A routing plan, or one entry of it, that cannot be used."""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue. ``wrapup_s``: seconds cti keeps an agent paused after a call of this
    queue (0: none); ``sl_threshold_s``: a call answered within it counts towards the
    service level; ``short_abandon_s``: a caller hanging up sooner is not counted."""

    name: str
    description: str = ""
    wrapup_s: int = 0
    sl_threshold_s: int = DEFAULT_SL_THRESHOLD_S
    short_abandon_s: int = DEFAULT_SHORT_ABANDON_S


@dataclass(frozen=True, slots=True)
class PauseReason:
    """A reason an agent may give for a pause. ``productive``: the agent is working
    (training, a meeting); ``max_minutes``: a longer pause is flagged (None: no limit)."""

    name: str
    productive: bool = False
    max_minutes: int | None = None


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    queues: tuple[QueueSpec, ...]
    numbers: tuple[DialledNumber, ...]
    rules: tuple[Rule, ...]
    pause_reasons: tuple[PauseReason, ...] = ()

    def queue(self, name: str) -> QueueSpec | None:
        return next((q for q in self.queues if q.name == name), None)


# --- parsing -----------------------------------------------------------------------------


def _check_keys(raw: Any, allowed: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PlanError(f"{where}: expected a table, got {type(raw).__name__}")
    unknown = set(raw) - allowed
    if unknown:
        raise PlanError(
            f"{where}: unknown key(s) {brief(sorted(unknown, key=str))}; allowed: {sorted(allowed)}"
        )
    return raw


def _name(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not NAME.match(raw):
        raise PlanError(f"{where}: {brief(raw)} is not a name (letters, digits, _ . -; up to 64)")
    return raw


def _words(raw: Any, where: str, allowed: Iterable[str] | None = None) -> frozenset[str]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise PlanError(f"{where}: expected a word or a non-empty list of words")
    words = set()
    for item in items:
        if not isinstance(item, str) or not _WORD.match(item):
            raise PlanError(f"{where}: {brief(item)} is not a word")
        words.add(item.lower())
    if allowed is not None:
        bad = words - set(allowed)
        if bad:
            raise PlanError(f"{where}: unknown value(s) {sorted(bad)}; use {', '.join(allowed)}")
    return frozenset(words)


def parse_match(raw: Any, where: str) -> Match:
    raw = _check_keys(raw, _MATCH_KEYS, where)
    values: dict[str, Any] = {}
    allowed = {"tier": (*TIERS, UNKNOWN_TIER), "status": STATUSES}
    for key, attribute in _MATCH_LISTS.items():
        if key in raw:
            values[attribute] = _words(raw[key], f"{where}.{key}", allowed.get(key))
    if "known" in raw:
        if not isinstance(raw["known"], bool):
            raise PlanError(f"{where}.known: expected true or false")
        values["known"] = raw["known"]
    if "hours" in raw:
        if raw["hours"] not in ("open", "closed"):
            raise PlanError(f'{where}.hours: expected "open" or "closed"')
        values["open"] = raw["hours"] == "open"
    if "days" in raw:
        days = _words(raw["days"], f"{where}.days", DAYS)
        values["days"] = frozenset(DAYS.index(d) for d in days)
    if "time" in raw:
        if not isinstance(raw["time"], str):
            raise PlanError(f'{where}.time: expected "HH:MM-HH:MM"')
        try:
            values["time"] = TimeWindow.parse(raw["time"])
        except HoursError as exc:
            raise PlanError(f"{where}.time: {exc}") from None
    return Match(**values)


def parse_rule(raw: Any, where: str) -> Rule:
    raw = _check_keys(raw, _RULE_KEYS, where)
    name = _name(raw.get("name"), f"{where}.name")
    where = f'{where} "{name}"'
    try:
        route = RouteKind(raw.get("route", RouteKind.QUEUE))
    except ValueError:
        kinds = ", ".join(k.value for k in RouteKind)
        raise PlanError(f"{where}.route: {brief(raw.get('route'))}; use {kinds}") from None
    queue = raw.get("queue")
    if queue is not None:
        queue = _name(queue, f"{where}.queue")
        if route is not RouteKind.QUEUE:
            raise PlanError(f'{where}.queue: only a route of "queue" goes to a queue')
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PlanError(f"{where}.priority: expected an integer")
    if not 0 <= priority <= MAX_PRIORITY:
        raise PlanError(f"{where}.priority: must be between 0 and {MAX_PRIORITY}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PlanError(f"{where}.enabled: expected true or false")
    match = parse_match(raw.get("match", {}), f"{where}.match")
    return Rule(name, match, route, queue, priority, enabled)


def parse_number(raw: Any, where: str) -> DialledNumber:
    raw = _check_keys(raw, _NUMBER_KEYS, where)
    dnis = raw.get("dnis")
    key = normalize_dnis(dnis) if isinstance(dnis, str) else ""
    if not key:
        raise PlanError(f"{where}.dnis: {brief(dnis)} is not a dialled number (digits, optional +)")
    where = f'{where} "{key}"'
    service = _name(raw.get("service"), f"{where}.service")
    default_queue = _name(raw.get("default_queue"), f"{where}.default_queue")
    tz_name = raw.get("timezone", "UTC")
    try:
        tz = zone(tz_name) if isinstance(tz_name, str) else zone("")
    except HoursError as exc:
        raise PlanError(f"{where}.timezone: {exc}") from None
    hours = None
    if raw.get("hours") is not None:
        try:
            hours = OpeningHours.parse(_check_keys(raw["hours"], set(DAYS), f"{where}.hours"))
        except (HoursError, TypeError) as exc:
            raise PlanError(f"{where}.hours: {exc}") from None
    return DialledNumber(key, service, default_queue, tz, hours)


def _seconds(raw: Any, default: int, maximum: int, where: str) -> int:
    value = default if raw is None else raw
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{where}: expected a whole number of seconds, got {brief(value)}")
    if not 0 <= value <= maximum:
        raise PlanError(f"{where}: must be between 0 and {maximum} seconds")
    return value


def parse_queue(raw: Any, where: str) -> QueueSpec:
    raw = _check_keys(raw, _QUEUE_KEYS, where)
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 200:
        raise PlanError(f"{where}.description: expected text of at most 200 characters")
    name = _name(raw.get("name"), f"{where}.name")
    where = f'{where} "{name}"'
    return QueueSpec(
        name,
        description,
        wrapup_s=_seconds(raw.get("wrapup_s"), 0, MAX_WRAPUP_S, f"{where}.wrapup_s"),
        sl_threshold_s=_seconds(
            raw.get("sl_threshold_s"),
            DEFAULT_SL_THRESHOLD_S,
            MAX_THRESHOLD_S,
            f"{where}.sl_threshold_s",
        ),
        short_abandon_s=_seconds(
            raw.get("short_abandon_s"),
            DEFAULT_SHORT_ABANDON_S,
            MAX_THRESHOLD_S,
            f"{where}.short_abandon_s",
        ),
    )


def parse_pause_reason(raw: Any, where: str) -> PauseReason:
    raw = _check_keys(raw, _PAUSE_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not PAUSE_REASON.match(name):
        raise PlanError(
            f"{where}.name: {brief(name)} is not a pause reason"
            " (one lower-case word: a-z, digits, _ -; up to 32)"
        )
    if name == WRAPUP_REASON:
        raise PlanError(f'{where}.name: "{WRAPUP_REASON}" is cti\'s own; choose another word')
    where = f'{where} "{name}"'
    productive = raw.get("productive", False)
    if not isinstance(productive, bool):
        raise PlanError(f"{where}.productive: expected true or false")
    max_minutes = raw.get("max_minutes")
    if max_minutes is not None:
        if isinstance(max_minutes, bool) or not isinstance(max_minutes, int):
            raise PlanError(f"{where}.max_minutes: expected a whole number of minutes")
        if not 1 <= max_minutes <= MAX_PAUSE_MINUTES:
            raise PlanError(f"{where}.max_minutes: must be between 1 and {MAX_PAUSE_MINUTES}")
    return PauseReason(name, productive, max_minutes)


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PlanError(f"{what} {name!r} appears twice")
        seen.add(name)


def parse_plan(doc: Any) -> RoutingPlan:
    doc = _check_keys(doc, _PLAN_KEYS, "plan")

    def entries(key: str) -> list[Any]:
        value = doc.get(key, [])
        if not isinstance(value, list):
            raise PlanError(f"{key}: expected an array of tables ([[{key}]])")
        return value

    queues = tuple(parse_queue(q, f"queues[{i}]") for i, q in enumerate(entries("queues"), 1))
    numbers = tuple(parse_number(n, f"numbers[{i}]") for i, n in enumerate(entries("numbers"), 1))
    raw_rules = entries("rules")
    if len(raw_rules) > MAX_RULES:
        raise PlanError(f"rules: at most {MAX_RULES} rules")
    rules = tuple(parse_rule(r, f"rules[{i}]") for i, r in enumerate(raw_rules, 1))
    raw_reasons = entries("pause_reasons")
    if len(raw_reasons) > MAX_PAUSE_REASONS:
        raise PlanError(f"pause_reasons: at most {MAX_PAUSE_REASONS} reasons")
    reasons = tuple(
        parse_pause_reason(r, f"pause_reasons[{i}]") for i, r in enumerate(raw_reasons, 1)
    )
    _unique((q.name for q in queues), "queue")
    _unique((n.dnis for n in numbers), "number")
    _unique((r.name for r in rules), "rule")
    _unique((r.name for r in reasons), "pause reason")
    return RoutingPlan(queues, numbers, rules, reasons)


def check_queues_exist(plan: RoutingPlan, known_queues: Iterable[str]) -> None:
    """Every queue a number or a rule names must exist (in the plan or already stored)."""
    known = set(known_queues) | {q.name for q in plan.queues}
    for number in plan.numbers:
        if number.default_queue not in known:
            raise PlanError(f'number "{number.dnis}": unknown queue {number.default_queue!r}')
    for rule in plan.rules:
        if rule.queue is not None and rule.queue not in known:
            raise PlanError(f'rule "{rule.name}": unknown queue {rule.queue!r}')


def load_bytes(data: bytes) -> RoutingPlan:
    """The plan in a file's bytes, as ``cti rules load`` read them. Everything wrong with
    a file (too big, not UTF-8, not TOML, not a plan) is a :class:`PlanError` saying
    where, so that the command can answer with one line and never a traceback."""
    if len(data) > MAX_PLAN_BYTES:
        raise PlanError(_too_big(len(data), "bytes"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start, b"\n")
        raise PlanError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {column}"
        ) from None
    return loads(text)


def loads(text: str) -> RoutingPlan:
    """The plan in a TOML text; :class:`PlanError` and no other exception otherwise."""
    if len(text) > MAX_PLAN_BYTES:
        raise PlanError(_too_big(len(text), "characters"))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise PlanError(f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib descends once per nested array or inline table
        raise PlanError(
            "not valid TOML for a plan: arrays or inline tables nested too deeply"
        ) from None
    except ValueError:  # an integer past Python's int-string conversion limit
        raise PlanError(f"not valid TOML for a plan: {_long_number(text)}") from None
    return parse_plan(doc)


def _too_big(size: int, unit: str) -> str:
    return f"{size} {unit}: too big for a routing plan (at most {MAX_PLAN_BYTES // 2**20} MiB)"


def _position(text: AnyStr, offset: int, newline: AnyStr) -> tuple[int, int]:
    """Line and column (1-based) of ``offset`` in ``text``."""
    line_start = text.rfind(newline, 0, offset) + 1
    return text.count(newline, 0, offset) + 1, offset - line_start + 1


def _long_number(text: str) -> str:
    found = _LONG_NUMBER.search(text)
    if found is None:
        return "a value that cannot be read"
    line, column = _position(text, found.start(), "\n")
    return f"a number too long to read (at line {line}, column {column})"


# --- writing -----------------------------------------------------------------------------


def match_to_mapping(match: Match) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, attribute in _MATCH_LISTS.items():
        value = getattr(match, attribute)
        if value is not None:
            out[key] = sorted(value)
    if match.known is not None:
        out["known"] = match.known
    if match.open is not None:
        out["hours"] = "open" if match.open else "closed"
    if match.days is not None:
        out["days"] = [DAYS[d] for d in sorted(match.days)]
    if match.time is not None:
        out["time"] = str(match.time)
    return out


def rule_to_mapping(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"name": rule.name}
    if not rule.enabled:
        out["enabled"] = False
    match = match_to_mapping(rule.match)
    if match:
        out["match"] = match
    out["route"] = rule.route.value
    if rule.queue is not None:
        out["queue"] = rule.queue
    out["priority"] = rule.priority
    return out


def number_to_mapping(number: DialledNumber) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dnis": number.dnis,
        "service": number.service,
        "default_queue": number.default_queue,
        "timezone": number.timezone.key,
    }
    if number.hours is not None:
        out["hours"] = number.hours.to_spec()
    return out


def queue_to_mapping(queue: QueueSpec) -> dict[str, Any]:
    """The queue as a plan file says it: keys at their default are left out."""
    out: dict[str, Any] = {"name": queue.name}
    if queue.description:
        out["description"] = queue.description
    if queue.wrapup_s:
        out["wrapup_s"] = queue.wrapup_s
    if queue.sl_threshold_s != DEFAULT_SL_THRESHOLD_S:
        out["sl_threshold_s"] = queue.sl_threshold_s
    if queue.short_abandon_s != DEFAULT_SHORT_ABANDON_S:
        out["short_abandon_s"] = queue.short_abandon_s
    return out


def pause_reason_to_mapping(reason: PauseReason) -> dict[str, Any]:
    out: dict[str, Any] = {"name": reason.name, "productive": reason.productive}
    if reason.max_minutes is not None:
        out["max_minutes"] = reason.max_minutes
    return out


def plan_to_document(plan: RoutingPlan) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "queues": [queue_to_mapping(q) for q in plan.queues],
        "numbers": [number_to_mapping(n) for n in plan.numbers],
        "rules": [rule_to_mapping(r) for r in plan.rules],
    }
    if plan.pause_reasons:
        doc["pause_reasons"] = [pause_reason_to_mapping(r) for r in plan.pause_reasons]
    return doc


def dumps(plan: RoutingPlan) -> str:
    header = (
        "# Routing plan for cti. Rules are tried in order; the first that matches decides.\n"
        "# Load with `cti rules load FILE`; see cti/routing/plan.py for every key.\n\n"
    )
    return header + tomli_w.dumps(plan_to_document(plan))
