"""Bridge throughput against its ceiling: a bare paho QoS 1 subscriber on the same broker and load.

Not part of pass/fail; it prints figures and writes them (with machine and version info) to
``bench/results/bridge-<time>.json``. It starts its own Mosquitto and Kafka (ports +55000, a
temporary home, stopped by pid at the end and on Ctrl-C); ``--use-running`` measures against the
Mosquitto and Kafka the settings point at instead (e.g. after ``make up``).

Two loads, both from separate publisher processes (a publisher inside the measured process
would starve it through the GIL):
- ``live``: publishers run while the subscriber/bridge consumes (what production looks like;
  on a 2-core machine publishers, broker, Kafka and bridge all share the CPUs);
- ``backlog``: the same readings are queued first in the subscriber's persistent session, then
  it is started and drains them (the consumer's own capacity, e.g. catching up after an outage).

    python bench/bridge.py --messages 100000 --publishers 2 --mode both
    python bench/bridge.py --publisher mosquitto_pub --mode live --messages 300000   # C publishers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensorlake.settings import KAFKA_VERSION, Settings  # noqa: E402

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_settings(args: argparse.Namespace) -> Settings:
    s = Settings.from_args(args)
    creds = Path(s.home) / "credentials.env"  # the local stack's generated passwords
    if creds.is_file() and not (s.mqtt_bridge_password and s.mqtt_generator_password):
        from sensorlake.settings import read_env_file

        env = read_env_file(creds)
        s = s.replace(mqtt_bridge_password=s.mqtt_bridge_password or env.get("SENSORLAKE_MQTT_BRIDGE_PASSWORD", ""),
                    mqtt_generator_password=s.mqtt_generator_password
                    or env.get("SENSORLAKE_MQTT_GENERATOR_PASSWORD", ""))
    return s


# ---------------------------------------------------------------------- the bare subscriber (ceiling)
def subscriber_main(argv: list[str]) -> int:
    """Counts QoS 1 messages (paho acks them itself); prints first/last receive times as JSON."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    p = argparse.ArgumentParser()
    p.add_argument("--client-id", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--expect", type=int, default=0, help="0: subscribe, then exit (creates the session)")
    p.add_argument("--idle-timeout", type=float, default=60)
    a = p.parse_args(argv)
    s = Settings.load()
    state = {"n": 0, "first": 0.0, "last": 0.0, "subscribed": False, "cpu0": 0.0}

    def on_message(c, u, m):  # noqa: ANN001
        now = time.time()
        if not state["n"]:
            state["first"] = now
            state["cpu0"] = time.process_time()
        state["n"] += 1
        state["last"] = now

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(s.mqtt_bridge_user, s.mqtt_bridge_password or None)
    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, pr: cl.subscribe(a.topic, qos=1)
    c.on_subscribe = lambda cl, u, mid, rcs, pr: state.update(subscribed=True)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    c.connect(s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=props)
    c.loop_start()
    deadline = time.time() + 30
    while not state["subscribed"] and time.time() < deadline:
        time.sleep(0.01)
    print(json.dumps({"ready": True}), flush=True)
    while a.expect and state["n"] < a.expect:
        ref = state["last"] or deadline
        if time.time() - ref > a.idle_timeout:
            break
        time.sleep(0.05)
    cpu = time.process_time() - state["cpu0"]
    time.sleep(0.2)  # let the last PUBACKs out
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"count": state["n"], "first": state["first"], "last": state["last"], "cpu_s": cpu}), flush=True)
    return 0


