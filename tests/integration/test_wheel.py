"""The wheel as an operator installs it: built from the package alone, installed into a
fresh virtualenv outside the checkout, then ``cti db migrate``, ``cti db seed-demo`` and
``cti serve`` run from it. Everything cti reads at run time (migrations, the demo plan,
the sidebar's page) must be inside the wheel: nothing of the checkout is reachable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import PG_SERVER, REDIS_URL
from tests.fakes.asterisk_agi import agi_call
from tests.processes import free_port, killed_on_exit, stop
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]


async def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 240)
    text = out.decode()
    assert process.returncode == 0, f"{argv}: exit {process.returncode}\n{text}"
    return text


@pytest.fixture(scope="module")
async def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the checkout with the wheel in it; returns its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what the wheel is made of, so the build leaves nothing in the
    # checkout and nothing outside these files can leak into it.
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "cti", source / "cti", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    # No build isolation: the test extras hold setuptools, so no download is needed.
    await run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--no-index", "--wheel-dir", dist, source, cwd=tmp)  # fmt: skip
    (wheel,) = dist.glob("cti-*.whl")
    venv = tmp / "venv"
    await run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    await run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
              "--no-deps", "--no-index", wheel, cwd=tmp)  # fmt: skip
    # The dependencies come from the test's own environment, added as a plain path: its
    # .pth files (the checkout's editable install among them) are not processed there.
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path((await run(venv / "bin" / "python", "-c", purelib, cwd=tmp)).strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = await run(venv / "bin" / "python", "-c", "import cti; print(cti.__file__)", cwd=tmp)
    assert Path(where.strip()).is_relative_to(site), where
    return venv / "bin"


@pytest.fixture
async def fresh_database_url() -> AsyncIterator[str]:
    name = f"cti_test_wheel_{uuid.uuid4().hex[:8]}"
    yield f"{PG_SERVER}/{name}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_the_installed_wheel_migrates_seeds_and_serves(
    installed: Path, fresh_database_url: str, tmp_path: Path, redis_client: object
) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "CTI_DATABASE_URL": fresh_database_url,
        "CTI_REDIS_URL": REDIS_URL,
        "CTI_LOG_FORMAT": "json",
        "CTI_PLAN_CACHE": str(tmp_path / "plan.toml"),
        "CTI_DEMO_PASSWORD": "wheel-test-password",
    }
    shipped = sorted(p.name for p in (REPO / "cti" / "db" / "migrations").glob("*.sql"))
    out = await run(installed / "cti", "db", "migrate", cwd=tmp_path, env=env)
    assert f"applied {len(shipped)} migration(s): {', '.join(shipped)}" in out
    out = await run(installed / "cti", "db", "seed-demo", "--customers", "10", cwd=tmp_path,
                    env=env)  # fmt: skip
    assert "demo data loaded: 10 customers" in out  # the demo plan is package data too

    agi, http = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        installed / "cti", "serve", cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
        env={**env, "CTI_AGI_BIND": f"127.0.0.1:{agi}", "CTI_HTTP_BIND": f"127.0.0.1:{http}",
             "CTI_SESSION_SECRET": "s" * 40, "CTI_AMI_ENABLED": "no"},
    )  # fmt: skip
    async with killed_on_exit(process):

        async def routed_by_rule() -> object:
            try:
                result = await agi_call("127.0.0.1", agi, callerid="2120000002", dnid="5550100")
            except OSError:
                return None
            return result if result.var("CTI_RULE") == "gold" else None

        await until(routed_by_rule, within_s=30, every_s=0.1)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{http}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{http}/") as response:
                assert response.status == 200
                assert "<html" in (await response.text()).lower()  # the page shipped
        stderr = await stop(process, within_s=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
