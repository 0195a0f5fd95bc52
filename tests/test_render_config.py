"""asterisk/render-config for a cluster of PBXes (issue 12): each peer in CTI_PBX_PEERS
becomes an inter-PBX trunk (pjsip-pbx.conf) and transfer targets (extensions-pbx.conf);
the PBX's own ports come from the environment. Runs the POSIX sh script; no Asterisk."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RENDER = REPO / "asterisk" / "render-config"
SECRETS = {f"CTI_AGENT_200{n}_PASSWORD": f"agent-pw-{n}" for n in range(1, 7)} | {
    "CTI_AMI_SECRET": "ami-secret-1"
}


def render(tmp_path: Path, **settings: str) -> tuple[int, str, Path]:
    out = tmp_path / "etc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")} | SECRETS | settings
    done = subprocess.run(
        ["sh", str(RENDER), str(out)], env=env, capture_output=True, text=True, timeout=30
    )
    return done.returncode, done.stderr, out


def sections(text: str) -> dict[str, list[dict[str, str]]]:
    """[name] -> the sections of that name, each as its key = value pairs."""
    found: dict[str, list[dict[str, str]]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if header := re.match(r"^\[([^\]]+)\]", line):
            current = {}
            found.setdefault(header[1], []).append(current)
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return found


def test_a_peer_becomes_a_trunk_recognised_by_address_and_port(tmp_path: Path):
    code, err, out = render(
        tmp_path, CTI_PBX_NAME="a", CTI_PBX_PEERS="a=127.0.0.1:5060,b=127.0.0.1:5160"
    )
    assert code == 0, err
    trunks = sections((out / "pjsip-pbx.conf").read_text())
    assert set(trunks) == {"pbx-b"}, "the PBX itself is no peer"
    by_type = {s["type"]: s for s in trunks["pbx-b"]}
    assert by_type["endpoint"]["context"] == "from-pbx"
    assert "auth" not in by_type["endpoint"], "loopback: recognised by address, no SIP auth"
    identify = by_type["identify"]
    assert (identify["endpoint"], identify["match"]) == ("pbx-b", "127.0.0.1:5160")
    assert by_type["aor"]["contact"] == "sip:127.0.0.1:5160"
    assert "#include pjsip-pbx.conf" in (out / "pjsip.conf").read_text()


def test_a_peer_gets_a_transfer_target_per_queue_sending_the_call_id(tmp_path: Path):
    code, err, out = render(tmp_path, CTI_PBX_NAME="a", CTI_PBX_PEERS="b=127.0.0.1:5160")
    assert code == 0, err
    targets = (out / "extensions-pbx.conf").read_text()
    assert "exten => b-support,1,Dial(PJSIP/support@pbx-b,,b(cti-to-pbx^s^1))" in targets
    assert "exten => b-rep-slow,1,Dial(PJSIP/rep-slow@pbx-b,,b(cti-to-pbx^s^1))" in targets
    # By number for AMI Atxfer (DTMF digits): 8, b's position in the list (1), 3001.
    assert "exten => 813001,1,Goto(cti-pbx-targets,b-support,1)" in targets
    dialplan = (out / "extensions.conf").read_text()
    agents = dialplan.split("[agents]", 1)[1]
    assert "include => cti-pbx-targets" in agents
    assert "PJSIP_HEADER(add,X-CTI-Call-ID)=${CTI_CALL_ID}" in dialplan
    # Only from-pbx reads the header; the public trunk's context never does.
    from_trunk = dialplan.split("[from-trunk]", 1)[1].split("\n[", 1)[0]
    assert "X-CTI-Call-ID" not in from_trunk
    from_pbx = dialplan.split("[from-pbx]", 1)[1].split("\n[", 1)[0]
    assert (
        "AGI(agi://${CTI_AGI_ADDR}/attach,call_id=${PJSIP_HEADER(read,X-CTI-Call-ID)},"
        "queue=${EXTEN})" in from_pbx
    )


def test_no_peers_no_trunks_and_the_home_ports(tmp_path: Path):
    code, err, out = render(tmp_path)
    assert code == 0, err
    assert sections((out / "pjsip-pbx.conf").read_text()) == {}
    assert "exten =>" not in (out / "extensions-pbx.conf").read_text()
    assert re.search(r"^bind = 0\.0\.0\.0:5060$", (out / "pjsip.conf").read_text(), re.M)
    assert re.search(r"^port = 5038$", (out / "manager.conf").read_text(), re.M)
    assert re.search(r"^rtpstart = 10000$", (out / "rtp.conf").read_text(), re.M)


def test_the_second_pbx_ports(tmp_path: Path):
    code, err, out = render(
        tmp_path, CTI_SIP_PORT="5160", CTI_AMI_PORT="5039", CTI_RTP_START="20000",
        CTI_RTP_END="29999", CTI_PBX_NAME="b", CTI_PBX_PEERS="a=127.0.0.1:5060",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"^bind = 0\.0\.0\.0:5160$", (out / "pjsip.conf").read_text(), re.M)
    assert re.search(r"^port = 5039$", (out / "manager.conf").read_text(), re.M)
    assert re.search(r"^rtpend = 29999$", (out / "rtp.conf").read_text(), re.M)
    assert "exten => a-sales,1,Dial(PJSIP/sales@pbx-a," in (out / "extensions-pbx.conf").read_text()


def test_every_pbx_given_the_same_list_numbers_the_peers_alike(tmp_path: Path):
    peers = "a=127.0.0.1:5060,b=127.0.0.1:5160"
    numbers = {}
    for me in ("a", "b"):
        code, err, out = render(tmp_path / me, CTI_PBX_NAME=me, CTI_PBX_PEERS=peers)
        assert code == 0, err
        numbers[me] = (out / "extensions-pbx.conf").read_text()
    assert "exten => 823001,1,Goto(cti-pbx-targets,b-support,1)" in numbers["a"]
    assert "exten => 813002,1,Goto(cti-pbx-targets,a-sales,1)" in numbers["b"]
    assert "pbx-a" not in numbers["a"] and "pbx-b" not in numbers["b"]


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        ("b=127.0.0.1:5160,b=127.0.0.2:5160", "listed twice"),
        ("B=127.0.0.1:5160", "must start with a letter a-z"),
        ("b=127.0.0.1", "not name=host:port"),
        ("b=bad;host:5160", "not a host name"),
        ("b=127.0.0.1:50x", "not a port number"),
    ],
)
def test_bad_peers_are_refused_in_words(tmp_path: Path, peers: str, message: str):
    code, err, out = render(tmp_path, CTI_PBX_PEERS=peers)
    assert code != 0 and message in err
    assert not (out / "pjsip-pbx.conf").exists()
