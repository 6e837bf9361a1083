#!/bin/sh
# Prepares Mosquitto's files from the certs volume and the environment, then
# runs it. Mutual TLS only, unless MQTT_PLAINTEXT=1 adds the plaintext
# listener on 1883 with the password users (MQTT_*_USERNAME, MQTT_*_PASSWORD_FILE).
set -eu
d=/mosquitto/data
mkdir -p "$d/tls" "$d/conf.d"
# The server key is 0600 for the certs job's user; Mosquitto reads it as
# the mosquitto user.
cp /certs/server/server.crt /certs/server/server.key "$d/tls/"
chown mosquitto:mosquitto "$d/tls/server.key" "$d/tls/server.crt"
chmod 0600 "$d/tls/server.key"
cp /mosquitto/config/acl "$d/acl"
rm -f "$d/conf.d/plaintext.conf" "$d/passwd"
if [ "${MQTT_PLAINTEXT:-0}" = 1 ]; then
  # The passwords come from the Docker secret files (docker-compose.yml).
  MQTT_BRIDGE_PASSWORD=$(cat "${MQTT_BRIDGE_PASSWORD_FILE:?}")
  MQTT_DEVICE_PASSWORD=$(cat "${MQTT_DEVICE_PASSWORD_FILE:?}")
  : "${MQTT_BRIDGE_USERNAME:?}" "${MQTT_BRIDGE_PASSWORD:?}" "${MQTT_DEVICE_USERNAME:?}" "${MQTT_DEVICE_PASSWORD:?}"
  touch "$d/passwd"
  chmod 0700 "$d/passwd"
  mosquitto_passwd -b "$d/passwd" "$MQTT_BRIDGE_USERNAME" "$MQTT_BRIDGE_PASSWORD"
  mosquitto_passwd -b "$d/passwd" "$MQTT_DEVICE_USERNAME" "$MQTT_DEVICE_PASSWORD"
  chown mosquitto:mosquitto "$d/passwd"
  printf 'listener 1883\npassword_file %s/passwd\n' "$d" >"$d/conf.d/plaintext.conf"
  sed -e "s/\${MQTT_BRIDGE_USERNAME}/$MQTT_BRIDGE_USERNAME/" -e "s/\${MQTT_DEVICE_USERNAME}/$MQTT_DEVICE_USERNAME/" \
    /mosquitto/config/acl-passwords >>"$d/acl"
fi
chown mosquitto:mosquitto "$d/acl"
chmod 0600 "$d/acl"
exec mosquitto -c /mosquitto/config/mosquitto.conf
