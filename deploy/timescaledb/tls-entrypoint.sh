#!/bin/sh
# Puts the server certificate of the certs volume where PostgreSQL accepts
# it (the key owned by postgres, mode 0600), then runs the image's own
# entrypoint. TLS and pg_hba (hostssl only) are set on the command line in
# docker-compose.yml.
set -eu
d=/var/lib/postgresql/tls
mkdir -p "$d"
cp /certs/server/server.crt /certs/server/server.key "$d/"
chown -R postgres:postgres "$d"
chmod 0600 "$d/server.key"
exec docker-entrypoint.sh "$@"
