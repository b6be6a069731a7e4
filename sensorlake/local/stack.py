"""The local (no-Docker) stack: the same services as docker-compose, as plain processes.

Everything binds to 127.0.0.1. State (configs, pids, logs, service data) lives under
``settings.home``; ``down`` stops only the processes whose pid files ``up`` wrote. What runs, in
which order, with which command, ports and readiness checks comes from sensorlake/services.py,
the description docker-compose.yml is checked against.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dotenv import dotenv_values

from sensorlake import runtime, services
from sensorlake.local.install import Paths, ensure_mosquitto
from sensorlake.services import Layout, Role
from sensorlake.settings import Settings

Ready = Callable[[], bool]


def isolated_settings(home: Path, port_offset: int, **overrides) -> Settings:
    """Settings of a stack that cannot meet a developer's `make up`: its own home and lake, every
    port moved by port_offset, and nothing from the environment but the download cache. The
    integration tests (+10000) and the benchmarks (+40000) run their stacks this way."""
    base = Settings.load(env={k: v for k, v in os.environ.items() if k == "SENSORLAKE_CACHE"})
    off = port_offset
    return base.replace(
        home=str(home), lake=str(Path(home) / "lake"), mqtt_port=1883 + off,
        kafka_bootstrap=f"127.0.0.1:{9092 + off}", kafka_controller_port=9093 + off,
        flink_rest_port=8081 + off, flink_rpc_port=6123 + off, job_server_port=8099 + off,
        artifact_port=8098 + off, expansion_port=8097 + off, log_level="WARNING", **overrides)


class StackError(RuntimeError):
    """A service could not be started; the message names it and its log."""


def _absolute(settings: Settings) -> Settings:
    """Relative paths resolved against where the command runs, not where a service runs (its cwd is
    the state folder): `make up` from the repository writes the lake to ./data, where `sensorlake
    sql` and `sensorlake catalog` look by default."""
    local = {k: str(Path(getattr(settings, k)).expanduser().resolve())
             for k in ("lake", "registry", "home", "cache") if "://" not in getattr(settings, k)}
    return settings.replace(**local)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@dataclass
class Service:
    name: str
    ports: list[int]
    command: Callable[[], list[str]]
    ready: Ready
    env: Callable[[], dict[str, str]] = field(default=lambda: {})
    prepare: Callable[[], None] = field(default=lambda: None)
    timeout: float = 90.0


class LocalStack:
    """Starts, checks and stops the local services; one instance per state folder."""

    # The runtimes, in start order (sensorlake.services.ROLES).
    ORDER = services.local_infra()
    # The platform's own processes, started by `make up` (`local up --with-apps`), not by tests.
    APPS = services.local_apps()

    def __init__(self, settings: Settings, paths: Paths | None = None):
        self.home = Path(settings.home).resolve()
        self.settings = self._with_credentials(_absolute(settings))
        self.paths = paths or Paths(Path(settings.cache).expanduser())
        self.layout = Layout(
            flink_home=self.paths.flink_home,
            flink_conf_dir=self.home / "flink" / "conf",
            flink_log_dir=self.home / "logs" / "flink",
            flink_state_dir=self.home / "flink",
            flink_work_dir=self.home / "flink",
            beam_classpath=self.paths.beam_classpath,
            beam_job_jar=self.paths.beam_job_jar,
            artifacts_dir=self.home / "jobserver" / "artifacts",
            bind_host="127.0.0.1",
            taskmanager_host="127.0.0.1",
        )
        self.services = {s.name: s for s in self._services() + self._apps()}

    # ------------------------------------------------------------------ credentials
    def _with_credentials(self, settings: Settings) -> Settings:
        """Local MQTT passwords are generated once per state folder, never committed."""
        cred_file = self.home / "credentials.env"
        if not cred_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            cred_file.write_text(
                f"SENSORLAKE_MQTT_GENERATOR_PASSWORD={secrets.token_urlsafe(18)}\n"
                f"SENSORLAKE_MQTT_BRIDGE_PASSWORD={secrets.token_urlsafe(18)}\n")
            cred_file.chmod(0o600)
        creds = dotenv_values(cred_file)
        overrides = {}
        if not settings.mqtt_generator_password:
            overrides["mqtt_generator_password"] = creds["SENSORLAKE_MQTT_GENERATOR_PASSWORD"]
        if not settings.mqtt_bridge_password:
            overrides["mqtt_bridge_password"] = creds["SENSORLAKE_MQTT_BRIDGE_PASSWORD"]
        return settings.replace(**overrides)

    # ------------------------------------------------------------------ layout
    def _dir(self, *parts: str) -> Path:
        p = self.home.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def log_path(self, name: str) -> Path:
        return self._dir("logs") / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self._dir("pids") / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_path(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    # ------------------------------------------------------------------ services
    def _ready(self, role: Role) -> Ready:
        """The role's probe (sensorlake.services.probe); no probe: the process is alive."""
        def ready() -> bool:
            result = services.probe(role, self.settings, container=False)
            return self.pid(role.local) is not None if result is None else result
        return ready

    def _services(self) -> list[Service]:
        s, by = self.settings, services.BY_LOCAL

        def svc(name: str, command: Callable[[], list[str]], **kw) -> Service:
            role = by[name]
            return Service(name, role.port_numbers(s), command, self._ready(role), timeout=role.timeout, **kw)

        def runtime(role: str) -> Callable[[], list[str]]:
            return lambda: services.command(role, s, self.layout)

        flink = dict(env=lambda: services.flink_env(self.layout), prepare=self._flink_prepare)
        return [
            svc("mosquitto", self._mosquitto_cmd, env=lambda: s.as_env(by["mosquitto"].settings)),
            svc("kafka", self._kafka_cmd, prepare=self._kafka_prepare),
            svc("flink-jobmanager", runtime("jobmanager"), **flink),
            svc("flink-taskmanager", runtime("taskmanager"), **flink),
            svc("expansion", runtime("expansion")),
            svc("jobserver", runtime("jobserver"), prepare=lambda: self._dir("jobserver", "artifacts")),
        ]

    def _apps(self) -> list[Service]:
        s = self.settings
        out = []
        for name in self.APPS:
            role = services.BY_LOCAL[name]
            out.append(Service(
                name, role.port_numbers(s),
                (lambda r=role: [*services.entry_point(), *r.local_argv(self.home)]),
                self._ready(role),
                env=(lambda r=role: s.as_env(r.settings)),  # exactly what compose gives the service
                timeout=role.timeout))
        return out

    # mosquitto ---------------------------------------------------------------------
    def _mosquitto_cmd(self) -> list[str]:
        """docker/mosquitto/start-mosquitto.sh, the script compose runs too: config, then the broker."""
        d = self.home / "mosquitto"
        return ["sh", str(services.MOSQUITTO_SCRIPT), str(d), str(d / "data"), "127.0.0.1", ensure_mosquitto()]

    # kafka -------------------------------------------------------------------------
    def _kafka_prepare(self) -> None:
        # The same broker configuration and storage format as the compose service (sensorlake.runtime).
        runtime.kafka_prepare(self.settings, self._dir("kafka"), self._dir("kafka", "data"), self.paths.kafka_lib,
                              compose=False)

    def _kafka_cmd(self) -> list[str]:
        return runtime.kafka_command(self.home / "kafka", self.paths.kafka_lib)

    # flink -------------------------------------------------------------------------
    def _flink_prepare(self) -> None:
        services.write_flink_conf(self.settings, self.layout)

    # ------------------------------------------------------------------ lifecycle
    def start(self, name: str) -> None:
        svc = self.services[name]
        if self.pid(name):
            self._wait_ready(svc, self.pid(name))
            return
        for port in svc.ports:
            if port_open(port):
                raise StackError(f"{name}: port {port} on 127.0.0.1 is already taken by another process; "
                                 f"stop it or choose another port (see `sensorlake local up --help`)")
        svc.prepare()
        log = open(self.log_path(name), "ab")
        proc = subprocess.Popen(svc.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **svc.env()}, start_new_session=True, cwd=self.home)
        self.pid_path(name).write_text(str(proc.pid))
        self._wait_ready(svc, proc.pid)

    def _wait_ready(self, svc: Service, pid: int) -> None:
        deadline = time.monotonic() + svc.timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise StackError(f"{svc.name} exited during start-up; see {self.log_path(svc.name)}")
            if svc.ready():
                return
            time.sleep(0.3)
        raise StackError(f"{svc.name} not ready after {svc.timeout:.0f}s; see {self.log_path(svc.name)}")

    def stop(self, name: str, timeout: float = 30.0) -> None:
        self._signal_and_wait(name, signal.SIGTERM, timeout)

    def kill(self, name: str) -> None:
        self._signal_and_wait(name, signal.SIGKILL, 10.0)

    def _signal_and_wait(self, name: str, sig: int, timeout: float) -> None:
        pid = self.pid(name)
        if pid is None:
            self.pid_path(name).unlink(missing_ok=True)
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
        # A killed JVM's main thread turns zombie before its other threads have exited and its
        # sockets are closed: wait (bounded) until its ports are free, so a restart can bind them.
        released = time.monotonic() + 15
        while any(port_open(p) for p in self.services[name].ports) and time.monotonic() < released:
            time.sleep(0.2)
        self.pid_path(name).unlink(missing_ok=True)

    def needs(self, names: list[str]) -> list[str]:
        """The named services and everything they wait for (docker-compose's depends_on), in start order."""
        wanted: set[str] = set()

        def visit(role: Role) -> None:
            for dep, _ in role.after:
                visit(services.BY_NAME[dep])
            if role.local:
                wanted.add(role.local)

        for name in names:
            if name not in self.services:
                raise StackError(f"no service {name!r}; choose from {', '.join(self.ORDER + self.APPS)}")
            visit(services.BY_LOCAL[name])
        return [n for n in self.ORDER + self.APPS if n in wanted]

    def up(self, names: list[str] | None = None, progress: Callable[[str], None] = lambda m: None,
           with_apps: bool = False) -> None:
        """Starts the named services and what they need; by default every runtime (and the apps)."""
        order = self.needs(names) if names else self.ORDER + (self.APPS if with_apps else [])
        for name in order:
            already = self.pid(name) is not None
            progress(f"{name}: {'already running' if already else 'starting'}")
            self.start(name)
            progress(f"{name}: ready (pid {self.pid(name)})")

    def down(self, progress: Callable[[str], None] = lambda m: None) -> None:
        for name in reversed(self.ORDER + self.APPS):
            if self.pid(name):
                progress(f"{name}: stopping")
                self.stop(name)

    def status(self) -> list[dict]:
        rows = []
        for name in self.ORDER + [a for a in self.APPS if self.pid(a)]:
            svc = self.services[name]
            pid = self.pid(name)
            rows.append({"service": name, "pid": pid, "running": pid is not None,
                         "ready": bool(pid) and svc.ready(), "ports": svc.ports,
                         "log": str(self.log_path(name))})
        return rows
