#!/bin/sh
# Runs once when the TimescaleDB container initialises its data folder: the
# login roles of the sink and of Grafana, members of the group roles that
# `iotpipe init` grants privileges to. Passwords come from the environment.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v sink_pw="$IOTPIPE_SINK_DB_PASSWORD" -v grafana_pw="$IOTPIPE_GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE iotpipe_writer NOLOGIN;
CREATE ROLE iotpipe_reader NOLOGIN;
CREATE ROLE iotpipe_registry NOLOGIN; -- the device registry's writes (iotpipe devices, the API)
CREATE ROLE iotpipe_sink LOGIN PASSWORD :'sink_pw' IN ROLE iotpipe_writer;
CREATE ROLE grafana LOGIN PASSWORD :'grafana_pw' IN ROLE iotpipe_reader;
SQL
