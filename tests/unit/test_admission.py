"""Who may open a connection (cti.net.admission, FastAGI's policy in cti.agi.admission),
with an injected clock."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from structlog.testing import capture_logs

from cti.agi.admission import DEFAULT_ALLOW, agi_admission
from cti.net import admission as admission_module
from cti.net.admission import RESERVED_DESCRIPTORS, Admission, fit_caps, parse_networks


def _admission(**kwargs) -> Admission:
    return Admission(name="agi", max_per_address=500, max_connections=1000, **kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.254", True),
        ("172.32.0.1", False),
        ("192.168.1.10", True),
        ("::1", True),
        ("fd12:3456::1", True),
        ("fe80::1%eth0", False),
        ("::ffff:10.0.0.7", True),  # an IPv4 peer on a dual-stack socket
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
        ("", False),
        ("not-an-ip", False),
    ],
)
def test_default_allow_is_loopback_and_the_private_ranges(address, allowed):
    assert agi_admission().allowed(address) is allowed


def test_parse_networks():
    assert parse_networks(" 127.0.0.1 ,10.0.0.0/8,fd00::/8") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    for bad in ("10.0.0.0/8,", "10.1.2.3/8", "nope", "10.0.0.0/33"):
        with pytest.raises(ValueError):
            parse_networks(bad)
    assert len(DEFAULT_ALLOW) == 6


def test_caps_per_address_and_global_and_release():
    admission = agi_admission(max_per_address=2, max_connections=3)
    assert admission.admit("10.0.0.1") is None
    assert admission.admit("10.0.0.1") is None
    assert admission.admit("10.0.0.1") == "per_address"
    assert admission.admit("10.0.0.2") is None
    assert admission.admit("10.0.0.3") == "global"
    assert admission.admit("8.8.8.8") == "not_allowed"
    admission.release("10.0.0.1")
    assert admission.sessions_from("10.0.0.1") == 1
    assert admission.admit("10.0.0.3") is None
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        admission.release(address)
    assert admission.active == 0
    assert admission.sessions_from("10.0.0.1") == 0
    assert admission.refused == {"not_allowed": 1, "per_address": 1, "global": 1}


def test_at_the_global_cap_make_room_is_asked_before_refusing():
    admission = agi_admission(max_per_address=2, max_connections=2)
    asked: list[int] = []

    def make_room(newcomer: str) -> bool:  # as the HTTP port does: close one, free its slot
        assert newcomer in ("10.0.0.2", "10.0.0.3")
        asked.append(admission.active)
        if len(asked) > 1:
            return False  # nothing idle left
        admission.release("10.0.0.1")
        return True

    admission.make_room = make_room
    assert admission.admit("10.0.0.1") is None
    assert admission.admit("10.0.0.1") is None
    assert admission.admit("10.0.0.1") == "per_address"  # its own cap: no room made
    assert asked == []
    assert admission.admit("10.0.0.2") is None  # room made
    assert (admission.active, admission.sessions_from("10.0.0.1")) == (2, 1)
    assert admission.admit("10.0.0.3") == "global"
    assert asked == [2, 2]


def test_refusals_are_logged_once_a_second_per_address_with_the_count():
    clock = Clock()
    admission = _admission(allow=parse_networks("127.0.0.1"), clock=clock)
    with capture_logs() as logs:
        for _ in range(1000):
            admission.admit("127.0.0.2")
            clock.now += 0.001  # 1000 refusals in one second
        admission.admit("127.0.0.3")  # another address: its own line
        clock.now += 0.5
        admission.admit("127.0.0.2")
    lines = [(e["peer"], e["refused"]) for e in logs]
    assert lines == [("127.0.0.2", 1), ("127.0.0.3", 1), ("127.0.0.2", 1000)]
    assert {e["reason"] for e in logs} == {"not_allowed"}
    assert admission.refused["not_allowed"] == 1002


def test_many_addresses_are_capped_in_lines_per_second_and_in_memory():
    clock = Clock()
    admission = _admission(allow=(), clock=clock)
    with capture_logs() as logs:
        for second in range(3):
            for i in range(5000):
                admission.admit(f"2001:db8::{second}:{i:x}")
            clock.now += 1
    assert len(logs) == 3 * admission_module.LOG_LINES_PER_SECOND
    assert len(admission.log) <= admission_module.MAX_LOG_ADDRESSES


def test_without_an_allow_list_every_address_is_let_in_within_the_caps():
    admission = Admission(name="http", max_per_address=1, max_connections=3)
    assert admission.admit("8.8.8.8") is None
    assert admission.admit("not-an-ip") is None
    with capture_logs() as logs:
        assert admission.admit("8.8.8.8") == "per_address"
        assert admission.admit("2001:db8::1") is None
        assert admission.admit("2001:db8::2") == "global"
    assert [(e["event"], e["reason"], e["limit"]) for e in logs] == [
        ("http connections refused", "per_address", 1),
        ("http connections refused", "global", 3),
    ]


def test_caps_fit_the_descriptor_table_routing_first():
    plenty = 1 << 20
    assert fit_caps(plenty, 1000, 2000) == (1000, 2000)  # nothing to lower
    # ulimit -n 1024, one process: FastAGI half of what is left, HTTP two descriptors each
    agi, http = fit_caps(1024, 1000, 2000)
    assert (agi, http) == (480, 240)
    assert agi + 2 * http + RESERVED_DESCRIPTORS <= 1024
    assert fit_caps(1024, 1000, None) == (960, None)  # routing alone: all of it
    assert fit_caps(1024, None, 2000) == (None, 480)  # the sidebar alone
    assert fit_caps(1024, 100, 2000) == (100, 430)  # a small FastAGI cap leaves HTTP more
    assert fit_caps(10, 1000, 2000) == (1, 1)  # never zero


def test_the_composition_root_fits_the_configured_caps_and_says_so():
    from cti.app.descriptors import fit_to_descriptors
    from cti.config import Config

    config = Config(http_max_per_address=500, agi_max_per_address=500)
    with capture_logs() as logs:
        fitted = fit_to_descriptors(config, routing=True, sidebar=True, descriptors=1024)
    assert (fitted.agi_max_connections, fitted.http_max_connections) == (480, 240)
    # HTTP's per-address cap keeps its quarter of the global one; FastAGI's is clamped.
    assert (fitted.agi_max_per_address, fitted.http_max_per_address) == (480, 60)
    proxy = dataclasses.replace(config, http_max_per_address=2000)
    fitted = fit_to_descriptors(proxy, routing=True, sidebar=True, descriptors=1024)
    assert fitted.http_max_per_address == 240  # behind a reverse proxy: all of them
    (line,) = logs
    assert line["event"] == "connection caps lowered to fit the descriptor limit"
    assert (line["nofile"], line["configured_http"]) == (1024, 2000)
    with capture_logs() as logs:
        same = fit_to_descriptors(config, routing=True, sidebar=True, descriptors=1 << 20)
    assert same == config and logs == []


def test_allow_verdicts_are_remembered_within_a_bound():
    from cti.net.admission import MAX_REMEMBERED_VERDICTS

    admission = agi_admission(max_per_address=2, max_connections=3)
    for i in range(MAX_REMEMBERED_VERDICTS + 10):
        assert not admission.allowed(f"2001:db8::{i:x}")
        assert len(admission._verdicts) <= MAX_REMEMBERED_VERDICTS
    assert admission.allowed("10.0.0.1") and admission.allowed("10.0.0.1")
    assert not admission.allowed("8.8.8.8") and not admission.allowed("8.8.8.8")
