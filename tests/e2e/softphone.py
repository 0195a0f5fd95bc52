"""A real softphone for the end-to-end tests: Debian's baresip, headless, answering by itself.

It is what a person would run as an agent: it registers with user and password (the
digest challenge of ``asterisk/etc/pjsip.conf``), not from an address Asterisk knows.
Configured in a directory of the test's own (``baresip -f DIR``): no UI module, no
sound card (a silent WAV file as microphone, ALSA's ``null`` device as speaker), G.711 only,
``answermode=auto``. Its log (stdout) tells when it registered and answered.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from cti.loadtest import stop_process

MODULES = Path("/usr/lib/baresip/modules")


def baresip_missing() -> str | None:
    """Why baresip cannot run here, or None."""
    if shutil.which("baresip") is None:
        return "baresip not found: install Debian's baresip package (scripts/bootstrap does)"
    for module in ("g711.so", "aufile.so", "alsa.so", "account.so", "menu.so"):
        if not (MODULES / module).exists():
            return f"baresip module {MODULES / module} missing"
    return None


def _bindable(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_sip_port() -> int:
    """baresip binds SIP on UDP and TCP ``port`` and TLS on TCP ``port + 1``."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if (
            port < 65535
            and _bindable(socket.SOCK_STREAM, port)
            and _bindable(socket.SOCK_STREAM, port + 1)
        ):
            return port
    raise RuntimeError("no free port pair for baresip")


def write_silence(path: Path, seconds: int = 120) -> None:
    """8 kHz mono 16-bit silence: aufile wants the codec's sample rate (G.711: 8000)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(2 * 8000 * seconds))


def write_config(directory: Path, *, user: str, password: str, registrar: str, port: int) -> None:
    """``config`` and ``accounts`` for one account; the password file is mode 600."""
    directory.mkdir(parents=True, exist_ok=True)
    write_silence(directory / "silence.wav")
    (directory / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{port}",
                "call_local_timeout 120",
                "call_max_calls 4",
                "audio_player alsa,null",  # ALSA's null device: no sound card needed
                "audio_alert alsa,null",
                f"audio_source aufile,{directory / 'silence.wav'}",  # a silent microphone
                "rtp_ports 40000-40999",
                f"module_path {MODULES}",
                "module g711.so",
                "module alsa.so",
                "module aufile.so",
                "module_tmp account.so",
                "module_app menu.so",  # carries out answermode=auto
                "",
            ]
        )
    )
    accounts = directory / "accounts"
    accounts.touch(mode=0o600)
    accounts.write_text(
        f"<sip:{user}@{registrar};transport=udp>;auth_pass={password};answermode=auto"
        ";regint=300;audio_codecs=PCMU\n"
    )
    (directory / "contacts").write_text("")


@dataclass
class Baresip:
    """One baresip process registered as ``user``."""

    proc: asyncio.subprocess.Process
    log: Path

    @classmethod
    async def start(cls, workdir: Path, *, user: str, password: str, registrar: str) -> Baresip:
        config = workdir / "baresip"
        port = free_sip_port()
        write_config(config, user=user, password=password, registrar=registrar, port=port)
        log = workdir / "baresip.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                "baresip", "-f", str(config),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                cwd=workdir, start_new_session=True,
            )  # fmt: skip
        return cls(proc, log)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_for(self, text: str, within_s: float) -> None:
        """Until ``text`` appears in its log; fail if it exits or ``within_s`` passes."""
        deadline = time.monotonic() + within_s
        while text not in self.output():
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"baresip exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"baresip: no {text!r} within {within_s}s:\n{self.output()[-3000:]}"
                )
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await stop_process(self.proc, 5)
