"""The two-PBX bench's pure pieces: what it reads from /metrics, its ratios, its users."""

from __future__ import annotations

from bench.two_pbx_bed import sidebar_user
from bench.two_pbx_bench import attach_counts, ratios
from cti.sandbox_pbxes import HOME, SECOND
from cti.screenpop.metrics import Metrics


def test_attach_counts_read_the_daemons_own_exposition():
    metrics = Metrics()
    for outcome in ("attached", "attached", "unverified"):
        metrics.observe_attach(outcome)
    counts = attach_counts(metrics.render().decode())
    assert counts["attached"] == 2.0
    assert counts["unverified"] == 1.0
    assert counts["unknown"] == 0.0  # every outcome is exposed from the start


def test_ratios_are_two_pbx_over_one_pbx_and_none_without_a_figure():
    two = {"completed_cps": 40.0, "routing": {"p99_ms": 30.0}, "pops": {"p99_ms": None}}
    one = {"completed_cps": 20.0, "routing": {"p99_ms": 5.0}, "pops": {"p99_ms": 14.0}}
    got = ratios(two, one)
    assert got["completed_cps"] == 2.0
    assert got["routing.p99_ms"] == 6.0
    assert got["pops.p99_ms"] is None
    assert got["cti_cpu_pct"] is None


def test_sidebar_users_name_their_pbx_with_their_endpoint():
    assert sidebar_user(2001, HOME) == ("agent2001", "PJSIP/2001")
    assert sidebar_user(2003, SECOND) == ("agent2003b", "PJSIP/2003@b")
