#!/bin/sh
# The command of the job's Beam PROCESS environment in our image (SENSORLAKE_ENVIRONMENT_CONFIG):
# a TaskManager runs it once per Python SDK worker, with --id and --provision_endpoint.
exec /opt/sensorlake/venv/bin/python -m sensorlake.beam_worker "$@"
