"""One typed settings object for every Sensorlake service, and which settings each role reads.

Every field has one environment variable name (``SENSORLAKE_*``) and one command-line flag
(``--kebab-case``). The local stack, docker-compose, the CLIs and the tests all use these names,
so a setting means the same thing wherever it is read. Loading is pydantic-settings: precedence
flag > environment > the local stack's generated ``<home>/credentials.env`` > env file
(``SENSORLAKE_ENV_FILE``, default ``./.env``) > default; values are validated and coerced there, and a bad
value is a ``SettingsError`` that names the variable.

``ROLE_SETTINGS`` lists what each role reads: the local stack passes those to a process,
docker-compose gives a service exactly those variables (tests/unit/test_compose.py checks it),
and each command line offers exactly those flags.
"""

from __future__ import annotations

import argparse
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from dotenv import dotenv_values
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "SENSORLAKE_"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY = REPO_ROOT / "iot_data_generator" / "sensors.json"

# Pinned runtimes. The Beam SDK (setup.py) and the job-server classpath (flink/jobserver/pom.xml)
# must be the same release; tests/unit/test_settings.py keeps them in step.
BEAM_VERSION = "2.62.0"
FLINK_VERSION = "1.19.3"
KAFKA_VERSION = "4.4.0"


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _opt(default: Any, help: str, secret: bool = False, **constraints: Any) -> Any:
    return Field(default, description=help, json_schema_extra={"secret": True} if secret else None, **constraints)


_PORT = {"ge": 0, "le": 65535}

# The environment a load reads: the process's, or a mapping the caller gave (tests, isolated stacks).
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("sensorlake_environment", default=None)


