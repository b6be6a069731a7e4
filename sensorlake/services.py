"""The platform's services, described once: what each role runs, reads, listens on and waits for.

Two deployments follow this one description, so they cannot drift apart:

- the local stack (``sensorlake local``, sensorlake/local/stack.py) takes its start order, its app
  commands, ports, readiness probes, the Flink configuration, the Kafka broker properties and the
  Java command lines of the Beam services from here;
- ``docker-compose.yml`` is written out for people to read, and ``tests/unit/test_compose.py``
  checks it against ``ROLES`` and the builders below: service names, commands, environment
  variable names (all of them ``Settings`` fields), ports (127.0.0.1 only), health checks,
  ``depends_on`` conditions and the Kafka properties.

Inside our images ``python -m sensorlake.services`` is also an entry point:
``exec ROLE`` writes the Flink configuration and starts the JobManager, a TaskManager, the Beam job
server or the expansion service with the same builders the local stack uses, and ``probe ROLE`` is
the container health check (exit 0 when healthy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from sensorlake import flink_rest
from sensorlake.local.install import Paths
from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION, REPO_ROOT, ROLE_SETTINGS, Settings

# The lake job's default name in Flink (the job_name setting).
JOB_NAME = Settings.model_fields["job_name"].default

# The one image every compose service runs (docker/sensorlake.Dockerfile), and the only image it
# builds FROM (build arg BASE_IMAGE); everything else comes from the package registries.
BASE_IMAGE = "debian:bookworm-slim"
PLATFORM_IMAGE = f"sensorlake/platform:0.1.0-flink{FLINK_VERSION}-beam{BEAM_VERSION}-kafka{KAFKA_VERSION}"

# Kafka's listeners in compose: for the containers (kafka:19092), and the one published for
# programs on the host, at the address of settings.kafka_bootstrap.
KAFKA_INTERNAL_PORT = 19092
KAFKA_HOST_LISTENER_PORT = 9092
# Heap sizes, the same for both deployments (sized for a 2-core, 24 GiB machine).
KAFKA_HEAP = ("-Xms256m", "-Xmx768m")
JAVA_HEAP = {"expansion": "-Xmx512m", "jobserver": "-Xmx768m"}
FLINK_MEMORY = {
    "jobmanager.memory.process.size": "1280m",
    "jobmanager.memory.jvm-metaspace.size": "512m",
    "taskmanager.memory.process.size": "3072m",
    # Every Beam job brings its own classloader with the whole Beam classpath; the default 256m
    # metaspace runs out after a few jobs.
    "taskmanager.memory.jvm-metaspace.size": "1024m",
    # The Fn API's gRPC (Netty) buffers are direct memory: a Kafka partition's batches and its raw
    # stage's buffered rows (pipelines/raw_lake.py) are messages of megabytes, and the default (no
    # task off-heap) ran out of direct memory on a 1M-reading backlog.
    "taskmanager.memory.task.off-heap.size": "256m",
    # The JobManager touches its heap's pages one G1 region at a time for its first half hour, which
    # looks like a leak in its RSS (+30 % in a 30-minute soak); touched at start, the RSS is its budget.
    "env.java.opts.jobmanager": "-XX:+AlwaysPreTouch",
}


# ====================================================================== the roles
@dataclass(frozen=True)
class Role:
    """One service of the platform.

    name      the docker-compose service name
    local     the LocalStack service name (None: compose only, e.g. kafka-init)
    kind      "infra" (a runtime the stack starts), "app" (our CLI, long-running) or "oneshot"
    argv      for apps: the arguments of our entry point, ``sensorlake ARGV`` (both deployments)
    compose_args / local_args   what only one deployment adds ("{home}": the local state folder)
    settings  the Settings it reads (ROLE_SETTINGS[name]); compose passes it no other SENSORLAKE_* variable
    ports     Settings (or Settings properties) naming the ports it listens on
    published the ports compose publishes, on 127.0.0.1 only, at the same number
    probe     how readiness / health is told (see ``probe``)
    after     (role, docker-compose depends_on condition); every one comes earlier in ROLES
    """

    name: str
    local: str | None
    kind: str
    argv: tuple[str, ...] = ()
    compose_args: tuple[str, ...] = ()
    local_args: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    published: tuple[str, ...] = ()
    probe: str = "tcp"
    host: str = ""  # Settings field holding the host the role listens on / is reached at
    after: tuple[tuple[str, str], ...] = ()
    scalable: bool = False
    timeout: float = 90.0

    @property
    def settings(self) -> tuple[str, ...]:
        return ROLE_SETTINGS[self.name]

    def compose_argv(self) -> list[str]:
        return [*self.argv, *self.compose_args]

    def local_argv(self, home: Path) -> list[str]:
        return [*self.argv, *(a.replace("{home}", str(home)) for a in self.local_args)]

    def port_numbers(self, settings: Settings) -> list[int]:
        return [int(getattr(settings, p)) for p in self.ports if int(getattr(settings, p))]


HEALTHY, STARTED, COMPLETED = "service_healthy", "service_started", "service_completed_successfully"

ROLES: tuple[Role, ...] = (
    Role("mosquitto", "mosquitto", "infra", ports=("mqtt_port",), published=("mqtt_port",), timeout=20),
    Role("kafka", "kafka", "infra", ports=("kafka_bootstrap_port", "kafka_controller_port"),
         published=("kafka_bootstrap_port",), probe="kafka"),
    Role("kafka-init", None, "oneshot", probe="none", after=(("kafka", HEALTHY),)),
    Role("jobmanager", "flink-jobmanager", "infra",
         ports=("flink_rest_port", "flink_rpc_port"), published=("flink_rest_port",), probe="flink-rest",
         host="flink_host"),
    Role("taskmanager", "flink-taskmanager", "infra", probe="flink-taskmanager",
         after=(("jobmanager", HEALTHY),), scalable=True),
    Role("expansion", "expansion", "infra", ports=("expansion_port",), host="expansion_host"),
    Role("jobserver", "jobserver", "infra",
         ports=("job_server_port", "artifact_port"), host="job_server_host", after=(("jobmanager", HEALTHY),)),
    Role("bridge", "bridge", "app", argv=("bridge",), ports=("bridge_metrics_port",),
         probe="bridge", after=(("mosquitto", HEALTHY), ("kafka-init", COMPLETED)), timeout=60),
    # After the bridge: the broker queues readings for the bridge's session only once it exists,
    # so what the generator sends before the bridge's first subscription would be lost.
    # Its report (what it sent, by seq) is written when it stops: `docker compose stop generator`,
    # then `docker compose cp generator:/tmp/generator-report.json .`
    Role("generator", "generator", "app", argv=("generate",), compose_args=("--report", "/tmp/generator-report.json"),
         local_args=("--report", "{home}/generator-report.json"),
         probe="mqtt-connected", after=(("mosquitto", HEALTHY), ("bridge", HEALTHY)), timeout=10),
    # Locally the job's Python workers run in this process (LOOPBACK): it stays in the foreground.
    # In compose the workers run in the TaskManagers (PROCESS) and the submitter only submits when
    # no live job of that name exists, then watches it, so a second `up` never adds a copy.
    Role("pipeline", "pipeline", "app", argv=("pipeline", "run"), compose_args=("--if-absent",), probe="flink-job",
         after=(("jobserver", HEALTHY), ("expansion", HEALTHY), ("taskmanager", HEALTHY),
                ("kafka-init", COMPLETED)),
         timeout=300),
    # The data catalogue page (it also rebuilds <lake>/_catalog/ every catalog_interval_s).
    Role("catalog", "catalog", "app", argv=("catalog", "serve"),
         ports=("catalog_port",), published=("catalog_port",), probe="http", host="catalog_host", timeout=60),
)
BY_NAME = {r.name: r for r in ROLES}
BY_LOCAL = {r.local: r for r in ROLES if r.local}


def local_infra() -> list[str]:
    return [r.local for r in ROLES if r.local and r.kind == "infra"]


def local_apps() -> list[str]:
    return [r.local for r in ROLES if r.local and r.kind == "app"]


def entry_point() -> list[str]:
    """`sensorlake` of the running interpreter's environment (the console script setup.py makes)."""
    script = Path(sys.executable).with_name("sensorlake")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from sensorlake.cli import main; sys.exit(main())"]


