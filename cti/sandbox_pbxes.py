"""The loopback test bed's PBXes: where each sandbox Asterisk listens, and where its
callers and agents' phones sit.

Why a table: ``scripts/asterisk-sandbox`` runs two Asterisk servers from one root on
one host (issue 12), so everything that has one port per server (SIP, AMI, the public
trunk's source port the caller SIPp binds, agent 200N's phone, its RTP) needs a port
of its own per PBX. The home PBX ``a`` keeps the ports it always had; ``b`` is the home
plus 100 for SIP-side ports (5160, 5180, 517N) and AMI one up (5039). The shell script
holds the same table; ``tests/unit/test_sandbox_pbxes.py`` checks that they agree.

Used by ``cti loadtest --pbx`` and the end-to-end tests. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True, slots=True)
class SandboxPbx:
    """One sandbox Asterisk (``scripts/asterisk-sandbox --pbx <name>``)."""

    name: str
    sip_port: int
    ami_port: int
    #: Calls from 127.0.0.1 on this port are the public trunk's (pjsip.conf identify).
    trunk_port: int
    #: Agent 200N's phone binds ``agent_port_base + N``.
    agent_port_base: int
    #: Agent 200N's phone sends RTP from ``media_port_base + 10 N``.
    media_port_base: int
    #: The folder under the repository with its pid, log, AMI secret and agent passwords.
    run_dir: PurePosixPath
    #: Suffix of its own settings: ``CTI_AMI_SECRET_B``, ``CTI_AGENT_2001_PASSWORD_B``.
    env_suffix: str

    @property
    def sip_address(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def agent_port(self, agent: int) -> int:
        return self.agent_port_base + agent - 2000

    def media_port(self, agent: int) -> int:
        return self.media_port_base + 10 * (agent - 2000)


HOME = SandboxPbx(
    name="a",
    sip_port=5060,
    ami_port=5038,
    trunk_port=5080,
    agent_port_base=5070,
    media_port_base=16000,
    run_dir=PurePosixPath("var/asterisk-sandbox"),
    env_suffix="",
)
SECOND = SandboxPbx(
    name="b",
    sip_port=5160,
    ami_port=5039,
    trunk_port=5180,
    agent_port_base=5170,
    media_port_base=16100,
    run_dir=PurePosixPath("var/asterisk-sandbox-b"),
    env_suffix="_B",
)
SANDBOX_PBXES = {pbx.name: pbx for pbx in (HOME, SECOND)}


def sandbox_pbx(name: str) -> SandboxPbx:
    """The sandbox PBX called ``name``; ValueError names the ones there are."""
    try:
        return SANDBOX_PBXES[name]
    except KeyError:
        raise ValueError(
            f"no sandbox PBX {name!r}: scripts/asterisk-sandbox runs {', '.join(SANDBOX_PBXES)}"
        ) from None


def cti_pbxes(*names: str) -> str:
    """``CTI_PBXES`` for cti following these sandbox PBXes, the first as home
    (``a=127.0.0.1:5038,b=127.0.0.1:5039``)."""
    return ",".join(f"{n}=127.0.0.1:{sandbox_pbx(n).ami_port}" for n in names)
