"""Settings: one name per setting, precedence flag > env > env file > default, clear errors."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from sensorlake.registry import RegistryError, load_registry, parse_registry
from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION, REPO_ROOT, Settings, SettingsError


def test_defaults_are_loopback():
    s = Settings.load(env={})
    assert s.mqtt_host == "127.0.0.1" and s.kafka_bootstrap.startswith("127.0.0.1:")
    assert s.flink_master == "127.0.0.1:8081" and s.kafka_bootstrap_port == 9092


def test_precedence_flag_over_env_over_file(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("# comment\nSENSORLAKE_MQTT_PORT=2000\nSENSORLAKE_KAFKA_TOPIC='from-file'\n")
    env = {"SENSORLAKE_ENV_FILE": str(env_file), "SENSORLAKE_MQTT_PORT": "3000"}
    s = Settings.load(env=env)
    assert (s.mqtt_port, s.kafka_topic) == (3000, "from-file")
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser, ["mqtt_port", "kafka_topic"])
    s = Settings.from_args(parser.parse_args(["--mqtt-port", "4000"]), env=env)
    assert (s.mqtt_port, s.kafka_topic) == (4000, "from-file")


def test_flags_override_settings_given_in_code():
    """Tests and tools hand a job its settings and flags: the flags win, as on the command line."""
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser, ["job_name", "parallelism"])
    base = Settings.load(env={}).replace(job_name="from-code", lake="/lake")
    s = base.with_args(parser.parse_args(["--job-name", "from-flag"]))
    assert (s.job_name, s.parallelism, s.lake) == ("from-flag", 1, "/lake")


def test_bad_number_names_the_variable():
    with pytest.raises(SettingsError, match="SENSORLAKE_MQTT_PORT"):
        Settings.load(env={"SENSORLAKE_MQTT_PORT": "eighteen"})


def test_secrets_are_redacted_and_round_trip_through_env():
    s = Settings.load(env={"SENSORLAKE_MQTT_BRIDGE_PASSWORD": "hunter2"})
    assert s.redacted()["mqtt_bridge_password"] == "***"
    assert Settings.load(env=s.as_env()) == s


def test_seed_registry_has_the_five_sensors():
    reg = load_registry(REPO_ROOT / "iot_data_generator" / "sensors.json")
    assert [reg[k].description for k in sorted(reg)] == [
        "Main Entrance", "Kitchen", "Deposit", "Assembly Floor", "Offices"]
    assert all((s.range_min, s.range_max, s.unit, s.interval_ms) == (0, 45, "C", 1000) for s in reg.values())
    assert reg["1"].expected_per_minute == 60


@pytest.mark.parametrize("doc, msg", [
    ("[]", "JSON object"),
    ('{"1": {"range": [5, 1]}}', "range"),
    ('{"1": {"range": [0, 1], "interval_ms": 0}}', "interval_ms"),
    ("{nope", "not valid JSON"),
])
def test_bad_registry_is_explained(doc, msg):
    with pytest.raises(RegistryError, match=msg):
        parse_registry(doc)


def test_runtime_pins_agree_everywhere():
    """The Beam SDK and the job server must be one release; Flink and Kafka pinned once."""
    setup = (REPO_ROOT / "setup.py").read_text()
    assert f'"apache-beam=={BEAM_VERSION}"' in setup
    pom = (REPO_ROOT / "flink" / "jobserver" / "pom.xml").read_text()
    assert f"<beam.version>{BEAM_VERSION}</beam.version>" in pom
    assert f"<flink.version>{FLINK_VERSION}</flink.version>" in pom
    assert f"<flink.minor>{'.'.join(FLINK_VERSION.split('.')[:2])}</flink.minor>" in pom
    kafka_pom = (REPO_ROOT / "sensorlake" / "local" / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in kafka_pom
    from apache_beam.options.pipeline_options import FlinkRunnerOptions
    assert ".".join(FLINK_VERSION.split(".")[:2]) in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    import apache_beam
    assert apache_beam.__version__ == BEAM_VERSION