# ====================================================================== where things are
@dataclass(frozen=True)
class Layout:
    """The paths and bind address of one deployment (the local stack's state folder or a container)."""

    flink_home: Path
    flink_conf_dir: Path
    flink_log_dir: Path
    flink_state_dir: Path  # checkpoints/ and savepoints/
    flink_work_dir: Path  # io tmp and web upload dirs
    beam_classpath: str
    beam_job_jar: Path  # what the job server stages with each job (JobServer.java)
    artifacts_dir: Path  # the job server's staged artifacts; TaskManagers read them at the same path
    bind_host: str  # where Flink and Kafka listen
    taskmanager_host: str | None  # None: the TaskManager finds its address by reaching the JobManager


# Paths inside our image (docker/sensorlake.Dockerfile) and the compose volumes mounted on them.
# The image build runs the local stack's install into this cache (SENSORLAKE_CACHE).
CONTAINER_CACHE = Paths(Path("/opt/sensorlake/cache"))
CONTAINER = Layout(
    flink_home=CONTAINER_CACHE.flink_home,
    flink_conf_dir=Path("/tmp/flink-conf"),
    flink_log_dir=Path("/tmp/flink-log"),
    flink_state_dir=Path("/var/lib/flink"),
    flink_work_dir=Path("/tmp/flink"),
    beam_classpath=CONTAINER_CACHE.beam_classpath,
    beam_job_jar=CONTAINER_CACHE.beam_job_jar,
    artifacts_dir=Path("/var/lib/beam-artifacts"),
    bind_host="0.0.0.0",  # inside the container network; compose publishes ports on 127.0.0.1 only
    taskmanager_host=None,  # scaled TaskManagers each register with their own container address
)
CONTAINER_LAKE = "/data"
# Mosquitto's configuration is written by one script in both deployments (compose mounts it).
MOSQUITTO_SCRIPT = REPO_ROOT / "docker" / "mosquitto" / "start-mosquitto.sh"
CONTAINER_REGISTRY = "/etc/sensorlake/registry/sensors.json"


