"""Which hosts a multi-host CTI_DATABASE_URL lists (cti.pg_hosts), and the order to try
them in. The connecting itself is tests/integration/test_pg_hosts.py."""

from __future__ import annotations

import pytest

from cti.pg_hosts import RECHECK_S, DatabaseHost, SkippedHosts, split_hosts

H1, H2, H3 = DatabaseHost("h1", 5432), DatabaseHost("h2", None), DatabaseHost("h3", 6543)


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        (
            "postgresql://app:s%40cret@h1:5432,h2/cti?target_session_attrs=read-write&sslmode=require",
            (H1, H2),
        ),
        ("postgres://h1:5432,h2,h3:6543/cti", (H1, H2, H3)),
        (
            "postgresql://[2001:db8::1]:5433,db%2Db.example:5434/cti",
            (DatabaseHost("2001:db8::1", 5433), DatabaseHost("db-b.example", 5434)),
        ),
        (
            "postgresql:///cti?host=/run/postgresql,h2&port=5432",
            (DatabaseHost("/run/postgresql", 5432), DatabaseHost("h2", 5432)),
        ),
        (
            "postgresql:///cti?host=h1,h2&port=5432,5433",
            (DatabaseHost("h1", 5432), DatabaseHost("h2", 5433)),
        ),
        ("postgresql:///cti?host=h1,h2:7", (DatabaseHost("h1", None), DatabaseHost("h2", 7))),
    ],
)
def test_the_hosts_of_a_multi_host_url_in_order(url: str, hosts: tuple[DatabaseHost, ...]) -> None:
    assert split_hosts(url) == hosts


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/cti",  # one host: to asyncpg untouched
        "postgresql:///cti",  # none: PGHOST or the local socket, asyncpg's business
        "postgresql:///cti?host=h1",
        "postgresql:///cti?service=prod",
        "postgresql:///cti?host=h1,h2&port=1,2,3",  # asyncpg says what is wrong
        "postgresql://h1,[::1/cti",
        "postgresql://h1,,h2/cti",
        "postgresql://h1,h2/cti?target_session_attrs=prefer-standby",  # needs all at once
    ],
)
def test_other_urls_go_to_asyncpg_whole(url: str) -> None:
    assert split_hosts(url) is None


def test_a_skipped_host_goes_to_the_back_until_it_is_due_a_recheck() -> None:
    skipped = SkippedHosts()
    hosts = (H1, H2, H3)
    assert skipped.order(hosts, now=100.0) == hosts
    skipped.skipped(H1, now=100.0)
    assert skipped.order(hosts, now=101.0) == (H2, H3, H1)
    skipped.skipped(H2, now=110.0)
    assert skipped.order(hosts, now=111.0) == (H3, H1, H2)  # both back, in the URL's order
    assert skipped.order(hosts, now=100.0 + RECHECK_S) == (H1, H3, H2)  # H1 due a recheck
    assert skipped.order(hosts, now=110.0 + RECHECK_S) == hosts


def test_a_host_that_connects_is_no_longer_held_back() -> None:
    skipped = SkippedHosts()
    skipped.skipped(H1, now=0.0)
    skipped.connected(H1)
    assert skipped.order((H1, H2), now=1.0) == (H1, H2)
