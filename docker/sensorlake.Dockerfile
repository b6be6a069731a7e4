# Sensorlake's one image: every service of docker-compose.yml runs from it (Mosquitto, Kafka and
# its topic init, the Flink JobManager and TaskManagers, the Beam job server and expansion
# service, the generator, the bridge, the job submitter, the catalogue).
#
# It builds FROM one Debian bookworm image (build arg BASE_IMAGE) and takes everything else from
# the package registries the way `sensorlake local install` does, because it runs that same code
# (python -m sensorlake.local.install): Mosquitto from apt, the Kafka broker and the Beam job-server
# jars from Maven Central, Flink from PyPI in a venv of its own. Java 17, Maven and Python 3.11 are
# Debian's. Our package is installed (editable) in /opt/sensorlake/venv from /opt/sensorlake/src.
#
# The job's Python workers run in the TaskManager containers (Beam environment PROCESS): the
# TaskManager starts /opt/sensorlake/bin/beam-worker (sensorlake/beam_worker.py) per worker, which
# provisions itself and runs the SDK harness of the apache-beam in this venv.
#
# No `# syntax=` line (it would fetch a Dockerfile frontend from Docker Hub): the engine's
# built-in BuildKit frontend reads this file, RUN --mount included.

ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SENSORLAKE_CACHE=/opt/sensorlake/cache \
    PATH=/opt/sensorlake/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A TLS-intercepting proxy between this machine and the registries: its CA certificates
# (docker/ca-certificates/*.crt, git-ignored) are trusted by apt, pip (PIP_CERT) and Java (Maven).
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/sensorlake/

# hadolint ignore=DL3008 # bookworm's packages, at whatever patch level its mirror serves (security fixes)
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends ca-certificates python3 python3-venv \
       openjdk-17-jdk-headless maven procps \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sensorlake \
    && useradd --system --uid 10001 --gid sensorlake --create-home --home-dir /home/sensorlake sensorlake

# ---------------------------------------------------------------- our pins, then the install
# Only what the install reads is copied here, so a change elsewhere in the code does not run it
# again (tests/unit/test_compose.py checks that sensorlake.local.install imports from these alone).
WORKDIR /opt/sensorlake/src
COPY setup.py ./
# hadolint ignore=DL3042 # pip's cache is a BuildKit cache mount: it speeds rebuilds and stays out of the image
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/sensorlake/venv \
    && python -c "import runpy, setuptools; setuptools.setup = lambda **kw: print('\n'.join(kw['install_requires'])); runpy.run_path('setup.py')" > /tmp/requirements.txt \
    && pip install --progress-bar off -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY sensorlake/__init__.py sensorlake/settings.py ./sensorlake/
COPY sensorlake/local/__init__.py sensorlake/local/install.py ./sensorlake/local/
COPY sensorlake/local/kafka/pom.xml ./sensorlake/local/kafka/
COPY flink/jobserver/pom.xml ./flink/jobserver/
COPY flink/jobserver/src ./flink/jobserver/src
# `sensorlake local install`: apt (Mosquitto), Maven (Kafka, Beam job server), PyPI (Flink).
# hadolint ignore=DL3042 # as above: pip's and Maven's caches are cache mounts, not layers
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=cache,target=/root/.m2 \
    python -m sensorlake.local.install \
    && rm -rf /var/lib/apt/lists/* flink/jobserver/target sensorlake/local/kafka/target \
    && java -version \
    && test -x /usr/sbin/mosquitto && command -v mosquitto_sub

# ---------------------------------------------------------------- our package
COPY setup.py ./
COPY sensorlake ./sensorlake
COPY iot_data_generator ./iot_data_generator
COPY connectors ./connectors
COPY pipelines ./pipelines
COPY docker/mosquitto/start-mosquitto.sh ./docker/mosquitto/
COPY docker/beam-worker.sh /opt/sensorlake/bin/beam-worker
# State folders are named volumes: a fresh volume takes its owner and mode from these. The lake
# writers run as LAKE_UID (any uid), hence 1777 for what they share.
RUN pip install --progress-bar off --no-cache-dir --no-deps -e . \
    && python -c "import apache_beam, sensorlake.runtime; assert apache_beam.__version__ == '2.62.0'" \
    && chmod 0755 /opt/sensorlake/bin/beam-worker \
    && mkdir -p /var/lib/sensorlake/mosquitto /var/lib/kafka/data /var/lib/flink /var/lib/beam-artifacts /data \
    && chown sensorlake:sensorlake /var/lib/sensorlake/mosquitto /var/lib/kafka/data \
    && chmod 1777 /var/lib/flink /var/lib/beam-artifacts

USER 10001:10001
WORKDIR /home/sensorlake
# `ROLE`: configure and start a runtime (mosquitto, kafka, kafka-init, jobmanager, taskmanager,
# expansion, jobserver); anything else is a `sensorlake` command (bridge, generate, pipeline ...).
ENTRYPOINT ["python", "-m", "sensorlake.runtime"]
CMD ["--help"]