# ====================================================================== Flink
def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (doc or {}).items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def flink_dist_config(flink_home: Path) -> dict[str, Any]:
    """The distribution's conf/config.yaml as flat ``a.b.c`` keys (Flink reads both forms)."""
    return _flatten(yaml.safe_load((flink_home / "conf" / "config.yaml").read_text()) or {})


def java_module_opts(flink_home: Path) -> list[str]:
    """The --add-opens list Flink ships for Java 17; Beam's Flink client needs it too."""
    return str(flink_dist_config(flink_home).get("env.java.opts.all", "")).split()


def flink_config(dist: Mapping[str, Any], settings: Settings, layout: Layout) -> dict[str, Any]:
    """The distribution's configuration with ours on top; None values are removed."""
    s = settings
    ours: dict[str, Any] = {
        "jobmanager.bind-host": layout.bind_host,
        "jobmanager.rpc.address": s.flink_host,
        "jobmanager.rpc.port": s.flink_rpc_port,
        "jobmanager.execution.failover-strategy": "region",
        # A lost TaskManager is noticed in 20 s (default 50 s), and the job is restarted from its
        # last checkpoint 1 s later, then 2, 4 ... up to 30 s between attempts, as often as it
        # takes: a streaming job must not give up, nor hammer a cluster that cannot run it.
        "heartbeat.interval": 5000,
        "heartbeat.timeout": 20000,
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        "restart-strategy.exponential-delay.backoff-multiplier": 2.0,
        "restart-strategy.exponential-delay.reset-backoff-threshold": "2 min",
        "taskmanager.bind-host": layout.bind_host,
        "taskmanager.host": layout.taskmanager_host,
        "taskmanager.numberOfTaskSlots": s.flink_taskmanager_slots,
        "rest.address": s.flink_host,
        "rest.bind-address": layout.bind_host,
        "rest.port": s.flink_rest_port,
        "blob.server.port": str(s.flink_rpc_port + 1),
        "parallelism.default": 1,
        "state.backend.type": "hashmap",
        "state.checkpoints.dir": f"file://{layout.flink_state_dir / 'checkpoints'}",
        "state.savepoints.dir": f"file://{layout.flink_state_dir / 'savepoints'}",
        "io.tmp.dirs": str(layout.flink_work_dir / "tmp"),
        "web.tmpdir": str(layout.flink_work_dir / "web"),
        "web.cancel.enable": True,
        **FLINK_MEMORY,
    }
    merged = {**dist, **ours}
    return {k: v for k, v in merged.items() if v is not None}