class _Environment(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRONMENT.get()
        return parse_env_vars(os.environ if env is None else env, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore",
                                      frozen=True, validate_default=False)

    # Where things live
    lake: str = _opt("data", "Lake root: a local folder or any Beam filesystem path (s3://...).")
    registry: str = _opt(str(DEFAULT_REGISTRY), "Path of the sensor registry (sensors.json).")
    home: str = _opt(".sensorlake", "Local stack state: pids, logs, service data.")
    cache: str = _opt(str(Path.home() / ".cache" / "sensorlake"),
                      "Download cache: Flink venv, Kafka and Beam job-server jars.")
    log_level: str = _opt("WARNING", "Log level (DEBUG, INFO, WARNING, ERROR).")

    # MQTT
    mqtt_host: str = _opt("127.0.0.1", "MQTT broker host.")
    mqtt_port: int = _opt(1883, "MQTT broker port.", **_PORT)
    mqtt_topic_prefix: str = _opt("sensors", "Readings are published to <prefix>/<sensor id>.")
    mqtt_generator_user: str = _opt("generator", "MQTT user of the generator (publish only).")
    mqtt_generator_password: str = _opt("", "MQTT password of the generator.", secret=True)
    mqtt_bridge_user: str = _opt("bridge", "MQTT user of the bridge (subscribe only).")
    mqtt_bridge_password: str = _opt("", "MQTT password of the bridge.", secret=True)
    mqtt_tls_ca: str = _opt("", "CA file; enables TLS to the broker when set.")
    mqtt_qos: int = _opt(1, "MQTT QoS for readings.")

    # Generator (`sensorlake generate`)
    generator_mode: Literal["sensorlake", "challenge"] = _opt(
        "sensorlake", "What the generator sends. sensorlake: one topic per sensor (<prefix>/<id>), "
        "SENSORLAKE_MQTT_QOS, sensor_id/timestamp/value/seq/metadata, fault injection. challenge: "
        "exactly the challenge's own generator: topic <prefix>, QoS 0, MQTT 3.1.1 clean session, "
        "{\"id\", \"dt\": datetime.utcnow().isoformat(), \"value\": an integer in range}, no seq.")

    # Kafka
    kafka_bootstrap: str = _opt("127.0.0.1:9092", "Kafka bootstrap servers.")
    kafka_topic: str = _opt("iot.readings.raw", "Kafka topic of raw readings.")
    kafka_dlq_topic: str = _opt("iot.readings.dlq", "Kafka topic of oversized payloads.")
    kafka_partitions: int = _opt(3, "Partitions of the readings topic when it is created.")
    kafka_retention_ms: int = _opt(7 * 24 * 3600 * 1000, "Retention of the readings topic.")
    kafka_controller_port: int = _opt(9093, "KRaft controller port (local stack).", **_PORT)

    # MQTT -> Kafka bridge
    bridge_id: str = _opt("bridge-1", "Name of this bridge instance (the bridge_id Kafka header).")
    bridge_client_id: str = _opt(
        "", "MQTT client id of the bridge's persistent session (default sensorlake-<bridge id>); "
            "never shared by two running bridges.")
    bridge_max_inflight: int = _opt(
        2000, "Readings received but not yet acked to MQTT (MQTT v5 Receive Maximum); at the bound "
              "the bridge stops reading and the broker queues. Size it to rate x (linger + Kafka's ack "
              "time), with room for bursts.")
    bridge_linger_ms: int = _opt(
        50, "How long the bridge's Kafka producer waits to fill a batch (librdkafka linger.ms): fewer, "
            "larger batches cost the bridge and the broker less CPU and the log fewer bytes, at this much "
            "latency.", ge=0, le=60_000)
    bridge_max_payload_bytes: int = _opt(262144, "Larger MQTT payloads go to the DLQ topic.")
    bridge_metrics_port: int = _opt(9464, "Bridge Prometheus metrics port on 127.0.0.1 (0: off).", **_PORT)
    bridge_session_expiry_s: int = _opt(
        7 * 24 * 3600, "How long the broker keeps the bridge's session and queue while it is away.")

    # Flink and Beam
    flink_rest_port: int = _opt(8081, "Flink REST API and dashboard port.", **_PORT)
    flink_rpc_port: int = _opt(6123, "Flink JobManager RPC port.", **_PORT)
    flink_taskmanager_slots: int = _opt(4, "Task slots per TaskManager.", ge=1)
    job_server_port: int = _opt(8099, "Beam Flink job server port.", **_PORT)
    artifact_port: int = _opt(8098, "Beam artifact staging port.", **_PORT)
    expansion_port: int = _opt(8097, "Beam expansion service port (KafkaIO).", **_PORT)
    job_name: str = _opt("sensorlake-lake", "Name of the lake job in Flink (one live job of this name at most).")
    environment_type: str = _opt("LOOPBACK", "Beam Python environment: LOOPBACK, PROCESS, EXTERNAL.")
    environment_config: str = _opt("", "Beam environment config (PROCESS command or worker pool).")
    parallelism: int = _opt(1, "Pipeline parallelism.", ge=1)
    checkpoint_interval_ms: int = _opt(10_000, "Flink checkpoint interval.", ge=1)
    bundle_max_elements: int = _opt(
        50_000, "Elements per Beam bundle at most: each keyed stage gets one batch per key per bundle.", ge=1)
    bundle_max_ms: int = _opt(2_000, "A Beam bundle is closed after this long (adds at most this to freshness).",
                              ge=1)

    # Event time, 1-minute windows and quality (docs/design.md, "Quality definitions")
    out_of_orderness_ms: int = _opt(10_000, "A sensor's watermark trails its newest event time by this.")
    allowed_lateness_ms: int = _opt(300_000, "Late readings update their window for this long after it closed.")
    idle_timeout_ms: int = _opt(
        30_000, "A sensor silent for this long (arrival time) has its watermark moved on, so its "
        "empty minutes get `missing` rows.")
    heartbeat_interval_ms: int = _opt(5_000, "How often (arrival time) every known sensor is told the time.")
    max_missing_windows: int = _opt(
        60, "At most this many `missing` rows per watermark jump (a long gap is counted, not listed).")
    window_shards: int = _opt(1, "Files per dataset per minute in curated/ and quality/.", ge=1)
    state_shards: int = _opt(
        64, "Keys the sensors' 1-minute clocks are spread over: state is read and committed once "
            "per key per bundle; at least the parallelism. (De-duplication is keyed by Kafka "
            "partition.)", ge=1)
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
    catalog_port: int = _opt(8088, "Port of the data catalogue page.", **_PORT)
    catalog_interval_s: int = _opt(60, "`catalog serve` rebuilds the catalogue this often (seconds).", ge=1)
    freshness_warn_s: int = _opt(300, "A dataset whose newest data is older than this is flagged warn.")
    freshness_error_s: int = _opt(3600, "... and older than this, error.")
    data_owner: str = _opt("Sensorlake data platform team", "Owner of the lake's datasets (catalogue).")
    data_contact: str = _opt("data-platform@example.com", "Contact e-mail for the datasets (catalogue).")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, _Environment(settings_cls), dotenv_settings

    # ------------------------------------------------------------------ derived
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
        return {cls.env_name(name) for name in cls.model_fields}

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults < env file < credentials.env < environment < explicit overrides (flags)."""
        env = os.environ if env is None else env
        env_file = Path(env.get(ENV_PREFIX + "ENV_FILE") or ".env")
        from_file = dotenv_values(env_file) if env_file.is_file() else {}
        # The local stack generates its MQTT passwords into <home>/credentials.env; every client
        # started against that stack (generator, bridge, tests) finds them there.
        home = env.get(ENV_PREFIX + "HOME") or from_file.get(ENV_PREFIX + "HOME") or ".sensorlake"
        files = [f for f in (env_file, Path(home) / "credentials.env") if f.is_file()]
        token = _ENVIRONMENT.set(env)
        try:
            return cls(_env_file=tuple(files) or None, **{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None
        finally:
            _ENVIRONMENT.reset(token)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        """Adds ``--flag`` options for the given fields; defaults stay None so the environment wins."""
        for name in names:
            f = cls.model_fields[name]
            secret = (f.json_schema_extra or {}).get("secret")
            where = f"env {cls.env_name(name)}" + ("" if secret else f", default {f.default!r}")
            parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                                type=f.annotation if f.annotation in (int, float) else str,
                                help=f"{f.description} [{where}]")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> "Settings":
        return cls.load(env, **{k: v for k, v in vars(args).items() if k in cls.model_fields})

    def with_args(self, args: argparse.Namespace) -> "Settings":
        """These settings with the flags that were given on a command line on top."""
        return self.replace(**{k: v for k, v in vars(args).items() if k in type(self).model_fields and v is not None})

    def replace(self, **changes: Any) -> "Settings":
        """A validated copy with some fields changed (nothing is re-read from the environment)."""
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    def as_env(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """The settings (all, or the named ones) as environment variables, for child processes."""
        return {self.env_name(n): str(getattr(self, n)) for n in (names or type(self).model_fields)}

    def redacted(self) -> dict[str, Any]:
        return {n: ("***" if (f.json_schema_extra or {}).get("secret") and getattr(self, n) else getattr(self, n))
                for n, f in type(self).model_fields.items()}


def _explain(exc: ValidationError) -> str:
    """One line per bad value, naming the environment variable (or flag) it came from."""
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        lines.append(f"{Settings.env_name(name)}={err.get('input')!r}: {err['msg']}")
    return "; ".join(lines)


# ====================================================================== what each role reads
_MQTT_CLIENT = ("mqtt_host", "mqtt_port", "mqtt_topic_prefix", "mqtt_tls_ca", "mqtt_qos")
_TOPICS = ("kafka_topic", "kafka_dlq_topic", "kafka_partitions", "kafka_retention_ms")
_FLINK_CLIENT = ("flink_host", "flink_rest_port")
_QUALITY = ("quality_ok_completeness", "quality_ok_validity", "quality_bad_completeness", "quality_bad_validity")

ROLE_SETTINGS: dict[str, tuple[str, ...]] = {
    "mosquitto": ("mqtt_port", "mqtt_topic_prefix", "mqtt_generator_user", "mqtt_generator_password",
                  "mqtt_bridge_user", "mqtt_bridge_password"),
    # kafka_bootstrap: in compose, the address the broker advertises to programs on the host
    "kafka": ("kafka_bootstrap", "kafka_partitions"),
    "kafka-init": ("kafka_bootstrap", *_TOPICS),
    "jobmanager": (*_FLINK_CLIENT, "flink_rpc_port", "flink_taskmanager_slots", "log_level"),
    "taskmanager": (*_FLINK_CLIENT, "flink_rpc_port", "flink_taskmanager_slots", "log_level"),
    "expansion": ("expansion_host", "expansion_port", "log_level"),
    "jobserver": (*_FLINK_CLIENT, "job_server_host", "job_server_port", "artifact_port", "log_level"),
    "bridge": (*_MQTT_CLIENT, "mqtt_bridge_user", "mqtt_bridge_password", "kafka_bootstrap", *_TOPICS,
               "bridge_id", "bridge_client_id", "bridge_max_inflight", "bridge_linger_ms",
               "bridge_max_payload_bytes", "bridge_metrics_port", "bridge_session_expiry_s", "log_level"),
    "generator": ("registry", *_MQTT_CLIENT, "mqtt_generator_user", "mqtt_generator_password", "generator_mode",
                  "log_level"),
    "pipeline": ("lake", "registry", "kafka_bootstrap", "kafka_topic", "mqtt_topic_prefix", *_FLINK_CLIENT,
                 "job_server_host",
                 "job_server_port", "artifact_port", "expansion_host", "expansion_port", "job_name",
                 "environment_type", "environment_config", "parallelism", "checkpoint_interval_ms",
                 "bundle_max_elements", "bundle_max_ms", "log_level", "out_of_orderness_ms", "allowed_lateness_ms",
                 "idle_timeout_ms", "heartbeat_interval_ms", "max_missing_windows", "window_shards", "state_shards",
                 "registry_refresh_s", *_QUALITY),
    "catalog": ("lake", "catalog_host", "catalog_port", "catalog_interval_s", "freshness_warn_s",
                "freshness_error_s", "data_owner", "data_contact", *_QUALITY, "log_level"),
}
"""Settings each role reads (docker-compose service name -> field names)."""

# Commands that are not roles.
STACK_SETTINGS = ("home", "cache", "lake", "mqtt_port", "kafka_bootstrap", "kafka_controller_port", "flink_rest_port",
                  "flink_rpc_port", "flink_taskmanager_slots", "job_server_port", "artifact_port", "expansion_port",
                  "log_level")
"""`sensorlake local ...`: where the stack lives and the ports it binds."""
LAKE_TOOL_SETTINGS = ("lake", "log_level")
"""`sensorlake sql` and `sensorlake compact`."""
