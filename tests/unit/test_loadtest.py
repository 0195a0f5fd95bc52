"""``cti.loadtest``'s pure parts: the call mix (cti.callmix) and the parsing of SIPp's
output files (cti.sipp_results).

tests/fixtures/sipp-loadtest/ holds the files of a real SIPp 3.6.1 run (pid 13116) of
``python -m cti.loadtest --rate 2 --duration 1 --dnis abc``: both calls were refused
with 404 (no extension ``abc``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cti.loadtest import Options, build_calls
from cti.sipp_results import parse_sipp_results, summarize_errors

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sipp-loadtest"


def test_call_mix_is_mostly_known_customers_with_unknown_and_withheld_callers():
    options = Options(seed=7, unknown_share=0.1, withheld_share=0.05)
    rows = build_calls(10_000, options, customers=500)
    kinds = Counter(
        "withheld" if ani == "anonymous" else "unknown" if ani.startswith("305") else "known"
        for ani, _dnis, _account, _intent in rows
    )
    assert 0.83 < kinds["known"] / len(rows) < 0.87
    assert 0.08 < kinds["unknown"] / len(rows) < 0.12
    assert 0.03 < kinds["withheld"] / len(rows) < 0.07
    known = [int(ani[3:]) for ani, *_ in rows if ani.startswith("212")]
    assert min(known) >= 1 and max(known) <= 500  # demo phones +1212 + account digits
    assert {dnis for _, dnis, *_ in rows} == {"5550100", "5550300"}
    assert build_calls(50, options, 500) == build_calls(50, options, 500)  # seeded


def test_sipp_files_of_a_failed_run_are_summarised():
    result = parse_sipp_results(FIXTURES, exit_code=1, pid=13116)
    assert (result.attempted, result.successful, result.failed) == (2, 0, 2)
    assert result.failure_counters == {"FailedUnexpectedMessage": 2}
    assert result.step_problems == {"1_100_Unexp": 2}
    assert result.unexpected_codes == {"404": 2}
    assert result.error_lines == [
        (
            "Aborting call on unexpected message for Call-ID '*': while expecting '100'"
            " (index 1), received 'SIP/2.0 404 Not Found",
            2,
        )
    ]


def test_error_entries_are_split_even_without_line_breaks():
    text = (
        "The following events occurred:\n"
        "2026-11-23\t05:35:19.900516\t1795412119.900516: Aborting call on UDP retransmission"
        " timeout for Call-ID '1-12764@127.0.0.1'"
        "2026-11-23\t05:35:20.399942\t1795412120.399942: Aborting call on UDP retransmission"
        " timeout for Call-ID '2-12764@127.0.0.1'"
    )
    assert summarize_errors(text) == [
        ("Aborting call on UDP retransmission timeout for Call-ID '*'", 2)
    ]
