#!/bin/sh
# First run of `docker compose up -d`: writes .env from .env.example with two fresh MQTT passwords
# and your user and group id (the owner of what the containers write into ./data), and creates
# ./data. An existing .env is never touched: delete it to start over.
set -eu
cd "$(dirname "$0")/.."

if [ -e .env ]; then
    echo ".env already exists; left as it is"
    exit 0
fi

secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

uid=$(id -u)
gid=$(id -g)
if [ "$uid" = 0 ]; then
    # As root, keep the containers non-root: the lake then belongs to uid 1000.
    uid=1000
    gid=1000
fi

umask 077
sed -e "s/^SENSORLAKE_MQTT_GENERATOR_PASSWORD=.*/SENSORLAKE_MQTT_GENERATOR_PASSWORD=$(secret)/" \
    -e "s/^SENSORLAKE_MQTT_BRIDGE_PASSWORD=.*/SENSORLAKE_MQTT_BRIDGE_PASSWORD=$(secret)/" \
    -e "s/^LAKE_UID=.*/LAKE_UID=$uid/" \
    -e "s/^LAKE_GID=.*/LAKE_GID=$gid/" \
    .env.example > .env

umask 022
if [ ! -d data ]; then
    mkdir data
    if [ "$(id -u)" = 0 ]; then
        chown "$uid:$gid" data
    fi
fi
echo "wrote .env (secrets; git-ignored) and ./data for uid $uid; now: docker compose up -d"
