"""What an operator may hand ``cti rules load``: any file at all. Whatever the bytes,
the loader answers with a plan or a :class:`PlanError` saying what and where, never
another exception (which the command would show as a traceback)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.routing.hours import DAYS
from cti.routing.plan import MAX_PLAN_BYTES, PlanError, RoutingPlan, load_bytes, loads, parse_plan


def _refused(data: bytes) -> str:
    with pytest.raises(PlanError) as caught:
        load_bytes(data)
    return str(caught.value)


@pytest.mark.parametrize("opening", ["[", "{a = "], ids=["arrays", "inline-tables"])
def test_deep_nesting_is_refused_not_a_recursion_error(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    text = f"[[rules]]\nname = {opening * 5000}{closing * 5000}\n"
    assert "nested too deeply" in _refused(text.encode())


def test_nesting_that_tomllib_reads_is_quoted_back_briefly() -> None:
    """An array nested a few hundred deep parses; the message quoting it back must
    neither recurse past the limit nor print it whole."""
    message = _refused(b"[[rules]]\nname = " + b"[" * 300 + b"]" * 300 + b"\n")
    assert message.startswith("rules[1].name: [[[[...]]]] is not a name")


def test_a_number_past_pythons_digit_limit_is_refused_with_its_place() -> None:
    message = _refused(b'[[rules]]\nname = "x"\npriority = ' + b"9" * 5000 + b"\n")
    assert message == "not valid TOML for a plan: a number too long to read (at line 3, column 12)"


def test_a_file_that_is_not_utf8_is_refused_with_its_place() -> None:
    message = _refused(b'[[queues]]\nname = "caf\xe9"\n')
    assert message == "not UTF-8 text: byte 0xe9 at line 2, column 12"


def test_a_toml_error_says_line_and_column() -> None:
    assert "(at line 2, column 8)" in _refused(b"[[rules]]\nname = \n")


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed() -> None:
    padding = b"# " + b"x" * 77 + b"\n"
    just_fits = padding * (MAX_PLAN_BYTES // len(padding))
    assert load_bytes(just_fits) == RoutingPlan((), (), ())
    message = _refused(padding * (MAX_PLAN_BYTES // len(padding) + 1))
    assert "too big for a routing plan (at most 4 MiB)" in message
    with pytest.raises(PlanError, match="too big"):
        loads("#" * (MAX_PLAN_BYTES + 1))


def test_a_long_value_is_quoted_back_cut_short() -> None:
    message = _refused(b'[[rules]]\nname = "x"\nmatch = { time = "' + b"9" * 100_000 + b'" }\n')
    assert message.startswith('rules[1] "x".match.time: ') and len(message) < 300


# --- fuzzing -------------------------------------------------------------------------------

# Pieces of TOML, so that random text gets past the first character more often than
# random bytes do: headers, keys the plan knows, values of every TOML type, brackets.
_FRAGMENTS = st.sampled_from(
    [
        "[[rules]]\n", "[[numbers]]\n", "[[queues]]\n", "[rules]\n", "\n", " ", "=", ",",
        "[", "]", "{", "}", '"', "'", '"""', "#", ".", "name", "match", "route", "queue",
        "priority", "enabled", "dnis", "service", "default_queue", "timezone", "hours",
        "tier", "time", "days", "known", '"gold"', '"x"', '"08:00-20:00"', '"mon"', "true",
        "1", "-1", "1e999", "nan", "0x7f", "1979-05-27", "1979-05-27T07:32:00Z",
        "9" * 4400, "\\u0000", "\\", "\x00", "\x1b", "é", "\ud800",
    ]
)  # fmt: skip
_TOML_ISH = st.lists(_FRAGMENTS, max_size=40).map("".join)


def _only_plan_errors(load: Any, data: Any) -> None:
    with contextlib.suppress(PlanError):
        load(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_give_a_plan_or_a_plan_error(data: bytes) -> None:
    _only_plan_errors(load_bytes, data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(_TOML_ISH)
def test_random_toml_ish_text_gives_a_plan_or_a_plan_error(text: str) -> None:
    _only_plan_errors(loads, text)
    _only_plan_errors(load_bytes, text.encode("utf-8", "surrogatepass"))


# Any value a TOML document can hold (and a few it cannot), nested.
_SCALARS = (
    st.booleans()
    | st.integers()
    | st.integers(min_value=10**4300, max_value=10**4400)
    | st.floats()
    | st.just(math.nan)
    | st.text(max_size=20)
    | st.sampled_from(["gold", "queue", "support", "08:00-20:00", "mon", "UTC", "open", "5550100"])
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.none()
)
_KEYS = st.sampled_from(
    ["name", "match", "route", "queue", "priority", "enabled", "dnis", "service",
     "default_queue", "timezone", "hours", "tier", "status", "language", "intent", "known",
     "days", "time", "description", *DAYS]
) | st.text(max_size=8)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=30,
)
_ENTRIES = st.lists(st.dictionaries(_KEYS, _VALUES, max_size=6) | _VALUES, max_size=3)
_DOCUMENTS = (
    st.fixed_dictionaries({}, optional={"queues": _ENTRIES, "numbers": _ENTRIES, "rules": _ENTRIES})
    | _VALUES
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_random_documents_give_a_plan_or_a_plan_error(doc: Any) -> None:
    _only_plan_errors(parse_plan, doc)


def test_a_value_nested_past_the_recursion_limit_is_quoted_back_briefly() -> None:
    """The database's rows go through the same parser: a Python value nested deeper
    than any TOML file could be still gets a one-line answer."""
    deep: Any = "x"
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(PlanError, match=r"^rules\[1\]\.name: \[\[\[\[\.\.\.\]\]\]\] is not"):
        parse_plan({"rules": [{"name": deep}]})
    with pytest.raises(PlanError, match="not a word"):
        parse_plan({"rules": [{"name": "x", "match": {"tier": [deep]}}]})


def test_dates_are_not_names() -> None:
    with pytest.raises(PlanError, match="is not a name"):
        parse_plan({"queues": [{"name": dt.date(2026, 1, 1)}]})


def test_a_long_unknown_key_is_quoted_back_cut_short() -> None:
    long_key = "k" * 100_000
    message = _refused(f'[[rules]]\nname = "x"\n"{long_key}" = 1\n'.encode())
    assert message.startswith("rules[1]: unknown key(s) ['kkk") and len(message) < 300
    number = '[[numbers]]\ndnis = "1"\nservice = "s"\ndefault_queue = "q"\n'
    message = _refused(f'{number}hours = {{ "{long_key}" = [] }}\n'.encode())
    assert "unknown key(s) ['kkk" in message and len(message) < 300
