#!/usr/bin/env python3
"""Make docs/sidebar.png: the agent's sidebar at 380×800 with a popped gold customer's call.

Why through the browser test (tests/browser/test_sidebar.py::test_screenshot_of_a_popped_
gold_call) rather than a page of its own: the picture is then of the real page against
the real back end (PostgreSQL and Redis as the tests use them, CTI_TEST_PG and
CTI_TEST_REDIS to point elsewhere), with a call popped the way production pops one, so
it cannot drift from what agents see. It shows Alan Turing (gold) on the support line,
what the IVR collected, the note of the agent who had the call before, and the note the
agent is writing. Needs Debian's chromium (/usr/bin/chromium) and ``.[test]``.

Usage::

    .venv/bin/python tools/screenshot_sidebar.py [OUT.png]   # default: docs/sidebar.png
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/browser/test_sidebar.py::test_screenshot_of_a_popped_gold_call"


def main(argv: list[str]) -> int:
    out = (Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "sidebar.png").resolve()
    before = out.stat().st_mtime_ns if out.exists() else None
    env = {**os.environ, "CTI_SCREENSHOT": str(out)}
    command = [sys.executable, "-m", "pytest", TEST, "-q", "-rs", "-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        return result.returncode
    if not out.exists() or out.stat().st_mtime_ns == before:
        print(f"{out} was not written (the test was skipped: see above)", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
