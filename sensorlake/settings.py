"""One typed settings object for every Sensorlake service.

Every field has one environment variable name (``SENSORLAKE_*``) and one command-line flag
(``--kebab-case``). The local stack, docker-compose and the tests all use these names, so a
setting means the same thing wherever it is read. Precedence: flag > environment > env file
(``SENSORLAKE_ENV_FILE``, default ``./.env``) > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, get_type_hints

ENV_PREFIX = "SENSORLAKE_"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY = REPO_ROOT / "iot_data_generator" / "sensors.json"

# Pinned runtimes. The Beam SDK (setup.py) and the job-server classpath (flink/jobserver/pom.xml)
# must be the same release; tests/unit/test_pins.py keeps them in step.
BEAM_VERSION = "2.62.0"
FLINK_VERSION = "1.19.3"
KAFKA_VERSION = "4.4.0"


def _opt(default: Any, help: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # Where things live
    lake: str = _opt("data", "Lake root: a local folder or any Beam filesystem path (s3://...).")
    registry: str = _opt(str(DEFAULT_REGISTRY), "Path of the sensor registry (sensors.json).")
    home: str = _opt(".sensorlake", "Local stack state: pids, logs, service data.")
    cache: str = _opt(
        str(Path.home() / ".cache" / "sensorlake"),
        "Download cache: Flink venv, Kafka and Beam job-server jars.",
    )
    log_level: str = _opt("WARNING", "Log level (DEBUG, INFO, WARNING, ERROR).")

    # MQTT
    mqtt_host: str = _opt("127.0.0.1", "MQTT broker host.")
    mqtt_port: int = _opt(1883, "MQTT broker port.")
    mqtt_topic_prefix: str = _opt("sensors", "Readings are published to <prefix>/<sensor id>.")
    mqtt_generator_user: str = _opt("generator", "MQTT user of the generator (publish only).")
    mqtt_generator_password: str = _opt("", "MQTT password of the generator.", secret=True)
    mqtt_bridge_user: str = _opt("bridge", "MQTT user of the bridge (subscribe only).")
    mqtt_bridge_password: str = _opt("", "MQTT password of the bridge.", secret=True)
    mqtt_tls_ca: str = _opt("", "CA file; enables TLS to the broker when set.")
    mqtt_qos: int = _opt(1, "MQTT QoS for readings.")

    # Kafka
    kafka_bootstrap: str = _opt("127.0.0.1:9092", "Kafka bootstrap servers.")
    kafka_topic: str = _opt("iot.readings.raw", "Kafka topic of raw readings.")
    kafka_dlq_topic: str = _opt("iot.readings.dlq", "Kafka topic of oversized payloads.")
    kafka_partitions: int = _opt(3, "Partitions of the readings topic when it is created.")
    kafka_retention_ms: int = _opt(7 * 24 * 3600 * 1000, "Retention of the readings topic.")
    kafka_controller_port: int = _opt(9093, "KRaft controller port (local stack).")

    # MQTT -> Kafka bridge
    bridge_id: str = _opt("bridge-1", "Name of this bridge instance (the bridge_id Kafka header).")
    bridge_client_id: str = _opt(
        "", "MQTT client id of the bridge's persistent session (default sensorlake-<bridge id>); "
            "never shared by two running bridges.")
    bridge_max_inflight: int = _opt(
        1000, "Readings received but not yet acked to MQTT (MQTT v5 Receive Maximum); at the bound "
              "the bridge stops reading and the broker queues.")
    bridge_max_payload_bytes: int = _opt(262144, "Larger MQTT payloads go to the DLQ topic.")
    bridge_metrics_port: int = _opt(9464, "Bridge Prometheus metrics port on 127.0.0.1 (0: off).")
    bridge_session_expiry_s: int = _opt(
        7 * 24 * 3600, "How long the broker keeps the bridge's session and queue while it is away.")

    # Flink and Beam
    flink_rest_port: int = _opt(8081, "Flink REST API and dashboard port.")
    flink_rpc_port: int = _opt(6123, "Flink JobManager RPC port.")
    flink_taskmanager_slots: int = _opt(4, "Task slots per TaskManager.")
    job_server_port: int = _opt(8099, "Beam Flink job server port.")
    artifact_port: int = _opt(8098, "Beam artifact staging port.")
    expansion_port: int = _opt(8097, "Beam expansion service port (KafkaIO).")
    environment_type: str = _opt("LOOPBACK", "Beam Python environment: LOOPBACK, PROCESS, EXTERNAL.")
    environment_config: str = _opt("", "Beam environment config (PROCESS command or worker pool).")
    parallelism: int = _opt(1, "Pipeline parallelism.")
    checkpoint_interval_ms: int = _opt(10_000, "Flink checkpoint interval.")
    bundle_max_elements: int = _opt(
        50_000, "Elements per Beam bundle at most: each keyed stage gets one batch per key per bundle.")
    bundle_max_ms: int = _opt(5_000, "A Beam bundle is closed after this long (adds at most this to freshness).")

    # Event time, 1-minute windows and quality (DESIGN.md, "Quality metrics")
    out_of_orderness_ms: int = _opt(10_000, "A sensor's watermark trails its newest event time by this.")
    allowed_lateness_ms: int = _opt(300_000, "Late readings update their window for this long after it closed.")
    idle_timeout_ms: int = _opt(
        30_000, "A sensor silent for this long (arrival time) has its watermark moved on, so its "
        "empty minutes get `missing` rows.")
    heartbeat_interval_ms: int = _opt(5_000, "How often (arrival time) every known sensor is told the time.")
    max_missing_windows: int = _opt(
        60, "At most this many `missing` rows per watermark jump (a long gap is counted, not listed).")
    window_shards: int = _opt(1, "Files per dataset per minute in curated/ and quality/.")
    state_shards: int = _opt(
        64, "Keys the per-sensor state (de-duplication, clocks) is spread over: state is read and "
            "committed once per key per bundle; at least the parallelism.")
    registry_refresh_s: int = _opt(60, "How often the running job re-reads the registry file.")
    quality_ok_completeness: float = _opt(0.95, "Status ok needs completeness >= this ...")
    quality_ok_validity: float = _opt(0.99, "... and range validity >= this.")
    quality_bad_completeness: float = _opt(0.5, "Status bad when completeness < this ...")
    quality_bad_validity: float = _opt(0.9, "... or range validity < this.")

    # Where clients find the Flink JobManager, the Beam job server and the expansion service. The
    # local stack runs them all on 127.0.0.1; docker-compose sets the service names (jobmanager, ...).
    flink_host: str = _opt("127.0.0.1", "Host of the Flink JobManager (REST API, dashboard and RPC).")
    job_server_host: str = _opt("127.0.0.1", "Host of the Beam job server (job and artifact endpoints).")
    expansion_host: str = _opt("127.0.0.1", "Host of the Beam expansion service (KafkaIO).")

    # Data catalogue (`sensorlake catalog build|serve`)
    catalog_host: str = _opt("127.0.0.1", "Address `sensorlake catalog serve` binds to.")
    catalog_port: int = _opt(8088, "Port of the data catalogue page.")
    catalog_interval_s: int = _opt(60, "`catalog serve` rebuilds the catalogue this often (seconds).")
    freshness_warn_s: int = _opt(300, "A dataset whose newest data is older than this is flagged warn.")
    freshness_error_s: int = _opt(3600, "... and older than this, error.")
    data_owner: str = _opt("Sensorlake data platform team", "Owner of the lake's datasets (catalogue).")
    data_contact: str = _opt("data-platform@example.com", "Contact e-mail for the datasets (catalogue).")

    @property
    def kafka_bootstrap_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def flink_master(self) -> str:
        return f"{self.flink_host}:{self.flink_rest_port}"

    @property
    def flink_rest(self) -> str:
        return f"http://{self.flink_host}:{self.flink_rest_port}"

    @property
    def job_endpoint(self) -> str:
        return f"{self.job_server_host}:{self.job_server_port}"

    @property
    def artifact_endpoint(self) -> str:
        return f"{self.job_server_host}:{self.artifact_port}"

    @property
    def expansion_endpoint(self) -> str:
        return f"{self.expansion_host}:{self.expansion_port}"

    # ------------------------------------------------------------------ construction
    @classmethod
    def env_name(cls, name: str) -> str:
        return ENV_PREFIX + name.upper()

    @classmethod
    def env_names(cls) -> set[str]:
        return {cls.env_name(f.name) for f in dataclasses.fields(cls)}

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults < env file < environment < explicit overrides (flags)."""
        env = dict(os.environ if env is None else env)
        merged: dict[str, str] = {}
        env_file = Path(env.get(ENV_PREFIX + "ENV_FILE", ".env"))
        if env_file.is_file():
            merged.update(read_env_file(env_file))
        # The local stack generates its MQTT passwords into <home>/credentials.env; every client
        # started against that stack (generator, bridge, tests) finds them there.
        home = Path(env.get(ENV_PREFIX + "HOME", merged.get(ENV_PREFIX + "HOME", ".sensorlake")))
        creds = home / "credentials.env"
        if creds.is_file():
            merged.update(read_env_file(creds))
        merged.update(env)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = cls.env_name(f.name)
            if key in merged and merged[key] != "":
                values[f.name] = _coerce(hints[f.name], merged[key], key)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        """Adds ``--flag`` options for the given fields; defaults stay None so env wins."""
        hints = get_type_hints(cls)
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            f = by_name[name]
            parser.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                type=hints[name] if hints[name] in (int, float) else str,
                default=None,
                help=f"{f.metadata['help']} [env {cls.env_name(name)}, default {f.default!r}]"
                if not f.metadata.get("secret")
                else f"{f.metadata['help']} [env {cls.env_name(name)}]",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> "Settings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.load(env, **{k: v for k, v in vars(args).items() if k in names})

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for child processes."""
        return {self.env_name(f.name): str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def redacted(self) -> dict[str, Any]:
        return {
            f.name: ("***" if f.metadata.get("secret") and getattr(self, f.name) else getattr(self, f.name))
            for f in dataclasses.fields(self)
        }


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _coerce(kind: type, raw: str, key: str) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return raw
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r} is not a valid {kind.__name__}") from exc


def read_env_file(path: Path) -> dict[str, str]:
    """Reads KEY=VALUE lines (the docker-compose .env format, without interpolation)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out
