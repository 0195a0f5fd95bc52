"""docker-compose.yml stays in step with the loopback test bed.

No Docker needed: the compose file, the Dockerfiles and scripts in docker/, and the
test bed's own files (scripts/asterisk-sandbox, asterisk/render-config,
asterisk/etc, sipp/, cti/config.py) are read as text and compared, and so are the
compose docs (README, .env.example), the build CA secret and the override that
scripts/compose-check uses. The last test also runs Compose v2's `config -q` (with and
without that override) when a Compose v2 is found, and is skipped otherwise. Starting
the stack for real is scripts/compose-check's job (CI runs it).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from cti.config import Config

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"

SIP_PORT = 5060
AMI_PORT = 5038
AGI_PORT = 4573
HTTP_PORT = 8080
METRICS_PORT = 9100  # the routing process's /metrics, /healthz, /readyz (compose network only)
AGENT_PORTS = {f"200{n}": 5070 + n for n in range(1, 7)}  # agent 200N on 507N
TRUNK_PORT = 5080

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL", re.IGNORECASE)
REQUIRED_REF = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]*\}$")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])[^}]*)?\}")


# ---------------------------------------------------------------- readers
def read(relative: str) -> str:
    return (REPO / relative).read_text(encoding="utf-8")


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def service(name: str) -> dict:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def env(name: str) -> dict[str, str]:
    raw = service(name).get("environment") or {}
    if isinstance(raw, list):  # ["NAME=value", ...]
        raw = dict(item.split("=", 1) for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def port_of(address: str) -> int:
    """The port of HOST:PORT."""
    return int(address.rpartition(":")[2])


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: int
    container_port: int
    protocol: str


def published(name: str) -> list[Published]:
    out = []
    for entry in service(name).get("ports") or []:
        assert isinstance(entry, str), f"{name}: use the short port syntax: {entry!r}"
        spec, _, protocol = entry.partition("/")
        parts = spec.split(":")
        assert len(parts) == 3, f"{name}: publish as HOST_IP:HOST_PORT:PORT, got {entry!r}"
        out.append(Published(parts[0], int(parts[1]), int(parts[2]), protocol or "tcp"))
    return out


def exposed(name: str) -> set[tuple[int, str]]:
    """(port, protocol) for every port in the service's expose list (ranges expanded)."""
    out = set()
    for entry in service(name).get("expose") or []:
        spec, _, protocol = str(entry).partition("/")
        first, _, last = spec.partition("-")
        out |= {(port, protocol or "tcp") for port in range(int(first), int(last or first) + 1)}
    return out


