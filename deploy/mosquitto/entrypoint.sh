#!/bin/sh
# Writes the password file from the environment, then runs Mosquitto.
set -eu
: "${MQTT_BRIDGE_USERNAME:?}" "${MQTT_BRIDGE_PASSWORD:?}" "${MQTT_DEVICE_USERNAME:?}" "${MQTT_DEVICE_PASSWORD:?}"
touch /mosquitto/data/passwd
chmod 0700 /mosquitto/data/passwd
mosquitto_passwd -b /mosquitto/data/passwd "$MQTT_BRIDGE_USERNAME" "$MQTT_BRIDGE_PASSWORD"
mosquitto_passwd -b /mosquitto/data/passwd "$MQTT_DEVICE_USERNAME" "$MQTT_DEVICE_PASSWORD"
exec mosquitto -c /mosquitto/config/mosquitto.conf
