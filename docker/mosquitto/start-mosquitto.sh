#!/bin/sh
# Writes Mosquitto's configuration from the SENSORLAKE_* settings, then becomes the broker.
#
# One script for both deployments, so they cannot drift: docker-compose mounts it into the
# eclipse-mosquitto image, the local stack (sensorlake/local/stack.py) runs it with Debian's
# mosquitto. POSIX sh (the image has busybox ash).
#
# usage: start-mosquitto.sh CONF_DIR DATA_DIR BIND_ADDRESS [MOSQUITTO]
#   CONF_DIR      rewritten on every start: mosquitto.conf, passwd (0600), acl
#   DATA_DIR      persistence: queued messages and the bridge's persistent session
#   BIND_ADDRESS  127.0.0.1 locally; 0.0.0.0 in a container (compose publishes on 127.0.0.1 only)
#   MOSQUITTO     the broker binary (default: mosquitto on PATH)
# Settings, all required: SENSORLAKE_MQTT_PORT, SENSORLAKE_MQTT_TOPIC_PREFIX,
#   SENSORLAKE_MQTT_GENERATOR_USER, SENSORLAKE_MQTT_GENERATOR_PASSWORD,
#   SENSORLAKE_MQTT_BRIDGE_USER, SENSORLAKE_MQTT_BRIDGE_PASSWORD
# Anonymous clients are refused; the generator may only publish <prefix>/# (which includes the
# challenge generator's single topic <prefix>), the bridge may only subscribe to it.
#
# QoS 0 publishers (the challenge's generator) lose nothing while the bridge is away or killed:
# queue_qos0_messages queues their messages for the bridge's persistent session (within the same
# max_queued_messages bound), and upgrade_outgoing_qos delivers them at the bridge's subscription
# QoS 1, so the broker keeps each one until the bridge acks it, which it does after Kafka has it.
set -eu

if [ $# -lt 3 ]; then
    echo "usage: $0 CONF_DIR DATA_DIR BIND_ADDRESS [MOSQUITTO]" >&2
    exit 2
fi
conf_dir=$1
data_dir=$2
bind=$3
mosquitto=${4:-mosquitto}

for var in SENSORLAKE_MQTT_PORT SENSORLAKE_MQTT_TOPIC_PREFIX SENSORLAKE_MQTT_GENERATOR_USER \
           SENSORLAKE_MQTT_GENERATOR_PASSWORD SENSORLAKE_MQTT_BRIDGE_USER SENSORLAKE_MQTT_BRIDGE_PASSWORD; do
    eval "value=\${$var:-}"
    if [ -z "$value" ]; then
        echo "start-mosquitto: $var is not set (docker compose: copy .env.example to .env and set it)" >&2
        exit 2
    fi
done

umask 077
mkdir -p "$conf_dir" "$data_dir"
passwd="$conf_dir/passwd"
rm -f "$passwd"
: > "$passwd"
mosquitto_passwd -b "$passwd" "$SENSORLAKE_MQTT_GENERATOR_USER" "$SENSORLAKE_MQTT_GENERATOR_PASSWORD"
mosquitto_passwd -b "$passwd" "$SENSORLAKE_MQTT_BRIDGE_USER" "$SENSORLAKE_MQTT_BRIDGE_PASSWORD"

cat > "$conf_dir/acl" <<ACL
user $SENSORLAKE_MQTT_GENERATOR_USER
topic write $SENSORLAKE_MQTT_TOPIC_PREFIX/#

user $SENSORLAKE_MQTT_BRIDGE_USER
topic read $SENSORLAKE_MQTT_TOPIC_PREFIX/#
ACL

# `user`: only used when started as root (then mosquitto would switch to it); we keep whoever we are.
cat > "$conf_dir/mosquitto.conf" <<CONF
listener $SENSORLAKE_MQTT_PORT $bind
user $(id -un 2>/dev/null || id -u)
allow_anonymous false
password_file $passwd
acl_file $conf_dir/acl
persistence true
persistence_location $data_dir/
autosave_interval 10
max_queued_messages 1000000
queue_qos0_messages true
upgrade_outgoing_qos true
max_inflight_messages 1000
log_dest stdout
log_type error
log_type warning
log_type notice
CONF

exec "$mosquitto" -c "$conf_dir/mosquitto.conf"
