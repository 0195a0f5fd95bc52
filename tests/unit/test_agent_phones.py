"""Where the SIPp phones get their SIP passwords, and how they register."""

from __future__ import annotations

from pathlib import Path

import pytest

from cti.agent_phones import (
    PhoneError,
    agent_passwords,
    password_of,
    registered,
    registration_argv,
    registration_log,
)


def test_the_environment_wins_over_the_sandbox_file(tmp_path: Path):
    file = tmp_path / "agent-passwords"
    file.write_text(
        "CTI_AGENT_2001_PASSWORD=fromfile1\nCTI_AGENT_2002_PASSWORD=fromfile2\n# comment\n"
        "CTI_AGENT_2009_PASSWORD=nobody\nCTI_AGENT_2003_PASSWORD=\n"
    )
    env = {"CTI_AGENT_2002_PASSWORD": "fromenv2", "CTI_AGENT_2004_PASSWORD": "fromenv4"}
    assert agent_passwords(env, file) == {2001: "fromfile1", 2002: "fromenv2", 2004: "fromenv4"}


def test_no_file_and_no_variable_names_both_ways_to_set_it(tmp_path: Path):
    passwords = agent_passwords({}, tmp_path / "missing")
    assert passwords == {}
    with pytest.raises(PhoneError, match=r"CTI_AGENT_2005_PASSWORD.*asterisk-sandbox"):
        password_of(2005, passwords)


def test_a_phone_registers_as_its_agent_from_its_own_port(tmp_path: Path):
    argv = registration_argv(
        2003, sipp="sipp", host="127.0.0.1", port=5073, asterisk="127.0.0.1:5060",
        password="s3cret-pw", workdir=tmp_path,
    )  # fmt: skip
    assert argv[:2] == ["sipp", "127.0.0.1:5060"]
    options = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert options["-sf"].endswith("sipp/agent-register.xml")
    assert (options["-p"], options["-s"], options["-au"], options["-ap"]) == (
        "5073",
        "2003",
        "2003",
        "s3cret-pw",
    )
    assert options["-log_file"] == str(registration_log(tmp_path, 2003))
    keys = [argv[i + 1 : i + 3] for i, arg in enumerate(argv) if arg == "-key"]
    assert ["refresh_ms", "240000"] in keys and ["expires", "300"] in keys
    once = registration_argv(
        2003, sipp="sipp", host="127.0.0.1", port=5073, asterisk="127.0.0.1:5060",
        password="s3cret-pw", workdir=tmp_path, refresh_ms=0,
    )  # fmt: skip
    assert once[once.index("refresh_ms") - 1 :][:3] == ["-key", "refresh_ms", "0"]


def test_registered_once_the_scenario_logged_it(tmp_path: Path):
    log = registration_log(tmp_path, 2001)
    assert not registered(log)
    log.write_text("")
    assert not registered(log)
    log.write_text("registered 2001\n")
    assert registered(log)
