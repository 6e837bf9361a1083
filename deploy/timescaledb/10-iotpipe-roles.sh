#!/bin/sh
# Runs once when the TimescaleDB container initialises its data folder: the
# login roles of the sink and of Grafana, members of the group roles that
# `iotpipe init` grants privileges to. Passwords come from the Docker
# secret files (docker-compose.yml `secrets:`), never from the environment.
set -eu
sink_pw=$(cat /run/secrets/db_sink_password)
grafana_pw=$(cat /run/secrets/db_grafana_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v sink_pw="$sink_pw" -v grafana_pw="$grafana_pw" <<'SQL'
CREATE ROLE iotpipe_writer NOLOGIN;
CREATE ROLE iotpipe_reader NOLOGIN;
CREATE ROLE iotpipe_registry NOLOGIN; -- the device registry's writes (iotpipe devices, the API)
CREATE ROLE iotpipe_sink LOGIN PASSWORD :'sink_pw' IN ROLE iotpipe_writer;
CREATE ROLE grafana LOGIN PASSWORD :'grafana_pw' IN ROLE iotpipe_reader;
SQL