def write_flink_conf(settings: Settings, layout: Layout) -> Path:
    """Writes FLINK_CONF_DIR: our config.yaml plus the distribution's logging files."""
    dist = layout.flink_home / "conf"
    conf = layout.flink_conf_dir
    for d in (conf, layout.flink_log_dir, layout.flink_state_dir / "checkpoints",
              layout.flink_state_dir / "savepoints", layout.flink_work_dir / "tmp", layout.flink_work_dir / "web"):
        d.mkdir(parents=True, exist_ok=True)
    cfg = flink_config(flink_dist_config(layout.flink_home), settings, layout)
    (conf / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, width=10_000))
    for f in dist.iterdir():
        if f.name.startswith(("log4j", "logback")):
            (conf / f.name).write_text(f.read_text())
    return conf


def flink_env(layout: Layout) -> dict[str, str]:
    return {"FLINK_HOME": str(layout.flink_home), "FLINK_CONF_DIR": str(layout.flink_conf_dir),
            "FLINK_LOG_DIR": str(layout.flink_log_dir), "FLINK_PID_DIR": str(layout.flink_work_dir)}


# ====================================================================== commands of the runtimes
def command(role: str, settings: Settings, layout: Layout) -> list[str]:
    """The command line of an infra role (not Mosquitto or Kafka, whose images bring their own)."""
    s = settings
    if role in ("jobmanager", "taskmanager"):
        return [str(layout.flink_home / "bin" / f"{role}.sh"), "start-foreground"]
    if role not in JAVA_HEAP:
        raise ValueError(f"no command for role {role!r}")
    java = ["java", *java_module_opts(layout.flink_home), JAVA_HEAP[role], "-cp", layout.beam_classpath]
    if role == "expansion":
        # Java transforms run EMBEDDED in the TaskManager; the SDF Kafka read emits nothing on
        # Flink (beam#20689), hence the deprecated read.
        return [*java, "io.sensorlake.beam.ExpansionServer", s.expansion_host, str(s.expansion_port),
                "--defaultEnvironmentType=EMBEDDED", "--experiments=use_deprecated_read"]
    if role == "jobserver":
        return [*java, f"-Dsensorlake.job.jar={layout.beam_job_jar}", "io.sensorlake.beam.JobServer",
                f"--flink-master={s.flink_master}",
                f"--job-host={s.job_server_host}", f"--job-port={s.job_server_port}",
                f"--artifact-port={s.artifact_port}", "--expansion-port=-1",
                f"--artifacts-dir={layout.artifacts_dir}"]
    raise ValueError(f"no command for role {role!r}")


# ====================================================================== Kafka
def kafka_properties(settings: Settings, compose: bool, log_dir: str) -> dict[str, str]:
    """The broker's server.properties (KRaft, one node).

    Locally one listener on 127.0.0.1. In compose two: INTERNAL (kafka:19092) for the containers
    and HOST (9092 in the container), published on 127.0.0.1 at settings.kafka_bootstrap and
    advertised as that address, for programs on the host; each client is told an address it can
    reach, so "cannot connect" cannot happen.
    """
    s = settings
    port, cport = s.kafka_bootstrap_port, s.kafka_controller_port
    if compose:
        listeners = f"INTERNAL://:{KAFKA_INTERNAL_PORT},HOST://:{KAFKA_HOST_LISTENER_PORT},CONTROLLER://:{cport}"
        advertised = f"INTERNAL://kafka:{KAFKA_INTERNAL_PORT},HOST://{s.kafka_bootstrap.split(',')[0]}"
        names, inter, voters = ("INTERNAL", "HOST", "CONTROLLER"), "INTERNAL", f"1@kafka:{cport}"
    else:
        listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
        advertised = f"PLAINTEXT://127.0.0.1:{port}"
        names, inter, voters = ("PLAINTEXT", "CONTROLLER"), "PLAINTEXT", f"1@127.0.0.1:{cport}"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": voters,
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": inter,
        "listener.security.protocol.map": ",".join(f"{n}:PLAINTEXT" for n in names),
        "log.dirs": log_dir,
        "num.partitions": str(s.kafka_partitions),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }


