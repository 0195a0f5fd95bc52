"""The test bed's SIPp agent phones, which register with Asterisk as a softphone does.

Asterisk knows an agent's phone only from its registration (``asterisk/etc/pjsip.conf``:
digest auth, one contact per agent), so a phone is one SIPp whose main scenario
registers (``sipp/agent-register.xml``: REGISTER from the phone's own port, answer the
401 with the agent's password, refresh before expiry) and whose out-of-call scenario
(``-oocsf sipp/agent.xml``) answers the calls Asterisk then sends to that contact.

The passwords are not in the repository: ``CTI_AGENT_200N_PASSWORD`` in the
environment, else the file ``scripts/asterisk-sandbox`` writes once
(``var/asterisk-sandbox/agent-passwords``, mode 600, the same ``NAME=value`` lines).
The second sandbox PBX (``--pbx b``) has agents 2001-2006 of its own, with their own
passwords: ``CTI_AGENT_200N_PASSWORD_B``, else ``var/asterisk-sandbox-b/agent-passwords``
(:func:`sandbox_passwords`).

Used by ``cti loadtest --agents``, the end-to-end tests and ``tools/record_ami.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path

from cti.sandbox_pbxes import SandboxPbx

REPO = Path(__file__).resolve().parents[1]
SIPP_DIR = REPO / "sipp"
REGISTER_XML = SIPP_DIR / "agent-register.xml"
SANDBOX_PASSWORDS = REPO / "var" / "asterisk-sandbox" / "agent-passwords"
AGENTS = tuple(range(2001, 2007))
EXPIRES_S = 300  # asked for in REGISTER; the AOR accepts 60..3600
REFRESH_MS = 240_000  # re-REGISTER a minute before the registration expires


class PhoneError(RuntimeError):
    """An agent phone could not start or register; the message says why."""


def password_variable(agent: int) -> str:
    return f"CTI_AGENT_{agent}_PASSWORD"


def read_password_file(path: Path) -> dict[int, str]:
    """``CTI_AGENT_200N_PASSWORD=value`` lines (other lines ignored) -> {200N: value}."""
    found: dict[int, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        for agent in AGENTS:
            if sep and name == password_variable(agent) and value:
                found[agent] = value
    return found


def agent_passwords(
    env: Mapping[str, str] | None = None, file: Path = SANDBOX_PASSWORDS, suffix: str = ""
) -> dict[int, str]:
    """Each agent's SIP password: from the environment (``CTI_AGENT_200N_PASSWORD`` plus
    ``suffix``), else from the sandbox's file (its lines never carry the suffix)."""
    env = os.environ if env is None else env
    from_file: dict[int, str] = {}
    if file.exists():
        try:
            from_file = read_password_file(file)
        except OSError as exc:
            raise PhoneError(f"{file}: {exc.strerror}") from None
    passwords = {}
    for agent in AGENTS:
        value = env.get(password_variable(agent) + suffix) or from_file.get(agent)
        if value:
            passwords[agent] = value
    return passwords


def sandbox_passwords(pbx: SandboxPbx, env: Mapping[str, str] | None = None) -> dict[int, str]:
    """The agents' passwords of one sandbox PBX (``scripts/asterisk-sandbox --pbx``)."""
    return agent_passwords(env, REPO / pbx.run_dir / "agent-passwords", pbx.env_suffix)


def password_of(agent: int, passwords: Mapping[int, str] | None = None) -> str:
    found = (agent_passwords() if passwords is None else passwords).get(agent)
    if not found:
        raise PhoneError(
            f"no SIP password for agent {agent}: set {password_variable(agent)}"
            f" or start Asterisk with scripts/asterisk-sandbox (it writes {SANDBOX_PASSWORDS})"
        )
    return found


def registration_log(workdir: Path, agent: int) -> Path:
    return workdir / f"agent-{agent}-register.log"


def registration_argv(
    agent: int,
    *,
    sipp: str,
    host: str,
    port: int,
    asterisk: str,
    password: str,
    workdir: Path,
    refresh_ms: int = REFRESH_MS,
    scenario: Path = REGISTER_XML,
) -> list[str]:
    """SIPp registering agent ``agent`` from ``host:port`` (add ``-oocsf`` to take calls).

    ``refresh_ms`` 0: register once and exit (status 0 when Asterisk accepted it).
    ``scenario``: ``sipp/agent-register.xml`` (another copy when cti runs from a wheel)."""
    return [
        sipp, asterisk, "-sf", str(scenario), "-i", host, "-p", str(port),
        "-s", str(agent), "-au", str(agent), "-ap", password,
        "-key", "expires", str(EXPIRES_S), "-key", "refresh_ms", str(refresh_ms),
        "-m", "1", "-nostdin",
        "-trace_logs", "-log_file", str(registration_log(workdir, agent)),
    ]  # fmt: skip


def registered(log: Path) -> bool:
    """Whether the phone's SIPp has logged a successful registration."""
    try:
        return "registered " in log.read_text(errors="replace")
    except OSError:
        return False


async def wait_until_registered(
    phones: Mapping[int, asyncio.subprocess.Process], workdir: Path, within_s: float = 20
) -> None:
    """Wait until Asterisk accepted every phone's REGISTER; fail if one exits or is slow."""
    deadline = time.monotonic() + within_s
    for agent, proc in phones.items():
        log = registration_log(workdir, agent)
        while not await asyncio.to_thread(registered, log):
            if proc.returncode is not None:
                raise PhoneError(
                    f"SIPp agent {agent} exited with {proc.returncode} before registering"
                    " (wrong password? see Asterisk's log)"
                )
            if time.monotonic() > deadline:
                raise PhoneError(f"agent {agent}'s phone did not register within {within_s} s")
            await asyncio.sleep(0.05)


async def register_once(
    agent: int,
    *,
    sipp: str,
    host: str,
    port: int,
    asterisk: str,
    password: str,
    workdir: Path,
    within_s: float = 30,
) -> None:
    """Register ``host:port`` as agent ``agent``'s phone and return (no refreshes): for a
    phone that runs another scenario on that port afterwards, within the expiry."""
    proc = await asyncio.create_subprocess_exec(
        *registration_argv(
            agent, sipp=sipp, host=host, port=port, asterisk=asterisk,
            password=password, workdir=workdir, refresh_ms=0,
        ),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=workdir, start_new_session=True,
    )  # fmt: skip
    try:
        code = await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PhoneError(f"agent {agent}: no answer to REGISTER within {within_s} s") from None
    if code != 0:
        raise PhoneError(f"agent {agent}: REGISTER refused (SIPp exit {code}; wrong password?)")
