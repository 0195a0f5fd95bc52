"""The IVR's ``key=value`` arguments (cti.agi.route.parse_ivr_args), without sockets."""

from __future__ import annotations

from cti.agi.route import parse_ivr_args


def test_well_formed_arguments_are_kept_and_the_rest_ignored():
    args = ["account=A1", "Intent = order ", "garbage", "empty=", "=x", "lang=en"]
    assert parse_ivr_args(args) == {"account": "A1", "intent": "order", "lang": "en"}


def test_a_value_with_a_control_character_is_ignored_not_stripped():
    args = ["intent=bill\x00ing", "account=A\x1b[31m1", "lang=e\x9bn", "channel=web"]
    assert parse_ivr_args(args) == {"channel": "web"}