def healthcheck(name: str) -> list[str]:
    test = (service(name).get("healthcheck") or {}).get("test")
    assert test, f"{name} has no healthcheck"
    return [test] if isinstance(test, str) else list(test)


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuations joined

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, destination) of every COPY, destinations made absolute."""
        workdir, out = "/", []
        for name, args in self.instructions:
            if name == "WORKDIR":
                workdir = str(PurePosixPath(workdir, args))
            elif name == "COPY":
                words = [w for w in args.split() if not w.startswith("--")]
                dest = words[-1]
                absolute = str(PurePosixPath(workdir, dest))
                out.append((words[:-1], absolute + ("/" if dest.endswith("/") else "")))
        return out

    def destination_of(self, source: str) -> str:
        """Where COPY puts the repository path ``source`` (a file, or a whole dir/)."""
        for sources, dest in self.copies():
            for src in sources:
                if src.rstrip("/") == source.rstrip("/"):
                    if source.endswith("/") or not dest.endswith("/"):
                        return dest.rstrip("/")
                    return dest + PurePosixPath(src).name
        raise AssertionError(f"{self.path.name} does not COPY {source}")


def dockerfile_of(name: str) -> Dockerfile:
    build = service(name).get("build")
    assert isinstance(build, dict), f"{name}: expected build: {{context, dockerfile}}"
    assert (REPO / build.get("context", ".")).resolve() == REPO, (
        f"{name}: the build context must be the repository root (it copies asterisk/, sipp/ ...)"
    )
    path = REPO / build["dockerfile"]
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            instructions.append((instruction.upper(), args.strip()))
    return Dockerfile(path, instructions)


def repo_path_in_image(image: Dockerfile, path_in_image: str) -> Path:
    """The repository file that COPY put at ``path_in_image``."""
    for sources, dest in image.copies():
        for src in sources:
            target = dest.rstrip("/")
            if dest.endswith("/") and not src.endswith("/"):
                target = f"{target}/{PurePosixPath(src).name}"
            if path_in_image == target:
                return REPO / src
            if src.endswith("/") and path_in_image.startswith(target + "/"):
                return REPO / src / path_in_image[len(target) + 1 :]
    raise AssertionError(f"{image.path.name}: nothing is copied to {path_in_image}")


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` (relative, POSIX) out of the build context:
    a pattern excludes a path when it matches the path or one of its parent folders,
    a later ``!pattern`` takes it back in (close enough to Docker's rules for here)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in read(".dockerignore").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        # "**/x" matches x at any depth; fnmatch's "*" crosses "/", so "*/x" does that.
        patterns = [pattern[3:], "*/" + pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns):
            excluded = not negate
    return excluded


def sandbox_setting(name: str) -> str:
    """A default from scripts/asterisk-sandbox: NAME=value or NAME=${NAME:-value}."""
    text = read("scripts/asterisk-sandbox")
    match = re.search(
        rf"^(?:export )?{name}=(?:\$\{{[A-Z_]+:?-(?P<default>[^}}]*)\}}|(?P<plain>\S+))$",
        text,
        re.MULTILINE,
    )
    assert match, f"scripts/asterisk-sandbox: no {name}= line"
    return match["default"] if match["default"] is not None else match["plain"]


def render_config_defaults() -> dict[str, str]:
    """CTI_* variables asterisk/render-config reads, with their defaults."""
    text = read("asterisk/render-config")
    found = re.findall(r"^(CTI_[A-Z0-9_]+)=\$\{\1:?-([^}]*)\}", text, re.MULTILINE)
    assert found, "asterisk/render-config: no NAME=${NAME:-default} lines found"
    return dict(found)


# ---------------------------------------------------------------- the images
def test_asterisk_image_copies_all_of_asterisk_and_renders_it():
    image = dockerfile_of("asterisk")
    assert image.args("FROM") == ["debian:sid-slim"], "same suite as the sandbox's root (sid)"
    dest = image.destination_of("asterisk/")  # the whole directory, so every etc/ file
    for conf in sorted((REPO / "asterisk/etc").iterdir()):
        relative = conf.relative_to(REPO).as_posix()
        assert not dockerignore_excludes(relative), f".dockerignore leaves out {relative}"
    assert not dockerignore_excludes("asterisk/render-config")

    entrypoint_in_image = image.args("ENTRYPOINT")[-1].strip('[]"')
    entrypoint = repo_path_in_image(image, entrypoint_in_image).read_text(encoding="utf-8")
    render = rf"^\s*(sh )?{re.escape(dest)}/render-config /etc/asterisk\b"
    assert re.search(render, entrypoint, re.MULTILINE), f"run {dest}/render-config /etc/asterisk"
    exec_line = re.search(r"^exec (\S*asterisk) (.*)$", entrypoint, re.MULTILINE)
    assert exec_line, "the entrypoint must exec asterisk"
    options = exec_line[2].split()
    assert {"-f", "-n"} <= set(options), "foreground (-f), no colours (-n), as the sandbox"
    assert options[options.index("-U") + 1] == "asterisk", "drop root: -U asterisk"
    assert "CTI_AMI_SECRET" in entrypoint, "the entrypoint refuses to start without the secret"


def test_asterisk_image_installs_the_sandbox_packages():
    include = re.search(r"--include=([\w,.+-]+)", read("scripts/asterisk-sandbox"))
    assert include, "scripts/asterisk-sandbox: no debootstrap --include="
    sandbox_packages = set(include[1].split(","))
    run = " ".join(dockerfile_of("asterisk").args("RUN"))
    install = re.search(r"apt-get install ((?:\s*-[-\w]+)*)((?:\s+[a-z0-9][\w.+-]*)+)", run)
    assert install, "docker/asterisk.Dockerfile: no apt-get install"
    assert "--no-install-recommends" in install[1], "debootstrap installs no Recommends either"
    assert set(install[2].split()) == sandbox_packages
    assert sandbox_setting("SUITE") == "sid"


def test_sipp_image_copies_the_scenarios_the_services_use():
    for name in ("agents", "callers"):
        image = dockerfile_of(name)
        dest = image.destination_of("sipp/")
        script_in_image = service(name)["command"][0]
        script = repo_path_in_image(image, script_in_image).read_text(encoding="utf-8")
        used = set(re.findall(rf"{re.escape(dest)}/([\w.-]+)", script))
        assert used, f"{script_in_image} uses no file of {dest}"
        for file in used:
            assert (REPO / "sipp" / file).is_file(), f"{script_in_image} uses missing sipp/{file}"
            assert not dockerignore_excludes(f"sipp/{file}")
    agents = repo_path_in_image(dockerfile_of("agents"), service("agents")["command"][0])
    callers = repo_path_in_image(dockerfile_of("callers"), service("callers")["command"][0])
    assert "/agent.xml" in agents.read_text(encoding="utf-8")
    assert {"/caller.xml", "/calls-demo.csv"} <= set(
        re.findall(r"/(?:caller\.xml|calls-demo\.csv)", callers.read_text(encoding="utf-8"))
    )


def test_cti_image_finds_the_migrations():
    """The image installs the wheel built from the checkout (no editable install, no
    source tree): the migrations are package data that cti.db.migrate finds through
    importlib.resources (tests/integration/test_wheel.py runs such a wheel)."""
    image = dockerfile_of("cti")
    assert image.destination_of("cti/").endswith("/cti")
    assert image.destination_of("pyproject.toml")
    run = " ".join(image.args("RUN"))
    assert re.search(r"pip wheel (--[\w-]+ )*(--wheel-dir \S+ )?\.", run), (
        "the image builds the wheel"
    )
    assert re.search(r"pip install (--[\w-]+ )*\S*cti-\*\.whl", run), "and installs it"
    assert not re.search(r"pip install (--[\w-]+ )*-e ", run), "no editable install"
    with pytest.raises(AssertionError):
        image.destination_of("sql/")
    migrate = read("cti/db/migrate.py")
    assert 'resources.files("cti.db").joinpath("migrations")' in migrate
    package_data = tomllib.loads(read("pyproject.toml"))["tool"]["setuptools"]["package-data"]
    assert "db/migrations/*.sql" in package_data["cti"]
    command = service("cti")["command"]
    start = repo_path_in_image(image, command[-1]).read_text(encoding="utf-8")
    assert re.search(r"^cti db migrate$", start, re.MULTILINE)
    assert re.search(r"^exec cti serve$", start, re.MULTILINE)
    assert "CTI_SEED_DEMO" in start and "cti db seed-demo" in start
    for copied in (
        "cti/db/migrate.py",
        "cti/db/migrations/001_routing.sql",
        "pyproject.toml",
        "README.md",
        "docker/cti-start.sh",
    ):
        assert not dockerignore_excludes(copied), f".dockerignore leaves out {copied}"


# ---------------------------------------------------------------- ports
def test_sip_port():
    pjsip = read("asterisk/etc/pjsip.conf")
    assert re.search(r"^bind\s*=\s*\S+:@CTI_SIP_PORT@", pjsip, re.MULTILINE)
    assert int(render_config_defaults()["CTI_SIP_PORT"]) == SIP_PORT
    assert int(env("asterisk")["CTI_SIP_PORT"]) == SIP_PORT
    assert int(sandbox_setting("SIP_PORT")) == SIP_PORT
    assert [(p.container_port, p.protocol) for p in published("asterisk")].count(
        (SIP_PORT, "udp")
    ) == 1
    assert port_of(env("callers")["CALLERS_TARGET"]) == SIP_PORT
    assert re.search(rf"\$\{{CALLERS_TARGET:-asterisk:{SIP_PORT}\}}", read("docker/callers.sh"))
    assert f"127.0.0.1:{SIP_PORT} " in read("sipp/README.md")


def test_ami_port():
    manager = read("asterisk/etc/manager.conf")
    assert re.search(r"^port\s*=\s*@CTI_AMI_PORT@", manager, re.MULTILINE)
    assert int(render_config_defaults()["CTI_AMI_PORT"]) == AMI_PORT
    assert int(env("asterisk")["CTI_AMI_PORT"]) == AMI_PORT
    assert int(sandbox_setting("AMI_PORT")) == AMI_PORT
    assert (AMI_PORT, "tcp") in {(p.container_port, p.protocol) for p in published("asterisk")}
    assert int(env("cti")["CTI_AMI_PORT"]) == AMI_PORT
    assert Config().ami_port == AMI_PORT


def test_agi_port():
    assert Config().agi_bind.port == AGI_PORT
    assert port_of(render_config_defaults()["CTI_AGI_ADDR"]) == AGI_PORT
    assert port_of(sandbox_setting("CTI_AGI_ADDR")) == AGI_PORT
    assert port_of(env("cti")["CTI_AGI_BIND"]) == AGI_PORT
    assert port_of(env("asterisk")["CTI_AGI_ADDR"]) == AGI_PORT
    assert (AGI_PORT, "tcp") in exposed("cti")
    assert f"'127.0.0.1', {AGI_PORT})" in " ".join(healthcheck("cti")), "healthcheck: AGI port"
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in " ".join(healthcheck("cti")), "healthcheck"


def test_routing_and_the_sidebar_run_in_two_processes():
    """The README's decision ("One process or two"): cti routes and follows calls with
    no sidebar and its metrics on a port of their own; screenpop is the sidebar."""
    assert env("cti")["CTI_HTTP_ENABLED"] == "no"
    assert "CTI_SESSION_SECRET" not in env("cti") and "CTI_HTTP_BIND" not in env("cti")
    assert port_of(env("cti")["CTI_METRICS_BIND"]) == METRICS_PORT
    assert (METRICS_PORT, "tcp") in exposed("cti") and not service("cti").get("ports")
    assert service("screenpop")["command"] == ["cti", "screenpop"]
    assert service("screenpop")["build"] == service("cti")["build"], "the same image"
    for name in ("CTI_DATABASE_URL", "CTI_REDIS_URL", "CTI_AMI_HOST", "CTI_AMI_SECRET"):
        assert env("screenpop")[name] == env("cti")[name], name


def test_http_port():
    assert Config().http_bind.port == HTTP_PORT
    assert port_of(env("screenpop")["CTI_HTTP_BIND"]) == HTTP_PORT
    assert (HTTP_PORT, "tcp") in {(p.container_port, p.protocol) for p in published("screenpop")}
    assert f"127.0.0.1:{HTTP_PORT}/healthz" in " ".join(healthcheck("screenpop"))


def test_agent_ports():
    # Agents register (pjsip.conf: auth + AOR per agent, no fixed contact or identify),
    # so their ports are only the phones' own: SIPp's -p in docker/agents.sh.
    pjsip = read("asterisk/etc/pjsip.conf")
    passwords = re.findall(r"^password\s*=\s*@CTI_AGENT_(\d+)_PASSWORD@", pjsip, re.MULTILINE)
    assert sorted(passwords) == sorted(AGENT_PORTS)
    assert "@CTI_AGENT_HOST@" not in pjsip
    readme = read("sipp/README.md")
    assert "Agent `200N` is `127.0.0.1:507N`" in readme
    agents_sh = read("docker/agents.sh")
    numbers = re.search(r"^AGENTS=\(([\d ]+)\)$", agents_sh, re.MULTILINE)
    assert numbers and '-p "507$n"' in agents_sh, "docker/agents.sh: agent 200N on 507N"
    assert {5070 + int(n) for n in numbers[1].split()} == set(AGENT_PORTS.values())
    assert {(port, "udp") for port in AGENT_PORTS.values()} <= exposed("agents")


def test_trunk_port():
    assert render_config_defaults()["CTI_TRUNK_PORT"] == str(TRUNK_PORT)
    assert sandbox_setting("CTI_TRUNK_PORT") == str(TRUNK_PORT)
    assert env("asterisk")["CTI_TRUNK_PORT"] == str(TRUNK_PORT)
    assert f"-p {TRUNK_PORT}" in read("docker/callers.sh")
    assert f"-p {TRUNK_PORT}" in read("sipp/README.md")
    assert (TRUNK_PORT, "udp") in exposed("agents")  # the callers share its network


def test_published_ports_are_on_loopback_only():
    for name, svc in compose()["services"].items():
        for port in published(name) if svc.get("ports") else []:
            assert port.host_ip == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
            assert port.host_port == port.container_port, f"{name}: {port}: same port on the host"


# ---------------------------------------------------------------- settings
def test_asterisk_service_sets_every_render_config_variable():
    assert set(env("asterisk")) == set(render_config_defaults()), (
        "the asterisk service must set exactly the CTI_* variables asterisk/render-config reads"
    )


def test_names_in_the_asterisk_config_are_compose_services():
    services = set(compose()["services"])
    asterisk = env("asterisk")
    host, _, _ = asterisk["CTI_AGI_ADDR"].rpartition(":")
    assert host == "cti" and "cti" in services
    # Asterisk resolves identify hosts once, at start: the trunk must be running then,
    # so the callers share the network namespace of the (always running) agents.
    assert asterisk["CTI_TRUNK_HOST"] == "agents" and "agents" in services
    for agent in AGENT_PORTS:  # the phones register with the passwords Asterisk has
        variable = f"CTI_AGENT_{agent}_PASSWORD"
        assert env("agents")[variable] == asterisk[variable]
    assert service("callers")["network_mode"] == f"service:{asterisk['CTI_TRUNK_HOST']}"
    assert "agents" in service("asterisk")["depends_on"], "agents must run before Asterisk"
    assert env("callers")["SIPP_LOCAL_HOST"] == asterisk["CTI_TRUNK_HOST"]
    assert asterisk["CTI_AMI_BIND"] == "0.0.0.0"
    cti = env("cti")
    assert cti["CTI_AMI_HOST"] == "asterisk"
    assert cti["CTI_AMI_USERNAME"] == asterisk["CTI_AMI_USERNAME"]
    assert cti["CTI_AMI_SECRET"] == asterisk["CTI_AMI_SECRET"]
    assert re.search(r"@postgres:5432/cti$", cti["CTI_DATABASE_URL"])
    assert re.search(r"@redis:6379/\d+$", cti["CTI_REDIS_URL"])


def test_cti_service_variables_are_known():
    known = set(re.findall(r'"(CTI_[A-Z_]+)"', read("cti/config.py") + read("cti/cli.py")))
    assert {"CTI_DATABASE_URL", "CTI_AGI_BIND"} <= known, "cti/config.py reads no CTI_* names?"
    start_script = set(re.findall(r"\$\{?(CTI_[A-Z_]+)", read("docker/cti-start.sh")))
    unknown = set(env("cti")) - known - start_script
    assert not unknown, (
        f"read by neither cti/config.py, cti/cli.py nor docker/cti-start.sh: {sorted(unknown)}"
    )
    assert not set(env("screenpop")) - known, "screenpop: a variable cti/config.py ignores"
    assert env("screenpop")["CTI_LOG_FORMAT"] == "json"
    assert env("cti")["CTI_LOG_FORMAT"] == "json"
    assert env("cti")["CTI_PLAN_CACHE"].startswith("/var/lib/cti/")
    assert any(v.endswith(":/var/lib/cti") for v in service("cti")["volumes"]), "plan cache volume"


def test_start_order():
    def condition(name: str, dependency: str) -> str:
        return service(name)["depends_on"][dependency]["condition"]

    assert condition("cti", "postgres") == "service_healthy"
    assert condition("cti", "redis") == "service_healthy"
    assert condition("screenpop", "cti") == "service_healthy"  # the database is migrated
    assert condition("asterisk", "agents") == "service_healthy"
    for name, svc in compose()["services"].items():
        for dependency, spec in (svc.get("depends_on") or {}).items():
            if spec.get("condition") == "service_healthy":
                assert healthcheck(dependency), f"{name} waits for {dependency}'s healthcheck"
    assert "waitfullybooted" in " ".join(healthcheck("asterisk"))
    assert "pg_isready" in " ".join(healthcheck("postgres"))
    assert re.search(r"redis-cli\b.*\bping\b", " ".join(healthcheck("redis")))


def test_redis_keeps_an_append_only_file_in_its_volume():
    """Without persistence a Redis restart loses the call-event streams (issue 9,
    finding 13): AOF fsync'd every second, in a named volume mounted on the image's
    working directory (/data, where redis-server writes it), password still required."""
    redis = service("redis")
    command = " ".join(redis["command"])
    assert command.startswith("sh -c exec docker-entrypoint.sh redis-server ")
    words = command.split()
    assert words[words.index("--appendonly") + 1] == "yes"
    assert words[words.index("--appendfsync") + 1] == "everysec"
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    volume = next(v for v in redis["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in (compose().get("volumes") or {}), "a named volume"


PROFILED = {"callers": ["load"], "asterisk-b": ["two-pbx"], "agents-b": ["two-pbx"]}


def test_callers_only_with_the_load_profile_and_the_second_pbx_with_two_pbx():
    for name, svc in compose()["services"].items():
        assert svc.get("profiles") == PROFILED.get(name), f"{name}: profiles"


def test_the_second_pbx_is_the_first_on_the_sandbox_ports_of_b():
    """asterisk-b: the same image, every render-config setting, PBX b's ports of the
    sandbox (cti.sandbox_pbxes), trunks both ways, and cti may follow both."""
    from cti.sandbox_pbxes import SECOND

    assert service("asterisk-b")["build"] == service("asterisk")["build"]
    b, a = env("asterisk-b"), env("asterisk")
    assert set(b) == set(render_config_defaults())
    assert (int(b["CTI_SIP_PORT"]), int(b["CTI_AMI_PORT"])) == (SECOND.sip_port, SECOND.ami_port)
    published_b = {(p.container_port, p.protocol) for p in published("asterisk-b")}
    assert published_b == {(SECOND.sip_port, "udp"), (SECOND.ami_port, "tcp")}
    assert (a["CTI_PBX_NAME"], b["CTI_PBX_NAME"]) == ("a", "b")
    assert b["CTI_PBX_PEERS"] == f"a=asterisk:{SIP_PORT},b=asterisk-b:{SECOND.sip_port}"
    assert b["CTI_TRUNK_HOST"] == "agents-b" and "agents-b" in service("asterisk-b")["depends_on"]
    assert env("agents-b")["SIPP_ASTERISK"] == f"asterisk-b:{SECOND.sip_port}"
    assert b["CTI_AMI_SECRET"] == a["CTI_AMI_SECRET"]  # cti's CTI_AMI_SECRET_B falls back to it
    for name in (f"CTI_AGENT_{agent}_PASSWORD" for agent in AGENT_PORTS):
        assert b[name] == a[name] == env("agents-b")[name], name
    example = read(".env.example")
    assert f"#CTI_PBX_PEERS={b['CTI_PBX_PEERS']}" in example
    assert f"#CTI_PBXES=a=asterisk:{AMI_PORT},b=asterisk-b:{SECOND.ami_port}" in example
    for name in ("cti", "screenpop"):
        assert env(name)["CTI_PBXES"] == "${CTI_PBXES:-}", f"{name} follows CTI_PBXES"


def test_services_share_one_user_defined_network():
    networks = compose().get("networks") or {}
    assert len(networks) == 1
    (network,) = networks
    for name, svc in compose()["services"].items():
        if svc.get("network_mode", "").startswith("service:"):
            continue
        assert list(svc.get("networks") or []) == [network], f"{name} is not on {network}"


# ---------------------------------------------------------------- secrets
def test_no_secret_literal_is_committed():
    for name, svc_env in ((name, env(name)) for name in compose()["services"]):
        for key, value in svc_env.items():
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.match(value), (
                    f"{name}.{key} must be a required reference ${{VAR:?message}}, not {value!r}"
                )
            for password in re.findall(r"://[^/@\s:]*:(\$\{[^}]*\}|[^@/\s]+)@", value):
                assert REQUIRED_REF.match(password), f"{name}.{key}: password in the URL: {value!r}"
    # No secret gets a default anywhere in the file, e.g. ${CTI_AMI_SECRET:-changeme}.
    for variable, modifier in INTERPOLATION.findall(COMPOSE.read_text(encoding="utf-8")):
        if SECRET_NAME.search(variable):
            assert modifier.startswith(":?"), f"${{{variable}{modifier}}}: secrets have no default"


def test_env_example_documents_every_variable_without_values_for_secrets():
    example = {}
    for line in read(".env.example").splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            example[match[1]] = match[2]
    referenced = {v for v, _ in INTERPOLATION.findall(COMPOSE.read_text(encoding="utf-8"))}
    assert referenced - set(example) == set(), "variables of docker-compose.yml .env.example lacks"
    for variable, value in example.items():
        if SECRET_NAME.search(variable):
            assert value == "", f".env.example: {variable} must be empty (no real secrets)"
    assert dockerignore_excludes(".env"), ".env (secrets) must stay out of the build context"


# ---------------------------------------------------------------- the compose docs
REQUIRED_SECRETS = {
    "CTI_DB_PASSWORD",
    "CTI_REDIS_PASSWORD",
    "CTI_AMI_SECRET",
    "CTI_SESSION_SECRET",
    "CTI_DEMO_PASSWORD",
    *(f"CTI_AGENT_{agent}_PASSWORD" for agent in AGENT_PORTS),
}
_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen"
NUMBER_WORDS = {word: number for number, word in enumerate(_WORDS.split(" "))}


def required_variables() -> set[str]:
    text = COMPOSE.read_text(encoding="utf-8")
    return {variable for variable, modifier in INTERPOLATION.findall(text) if modifier[:2] == ":?"}


def readme_compose_section() -> str:
    readme = read("README.md")
    start = readme.index("\n## Compose\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def test_the_docs_name_every_required_secret():
    """Following the README must not end in `required variable X is missing a value`."""
    assert required_variables() == REQUIRED_SECRETS
    section = readme_compose_section()
    for variable in sorted(REQUIRED_SECRETS):
        # The agents' six may be named as a range: CTI_AGENT_2001_PASSWORD ... _2006_.
        named = variable in section or (
            re.fullmatch(r"CTI_AGENT_200\d_PASSWORD", variable)
            and re.search(r"CTI_AGENT_2001_PASSWORD (\.\.\.|…) CTI_AGENT_2006_PASSWORD", section)
        )
        assert named, f"README's Compose section does not name {variable}"
    required_block = read(".env.example").split("# ---- required", 1)[1].split("# ---- optional")[0]
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=$", required_block, re.MULTILINE))
    assert listed == REQUIRED_SECRETS, ".env.example's required block lists every secret, empty"
    for where, text in (("README.md", section), ("docker-compose.yml", read("docker-compose.yml"))):
        for word in re.findall(r"\bthe (\w+) secrets\b", text):
            count = NUMBER_WORDS.get(word.lower())
            assert count == len(REQUIRED_SECRETS), f"{where} says 'the {word} secrets'"


def test_the_docs_start_the_stack_with_wait():
    """`up -d` alone returns before cti is healthy: every documented start of the whole
    stack waits (starting one named service again, e.g. `up -d agents`, need not)."""
    for where, text in (
        ("README.md", read("README.md")),
        ("docker-compose.yml", read("docker-compose.yml")),
    ):
        ups = re.findall(r"docker compose up\b[^\n`]*", text)
        assert ups, f"{where} shows no `docker compose up`"
        for command in ups:
            services = [word for word in command.split()[3:] if not word.startswith("-")]
            if " -d" in command and not services:
                assert "--wait" in command, f"{where}: {command!r} returns before cti is healthy"


def test_ci_starts_the_stack():
    """CI runs scripts/compose-check; a skip (exit 3) is said, a failure fails CI."""
    ci = read(".ci/run")
    assert re.search(r"^scripts/compose-check\b", ci, re.MULTILINE)
    assert "SKIPPED" in ci and re.search(r"^\s*3\)", ci, re.MULTILINE)
    check = read("scripts/compose-check")
    assert re.search(r"^SKIP=3$", check, re.MULTILINE)
    assert "--wait" in check and "--profile load run --rm" in check
    section = readme_compose_section()
    assert "not available where CI runs" not in section
    assert "scripts/compose-check" in section


# ---------------------------------------------------------------- a CA for the build
def test_a_build_ca_reaches_every_pip_step_as_a_secret_only():
    """Behind a TLS-intercepting proxy pip needs its CA; it must never be in the image."""
    build = service("cti")["build"]
    assert build.get("secrets") == ["build_ca"]
    assert not build.get("args"), "no build arguments: they are kept in the image's history"
    secret = compose()["secrets"]["build_ca"]
    default = re.fullmatch(r"\$\{CTI_BUILD_CA:-([^}]+)\}", secret["file"])
    assert default, "build_ca comes from CTI_BUILD_CA, with a default file"
    placeholder = read(default[1])
    assert "BEGIN CERTIFICATE" not in placeholder, f"{default[1]} must hold no certificate"
    assert not dockerignore_excludes("docker/with-build-ca.sh")

    image = dockerfile_of("cti")
    pip_runs = [run for run in image.args("RUN") if re.search(r"\bpip (install|wheel)\b", run)]
    assert len(pip_runs) >= 2, "docker/cti.Dockerfile builds the wheel and installs it"
    for run in pip_runs:
        assert "--mount=type=secret,id=build_ca,required=false" in run, run
        assert "--mount=type=bind,source=docker/with-build-ca.sh" in run, run
        pip_commands = re.findall(r"(\S+) pip (?:install|wheel)\b", run)
        assert pip_commands and all(c.endswith("with-build-ca.sh") for c in pip_commands), run
    for name in ("ARG", "ENV", "COPY", "ADD"):
        for args in image.args(name):
            assert "build_ca" not in args.lower() and "BUILD_CA" not in args, f"{name} {args}"
    wrapper = read("docker/with-build-ca.sh")
    assert "/run/secrets/build_ca" in wrapper and "PIP_CERT" in wrapper
    assert re.search(r'^"\$@"$', wrapper, re.MULTILINE), "the wrapper runs the command it is given"
    assert "CTI_BUILD_CA" in readme_compose_section()


# ---------------------------------------------------------------- the CI override
class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (``!override``, ``!reset``) read as plain values."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!override", "!reset"):
    _ComposeLoader.add_constructor(_tag, _untagged)


def override() -> dict:
    return yaml.load(read("docker/compose-check/override.yml"), Loader=_ComposeLoader)


def test_the_check_changes_only_images_and_host_ports():
    """What scripts/compose-check changes in docker-compose.yml, and nothing else."""
    changed = override()["services"]
    assert set(changed) <= set(compose()["services"])
    assert set(override()) == {"services"}
    for name, svc in changed.items():
        assert set(svc) <= {"image", "pull_policy", "ports"}, f"{name}: {sorted(svc)}"
        if "image" in svc:
            assert svc["image"].startswith("cti-check/"), "stand-ins are named as such"
            assert svc["pull_policy"] == "never"
    test_bed_ports = {SIP_PORT, AMI_PORT, AGI_PORT, HTTP_PORT, TRUNK_PORT, *AGENT_PORTS.values()}
    defaults = dict(
        re.findall(
            r"^export (CHECK_\w+_PORT)=\$\{\1:-(\d+)\}$",
            read("scripts/compose-check"),
            re.MULTILINE,
        )
    )
    assert len(defaults) == 5  # a's SIP, AMI, the sidebar; asterisk-b's SIP and AMI
    for name, svc in changed.items():
        if "ports" not in svc:
            continue
        mapped = []
        for entry in svc["ports"]:
            match = re.fullmatch(r"127\.0\.0\.1:\$\{(CHECK_\w+_PORT):\?\}:(\d+)(?:/(\w+))?", entry)
            assert match, f"{name}: publish as 127.0.0.1:${{CHECK_..._PORT:?}}:PORT, got {entry!r}"
            assert int(defaults[match[1]]) not in test_bed_ports, f"{name}: {entry} collides"
            mapped.append((int(match[2]), match[3] or "tcp"))
        original = [(p.container_port, p.protocol) for p in published(name)]
        assert sorted(mapped) == sorted(original), f"{name}: same ports inside, other ones outside"


# ---------------------------------------------------------------- the real parser
def _compose_version(command: list[str]) -> str | None:
    try:
        probe = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    return probe.stdout.strip().lstrip("v") if probe.returncode == 0 else None


def _compose_commands() -> list:
    """Compose v2 wherever it is: the docker plugin, a docker-compose binary, or the one
    scripts/compose-check unpacked into its cache. Compose 1.x is not one of them: the
    file uses what it lacks (build secrets; the README's --wait)."""
    candidates: dict[str, list[str]] = {}
    docker = shutil.which("docker")
    if docker:
        candidates["docker-compose-plugin"] = [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        candidates["docker-compose"] = [legacy]
    cache = Path(os.environ.get("CTI_SANDBOX_CACHE", "/var/cache/cti-ci"))
    cached = cache / "compose-check" / "plugins" / "docker-compose"
    if cached.is_file() and os.access(cached, os.X_OK):
        candidates["compose-check-cache"] = [str(cached)]
    found, seen = [], set()
    for name, command in candidates.items():
        version = _compose_version(command)
        if version and version.split(".")[0] == "2" and version not in seen:
            seen.add(version)
            found.append(pytest.param(command, id=f"{name}-{version}"))
    return found or [
        pytest.param(
            None,
            id="none",
            marks=pytest.mark.skip(reason="no Compose v2 (`docker compose`, docker-compose 2.x)"),
        )
    ]


@pytest.mark.parametrize("command", _compose_commands())
def test_compose_config_is_valid(command: list[str] | None):
    assert command is not None
    text = COMPOSE.read_text(encoding="utf-8")
    required = {v for v, m in INTERPOLATION.findall(text) if m.startswith(":?")}
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CTI_", "COMPOSE_"))}
    environ |= {variable: "test-value-1" for variable in required}
    environ |= {"CHECK_SIP_PORT": "25060", "CHECK_AMI_PORT": "25038", "CHECK_HTTP_PORT": "28080"}
    environ |= {"CHECK_SIP_B_PORT": "25160", "CHECK_AMI_B_PORT": "25039"}
    check = ["-f", str(REPO / "docker/compose-check/override.yml")]
    for files, profile in (
        ([], []),
        ([], ["--profile", "load"]),
        ([], ["--profile", "two-pbx"]),
        (check, ["--profile", "load"]),
    ):
        result = subprocess.run(
            [*command, "-f", str(COMPOSE), *files, *profile, "config", "-q"],
            cwd=REPO,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{' '.join(command)} config: {result.stderr}"
