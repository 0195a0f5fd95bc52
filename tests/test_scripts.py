"""The newcomer's path through scripts/: the README's first commands, the demo's hints,
the machine-wide Asterisk cache and bootstrap's quiet pip. No Asterisk needed: these
run the scripts' own code paths (as another user, with a stand-in sudo) or read them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def read(path: str) -> str:
    return (REPO / path).read_text(encoding="utf-8")


def opening_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", read("README.md"), re.DOTALL)
    assert block, "README.md: no opening ```sh block"
    return [line.split("#")[0].strip() for line in block[1].splitlines() if line.strip()]


def test_the_readme_opens_with_commands_that_need_no_sudo():
    """A root shell may have no sudo at all; the scripts ask for it themselves."""
    assert opening_commands() == ["scripts/demo", "scripts/test"]


@pytest.fixture
def fake_sudo() -> Iterator[Path]:
    """A directory with a ``sudo`` that only says how it was called (the other side of
    the scripts' re-run), readable by an unprivileged user."""
    folder = Path(tempfile.mkdtemp(prefix="cti-sudo-"))
    try:
        folder.chmod(0o755)
        sudo = folder / "sudo"
        sudo.write_text('#!/bin/sh\necho "sudo $*"\n')
        sudo.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder)


def as_nobody(argv: list[str], path: str) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run a script as another user")
    return subprocess.run(
        [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        cwd=REPO, env={"PATH": path, "CTI_DEMO_HOLD_MS": "3000"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv", [["scripts/demo"], ["scripts/demo", "down"], ["scripts/test", "-x"],
             ["scripts/bootstrap"]],
)  # fmt: skip
def test_a_user_gets_the_script_run_again_with_sudo(argv, fake_sudo):
    done = as_nobody(argv, f"{fake_sudo}:/usr/bin:/bin")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == " ".join(["sudo -E --", *argv])


@pytest.mark.parametrize("argv", [["scripts/demo"], ["scripts/test"], ["scripts/bootstrap"]])
def test_a_user_without_sudo_is_told_to_be_root(argv, fake_sudo):
    # Only what the scripts run before they look for sudo: no sudo on this PATH.
    bare = fake_sudo / "bare"
    bare.mkdir(mode=0o755)
    for tool in ("bash", "id", "dirname"):
        (bare / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    done = as_nobody(argv, str(bare))
    assert done.returncode == 1
    assert "run as root" in done.stderr


def test_the_demos_hint_places_calls_the_way_the_demo_does():
    """``scripts/demo calls`` and the calls of ``up`` are one function, which hands the
    demo's hold time to ``cti demo calls`` (tests/unit/test_demo_report.py: -d)."""
    demo = read("scripts/demo")
    hints = re.findall(r"^  [a-z].*?\s{2,}(scripts/demo (?:calls?)\b.*)$", demo, re.MULTILINE)
    assert hints == ["scripts/demo call 2120000002 5550100 --hold 20", "scripts/demo calls"]
    up = demo[demo.index("cmd_up() {") : demo.index("\n}\n", demo.index("cmd_up() {"))]
    assert re.search(r"^\s+demo_calls --workdir", up, re.MULTILINE)
    assert re.search(r"^\s+calls\) shift; demo_calls \"\$@\" ;;$", demo, re.MULTILINE)
    assert re.search(r"^\s+call\) shift; cmd_call \"\$@\" ;;$", demo, re.MULTILINE)
    function = re.search(r"^demo_calls\(\) \{\n(.*?)\n\}", demo, re.MULTILINE | re.DOTALL)
    assert function and '"$CTI" demo calls --hold' in function[1] and "HOLD_MS" in function[1]
    assert re.search(r'exec "\$CTI" demo call "\$@"', demo)


def test_the_demo_hint_hold_is_the_demos_hold(fake_sudo):
    """Run ``demo_calls`` as the script defines it, with a stand-in for .venv/bin/cti."""
    demo = read("scripts/demo")
    function = re.search(r"^demo_calls\(\) \{\n.*?\n\}", demo, re.MULTILINE | re.DOTALL)
    assert function
    cti = fake_sudo / "cti"
    cti.write_text('#!/bin/sh\necho "cti $*"\n')
    cti.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", f'die() {{ exit 9; }}\nCTI={cti}\nHOLD_MS=4000\n{function[0]}\n'
                       'demo_calls --workdir /w'],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "cti demo calls --hold 4.000 --workdir /w"


def test_the_asterisk_root_is_cached_once_per_machine():
    sandbox = read("scripts/asterisk-sandbox")
    cache = re.search(r"^CACHE=\$\{CTI_SANDBOX_CACHE:-(?P<default>[^}]+)\}$", sandbox, re.M)
    assert cache and cache["default"] == "/var/cache/cti"
    assert "flock" in sandbox  # two clones building the shared root at once wait in turn
    readme = read("README.md")
    assert "/var/cache/cti" in readme and "CTI_SANDBOX_CACHE" in readme
    # CI may keep its own cache, but only through the variable.
    ci = read(".ci/run")
    assert re.search(r"CTI_SANDBOX_CACHE=\$\{CTI_SANDBOX_CACHE:-/var/cache/[\w-]+\}", ci)


def test_bootstraps_pip_filter_drops_warnings_whatever_their_case():
    bootstrap = read("scripts/bootstrap")
    function = re.search(r"^quiet_pip\(\) \{\n(.*?)\n\}", bootstrap, re.MULTILINE | re.DOTALL)
    assert function, "scripts/bootstrap: no quiet_pip function"
    grep = function[1][function[1].index("| grep") + 2 : function[1].index(" >&2")]
    # Every pip call of bootstrap goes through it.
    assert len(re.findall(r"^\s+quiet_pip install", bootstrap, re.MULTILINE)) == 2
    assert not re.search(r"^\s+\"\$VENV/bin/pip\" install", bootstrap, re.MULTILINE)
    pip_output = (
        "WARNING: Location 'file:///opt/pypi/simple/pip/' is ignored: it is neither a file\n"
        "  warning: no files found matching '*.txt'\n"
        "SetuptoolsDeprecationWarning: License classifiers are deprecated.\n"
        "!!\n"
        "ERROR: Could not find a version that satisfies the requirement asyncpg>=0.29\n"
    )
    kept = subprocess.run(["bash", "-c", grep], input=pip_output, capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert kept.stdout.splitlines() == [
        "ERROR: Could not find a version that satisfies the requirement asyncpg>=0.29"
    ]
