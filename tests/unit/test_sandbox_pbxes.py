"""The test bed's two PBXes: the Python table (cti.sandbox_pbxes) and the shell's
(scripts/asterisk-sandbox) say the same ports, and ``cti loadtest --pbx`` uses them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from cti.agent_phones import agent_passwords, sandbox_passwords
from cti.loadtest import add_arguments, options_from_args
from cti.sandbox_pbxes import HOME, SECOND, cti_pbxes, sandbox_pbx

REPO = Path(__file__).resolve().parents[2]
SANDBOX = (REPO / "scripts" / "asterisk-sandbox").read_text()


def shell_settings(pbx: str) -> dict[str, str]:
    """NAME=value lines of the script that apply to ``pbx``: the home's at the top level,
    then those of its ``case`` branch."""
    top = dict(re.findall(r"^(?:export )?([A-Z_]+)=(\S*)", SANDBOX, re.MULTILINE))
    branch = re.search(rf"^    {pbx}\)\n(.*?)^        ;;", SANDBOX, re.MULTILINE | re.DOTALL)
    if branch:
        top |= dict(re.findall(r"^        ([A-Z_]+)=(\S*)", branch[1], re.MULTILINE))
    return top


@pytest.mark.parametrize("pbx", [HOME, SECOND], ids=lambda p: p.name)
def test_the_script_and_the_table_agree(pbx):
    shell = shell_settings(pbx.name)
    assert int(shell["SIP_PORT"]) == pbx.sip_port
    assert int(shell["AMI_PORT"]) == pbx.ami_port
    assert shell["RUN"] == f"$REPO/{pbx.run_dir}"
    assert shell["SUFFIX"] == pbx.env_suffix
    assert str(pbx.trunk_port) in shell["CTI_TRUNK_PORT"]


def test_the_second_pbx_takes_ports_of_its_own():
    home = {HOME.sip_port, HOME.ami_port, HOME.trunk_port} | {
        HOME.agent_port(a) for a in range(2001, 2007)
    }
    second = {SECOND.sip_port, SECOND.ami_port, SECOND.trunk_port} | {
        SECOND.agent_port(a) for a in range(2001, 2007)
    }
    assert not home & second
    assert SECOND.agent_port(2003) == 5173 and HOME.agent_port(2003) == 5073
    assert {HOME.media_port(a) for a in range(2001, 2007)}.isdisjoint(
        SECOND.media_port(a) for a in range(2001, 2007)
    )


def test_cti_follows_the_sandbox_pbxes_home_first():
    assert cti_pbxes("a", "b") == "a=127.0.0.1:5038,b=127.0.0.1:5039"
    with pytest.raises(ValueError, match="no sandbox PBX 'c'"):
        sandbox_pbx("c")


def test_the_second_pbx_has_its_own_agent_passwords(tmp_path: Path):
    env = {"CTI_AGENT_2001_PASSWORD": "home-pw-1", "CTI_AGENT_2001_PASSWORD_B": "b-pw-1"}
    assert agent_passwords(env, tmp_path / "none")[2001] == "home-pw-1"
    assert agent_passwords(env, tmp_path / "none", suffix="_B")[2001] == "b-pw-1"
    assert sandbox_passwords(SECOND, env)[2001] == "b-pw-1"


def loadtest_options(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from_args(parser.parse_args(list(argv)))


def test_loadtest_calls_the_pbx_asked_for():
    home = loadtest_options()
    assert (home.asterisk, home.local_port, home.pbx) == ("127.0.0.1:5060", 5080, HOME)
    second = loadtest_options("--pbx", "b", "--agents")
    assert (second.asterisk, second.local_port, second.pbx) == ("127.0.0.1:5160", 5180, SECOND)
    explicit = loadtest_options("--pbx", "b", "--asterisk", "10.0.0.2:5060", "--local-port", "5090")
    assert (explicit.asterisk, explicit.local_port) == ("10.0.0.2:5060", 5090)