# ====================================================================== probes
def _tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _own_addresses() -> set[str]:
    names = {socket.gethostname()}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return names


def _connected_to(port: int) -> bool:
    """An ESTABLISHED TCP connection to `port` in this network namespace (a container's own)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def probe(role: Role, settings: Settings, container: bool) -> bool | None:
    """True when the role is ready/healthy, False when not, None: no probe (process liveness).

    The same checks serve the local stack's readiness and the containers' health checks; only the
    TaskManager and the generator are told apart (a container sees only itself).
    """
    s = settings
    try:
        if role.probe == "tcp":
            host = getattr(s, role.host) if role.host else "127.0.0.1"
            return all(_tcp(host, p) for p in role.port_numbers(s))
        if role.probe == "kafka":  # in a container the host listener's port is not the setting's
            ports = [KAFKA_INTERNAL_PORT] if container else role.port_numbers(s)
            return all(_tcp("127.0.0.1", p) for p in [*ports, s.kafka_controller_port])
        if role.probe == "flink-rest":
            return "taskmanagers" in flink_rest.overview(s)
        if role.probe == "flink-taskmanager":
            if not container:
                return flink_rest.overview(s).get("taskmanagers", 0) >= 1
            mine = _own_addresses()
            return any(t.get("id", "").split(":")[0] in mine or any(a in t.get("path", "") for a in mine)
                       for t in flink_rest.taskmanagers(s))
        if role.probe == "flink-job":
            return flink_rest.job_running(s, s.job_name)
        if role.probe == "bridge":
            if not s.bridge_metrics_port:
                return None if not container else _connected_to(s.mqtt_port)
            # Ready once its MQTT session is up (it subscribes on connect): from then on the broker
            # queues the readings for it, so a generator started after this loses none.
            with urllib.request.urlopen(f"http://127.0.0.1:{s.bridge_metrics_port}/metrics", timeout=3) as r:
                samples = [line.split() for line in r.read().decode().splitlines() if line and line[0] != "#"]
            return any(len(f) == 2 and f[0].endswith("mqtt_connected") and float(f[1]) == 1 for f in samples)
        if role.probe == "http":  # any HTTP answer on the role's port: it serves
            host = getattr(s, role.host)
            host = "127.0.0.1" if host in ("", "0.0.0.0") else host
            try:
                with urllib.request.urlopen(f"http://{host}:{role.port_numbers(s)[0]}/", timeout=3):
                    return True
            except urllib.error.HTTPError:
                return True
        if role.probe == "mqtt-connected":
            return _connected_to(s.mqtt_port) if container else None
        if role.probe == "none":
            return None
    except (OSError, ValueError):
        return False
    raise ValueError(f"unknown probe {role.probe!r} of {role.name}")


# ====================================================================== container entry point
def _exec(argv: list[str], env: Mapping[str, str]) -> None:
    sys.stdout.flush()
    os.execvpe(argv[0], argv, {**os.environ, **env})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sensorlake.services",
                                     description="Entry point and health check of Sensorlake's containers.")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("probe", help="exit 0 when the role is healthy (a container health check)")
    p.add_argument("role", choices=sorted(BY_NAME))
    e = sub.add_parser("exec", help="configure and start a runtime in this container")
    e.add_argument("role", choices=["jobmanager", "taskmanager", "expansion", "jobserver"])
    args = parser.parse_args(argv)
    settings = Settings.load()
    if args.action == "probe":
        result = probe(BY_NAME[args.role], settings, container=True)
        return 0 if result in (True, None) else 1
    layout = CONTAINER
    env: dict[str, str] = {}
    if args.role in ("jobmanager", "taskmanager"):
        write_flink_conf(settings, layout)
        env = flink_env(layout)
    else:
        layout.artifacts_dir.mkdir(parents=True, exist_ok=True)
    cmd = command(args.role, settings, layout)
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        print(f"sensorlake.services: {cmd[0]} not found", file=sys.stderr)
        return 2
    _exec(cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
