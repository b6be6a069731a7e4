"""Entry point of the Sensorlake image: one image, every role of docker-compose.yml.

``python -m sensorlake.runtime ROLE`` configures a runtime from the SENSORLAKE_* settings and
becomes it (exec), with the same builders the local stack uses (sensorlake/services.py):

    mosquitto    docker/mosquitto/start-mosquitto.sh (the local stack's script) with Debian's broker
    kafka        server.properties from services.kafka_properties, storage formatted once, the broker
    kafka-init   creates the readings and DLQ topics when missing (the bridge's ensure_topics), exits
    jobmanager, taskmanager, expansion, jobserver   services.main(["exec", ROLE])

Anything else is a ``sensorlake`` command (``bridge``, ``generate``, ``pipeline run`` ...), so
``docker compose run generator generate --help`` works as on the host.

Where things are inside the image: the install cache (``SENSORLAKE_CACHE``, filled at build time by
``python -m sensorlake.local.install``) holds Flink, Kafka and the Beam services.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sensorlake import services
from sensorlake.settings import Settings

RUNTIMES = ("mosquitto", "kafka", "kafka-init", "jobmanager", "taskmanager", "expansion", "jobserver")

# Paths inside the image (docker/sensorlake.Dockerfile) and the compose volumes mounted on them.
MOSQUITTO_CONF = Path("/tmp/mosquitto")
MOSQUITTO_DATA = Path("/var/lib/sensorlake/mosquitto")
KAFKA_CONF = Path("/tmp/kafka")
KAFKA_DATA = Path("/var/lib/kafka/data")
# The command of the job's Beam PROCESS environment in the image (docker/beam-worker.sh).
BEAM_WORKER = "/opt/sensorlake/bin/beam-worker"

KAFKA_LOG4J = (
    "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
    "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n"
    "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n")


# ====================================================================== Kafka (shared with the local stack)
def kafka_prepare(settings: Settings, conf_dir: Path, data_dir: Path, kafka_lib: Path, compose: bool) -> Path:
    """Writes server.properties and log4j2.properties into conf_dir; formats data_dir once (KRaft)."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    props = conf_dir / "server.properties"
    props.write_text("".join(f"{k}={v}\n" for k, v in
                             services.kafka_properties(settings, compose=compose, log_dir=str(data_dir)).items()))
    (conf_dir / "log4j2.properties").write_text(KAFKA_LOG4J)
    if not (data_dir / "meta.properties").exists():
        cp = f"{kafka_lib}/*"
        cluster_id = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                                    capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                        "-c", str(props)], check=True, capture_output=True)
    return props


def kafka_command(conf_dir: Path, kafka_lib: Path) -> list[str]:
    return ["java", *services.KAFKA_HEAP, f"-Dlog4j2.configurationFile={conf_dir / 'log4j2.properties'}",
            "-cp", f"{kafka_lib}/*", "kafka.Kafka", str(conf_dir / "server.properties")]


# ====================================================================== the roles
def _paths():
    from sensorlake.local.install import Paths

    return Paths(Path(Settings.load().cache).expanduser())


def _exec(argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


def create_topics(settings: Settings, wait_s: float = 120.0) -> list[str]:
    """kafka-init: the topics the bridge would create, once Kafka answers."""
    from connectors.mqtt_kafka.kafka_io import ensure_topics

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ensure_topics(settings)
        except Exception as exc:  # noqa: BLE001 - kafka-python raises many kinds while the broker starts
            if time.monotonic() > deadline:
                raise
            print(f"kafka-init: waiting for Kafka ({type(exc).__name__}: {exc})", flush=True)
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in RUNTIMES:
        _exec(["sensorlake", *argv])
    role = argv[0]
    settings = Settings.load()
    if role == "mosquitto":
        _exec(["sh", str(services.MOSQUITTO_SCRIPT), str(MOSQUITTO_CONF), str(MOSQUITTO_DATA), "0.0.0.0",
               "/usr/sbin/mosquitto"])
    if role == "kafka":
        lib = _paths().kafka_lib
        kafka_prepare(settings, KAFKA_CONF, KAFKA_DATA, lib, compose=True)
        _exec(kafka_command(KAFKA_CONF, lib))
    if role == "kafka-init":
        created = create_topics(settings)
        print(f"kafka-init: topics {settings.kafka_topic}, {settings.kafka_dlq_topic} exist"
              + (f" (created {', '.join(created)})" if created else ""), flush=True)
        return 0
    return services.main(["exec", role])


if __name__ == "__main__":
    sys.exit(main())
