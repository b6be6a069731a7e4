"""Command line of the bridge: ``python -m connectors.mqtt_kafka`` and ``sensorlake bridge``.

Exit codes: 0 after SIGTERM/SIGINT (flushed, confirmed messages acked), 2 for a configuration
error retrying cannot fix (e.g. wrong MQTT credentials; one line on stderr, no traceback),
1 for an unexpected failure.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from sensorlake.logs import configure_logging
from sensorlake.settings import ROLE_SETTINGS, Settings, SettingsError

PROG = "sensorlake bridge"
log = logging.getLogger("connectors.mqtt_kafka")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    Settings.add_arguments(parser, ROLE_SETTINGS["bridge"])


def validate(settings: Settings) -> None:
    if settings.bridge_max_inflight < 1:
        raise SettingsError("SENSORLAKE_BRIDGE_MAX_INFLIGHT must be at least 1")
    if settings.bridge_max_payload_bytes < 1:
        raise SettingsError("SENSORLAKE_BRIDGE_MAX_PAYLOAD_BYTES must be at least 1")
    if settings.mqtt_qos not in (0, 1, 2):
        raise SettingsError("SENSORLAKE_MQTT_QOS must be 0, 1 or 2")
    if not settings.mqtt_topic_prefix.strip("/"):
        raise SettingsError("SENSORLAKE_MQTT_TOPIC_PREFIX must not be empty")
    if not settings.kafka_topic or not settings.kafka_dlq_topic:
        raise SettingsError("SENSORLAKE_KAFKA_TOPIC and SENSORLAKE_KAFKA_DLQ_TOPIC must be set")


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2


def run(args: argparse.Namespace) -> int:
    """Runs the bridge in the foreground until SIGTERM/SIGINT; returns the exit code."""
    from connectors.mqtt_kafka.bridge import Bridge

    try:
        settings = Settings.from_args(args)
        validate(settings)
    except SettingsError as exc:
        return _error(str(exc))
    configure_logging(settings.log_level)
    if settings.log_level.upper() != "DEBUG":
        # kafka-python (topic admin) and librdkafka ("kafka.librdkafka") log every failed reconnect;
        # the bridge reports outages itself.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    bridge = Bridge(settings)
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, lambda *_: bridge.request_stop())
        except ValueError:  # not the main thread (embedded use): the caller stops it
            pass
    try:
        code = bridge.run()
    except (OSError, ValueError) as exc:  # e.g. unreadable TLS CA file
        return _error(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001
        log.critical("bridge crashed", exc_info=True, extra={"fields": {"error": repr(exc)}})
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if bridge.fatal:
        return _error(bridge.fatal)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors.mqtt_kafka",
                                     description="Forward MQTT readings to Kafka without losing any.")
    configure_parser(parser)
    return run(parser.parse_args(argv))
