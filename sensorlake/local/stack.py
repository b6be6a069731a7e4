"""The local (no-Docker) stack: the same services as docker-compose, as plain processes.

Everything binds to 127.0.0.1. State (configs, pids, logs, service data) lives under
``settings.home``; ``down`` stops only the processes whose pid files ``up`` wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import yaml

from sensorlake.local.install import Paths, ensure_mosquitto
from sensorlake.settings import Settings, read_env_file

Ready = Callable[[], bool]


class StackError(RuntimeError):
    """A service could not be started; the message names it and its log."""


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

    ORDER = ["mosquitto", "kafka", "flink-jobmanager", "flink-taskmanager", "expansion", "jobserver"]
    # The platform's own processes, started by `make up` (`local up --with-apps`), not by tests.
    APPS = ["bridge", "generator"]
    APP_MODULES = {"bridge": "connectors.mqtt_kafka", "generator": "iot_data_generator"}

    def __init__(self, settings: Settings, paths: Paths | None = None):
        self.home = Path(settings.home).resolve()
        self.settings = self._with_credentials(settings)
        self.paths = paths or Paths(Path(settings.cache).expanduser())
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
        creds = read_env_file(cred_file)
        overrides = {}
        if not settings.mqtt_generator_password:
            overrides["mqtt_generator_password"] = creds["SENSORLAKE_MQTT_GENERATOR_PASSWORD"]
        if not settings.mqtt_bridge_password:
            overrides["mqtt_bridge_password"] = creds["SENSORLAKE_MQTT_BRIDGE_PASSWORD"]
        return replace(settings, **overrides)

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
    def _services(self) -> list[Service]:
        s = self.settings
        java_opts = self._java_module_opts
        return [
            Service("mosquitto", [s.mqtt_port], self._mosquitto_cmd, lambda: port_open(s.mqtt_port),
                    prepare=self._mosquitto_prepare, timeout=20),
            Service("kafka", [s.kafka_bootstrap_port, s.kafka_controller_port], self._kafka_cmd,
                    lambda: port_open(s.kafka_bootstrap_port), prepare=self._kafka_prepare),
            Service("flink-jobmanager", [s.flink_rest_port, s.flink_rpc_port],
                    lambda: [str(self.paths.flink_home / "bin" / "jobmanager.sh"), "start-foreground"],
                    self._flink_rest_ready, env=self._flink_env, prepare=self._flink_prepare),
            Service("flink-taskmanager", [],
                    lambda: [str(self.paths.flink_home / "bin" / "taskmanager.sh"), "start-foreground"],
                    self._taskmanager_ready, env=self._flink_env, prepare=self._flink_prepare),
            Service("expansion", [s.expansion_port],
                    lambda: ["java", *java_opts(), "-Xmx512m", "-cp", self.paths.beam_classpath,
                             "io.sensorlake.beam.ExpansionServer", "127.0.0.1", str(s.expansion_port),
                             "--defaultEnvironmentType=EMBEDDED", "--experiments=use_deprecated_read"],
                    lambda: port_open(s.expansion_port)),
            Service("jobserver", [s.job_server_port, s.artifact_port],
                    lambda: ["java", *java_opts(), "-Xmx768m", "-cp", self.paths.beam_classpath,
                             "io.sensorlake.beam.JobServer", f"--flink-master={s.flink_master}",
                             "--job-host=127.0.0.1", f"--job-port={s.job_server_port}",
                             f"--artifact-port={s.artifact_port}", "--expansion-port=-1",
                             f"--artifacts-dir={self._dir('jobserver', 'artifacts')}"],
                    lambda: port_open(s.job_server_port) and port_open(s.artifact_port)),
        ]

    def _apps(self) -> list[Service]:
        s = self.settings
        env = lambda: s.as_env()  # noqa: E731 - the same settings names the services read
        alive = lambda name: (lambda: self.pid(name) is not None)  # noqa: E731
        return [
            Service("bridge", [s.bridge_metrics_port] if s.bridge_metrics_port else [],
                    lambda: [sys.executable, "-m", "connectors.mqtt_kafka"],
                    (lambda: port_open(s.bridge_metrics_port)) if s.bridge_metrics_port else alive("bridge"),
                    env=env, timeout=60),
            Service("generator", [],
                    lambda: [sys.executable, "-m", "iot_data_generator",
                             "--report", str(self.home / "generator-report.json")],
                    alive("generator"), env=env, timeout=10),
        ]

    def _java_module_opts(self) -> list[str]:
        """The --add-opens list Flink ships for Java 17; Beam's Flink client needs it too."""
        dist = yaml.safe_load((self.paths.flink_home / "conf" / "config.yaml").read_text())
        return str(dist["env"]["java"]["opts"]["all"]).split()

    # mosquitto ---------------------------------------------------------------------
    def _mosquitto_prepare(self) -> None:
        s = self.settings
        d = self._dir("mosquitto")
        self._dir("mosquitto", "data")
        passwd = d / "passwd"
        passwd.unlink(missing_ok=True)
        passwd.touch(mode=0o600)
        for user, pw in ((s.mqtt_generator_user, s.mqtt_generator_password),
                         (s.mqtt_bridge_user, s.mqtt_bridge_password)):
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (d / "acl").write_text(
            f"user {s.mqtt_generator_user}\ntopic write {s.mqtt_topic_prefix}/#\n\n"
            f"user {s.mqtt_bridge_user}\ntopic read {s.mqtt_topic_prefix}/#\n")
        (d / "mosquitto.conf").write_text(
            f"listener {s.mqtt_port} 127.0.0.1\n"
            # Run as whoever started the stack (as root it would switch to `mosquitto` and then
            # fail to read our 0600 password file).
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {d / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {d / 'data'}/\n"
            "autosave_interval 10\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n")

    def _mosquitto_cmd(self) -> list[str]:
        return [ensure_mosquitto(), "-c", str(self.home / "mosquitto" / "mosquitto.conf")]

    # kafka -------------------------------------------------------------------------
    def _kafka_prepare(self) -> None:
        s = self.settings
        d = self._dir("kafka")
        data = self._dir("kafka", "data")
        props = d / "server.properties"
        props.write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_bootstrap_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_bootstrap_port}\n"
            "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            f"log.dirs={data}\n"
            f"num.partitions={s.kafka_partitions}\n"
            "offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n"
            "group.initial.rebalance.delay.ms=0\nauto.create.topics.enable=false\n")
        (d / "log4j2.properties").write_text(
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n")
        if not (data / "meta.properties").exists():
            cp = f"{self.paths.kafka_lib}/*"
            cluster_id = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                                        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                            "-c", str(props)], check=True, capture_output=True)

    def _kafka_cmd(self) -> list[str]:
        d = self.home / "kafka"
        return ["java", "-Xms256m", "-Xmx768m", f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}",
                "-cp", f"{self.paths.kafka_lib}/*", "kafka.Kafka", str(d / "server.properties")]

    # flink -------------------------------------------------------------------------
    def _flink_env(self) -> dict[str, str]:
        return {"FLINK_HOME": str(self.paths.flink_home), "FLINK_CONF_DIR": str(self.home / "flink" / "conf"),
                "FLINK_LOG_DIR": str(self._dir("logs", "flink")), "FLINK_PID_DIR": str(self._dir("flink", "pids"))}

    def _flink_prepare(self) -> None:
        s = self.settings
        conf = self._dir("flink", "conf")
        dist = self.paths.flink_home / "conf"
        cfg = yaml.safe_load((dist / "config.yaml").read_text())
        cfg["jobmanager"] = {"bind-host": "127.0.0.1", "rpc": {"address": "127.0.0.1", "port": s.flink_rpc_port},
                             "memory": {"process": {"size": "1280m"}, "jvm-metaspace": {"size": "512m"}},
                             "execution": {"failover-strategy": "region"}}
        cfg["taskmanager"] = {"bind-host": "127.0.0.1", "host": "127.0.0.1",
                              "numberOfTaskSlots": s.flink_taskmanager_slots,
                              # Every Beam job brings its own classloader with the whole Beam
                              # classpath; the default 256m metaspace runs out after a few jobs.
                              "memory": {"process": {"size": "3072m"}, "jvm-metaspace": {"size": "1024m"}}}
        cfg["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": s.flink_rest_port}
        cfg["blob"] = {"server": {"port": str(s.flink_rpc_port + 1)}}
        cfg["parallelism"] = {"default": 1}
        cfg["state"] = {"backend": {"type": "hashmap"},
                        "checkpoints": {"dir": f"file://{self._dir('flink', 'checkpoints')}"},
                        "savepoints": {"dir": f"file://{self._dir('flink', 'savepoints')}"}}
        cfg["io"] = {"tmp": {"dirs": str(self._dir("flink", "tmp"))}}
        cfg["web"] = {"tmpdir": str(self._dir("flink", "web")), "cancel": {"enable": True}}
        (conf / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        for f in dist.iterdir():
            if f.name.startswith(("log4j", "logback")):
                (conf / f.name).write_text(f.read_text())

    def _flink_overview(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.settings.flink_rest}/overview", timeout=2) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def _flink_rest_ready(self) -> bool:
        return self._flink_overview() is not None

    def _taskmanager_ready(self) -> bool:
        ov = self._flink_overview()
        return bool(ov and ov.get("taskmanagers", 0) >= 1)

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
        self.pid_path(name).unlink(missing_ok=True)

    def up(self, names: list[str] | None = None, progress: Callable[[str], None] = lambda m: None,
           with_apps: bool = False) -> None:
        apps = [a for a in self.APPS if importlib.util.find_spec(self.APP_MODULES[a] + ".__main__")]
        for name in names or (self.ORDER + (apps if with_apps else [])):
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
