"""The house plan holds: adapters depend on the core, never the reverse; the pure core
imports no I/O; only the command imports the composition root (docs/architecture.md).

Read from the source with ``ast`` (imports inside functions count too), so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CTI = Path(__file__).resolve().parents[2] / "cti"

#: Modules that decide and hold state: no sockets, stores or web framework.
PURE = [
    "cti/routing/engine.py",
    "cti/routing/attach.py",
    "cti/routing/hours.py",
    "cti/routing/model.py",
    "cti/routing/phone.py",
    "cti/routing/plan.py",
    "cti/routing/table.py",
    "cti/calls/model",
    "cti/calls/effects.py",
    "cti/calls/events.py",
    "cti/calldata/document.py",
    "cti/timeline/summary.py",
    "cti/reports/segments.py",
    "cti/reports/definitions.py",
    "cti/reports/intervals.py",
    "cti/reports/rows.py",
    "cti/text.py",
    "cti/errors.py",
    "cti/breaker.py",
    "cti/customer_csv.py",
    "cti/agi/protocol.py",
    "cti/ami/protocol.py",
    "cti/wallboard/figures.py",
    "cti/wallboard/agent_view.py",
    "cti/agents/state.py",
    "cti/agents/news.py",
    "cti/redis_sentinel.py",
    "cti/pg_hosts.py",
    "cti/pbx.py",
    "cti/calls/spread.py",
    "cti/calls/recent.py",
]
IO = ("asyncio", "socket", "asyncpg", "redis", "aiohttp", "subprocess", "cti.app", "cti.db")


def _files(entry: str) -> list[Path]:
    path = CTI.parent / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("entry", PURE)
def test_the_pure_core_imports_no_io(entry):
    for path in _files(entry):
        bad = sorted(name for name in _imports(path) if _under(name, IO))
        assert not bad, f"{path.relative_to(CTI.parent)} imports {bad}"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("cti/ami", ("cti.calls", "cti.screenpop", "cti.agi", "cti.app", "cti.router")),
        ("cti/agi", ("cti.calls", "cti.screenpop", "cti.ami", "cti.app")),
        ("cti/screenpop", ("cti.app", "cti.agi")),
        # What the ports share: it knows none of them.
        ("cti/net", ("cti.agi", "cti.screenpop", "cti.ami", "cti.calls", "cti.app")),
        # The call services may use the AMI transport (as they use Redis); never the reverse.
        ("cti/calls", ("cti.screenpop", "cti.agi", "cti.app")),
        ("cti/routing", ("cti.screenpop", "cti.agi", "cti.ami", "cti.calls", "cti.app")),
        ("cti/calldata", ("cti.screenpop", "cti.agi", "cti.ami", "cti.app")),
        ("cti/timeline", ("cti.screenpop", "cti.agi", "cti.ami", "cti.app")),
        # Agent states, wrap-up and supervision act through call control, never an adapter.
        ("cti/agents", ("cti.screenpop", "cti.agi", "cti.app")),
        ("cti/reports", ("cti.screenpop", "cti.agi", "cti.ami", "cti.app")),
        # Agent states read AMI messages (the protocol) and the call model's effects;
        # they send AMI actions through cti.calls.control, never through the client.
        ("cti/agents", ("cti.screenpop", "cti.agi", "cti.app", "cti.ami.client")),
    ],
)
def test_no_upward_import(package, forbidden):
    for path in _files(package):
        bad = sorted(name for name in _imports(path) if _under(name, forbidden))
        assert not bad, f"{path.relative_to(CTI.parent)} imports {bad}"


def test_only_the_command_imports_the_composition_root():
    importers = sorted(
        str(path.relative_to(CTI.parent))
        for path in CTI.rglob("*.py")
        if "app" not in path.relative_to(CTI).parts[:1]
        and any(_under(name, ("cti.app",)) for name in _imports(path))
    )
    assert importers == ["cti/cli.py"]


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(CTI.parent)): n
        for path in CTI.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 600
    }
    assert not long
