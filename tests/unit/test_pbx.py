"""Several PBXes (cti.pbx, CTI_PBXES in cti.config): names, devices and their AMI logins."""

from __future__ import annotations

import pytest

from cti.config import ConfigError, load_config
from cti.pbx import DEFAULT_PBX, Pbx, parse_pbxes, pbx_of, split_device


def test_without_cti_pbxes_the_one_pbx_is_the_ami_variables() -> None:
    config = load_config({"CTI_AMI_HOST": "10.0.0.5", "CTI_AMI_SECRET": "s3cret"})
    (pbx,) = config.pbx_list()
    assert (pbx.name, pbx.host, pbx.port, pbx.username, pbx.secret, pbx.home) == (
        DEFAULT_PBX,
        "10.0.0.5",
        5038,
        "cti",
        "s3cret",
        True,
    )
    assert config.ami_enabled


def test_cti_pbxes_lists_them_home_first_each_with_its_own_login_or_the_shared_one() -> None:
    config = load_config(
        {
            "CTI_PBXES": "a=10.0.0.1:5038, b=10.0.0.2:5039",
            "CTI_AMI_SECRET": "shared",
            "CTI_AMI_USERNAME_B": "cti-b",
            "CTI_AMI_SECRET_B": "only-b",
        }
    )
    a, b = config.pbx_list()
    assert (a.name, a.host, a.port, a.username, a.secret, a.home) == (
        "a",
        "10.0.0.1",
        5038,
        "cti",
        "shared",
        True,
    )
    assert (b.name, b.host, b.port, b.username, b.secret, b.home) == (
        "b",
        "10.0.0.2",
        5039,
        "cti-b",
        "only-b",
        False,
    )
    assert config.ami_enabled
    assert "only-b" not in repr(config) and "shared" not in repr(config)


def test_a_pbx_without_a_secret_is_named() -> None:
    with pytest.raises(ConfigError, match="CTI_AMI_SECRET_B"):
        load_config({"CTI_PBXES": "a=h:1,b=h:2", "CTI_AMI_SECRET_A": "x", "CTI_AMI_ENABLED": "yes"})
    # Without CTI_AMI_ENABLED, a missing secret means routing only, as with one PBX.
    assert not load_config({"CTI_PBXES": "a=h:1,b=h:2", "CTI_AMI_SECRET_A": "x"}).ami_enabled


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "a",
        "a=host",
        "A=h:1",
        "a=h:0",
        "a=h:70000",
        "a=h:1,a=h:2",
        "1a=h:1",
        "a=:1",
        "averyveryverylongname=h:1",
        "a;b=h:1",
    ],
)
def test_a_bad_cti_pbxes_is_refused_in_words(raw: str) -> None:
    with pytest.raises(ConfigError, match="CTI_PBXES"):
        load_config({"CTI_PBXES": raw or ",", "CTI_AMI_SECRET": "x"})


def test_devices_of_the_home_pbx_keep_their_names_others_name_their_pbx() -> None:
    home, other = Pbx("a", "h", 1, "u"), Pbx("b", "h", 2, "u", home=False)
    assert home.device("PJSIP/2001") == "PJSIP/2001"
    assert other.device("PJSIP/2001") == "PJSIP/2001@b"
    assert split_device("PJSIP/2001@b") == ("PJSIP/2001", "b")
    assert split_device("PJSIP/2001") == ("PJSIP/2001", None)
    assert split_device("PJSIP/x@Not-A-Name") == ("PJSIP/x@Not-A-Name", None)
    assert pbx_of("PJSIP/2001@b", "a") == "b" and pbx_of("PJSIP/2001", "a") == "a"
    assert parse_pbxes("a=[::1]:5038") == [("a", "::1", 5038)]


def test_inter_pbx_trunks_are_plumbing_and_devices_are_named_by_pbx() -> None:
    from cti.pbx import agent_of, trunk_peer

    assert trunk_peer("PJSIP/pbx-b-0000001f") == "b"
    assert trunk_peer("PJSIP/pbx-b") == "b"
    assert trunk_peer("PJSIP/trunk-0000001f") is None
    assert trunk_peer("PJSIP/2001-0000001f") is None
    other = agent_of(Pbx("b", "h", 2, "u", home=False))
    assert other("PJSIP/2001-0000001f") == "PJSIP/2001@b"
    assert other("PJSIP/pbx-a-00000001") is None
    assert other("Local/2003@agents-00000000;1") is None
    assert agent_of(Pbx("a", "h", 1, "u"))("PJSIP/2001-0000001f") == "PJSIP/2001"