# ---------------------------------------------------------------------- helpers
class Run:
    def __init__(self, s: Settings, messages: int, publishers: int, sensors: int, publisher: str = "loadgen",
                 rate: float = 0, roles: dict[str, int] | None = None) -> None:
        self.s = s
        self.roles = roles or {}  # broker and Kafka pids, when this benchmark started them
        self.publisher = publisher
        self.rate = rate
        self.messages = messages
        self.publishers = publishers
        self.sensors = sensors
        self.env = {**os.environ, **s.as_env(), "PYTHONPATH": str(REPO)}

    def publish(self, prefix: str) -> dict:
        """Runs the publishers to the end; their CPU is what this process reaped from its children
        meanwhile (nothing else is reaped while they run)."""
        import resource

        def children_cpu() -> float:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime

        cpu0 = children_cpu()
        out = self.publish_c(prefix) if self.publisher == "mosquitto_pub" else self.publish_py(prefix)
        out["cpu_s"] = children_cpu() - cpu0
        return out

    def publish_py(self, prefix: str) -> dict:
        per_pub = self.messages // self.publishers
        count = max(1, per_pub // self.sensors)
        procs = [subprocess.Popen(
            [PY, "-m", "connectors.mqtt_kafka.loadgen", "--prefix", prefix, "--sensors", str(self.sensors),
             "--sensor-base", f"p{i}s", "--count", str(count), "--client-id", f"bench-pub-{uuid.uuid4().hex[:6]}",
             "--rate", str(self.rate / self.publishers)],
            env=self.env, stdout=subprocess.PIPE, text=True) for i in range(self.publishers)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        return {"published": sum(o["published"] for o in outs), "acked": sum(o["acked"] for o in outs),
                "publish_seconds": max(o["publish_seconds"] for o in outs)}

    def publish_c(self, prefix: str) -> dict:
        """Mosquitto's own C client, one process per sensor topic (``-l``: a message per line of a
        file written beforehand), so the publishers cost a fraction of the Python ones and the
        load can reach the rates the bridge is meant for on the same two cores."""
        import tempfile

        from connectors.mqtt_kafka.loadgen import reading

        count = max(1, self.messages // self.publishers // self.sensors)
        auth = ["-u", self.s.mqtt_generator_user] if self.s.mqtt_generator_user else []
        if self.s.mqtt_generator_user and self.s.mqtt_generator_password:
            auth += ["-P", self.s.mqtt_generator_password]
        files, procs = [], []
        with tempfile.TemporaryDirectory(prefix="bench-pub-") as tmp:
            now = time.time()
            for i in range(self.publishers):
                for j in range(self.sensors):
                    sid = f"p{i}s{j}"
                    path = Path(tmp) / f"{sid}.lines"
                    path.write_bytes(b"".join(reading(sid, seq, now + seq * 0.001, seq % 4) + b"\n"
                                              for seq in range(count)))
                    files.append((sid, path))
            start = time.time()
            for sid, path in files:
                with open(path, "rb") as fh:
                    procs.append(subprocess.Popen(
                        ["mosquitto_pub", "-h", self.s.mqtt_host, "-p", str(self.s.mqtt_port), *auth, "-q", "1",
                         "-M", "1000", "-l", "-t", f"{prefix}/{sid}", "-i", f"bench-pub-{uuid.uuid4().hex[:6]}"],
                        stdin=subprocess.PIPE if self.rate else fh, stderr=subprocess.PIPE))
            if self.rate:
                pace_lines([(path.read_bytes().splitlines(keepends=True), p.stdin) for (_, path), p in zip(files, procs)],
                           self.rate / len(procs), start)
                for proc in procs:
                    proc.stdin = None  # closed by pace_lines: communicate() must not flush it
            failed = []
            for (sid, _), proc in zip(files, procs):
                err = proc.communicate()[1].decode(errors="replace")
                if proc.returncode:
                    failed.append(f"{sid}: rc={proc.returncode} {err.strip()[:200]}")
            secs = time.time() - start
        if failed:
            print(f"publisher failures: {failed}", file=sys.stderr, flush=True)
        n = count * len(files)
        return {"published": n, "acked": n - count * len(failed), "publish_seconds": secs, "client": "mosquitto_pub"}

    def roles_cpu(self) -> dict[str, float]:
        return {name: process_cpu(pid) for name, pid in self.roles.items()}

    def roles_us_per_msg(self, before: dict[str, float], n: float, pub: dict | None) -> dict[str, float]:
        """CPU per message of the broker, Kafka and the publishers over one run (who else shares the cores)."""
        after = self.roles_cpu()
        out = {name: 1e6 * (after[name] - before[name]) / max(1, n) for name in before}
        if pub and "cpu_s" in pub:
            out["publishers"] = 1e6 * pub["cpu_s"] / max(1, n)
        return out

    def total(self) -> int:
        per_pub = self.messages // self.publishers
        return max(1, per_pub // self.sensors) * self.sensors * self.publishers

    # bare subscriber ------------------------------------------------------------
    def subscriber(self, client_id: str, topic: str, expect: int) -> subprocess.Popen:
        p = subprocess.Popen([PY, __file__, "--_subscriber", "--client-id", client_id, "--topic", topic,
                              "--expect", str(expect)], env=self.env, stdout=subprocess.PIPE, text=True)
        json.loads(p.stdout.readline())  # ready
        return p

    def ceiling(self, mode: str) -> dict:
        prefix = f"{self.s.mqtt_topic_prefix}/bench-{uuid.uuid4().hex[:8]}"
        cid = f"bench-sub-{uuid.uuid4().hex[:8]}"
        n = self.total()
        if mode == "backlog":
            self.subscriber(cid, prefix + "/#", 0).wait()
            pub = self.publish(prefix)
            roles0 = self.roles_cpu()
            sub = self.subscriber(cid, prefix + "/#", n)
        else:
            sub = self.subscriber(cid, prefix + "/#", n)
            roles0 = self.roles_cpu()
            pub = self.publish(prefix)
        res = json.loads(sub.communicate()[0].strip().splitlines()[-1])
        others = self.roles_us_per_msg(roles0, res["count"], pub if mode == "live" else None)
        secs = max(1e-9, res["last"] - res["first"])
        return {"received": res["count"], "seconds": secs, "msgs_per_s": res["count"] / secs, "publishers": pub,
                "cpu_us_per_msg": 1e6 * res["cpu_s"] / max(1, res["count"]), "others_cpu_us_per_msg": others}

    # bridge ---------------------------------------------------------------------
    def bridge(self, mode: str) -> dict:
        tag = uuid.uuid4().hex[:8]
        prefix = f"{self.s.mqtt_topic_prefix}/bench-{tag}"
        port = free_port()
        env = {**self.env, "SENSORLAKE_MQTT_TOPIC_PREFIX": prefix, "SENSORLAKE_KAFKA_TOPIC": f"bench.raw.{tag}",
               "SENSORLAKE_KAFKA_DLQ_TOPIC": f"bench.dlq.{tag}", "SENSORLAKE_BRIDGE_CLIENT_ID": f"bench-bridge-{tag}",
               "SENSORLAKE_BRIDGE_ID": f"bench-{tag}", "SENSORLAKE_BRIDGE_METRICS_PORT": str(port),
               "SENSORLAKE_LOG_LEVEL": "WARNING"}
        n = self.total()

        def start() -> subprocess.Popen:
            p = subprocess.Popen([PY, "-m", "connectors.mqtt_kafka"], env=env, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 90
            while time.time() < deadline:
                m = metrics(port)
                if m.get("sensorlake_bridge_mqtt_connected") == 1:
                    return p
                if p.poll() is not None:
                    raise RuntimeError(f"bridge exited: {p.stderr.read()}")
                time.sleep(0.1)
            raise RuntimeError("bridge not ready")

        def stop(p: subprocess.Popen) -> None:
            p.send_signal(signal.SIGTERM)
            p.wait(30)

        if mode == "backlog":
            stop(start())  # creates topics and the persistent session
            pub = self.publish(prefix)
            proc = start()
        else:
            proc = start()
            pub = None
        cpu0 = process_cpu(proc.pid)  # connected: start-up (imports, Kafka metadata) is not counted
        roles0 = self.roles_cpu()
        samples: list[tuple[float, float]] = []
        if mode == "live":  # publishers start now; this thread samples the bridge's counter
            import threading

            box: dict = {}
            t = threading.Thread(target=lambda: box.update(pub=self.publish(prefix), done_at=time.time()))
            t.start()
        deadline = time.time() + 600
        last_change = time.time()
        prev = -1.0
        while time.time() < deadline:
            fwd = metrics(port).get("sensorlake_bridge_messages_forwarded_total", 0)
            now = time.time()
            samples.append((now, fwd))
            if fwd != prev:
                prev, last_change = fwd, now
            if fwd >= n or now - last_change > 60:
                break
            time.sleep(0.05)
        behind = None
        if mode == "live":
            t.join()
            pub = box.get("pub")
            done_at = box.get("done_at")
            if pub and done_at:  # the publishers' last PUBACK: what the bridge had not yet forwarded then
                behind = pub["acked"] - max((v for ts, v in samples if ts <= done_at), default=0)
        m = metrics(port)
        cpu = process_cpu(proc.pid) - cpu0
        others = self.roles_us_per_msg(roles0, samples[-1][1], pub if mode == "live" else None)
        stop(proc)
        first = next((t for t, v in samples if v > 0), samples[0][0])
        # interpolate: the sample before the first non-zero one bounds the start from below
        idx = next((i for i, (_, v) in enumerate(samples) if v > 0), 0)
        start_t = (samples[idx - 1][0] + first) / 2 if idx > 0 else first
        end_t = next((t for t, v in samples if v >= n), samples[-1][0])
        secs = max(1e-9, end_t - start_t)
        fwd = samples[-1][1]
        lat_count = m.get("sensorlake_bridge_kafka_latency_seconds_count", 0)
        return {"forwarded": fwd, "seconds": secs, "msgs_per_s": fwd / secs, "publishers": pub,
                "behind_at_publish_end": behind, "others_cpu_us_per_msg": others, "duplicates": m.get("sensorlake_bridge_messages_duplicate_total", 0),
                "cpu_us_per_msg": 1e6 * cpu / max(1, fwd),
                "mean_latency_ms": 1000 * m.get("sensorlake_bridge_kafka_latency_seconds_sum", 0) / max(1, lat_count)}


def pace_lines(feeds: list[tuple[list[bytes], Any]], per_feed_rate: float, start: float) -> None:
    """Writes each feed's lines into its publisher's stdin at ``per_feed_rate`` lines/s, in 20 ms
    steps, then closes the pipes (mosquitto_pub exits once its last message is acknowledged)."""
    sent = [0] * len(feeds)
    while any(n < len(lines) for n, (lines, _) in zip(sent, feeds)):
        due = int((time.time() - start) * per_feed_rate)
        for k, (lines, pipe) in enumerate(feeds):
            upto = min(due, len(lines))
            if upto > sent[k]:
                try:
                    pipe.write(b"".join(lines[sent[k]:upto]))
                    pipe.flush()
                    sent[k] = upto
                except BrokenPipeError:  # that publisher died: its exit code reports it
                    sent[k] = len(lines)
        time.sleep(0.02)
    for _, pipe in feeds:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def machine_info(s: Settings) -> dict:
    import confluent_kafka
    import kafka
    import paho.mqtt

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        mosq = "?"
    from connectors.mqtt_kafka import kafka_io

    return {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu,
            "python": platform.python_version(), "paho_mqtt": paho.mqtt.__version__,
            "kafka_python": kafka.__version__, "confluent_kafka": confluent_kafka.version()[0],
            "librdkafka": confluent_kafka.libversion()[0], "mosquitto": mosq, "kafka_broker": KAFKA_VERSION,
            "load_avg": os.getloadavg(), "bridge": {"max_inflight": s.bridge_max_inflight, "linger_ms": s.bridge_linger_ms,
                                                     "compression": kafka_io.COMPRESSION,
                                                     "acks": "all", "idempotence": True}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_subscriber":
        return subscriber_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--sensors", type=int, default=10, help="sensors per publisher")
    p.add_argument("--mode", choices=["live", "backlog", "both"], default="both")
    p.add_argument("--publisher", choices=["loadgen", "mosquitto_pub"], default="loadgen",
                   help="loadgen: our Python (paho) publishers, seq-numbered; mosquitto_pub: Mosquitto's C "
                        "client, one process per sensor, for live rates the Python publishers cannot send here")
    p.add_argument("--rate", type=float, default=0,
                   help="live load paced at this many readings/s in all (0: as fast as the publishers go)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--port-offset", type=int, default=55_000, help="ports of its own Mosquitto and Kafka")
    p.add_argument("--use-running", action="store_true",
                   help="use the Mosquitto and Kafka the settings point at instead of starting its own")
    Settings.add_arguments(p, ["home", "mqtt_host", "mqtt_port", "mqtt_topic_prefix", "mqtt_bridge_user",
                               "mqtt_bridge_password", "mqtt_generator_user", "mqtt_generator_password",
                               "kafka_bootstrap", "bridge_max_inflight", "bridge_linger_ms"])
    args = p.parse_args(argv)
    if args.use_running:
        return measure(args, load_settings(args))
    import shutil
    import tempfile

    from sensorlake.local.install import install
    from sensorlake.local.stack import LocalStack, isolated_settings

    home = Path(tempfile.mkdtemp(prefix="sensorlake-bench-bridge-"))
    settings = isolated_settings(home, args.port_offset, bridge_metrics_port=0)
    stack = LocalStack(settings, install(settings))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the finally below
    try:
        print(f"starting Mosquitto and Kafka in {home} (ports +{args.port_offset})", flush=True)
        stack.up(["mosquitto", "kafka"])
        return measure(args, stack.settings.with_args(args),
                       {name: pid for name in ("mosquitto", "kafka") if (pid := stack.pid(name))})
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def measure(args: argparse.Namespace, s: Settings, roles: dict[str, int] | None = None) -> int:
    run = Run(s, args.messages, args.publishers, args.sensors, args.publisher, args.rate, roles)
    modes = ["live", "backlog"] if args.mode == "both" else [args.mode]
    results: dict = {"messages": run.total(), "publishers": args.publishers, "publisher": args.publisher,
                     "machine": machine_info(s),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "modes": {}}
    procs = args.publishers * (args.sensors if args.publisher == "mosquitto_pub" else 1)
    print(f"{run.total()} QoS 1 readings from {procs} {args.publisher} processes, "
          f"{args.sensors * args.publishers} sensors; broker {s.mqtt_host}:{s.mqtt_port}, kafka {s.kafka_bootstrap}")
    print(f"{'load':<9}{'ceiling (bare paho)':>22}{'bridge (acks=all)':>20}{'ratio':>8}"
          f"{'CPU us/msg: ceiling':>22}{'bridge':>8}")
    for mode in modes:
        ceil = run.ceiling(mode)
        br = run.bridge(mode)
        ratio = br["msgs_per_s"] / ceil["msgs_per_s"] if ceil["msgs_per_s"] else 0
        results["modes"][mode] = {"ceiling": ceil, "bridge": br, "ratio": ratio}
        print(f"{mode:<9}{ceil['msgs_per_s']:>16,.0f} msg/s{br['msgs_per_s']:>14,.0f} msg/s{ratio:>8.2f}"
              f"{ceil['cpu_us_per_msg']:>22.1f}{br['cpu_us_per_msg']:>8.1f}", flush=True)
        for name, r in (("ceiling", ceil), ("bridge", br)):
            if r["others_cpu_us_per_msg"]:
                print(f"{'':<9}beside the {name}, CPU us/msg: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in r["others_cpu_us_per_msg"].items()), flush=True)
        if mode == "live" and br["publishers"]:
            pub = br["publishers"]
            print(f"{'':<9}publishers sent {pub['published'] / max(1e-9, pub['publish_seconds']):,.0f} msg/s to the "
                  f"bridge ({pub['acked']:,} acknowledged by the broker); the bridge was "
                  f"{int(br['behind_at_publish_end'] or 0):,} messages behind when they were done", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bridge-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
