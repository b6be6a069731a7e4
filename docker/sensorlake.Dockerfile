# syntax=docker/dockerfile:1
# Sensorlake's images, one build target each (docker-compose.yml builds them; context: the repo):
#   app            `sensorlake` (generator, bridge, pipeline submitter, catalogue)
#   flink          Flink JobManager / TaskManager, with the Beam Python SDK harness and our package,
#                  so a TaskManager runs the job's Python workers itself (environment PROCESS)
#   beam-services  the Beam job server and expansion service (flink/jobserver, built with Maven)
# One Beam release everywhere: apache-beam==2.62.0 (setup.py) in every Python image, the SDK
# harness launcher from apache/beam_python3.11_sdk:2.62.0, the job-server classpath from
# flink/jobserver/pom.xml (beam.version 2.62.0). Images pinned here = sensorlake.services.IMAGES.
# Every final image runs as a non-root user.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG FLINK_IMAGE=flink:1.19.3-scala_2.12-java17
ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.62.0
ARG MAVEN_IMAGE=maven:3.9.9-eclipse-temurin-17

# ---------------------------------------------------------------- sources of prebuilt parts
# The official Flink image: its Flink distribution and its Java 17 runtime.
FROM ${FLINK_IMAGE} AS flink-dist
# The Beam SDK image: /opt/apache/beam with boot, the launcher Beam's PROCESS environment runs
# (Beam's documented way to give a custom image the SDK harness entry point).
FROM ${BEAM_SDK_IMAGE} AS beam-sdk

# ---------------------------------------------------------------- wheels of our package and its pins
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY setup.py ./
COPY sensorlake ./sensorlake
COPY iot_data_generator ./iot_data_generator
COPY connectors ./connectors
COPY pipelines ./pipelines
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---------------------------------------------------------------- the Python runtime of every image
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels sensorlake==0.1.0 \
    && python -c "import apache_beam, sensorlake.services; assert apache_beam.__version__ == '2.62.0'" \
    && groupadd --system --gid 10001 sensorlake \
    && useradd --system --uid 10001 --gid sensorlake --create-home --home-dir /home/sensorlake sensorlake
WORKDIR /home/sensorlake

# ---------------------------------------------------------------- app: `sensorlake ...`
FROM python-base AS app
USER 10001:10001
ENTRYPOINT ["sensorlake"]
CMD ["--help"]

# ---------------------------------------------------------------- flink: JobManager / TaskManager
FROM python-base AS flink
COPY --from=flink-dist /opt/java/openjdk /opt/java/openjdk
COPY --from=flink-dist /opt/flink /opt/flink
COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam
# The SDK harness runs with the interpreter that has our package (no per-worker virtualenv).
ENV JAVA_HOME=/opt/java/openjdk \
    PATH=/opt/java/openjdk/bin:/opt/flink/bin:$PATH \
    FLINK_HOME=/opt/flink \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1
# Volumes (checkpoints, staged artifacts) are first filled from these folders, so any user id
# compose runs us as (LAKE_UID) can write them.
RUN mkdir -p /var/lib/flink /var/lib/beam-artifacts \
    && chmod 1777 /var/lib/flink /var/lib/beam-artifacts \
    && java -version \
    && test -x /opt/apache/beam/boot
USER 10001:10001
# `exec jobmanager|taskmanager|expansion|jobserver`: writes the Flink configuration from the
# SENSORLAKE_* settings (the function the local stack uses) and starts the runtime in its place.
ENTRYPOINT ["python", "-m", "sensorlake.services", "exec"]
CMD ["jobmanager"]

# ---------------------------------------------------------------- the job-server classpath (Maven)
FROM ${MAVEN_IMAGE} AS beam-services-build
WORKDIR /build
COPY flink/jobserver/pom.xml ./
RUN mvn -B -q dependency:go-offline
COPY flink/jobserver/src ./src
RUN mvn -B -q package \
    && mkdir -p /opt/beam-services \
    && cp target/sensorlake-beam-services-*.jar /opt/beam-services/sensorlake-beam-services.jar \
    && cp -r target/lib /opt/beam-services/lib

# ---------------------------------------------------------------- beam-services: job server + expansion
FROM flink AS beam-services
COPY --from=beam-services-build /opt/beam-services /opt/beam-services
CMD ["jobserver"]
