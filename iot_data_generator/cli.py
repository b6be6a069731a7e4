"""Command line of the IoT data generator: options, pacing and reliable MQTT publishing.

``configure_parser`` and ``run`` are shared by ``python -m iot_data_generator`` and
``sensorlake generate``. The readings themselves come from :mod:`iot_data_generator.generator`.

Time model: each sensor reports every ``interval_ms``. ``--rate`` sets the overall publish
rate; by default the intervals are scaled so that the rate holds *and* event time keeps pace with
the wall clock (a live feed). With ``--keep-intervals`` the registry intervals are kept and event
time runs ``rate / natural rate`` times faster than the wall clock (a fast backfill from
``--start-time``). Either way no reading is published before its event time: a backfill that
catches up with the present continues as a live feed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from iot_data_generator.generator import (
    DEFAULT_LATE_DELAY_S,
    FAULT_NAMES,
    FaultRates,
    GeneratorConfig,
    Ledger,
    Message,
    Meta,
    ReadingStream,
    registry_document,
    with_synthetic,
)
from sensorlake.logs import configure_logging, log_event
from sensorlake.registry import RegistryError, load_registry
from sensorlake.settings import ROLE_SETTINGS, Settings, SettingsError

log = logging.getLogger("iot_data_generator")

DEFAULT_CLIENT_ID = "sensorlake-generator"
CONNECT_TIMEOUT_S = 10.0
PACE_SLACK_S = 0.002  # publish while at most this far ahead of schedule, then sleep: batches


class GeneratorError(Exception):
    """A runtime failure worth one line on stderr (exit code 2), not a traceback."""


# =========================================================================== argument types
def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0) or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return v


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0.0 <= v <= 1.0):
        raise argparse.ArgumentTypeError(f"a rate must be within [0, 1], got {text!r}")
    return v


def _rate_spec(text: str) -> tuple[str | None, float]:
    """``0.1`` (every fault sensor) or ``ID=0.4`` (that sensor only)."""
    sid, eq, rate = text.rpartition("=")
    if not eq:
        return None, _probability(text)
    if not sid:
        raise argparse.ArgumentTypeError(f"expected RATE or SENSOR=RATE, got {text!r}")
    return sid, _probability(rate)


def _silent_spec(text: str) -> tuple[str, float, float]:
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected SENSOR:START_S:END_S, got {text!r}")
    sid, a, b = parts
    try:
        start, end = float(a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"START_S and END_S must be numbers, got {text!r}") from None
    if not (0 <= start < end):
        raise argparse.ArgumentTypeError(f"need 0 <= START_S < END_S, got {text!r}")
    return sid, start, end


def _late_delay(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    try:
        a = float(lo)
        b = float(hi) if sep else a
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN_S:MAX_S, got {text!r}") from None
    if not (0 <= a <= b):
        raise argparse.ArgumentTypeError(f"need 0 <= MIN_S <= MAX_S, got {text!r}")
    return a, b


def _start_time(text: str) -> datetime:
    if text.strip().lower() == "now":
        return datetime.now(timezone.utc)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time like 2026-11-28T17:00:00Z, got {text!r}"
        ) from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


# =========================================================================== parser
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds the generator's options (and the settings it reads) to ``parser``."""
    Settings.add_arguments(parser, ROLE_SETTINGS["generator"])

    g = parser.add_argument_group("what to generate")
    g.add_argument("--sensors", type=_non_negative_int, default=0, metavar="N",
                   help="Add N synthetic sensors (ids synthetic-0001...) shaped like the registry's. "
                        "The pipeline sees them as unregistered unless given --write-registry's file.")
    g.add_argument("--rate", type=_positive_float, default=None, metavar="R",
                   help="Messages per second over all sensors (default: the registry's natural rate, "
                        "the sum of 1000/interval_ms).")
    g.add_argument("--keep-intervals", action="store_true",
                   help="Keep the registry intervals when --rate differs from the natural rate, so "
                        "event time runs faster than the wall clock (fast backfills). Without it, "
                        "intervals are scaled and event time tracks the wall clock.")
    g.add_argument("--count", type=_positive_int, default=None, metavar="N",
                   help="Stop after N generated readings over all sensors (dropped ones included).")
    g.add_argument("--duration", type=_positive_float, default=None, metavar="SECONDS",
                   help="Stop after this many seconds of schedule (rate x duration readings). "
                        "With --count, whichever comes first. Neither: run until SIGINT/SIGTERM.")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="Random seed: the same seed and options give the same payloads "
                        "(timestamps aside unless --start-time is fixed). Default: random, "
                        "recorded in the report.")
    g.add_argument("--start-time", type=_start_time, default=None, metavar="ISO",
                   help="Event time of the first reading, e.g. 2026-11-21T00:00:00Z (no offset "
                        "means UTC). Default: now. A future time delays the first publish.")
    g.add_argument("--silent", type=_silent_spec, action="append", default=[],
                   metavar="SENSOR:START_S:END_S",
                   help="The sensor sends nothing for event-time offsets [START_S, END_S) seconds "
                        "from the start (repeatable).")

    f = parser.add_argument_group(
        "fault injection",
        "Each rate is a probability: RATE applies to every sensor (or only the --fault-sensor "
        "ones), SENSOR=RATE to that sensor, e.g. --drop-rate 0.01 --drop-rate 2=0.4. Repeatable.",
    )
    f.add_argument("--drop-rate", type=_rate_spec, action="append", default=[], metavar="[ID=]RATE",
                   help="Share of generated readings never published (their seq is skipped).")
    f.add_argument("--out-of-range-rate", type=_rate_spec, action="append", default=[],
                   metavar="[ID=]RATE",
                   help="Share of published readings with a value outside the sensor's range.")
    f.add_argument("--malformed-rate", type=_rate_spec, action="append", default=[],
                   metavar="[ID=]RATE",
                   help="Per generated reading, chance of an extra payload the contract rejects "
                        "(truncated JSON, not JSON, missing field, bad value or timestamp). It takes "
                        "no seq and is not counted as sent.")
    f.add_argument("--duplicate-rate", type=_rate_spec, action="append", default=[],
                   metavar="[ID=]RATE",
                   help="Share of published readings published twice (same bytes).")
    f.add_argument("--late-rate", type=_rate_spec, action="append", default=[], metavar="[ID=]RATE",
                   help="Share of published readings held back --late-delay seconds (event time) "
                        "and then published with their original timestamp.")
    f.add_argument("--late-delay", type=_late_delay, default=DEFAULT_LATE_DELAY_S, metavar="MIN_S:MAX_S",
                   help="Delay of late readings, uniform in [MIN_S, MAX_S] (default 30:90).")
    f.add_argument("--fault-sensor", action="append", default=[], metavar="ID",
                   help="Apply the plain RATE values only to this sensor (repeatable); "
                        "SENSOR=RATE values apply regardless.")

    o = parser.add_argument_group("output")
    o.add_argument("--report", default=None, metavar="FILE",
                   help="Write the JSON report (per-sensor counts and seqs sent) here; '-' for stdout.")
    o.add_argument("--write-registry", default=None, metavar="FILE",
                   help="Write the effective registry (with synthetic sensors) as sensors.json here.")
    o.add_argument("--dry-run", action="store_true",
                   help="Print '<topic> <payload>' lines to stdout instead of publishing; no broker, "
                        "no pacing.")

    m = parser.add_argument_group("MQTT client")
    m.add_argument("--client-id", default=DEFAULT_CLIENT_ID,
                   help=f"MQTT client id (default {DEFAULT_CLIENT_ID}); two clients with one id "
                        "disconnect each other.")
    m.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default="5",
                   help="MQTT protocol version (default 5: PUBACK reason codes reveal ACL denials).")
    m.add_argument("--max-inflight", type=_positive_int, default=1000, metavar="N",
                   help="Most unacknowledged QoS 1 messages at any time; publishing waits for "
                        "PUBACKs beyond it (default 1000).")
    m.add_argument("--ack-timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="Give up when the broker acknowledges nothing for this long (default 30).")
    parser.set_defaults(generator_parser=parser)


# =========================================================================== logging
def _log(level: int, msg: str, **kv: Any) -> None:
    if log.isEnabledFor(level):
        log_event(log, level, msg, **kv)


def _configure_logging(level_name: str) -> None:
    if not isinstance(logging.getLevelName(level_name.upper()), int):
        raise GeneratorError(f"unknown log level {level_name!r} (use DEBUG, INFO, WARNING, ERROR)")
    configure_logging(level_name)


# =========================================================================== publishing
class _Stop:
    """Signal state: the first SIGINT/SIGTERM winds down gracefully, the second aborts."""

    def __init__(self, stream: ReadingStream) -> None:
        self.stream = stream
        self.requested = False
        self.abort = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.abort = True
        self.requested = True
        self.stream.stop()


class MqttPublisher:
    """QoS 1 publishing with a bounded window of unacknowledged messages.

    Each message is counted in the ledger only when its PUBACK arrives, so the report says what
    the broker has, not what was handed to the socket.
    """

    def __init__(self, settings: Settings, ledger: Ledger, client_id: str, protocol: str,
                 max_inflight: int, ack_timeout: float) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._mqtt = mqtt
        self.settings = settings
        self.ledger = ledger
        self.qos = settings.mqtt_qos
        self.ack_timeout = ack_timeout
        # The in-flight window is ours, not paho's: paho's own limit rescans its whole queue on
        # every PUBACK and halves the throughput (about 6k instead of 14k msg/s measured here).
        # paho mids are 16 bit, so the window stays well below 65535.
        self.window = min(max_inflight, 50_000)
        self._waiting = False
        self._cond = threading.Condition()
        self._pending: dict[int, Meta] = {}
        self._early: dict[int, Any] = {}  # PUBACKs that beat us to recording the mid
        self._last_progress = time.monotonic()
        self._connected = threading.Event()
        self._connect_rc: Any = None
        self.disconnects = 0
        self._closing = False
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        )
        if settings.mqtt_generator_user:
            self.client.username_pw_set(settings.mqtt_generator_user,
                                        settings.mqtt_generator_password or None)
        if settings.mqtt_tls_ca:
            try:
                self.client.tls_set(ca_certs=settings.mqtt_tls_ca)
            except (OSError, ValueError) as exc:
                raise GeneratorError(f"cannot use TLS CA file {settings.mqtt_tls_ca}: {exc}") from None
        self.client.max_inflight_messages_set(0)  # unlimited in paho; bounded by self.window
        self.client.max_queued_messages_set(2 * self.window)  # a safety net, never reached
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # -- callbacks (paho network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connect_rc = reason_code
        first = not self._connected.is_set()
        self._connected.set()
        if reason_code.is_failure:
            # The first refusal becomes connect()'s one error line; later ones are reconnects.
            _log(logging.DEBUG if first else logging.ERROR, "connection refused", reason=str(reason_code))
        else:
            _log(logging.INFO, "connected", host=self.settings.mqtt_host, port=self.settings.mqtt_port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._closing or self._connect_rc is None or self._connect_rc.is_failure:
            return  # closing, or never connected: connect() reports that
        self.disconnects += 1
        _log(logging.WARNING, "disconnected, reconnecting", reason=str(reason_code))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._last_progress = time.monotonic()
            meta = self._pending.pop(mid, None)
            if meta is None:
                self._early[mid] = reason_code
                return
            self._settle(meta, reason_code)
            if self._waiting:
                self._cond.notify_all()

    def _settle(self, meta: Meta, reason_code: Any) -> None:
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            self.ledger.refused(meta)
            _log(logging.WARNING, "publish refused", sensor_id=meta.sensor_id, seq=meta.seq,
                 reason=str(reason_code))
        else:
            self.ledger.ack(meta)

    # -- main thread
    def connect(self) -> None:
        s = self.settings
        where = f"{s.mqtt_host}:{s.mqtt_port}"
        try:
            self.client.connect(s.mqtt_host, s.mqtt_port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise GeneratorError(f"cannot connect to MQTT broker {where}: {exc}") from None
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            self.close()
            raise GeneratorError(f"MQTT broker {where} did not answer CONNECT within {CONNECT_TIMEOUT_S:g} s")
        rc = self._connect_rc
        if rc.is_failure:
            self.close()
            user = s.mqtt_generator_user or "(anonymous)"
            raise GeneratorError(f"MQTT broker {where} refused the connection: {rc} (user {user})")

    def publish(self, msg: Message, stop: _Stop) -> None:
        with self._cond:
            while len(self._pending) >= self.window:
                if stop.abort:
                    raise _Aborted()
                self._waiting = True
                self._cond.wait(0.2)
                self._waiting = False
                if len(self._pending) >= self.window and time.monotonic() - self._last_progress > self.ack_timeout:
                    self.ledger.unsent(msg.meta)
                    raise GeneratorError(f"broker acknowledged nothing for {self.ack_timeout:g} s")
            if not self._pending:
                self._last_progress = time.monotonic()
        info = self.client.publish(msg.topic, msg.payload, qos=self.qos)
        while info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE and not stop.abort:
            time.sleep(0.001)  # paho drops acknowledged messages just after our callback ran
            info = self.client.publish(msg.topic, msg.payload, qos=self.qos)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            # Not queued by paho (NO_CONN ones are queued and sent after the reconnect).
            with self._cond:
                self._early.pop(info.mid, None)
                self.ledger.unacked(msg.meta)
            _log(logging.WARNING, "publish failed", rc=self._mqtt.error_string(info.rc))
            return
        with self._cond:
            if info.mid in self._early:
                self._settle(msg.meta, self._early.pop(info.mid))
            else:
                self._pending[info.mid] = msg.meta

    def wait_all(self, stop: _Stop, timeout: float | None = None) -> int:
        """Waits until every message is acknowledged, the broker stalls, or a second signal."""
        timeout = self.ack_timeout if timeout is None else timeout
        with self._cond:
            self._last_progress = time.monotonic()
            while self._pending and not stop.abort:
                self._waiting = True
                self._cond.wait(0.2)
                self._waiting = False
                if time.monotonic() - self._last_progress > timeout:
                    break
            left = list(self._pending.values())
            self._pending.clear()
            for meta in left:
                self.ledger.unacked(meta)
            return len(left)

    def close(self) -> None:
        self._closing = True
        try:
            self.client.disconnect()
        except Exception:  # closing is best effort; the report matters more
            pass
        self.client.loop_stop()


class _Aborted(Exception):
    pass


def _paced(stream: ReadingStream, speed: float, stop: _Stop, pace: bool):
    """Yields messages no earlier than their schedule (and never before their event time).

    Sleeps only once ahead by PACE_SLACK_S, so at high rates messages go out in bursts of a few
    milliseconds' worth instead of one sleep per message.
    """
    t0 = time.monotonic()
    mono_minus_epoch = t0 - time.time()
    behind_warned = False
    for msg in stream:
        if pace:
            meta = msg.meta
            target = t0 + meta.offset_us / 1e6 / speed
            event_at = meta.event_us / 1e6 + mono_minus_epoch
            if event_at > target:
                target = event_at
            now = time.monotonic()
            # Once the stream is draining (end or signal), held-back late readings go out at once.
            while target - now > PACE_SLACK_S and not stream.draining and not stop.requested:
                time.sleep(min(target - now, 0.25))
                now = time.monotonic()
            if not behind_warned and now - target > 5.0:
                behind_warned = True
                _log(logging.WARNING, "falling behind the requested rate", behind_s=round(now - target, 1))
        yield msg
        if stop.abort:
            return


# =========================================================================== run
def run(args: argparse.Namespace) -> int:
    """Runs the generator; returns the exit code (0 ok, 1 delivery not confirmed, 2 usage/connection)."""
    parser: argparse.ArgumentParser | None = getattr(args, "generator_parser", None)

    def usage_error(message: str) -> int:
        if parser is not None:
            parser.error(message)  # exits 2 with the usage line
        print(f"error: {message}", file=sys.stderr)
        return 2

    try:
        settings = Settings.from_args(args)
        _configure_logging(settings.log_level)
        registry = load_registry(settings.registry)
        sensors = with_synthetic(registry, args.sensors)
    except (SettingsError, RegistryError, GeneratorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sensors:
        print(f"error: registry {settings.registry} has no sensors", file=sys.stderr)
        return 2
    if settings.mqtt_qos not in (0, 1, 2):
        return usage_error(f"MQTT QoS must be 0, 1 or 2, got {settings.mqtt_qos}")

    unknown = _unknown_sensors(args, sensors)
    if unknown:
        return usage_error(unknown)

    faults = _fault_rates(args, sensors)
    silent: dict[str, list[tuple[float, float]]] = {}
    for sid, a, b in args.silent:
        silent.setdefault(sid, []).append((a, b))

    natural = sum(1000.0 / s.interval_ms for s in sensors.values())
    rate = args.rate or natural
    interval_scale = 1.0 if args.keep_intervals else natural / rate
    speed = rate * interval_scale / natural  # stream seconds per wall second
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    start = args.start_time or datetime.now(timezone.utc)
    config = GeneratorConfig(
        sensors=sensors,
        start=start,
        seed=seed,
        topic_prefix=settings.mqtt_topic_prefix,
        count=args.count,
        horizon_s=None if args.duration is None else args.duration * speed,
        interval_scale=interval_scale,
        faults=faults,
        silent=silent,
        late_delay_s=tuple(args.late_delay),
    )
    options = _options_used(args, settings, seed, start, rate, natural, interval_scale, speed, len(registry))

    if args.write_registry:
        try:
            Path(args.write_registry).write_text(json.dumps(registry_document(sensors), indent=2) + "\n")
        except OSError as exc:
            print(f"error: cannot write {args.write_registry}: {exc.strerror}", file=sys.stderr)
            return 2

    stream = ReadingStream(config)
    ledger = Ledger(sensors)
    stop = _Stop(stream)
    started_at = datetime.now(timezone.utc)
    t0 = time.monotonic()
    stopped_by = "end"
    publisher: MqttPublisher | None = None
    code = 0
    previous = _install_signals(stop)
    try:
        if args.dry_run:
            out = sys.stdout
            try:
                for msg in _paced(stream, speed, stop, pace=False):
                    out.write(f"{msg.topic} {msg.payload.decode('utf-8', 'backslashreplace')}\n")
                    ledger.ack(msg.meta)
                out.flush()
            except BrokenPipeError:  # e.g. piped into head: a normal way to stop
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no noise at exit
                stopped_by = "broken_pipe"
        else:
            publisher = MqttPublisher(settings, ledger, args.client_id, args.mqtt_protocol,
                                      args.max_inflight, args.ack_timeout)
            publisher.connect()
            _log(logging.INFO, "publishing", sensors=len(sensors), rate=round(rate, 3), seed=seed,
                 start=start.isoformat())
            msg = None
            try:
                for msg in _paced(stream, speed, stop, pace=True):
                    publisher.publish(msg, stop)
            except _Aborted:
                ledger.unsent(msg.meta)  # taken from the stream, never handed to paho
            except GeneratorError as exc:  # the broker stalled: no point waiting long again
                print(f"error: {exc}", file=sys.stderr)
                stopped_by, code = "error", 1
            left = publisher.wait_all(stop, timeout=1.0 if stopped_by == "error" else None)
            if left:
                print(f"error: {left} message(s) not acknowledged by the broker", file=sys.stderr)
                code = 1
            if ledger.refused_messages:
                print(f"error: the broker refused {ledger.refused_messages} message(s)", file=sys.stderr)
                code = 1
    except GeneratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if publisher is not None:
            publisher.close()
        _restore_signals(previous)

    if stop.requested and stopped_by == "end":
        stopped_by = "abort" if stop.abort else "signal"
    elapsed = time.monotonic() - t0
    report = ledger.report(
        stream,
        options,
        started_at=started_at.isoformat().replace("+00:00", "Z"),
        finished_at=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        elapsed_s=round(elapsed, 3),
        stopped_by=stopped_by,
        exit_code=code,
    )
    t = report["totals"]
    summary = (
        f"generator: sensors={len(sensors)} generated={t['generated']} sent={t['sent']} "
        f"dropped={t['dropped']} duplicates={t['duplicates']} malformed={t['malformed']} "
        f"late={t['late']} out_of_range={t['out_of_range']} unacked={t['unacked']} "
        f"refused={t['refused']} unsent={t['unsent']} elapsed={elapsed:.2f}s "
        f"rate={(t['sent'] + t['duplicates'] + t['malformed']) / elapsed if elapsed > 0 else 0:.1f}/s "
        f"stopped_by={stopped_by}"
    )
    print(summary, file=sys.stderr if args.dry_run or args.report == "-" else sys.stdout)
    if args.report:
        text = _report_json(report)
        if args.report == "-":
            sys.stdout.write(text)
        else:
            try:
                Path(args.report).write_text(text)
            except OSError as exc:
                print(f"error: cannot write report {args.report}: {exc.strerror}", file=sys.stderr)
                return 2
    return code


def _report_json(report: dict) -> str:
    """Indented JSON, but each [first, last] seq range on one line: reports stay readable."""
    text = json.dumps(report, indent=2)
    return _PAIR.sub(r"[\1, \2]", text) + "\n"


_PAIR = re.compile(r"\[\s+(-?\d+(?:\.\d+)?),\s+(-?\d+(?:\.\d+)?)\s+\]")


def _unknown_sensors(args: argparse.Namespace, sensors: dict) -> str | None:
    checks = [("--silent", [sid for sid, _, _ in args.silent]), ("--fault-sensor", args.fault_sensor)]
    for name in FAULT_NAMES:
        flag = "--" + name.replace("_", "-") + "-rate"
        checks.append((flag, [sid for sid, _ in getattr(args, name + "_rate") if sid is not None]))
    for flag, ids in checks:
        for sid in ids:
            if sid not in sensors:
                known = ", ".join(list(sensors)[:10]) + (", ..." if len(sensors) > 10 else "")
                return f"argument {flag}: unknown sensor {sid!r} (known: {known})"
    return None


def _fault_rates(args: argparse.Namespace, sensors: dict) -> dict[str, FaultRates]:
    """Per sensor: its SENSOR=RATE value, else the plain RATE if it is a fault sensor, else 0."""
    targets = set(args.fault_sensor) if args.fault_sensor else set(sensors)
    out: dict[str, FaultRates] = {}
    for sid in sensors:
        values = {}
        for name in FAULT_NAMES:
            plain, specific = 0.0, None
            for spec_sid, rate in getattr(args, name + "_rate"):
                if spec_sid is None:
                    plain = rate
                elif spec_sid == sid:
                    specific = rate
            values[name] = specific if specific is not None else (plain if sid in targets else 0.0)
        rates = FaultRates(**values)
        if rates.any:
            out[sid] = rates
    return out


def _options_used(args, settings, seed, start, rate, natural, interval_scale, speed, n_registry) -> dict:
    return {
        "registry": settings.registry,
        "registry_sensors": n_registry,
        "synthetic_sensors": args.sensors,
        "seed": seed,
        "start_time": start.isoformat().replace("+00:00", "Z"),
        "rate": rate,
        "natural_rate": natural,
        "keep_intervals": args.keep_intervals,
        "interval_scale": interval_scale,
        "event_seconds_per_wall_second": speed,
        "count": args.count,
        "duration": args.duration,
        "silent": [list(s) for s in args.silent],
        "faults": {
            name: [r if sid is None else f"{sid}={r}" for sid, r in getattr(args, name + "_rate")]
            for name in FAULT_NAMES
        },
        "fault_sensors": list(args.fault_sensor),
        "late_delay_s": list(args.late_delay),
        "dry_run": args.dry_run,
        "mqtt_host": settings.mqtt_host,
        "mqtt_port": settings.mqtt_port,
        "mqtt_topic_prefix": settings.mqtt_topic_prefix,
        "mqtt_qos": settings.mqtt_qos,
        "mqtt_user": settings.mqtt_generator_user,
        "mqtt_tls": bool(settings.mqtt_tls_ca),
        "mqtt_protocol": args.mqtt_protocol,
        "client_id": args.client_id,
        "max_inflight": args.max_inflight,
    }


def _install_signals(stop: _Stop) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop)
    return previous


def _restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    previous.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iot_data_generator",
        description="Publish realistic sensor readings (with optional faults) to MQTT and report "
                    "what was sent, for loss and quality accounting.",
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))
