#!/usr/bin/env bash
# scripts/services.sh — the real services that tests and the demo use, on loopback.
#
#   scripts/services.sh up     [service...]   install what is missing, start, wait until each answers
#   scripts/services.sh down   [--purge] [service...]   stop what `up` started (--purge: also delete data and logs)
#   scripts/services.sh purge  [service...]   same as `down --purge`
#   scripts/services.sh status [service...]   one line per service; exit 0 when all are running, 3 otherwise
#   scripts/services.sh env    [--plain]      `export KEY=VALUE` lines for eval / Makefile include (stdout only)
#   scripts/services.sh logs   [-f] [-n N] [service...]   log paths; with one service, its tail
#
# Services: mqtt (Mosquitto), kafka (Apache Kafka, KRaft), postgres (PostgreSQL), s3 (versitygw).
# Default: all four. Everything lives under ${IOTPIPE_STATE_DIR:-<repo>/.state}; progress goes to
# stderr. Ports: IOTPIPE_MQTT_PORT, IOTPIPE_KAFKA_PORT, IOTPIPE_KAFKA_CONTROLLER_PORT,
# IOTPIPE_PG_PORT, IOTPIPE_S3_PORT. PostgreSQL runs with TimescaleDB (built from IOTPIPE_TIMESCALEDB_ARCHIVE).
# IOTPIPE_INSTALL_DIR (default: the state dir) holds the Kafka jars and versitygw, so a second,
# private set of services (own state dir and ports) can reuse the installs of the first.
# IOTPIPE_MOSQUITTO_BIN (default: mosquitto on PATH) is the broker binary to run, e.g. a newer build.
# Mosquitto also listens with mutual TLS on IOTPIPE_MQTT_TLS_PORT (default 18883); the CA
# (<state>/ca) and its certificates are made on first start with `iotpipe ca` (bin/iotpipe, built
# with Go if missing), or with openssl on a machine without Go (or IOTPIPE_CA_TOOL=openssl).
# PostgreSQL and versitygw serve TLS only, with a server certificate (localhost, 127.0.0.1) of that
# same CA made on their first start (<pg base>/tls, <state>/s3/tls): PostgreSQL's pg_hba takes
# hostssl only (a plaintext TCP connection is refused; the scripts' admin work uses the unix
# socket), every DSN of `env` has sslmode=verify-full&sslrootcert=<state>/ca/ca.crt, and the S3
# endpoint is https:// with IOTPIPE_S3_CA_FILE. State dirs of older versions are upgraded by `up`:
# a running PostgreSQL is reconfigured and reloaded, a plaintext versitygw restarted.
# IOTPIPE_KAFKA_NODES=3 (default 1) runs kafka as a KRaft cluster of three combined broker+controller
# nodes on loopback, for failover tests: replication factor 3 and min.insync.replicas 2 as broker
# defaults and for Kafka's internal topics, IOTPIPE_KAFKA_HEAP (default 512m) per node. Node i listens
# on IOTPIPE_KAFKA_PORT+2(i-1), controller IOTPIPE_KAFKA_CONTROLLER_PORT+2(i-1), or on the i-th entry of
# IOTPIPE_KAFKA_PORTS / IOTPIPE_KAFKA_CONTROLLER_PORTS (comma lists); its files are in
# <state>/kafka/node-i. `up kafka` (re)starts the nodes that are not running and waits until every
# broker is in the cluster metadata; `down kafka` stops all; `status kafka` lists each node; `env` gives
# every broker in IOTPIPE_KAFKA_BROKERS. A running cluster keeps its node count until `down kafka`.
# `up kafka` waits IOTPIPE_KAFKA_START_TIMEOUT seconds (default 90, 240 for a cluster: a node restarted
# on a loaded 2-core machine has taken 95 s to be listed by every broker).
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Pinned versions and fixed development credentials (local loopback services only).
KAFKA_VERSION=4.1.1                       # keep in sync with scripts/kafka/pom.xml
VERSITYGW_MODULE=github.com/versity/versitygw
VERSITYGW_VERSION=v1.8.0
PG_MIN_MAJOR=15
# TimescaleDB is built from its source release into the local PostgreSQL (see "postgres" below).
TIMESCALEDB_VERSION=2.28.3
TIMESCALEDB_SHA256=ec2f7de0ba53a473c01e0a57e09053898c6b1f7487228caff0f1d31c8cb2dedb

MQTT_USER=iotpipe MQTT_PASS=iotpipe-dev
MQTT_DEVICE_USER=device MQTT_DEVICE_PASS=device-dev
PG_SUPER_PASS=postgres-dev
PG_OWNER=iotpipe PG_OWNER_PASS=iotpipe-dev
PG_WRITER=iotpipe_sink PG_WRITER_PASS=sink-dev
PG_READER=grafana PG_READER_PASS=grafana-dev
PG_REGISTRY=iotpipe_devices PG_REGISTRY_PASS=devices-dev
PG_DB=iotpipe
S3_ACCESS=iotpipe S3_SECRET=iotpipe-dev-secret S3_REGION=us-east-1 S3_BUCKET=iotpipe-lake
# The lake sink's own S3 user (versitygw IAM, role "user"): it can reach only the buckets it owns;
# the root key above is for setup (iotpipe init hands the lake bucket to this user).
S3_LAKE_ACCESS=iotpipe-lake S3_LAKE_SECRET=iotpipe-lake-dev-secret
# Kafka (SASL_SSL, SCRAM-SHA-512): the super user `init` runs as (bootstrapped at storage format,
# KIP-900), the controller quorum's own PLAIN user, and the stage principals `iotpipe init
# --kafka-acls` creates with only the ACLs each stage needs.
KAFKA_ADMIN_USER=admin KAFKA_ADMIN_PASS=admin-dev-secret
KAFKA_CONTROLLER_USER=controller KAFKA_CONTROLLER_PASS=controller-dev-secret
KAFKA_STAGES=(bridge processor sink-lake sink-timescale alert notify shadow-consumer)

ALL_SERVICES=(mqtt kafka postgres s3)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
STATE_DIR=$(realpath -m "${IOTPIPE_STATE_DIR:-$REPO_ROOT/.state}")
# Installed software (Kafka jars, versitygw) can be shared between state dirs: tests that need a
# private instance of a service (to stop it under load) run with their own IOTPIPE_STATE_DIR and
# IOTPIPE_INSTALL_DIR pointing at the main state dir.
INSTALL_DIR=$(realpath -m "${IOTPIPE_INSTALL_DIR:-$STATE_DIR}")
# The TimescaleDB source release; in CI the repository is a fresh clone with shared/ beside it.
TIMESCALEDB_ARCHIVE=$(realpath -m "${IOTPIPE_TIMESCALEDB_ARCHIVE:-$REPO_ROOT/../shared/vendor/timescaledb-$TIMESCALEDB_VERSION.tar.gz}")
# auto: TimescaleDB when the archive (or a cached build) is there, else plain PostgreSQL with a
# warning; 1: TimescaleDB or fail; 0: plain PostgreSQL.
PG_TIMESCALEDB=${IOTPIPE_PG_TIMESCALEDB:-auto}

MQTT_PORT=${IOTPIPE_MQTT_PORT:-11883}
MQTT_TLS_PORT=${IOTPIPE_MQTT_TLS_PORT:-18883}
KAFKA_PORT=${IOTPIPE_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${IOTPIPE_KAFKA_CONTROLLER_PORT:-19093}
PG_PORT=${IOTPIPE_PG_PORT:-15432}
S3_PORT=${IOTPIPE_S3_PORT:-17070}
HOST=127.0.0.1

# Clean environment for the daemons, so that stray VGW_*, JAVA_TOOL_OPTIONS, PG* … of the
# caller do not change how they run.
DAEMON_ENV=(env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=${HOME:-/root}" "LANG=C.UTF-8" "TZ=UTC")

# ---------------------------------------------------------------------------------------------
# Small helpers

say() { printf 'services: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}

check_port_value() { # name value
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
    die "$1=$2 is not a valid TCP port"
  fi
}

now() { date +%s; }

# port_busy PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# port_owner PORT: best-effort "name pid N" of the listener (needs ss, root for other users).
port_owner() {
  local line
  line=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1) || true
  if [[ $line =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
    printf ' (by %s, pid %s)' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
  fi
}

sha256_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# rotate_log FILE: keep one previous generation when a log grows past 50 MiB.
rotate_log() {
  local f=$1
  if [[ -f $f ]] && (($(stat -c %s "$f") > 52428800)); then
    mv -f "$f" "$f.1"
  fi
}

SUDO=()
if ((EUID != 0)); then
  SUDO=(sudo)
fi

APT_UPDATED=0
# apt_install PKG...: install the Debian packages that are not installed yet (one apt-get update per run).
apt_install() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "need Debian packages ${missing[*]} but apt-get is not available"
  say "installing ${missing[*]} (apt)..."
  if ((APT_UPDATED == 0)); then
    "${SUDO[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------------------------------------
# Process tracking. Each daemon is started by launch() in its own session (setsid), with its pid
# in <state>/<svc>/pid. A pid counts as ours only while /proc/<pid>/cmdline still contains the
# service's tag (a path inside our state dir, or our PostgreSQL data dir).

svc_dir() { printf '%s/%s' "$STATE_DIR" "$1"; }

svc_port() {
  case $1 in
    mqtt) echo "$MQTT_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    kafka-*) kafka_node_port "${1#kafka-}" ;;
    postgres) echo "$PG_PORT" ;;
    s3) echo "$S3_PORT" ;;
  esac
}

svc_tag() {
  case $1 in
    mqtt) echo "$STATE_DIR/mqtt/mosquitto.conf" ;;
    kafka) echo "$STATE_DIR/kafka/server.properties" ;;
    kafka-*) echo "$(kafka_node_dir "${1#kafka-}")/server.properties" ;;
    postgres) pg_locate && echo "$PG_DATA" ;;
    s3) echo "$STATE_DIR/s3/data" ;;
  esac
}

svc_log() {
  case $1 in
    mqtt) echo "$STATE_DIR/mqtt/logs/mosquitto.log" ;;
    kafka) if kafka_multi; then kafka_cluster_log; else echo "$STATE_DIR/kafka/logs/server.log"; fi ;;
    kafka-*) echo "$(kafka_node_dir "${1#kafka-}")/logs/server.log" ;;
    postgres) pg_locate && echo "$PG_LOG" ;;
    s3) echo "$STATE_DIR/s3/logs/versitygw.log" ;;
  esac
}

svc_pid_file() {
  if [[ $1 == postgres ]]; then
    pg_locate && echo "$PG_DATA/postmaster.pid"
  elif [[ $1 == kafka-* ]]; then
    echo "$(kafka_node_dir "${1#kafka-}")/pid"
  else
    echo "$STATE_DIR/$1/pid"
  fi
}

# proc_stat PID N: field N (N >= 3) of /proc/PID/stat (fields counted after the "(comm)").
proc_stat() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  awk -v n="$(($2 - 2))" '{print $n}' <<<"$st"
}

# pid_is_ours PID TAG
pid_is_ours() {
  local pid=$1 tag=$2 cmd state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  state=$(proc_stat "$pid" 3) || return 1
  [[ $state != Z && $state != X ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$tag"* ]]
}

# svc_pid SVC: print the pid of our running daemon, or fail.
svc_pid() {
  local f pid
  if [[ $1 == kafka ]] && kafka_multi; then kafka_cluster_pids; return; fi
  f=$(svc_pid_file "$1") || return 1
  [[ -f $f ]] || return 1
  pid=$(head -n1 "$f" 2>/dev/null | tr -dc '0-9') || return 1
  pid_is_ours "$pid" "$(svc_tag "$1")" || return 1
  echo "$pid"
}

svc_running() { svc_pid "$1" >/dev/null 2>&1; }

# launch SVC LOG CMD...: start CMD detached (own session and process group, stdin /dev/null,
# output appended to LOG, no inherited lock fd), record its pid.
launch() {
  local svc=$1 log=$2 pidf
  shift 2
  pidf=$(svc_pid_file "$svc")
  rm -f "$pidf"
  rotate_log "$log"
  printf '=== %s: starting %s\n' "$(date -u +%FT%TZ)" "$svc" >>"$log"
  # The inner shell writes its own pid, then execs the daemon, so the pid file names the daemon.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid "${DAEMON_ENV[@]}" bash -c 'echo $$ >"$1"; shift; exec "$@"' launch "$pidf" "$@" \
    </dev/null >>"$log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidf ]] && return 0
    sleep 0.1
  done
  return 1
}

# kill_group SVC PID TAG TIMEOUT: SIGTERM the daemon's process group, SIGKILL after TIMEOUT seconds.
kill_group() {
  local svc=$1 pid=$2 tag=$3 timeout=$4 deadline target
  target=$pid
  # Signal the whole group when the daemon leads its own (it does when launch() started it).
  if [[ $(proc_stat "$pid" 5) == "$pid" ]]; then
    target=-$pid
  fi
  kill -TERM -- "$target" 2>/dev/null || true
  deadline=$(($(now) + timeout))
  while pid_is_ours "$pid" "$tag"; do
    if (($(now) >= deadline)); then
      say "$svc did not stop within ${timeout}s, sending SIGKILL"
      kill -KILL -- "$target" 2>/dev/null || true
      deadline=$(($(now) + 10))
      while pid_is_ours "$pid" "$tag" && (($(now) < deadline)); do sleep 0.1; done
      break
    fi
    sleep 0.2
  done
}

# fail_start SVC WHY: the one-line failure report plus log tail; stops what we started; exits.
fail_start() {
  local svc=$1 why=$2 log pid
  log=$(svc_log "$svc" 2>/dev/null) || log="(unknown)"
  if [[ $svc == postgres ]]; then
    stop_postgres quiet || true
  elif [[ $svc == kafka* ]] && kafka_multi; then
    kafka_stop_nodes 10 "${KAFKA_STARTED[@]}"
  elif pid=$(svc_pid "$svc" 2>/dev/null); then
    kill_group "$svc" "$pid" "$(svc_tag "$svc")" 10 || true
  fi
  if [[ $svc != postgres ]] && ! { [[ $svc == kafka ]] && kafka_multi; }; then
    rm -f "$(svc_pid_file "$svc")"
  fi
  if [[ -f $log ]]; then
    printf '=== %s: %s failed to start: %s\n' "$(date -u +%FT%TZ)" "$svc" "$why" >>"$log" 2>/dev/null || true
  fi
  {
    printf 'services: %s failed to start: %s\n' "$svc" "$why"
    printf 'log: %s\n' "$log"
    if [[ -f $log ]]; then
      printf -- '--- last 20 lines of %s ---\n' "$log"
      tail -n 20 "$log"
      printf -- '---\n'
    fi
  } >&2
  exit 1
}

# wait_ready SVC TIMEOUT STARTED_AT: poll the service's real readiness check.
wait_ready() {
  local svc=$1 timeout=$2 t0=$3 deadline why
  deadline=$((t0 + timeout))
  while :; do
    if ! svc_running "$svc"; then
      why="process exited during startup"
      if [[ $svc == postgres ]]; then why="postmaster is not running"; fi
      fail_start "$svc" "$why"
    fi
    if "ready_$svc"; then
      say "$svc ready in $(($(now) - t0))s ($(svc_desc "$svc"))"
      return 0
    fi
    if (($(now) >= deadline)); then
      if [[ $svc == kafka ]] && kafka_multi; then
        fail_start "$svc" "not every node of $(kafka_brokers) lists all $KAFKA_N brokers after ${timeout}s"
      fi
      fail_start "$svc" "not answering on $HOST:$(svc_port "$svc") after ${timeout}s"
    fi
    sleep 0.5
  done
}

svc_desc() {
  case $1 in
    mqtt) echo "mqtt://$HOST:$MQTT_PORT" ;;
    kafka) kafka_brokers ;;
    kafka-*) echo "$HOST:$(kafka_node_port "${1#kafka-}")" ;;
    postgres) echo "$HOST:$PG_PORT" ;;
    s3) echo "https://$HOST:$S3_PORT" ;;
  esac
}

# Before starting: refuse when a port is taken by someone else (clear error, instead of a
# readiness check that might talk to a foreign server).
require_free_ports() {
  local svc=$1 p
  shift
  for p in "$@"; do
    if port_busy "$p"; then
      fail_start "$svc" "port $HOST:$p is already in use$(port_owner "$p")"
    fi
  done
}

# A service started on other ports than the ones now configured would make `env` lie.
check_running_port() {
  local svc=$1 want=$2 have
  have=$(cat "$STATE_DIR/$svc/port" 2>/dev/null || true)
  if [[ -n $have && $have != "$want" ]]; then
    die "$svc is running on port $have but port $want is configured now; run: $0 down $svc"
  fi
}

# ---------------------------------------------------------------------------------------------
# mqtt: Mosquitto

install_mqtt() {
  apt_install mosquitto mosquitto-clients
}

# mosquitto_bin: the broker to run; IOTPIPE_MOSQUITTO_BIN overrides the one on PATH (e.g. a build
# from source, to test against a newer Mosquitto than the distribution's).
mosquitto_bin() {
  if [[ -n ${IOTPIPE_MOSQUITTO_BIN:-} ]]; then
    [[ -x $IOTPIPE_MOSQUITTO_BIN && ! -d $IOTPIPE_MOSQUITTO_BIN ]] \
      || die "IOTPIPE_MOSQUITTO_BIN=$IOTPIPE_MOSQUITTO_BIN is not an executable file"
    realpath -m "$IOTPIPE_MOSQUITTO_BIN"
  elif command -v mosquitto >/dev/null; then command -v mosquitto; else echo /usr/sbin/mosquitto; fi
}

# iotpipe_bin: the iotpipe binary for `iotpipe ca`: bin/iotpipe of this checkout, built with
# `go build` when it is missing or predates the ca command.
iotpipe_bin() {
  local bin=$REPO_ROOT/bin/iotpipe go
  if [[ -x $bin ]] && "$bin" ca --help >/dev/null 2>&1; then
    echo "$bin"
    return 0
  fi
  go=$(find_go) || die "Go is needed to build bin/iotpipe, which makes the services' certificates ('iotpipe ca'), but 'go' is not on PATH"
  say "building bin/iotpipe for the services' certificates..."
  mkdir -p "$REPO_ROOT/bin"
  (cd "$REPO_ROOT" && "$go" build -o "$bin.tmp.$$" ./cmd/iotpipe && mv -f "$bin.tmp.$$" "$bin") >&2 \
    || die "mqtt: go build ./cmd/iotpipe failed"
  echo "$bin"
}

# mqtt_tls_openssl CA_DIR TLS_DIR: the same files as `iotpipe ca init/server/client` with openssl,
# for a machine without Go (IOTPIPE_CA_TOOL=openssl forces it): ECDSA P-256, PKCS#8 keys (0600),
# the same key usages, and an empty CRL signed by the CA.
mqtt_tls_openssl() {
  local ca=$1 tls=$2 tmp ext
  command -v openssl >/dev/null || die "mqtt: neither Go (to build bin/iotpipe) nor openssl is available to make the broker's certificates"
  tmp=$(mktemp -d)
  ossl_newkey() { (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null); }
  mkdir -p "$ca" "$tls"
  chmod 700 "$ca"
  if [[ ! -f $ca/ca.crt ]]; then
    ossl_newkey "$ca/ca.key" || die "mqtt: openssl: CA key"
    openssl req -x509 -new -key "$ca/ca.key" -subj "/O=iotpipe/CN=iotpipe local CA" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$ca/ca.crt" 2>/dev/null || die "mqtt: openssl: CA certificate"
    : >"$tmp/index.txt"
    printf '01\n' >"$tmp/crlnumber"
    cat >"$tmp/ca.cnf" <<EOF
[ca]
default_ca = local
[local]
database = $tmp/index.txt
crlnumber = $tmp/crlnumber
default_md = sha256
default_crl_days = 365
EOF
    openssl ca -gencrl -config "$tmp/ca.cnf" -keyfile "$ca/ca.key" -cert "$ca/ca.crt" -out "$ca/crl.pem" 2>/dev/null \
      || die "mqtt: openssl: CRL"
  fi
  # ossl_issue NAME CN EXTENSIONS
  ossl_issue() {
    ossl_newkey "$tls/$1.key" || die "mqtt: openssl: key of $1"
    printf '%s\n' "$3" >"$tmp/$1.ext"
    openssl req -new -key "$tls/$1.key" -subj "/CN=$2" 2>/dev/null \
      | openssl x509 -req -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 \
        -extfile "$tmp/$1.ext" -out "$tls/$1.crt" 2>/dev/null || die "mqtt: openssl: certificate $1"
    chmod 644 "$tls/$1.crt"
  }
  ext="keyUsage=critical,digitalSignature"
  ossl_issue server localhost "$ext
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:$HOST"
  ossl_issue iotpipe-bridge iotpipe-bridge "$ext
extendedKeyUsage=clientAuth"
  rm -rf "$tmp"
  say "mqtt: made the CA and certificates with openssl (no Go to build bin/iotpipe)"
}

# mqtt_tls: on first start, the local CA (<state>/ca: ca.crt, ca.key 0600, crl.pem), the broker's
# server certificate (localhost, 127.0.0.1) and the bridge's client identity (CN iotpipe-bridge)
# in <state>/mqtt/tls. Later starts keep them (and the CRL that `iotpipe devices` maintains).
mqtt_tls() {
  local ca=$STATE_DIR/ca tls=$STATE_DIR/mqtt/tls bin
  if [[ -f $ca/ca.crt && -f $ca/crl.pem && -f $tls/server.crt && -f $tls/iotpipe-bridge.crt ]]; then
    return 0
  fi
  if [[ ${IOTPIPE_CA_TOOL:-} == openssl ]] || { ! find_go >/dev/null && [[ ! -x $REPO_ROOT/bin/iotpipe ]]; }; then
    mqtt_tls_openssl "$ca" "$tls"
    return 0
  fi
  bin=$(iotpipe_bin)
  mkdir -p "$tls"
  # A clean environment: stray IOTPIPE_* variables of the caller must not change the files.
  if [[ ! -f $ca/ca.crt ]]; then
    "${DAEMON_ENV[@]}" "$bin" ca init --ca-dir "$ca" --cn "iotpipe local CA" >&2 || die "mqtt: iotpipe ca init failed"
  fi
  "${DAEMON_ENV[@]}" "$bin" ca server --ca-dir "$ca" --dns localhost --ip "$HOST" --out "$tls" --name server >&2 \
    || die "mqtt: iotpipe ca server failed"
  "${DAEMON_ENV[@]}" "$bin" ca client iotpipe-bridge --ca-dir "$ca" --out "$tls" >&2 \
    || die "mqtt: iotpipe ca client failed"
}

# server_tls SVC DIR: the CA (<state>/ca) if missing and, in DIR, a server certificate
# server.crt/server.key (localhost, 127.0.0.1) of it for the service SVC, on first start; kept
# afterwards (also when the CA was made by mqtt_tls before).
server_tls() {
  local svc=$1 tls=$2 ca=$STATE_DIR/ca bin
  if [[ -f $ca/ca.crt && -f $tls/server.crt && -f $tls/server.key ]]; then
    return 0
  fi
  mkdir -p "$tls"
  if [[ ${IOTPIPE_CA_TOOL:-} == openssl ]] || { ! find_go >/dev/null && [[ ! -x $REPO_ROOT/bin/iotpipe ]]; }; then
    mqtt_tls_openssl "$ca" "$tls"
    rm -f "$tls/iotpipe-bridge.crt" "$tls/iotpipe-bridge.key"
    return 0
  fi
  bin=$(iotpipe_bin)
  if [[ ! -f $ca/ca.crt ]]; then
    "${DAEMON_ENV[@]}" "$bin" ca init --ca-dir "$ca" --cn "iotpipe local CA" >&2 || die "$svc: iotpipe ca init failed"
  fi
  "${DAEMON_ENV[@]}" "$bin" ca server --ca-dir "$ca" --dns localhost --ip "$HOST" --out "$tls" --name server >&2 \
    || die "$svc: iotpipe ca server failed"
  say "$svc: made its TLS server certificate in $tls"
}

# ACL_MARKER starts the part of the ACL file that `iotpipe devices` rewrites (devices denied
# everything: disabled or revoked); it is kept when the file is regenerated. Same text as
# registry.ACLMarker.
ACL_MARKER='# --- iotpipe: devices denied everything (disabled or revoked); written by iotpipe devices, do not edit below ---'

configure_mqtt() {
  local d=$STATE_DIR/mqtt tmp denied=""
  mkdir -p "$d/data" "$d/logs"
  mqtt_tls
  tmp=$(mktemp "$d/passwd.XXXXXX")
  mosquitto_passwd -b "$tmp" "$MQTT_USER" "$MQTT_PASS" >/dev/null 2>&1 \
    || { rm -f "$tmp"; die "mosquitto_passwd failed"; }
  mosquitto_passwd -b "$tmp" "$MQTT_DEVICE_USER" "$MQTT_DEVICE_PASS" >/dev/null 2>&1 \
    || { rm -f "$tmp"; die "mosquitto_passwd failed"; }
  chmod 600 "$tmp"
  mv -f "$tmp" "$d/passwd"
  if [[ -f $d/acl ]]; then
    denied=$(awk -v m="$ACL_MARKER" 'found {print} $0 == m {found = 1}' "$d/acl")
  fi
  cat >"$d/acl" <<EOF
# Generated by scripts/services.sh; rewritten on every start (the deny section at the end is kept).
#
# Password users, on the plaintext listener ($MQTT_PORT): for clients without certificates and
# for the tests that predate mutual TLS.
# Bridge / services: everything (and the broker's \$SYS tree, used by the readiness check).
user $MQTT_USER
topic readwrite #
topic read \$SYS/#

# Devices without certificates: publish telemetry only (any device id: no identity binding).
user $MQTT_DEVICE_USER
topic write devices/#

# Certificate identities, on the TLS listener ($MQTT_TLS_PORT): the user name is the
# certificate's CN. The bridge reads every device's topics.
user iotpipe-bridge
topic read devices/#
topic read \$SYS/#

# The API's relay (CN iotpipe-api) publishes configurations and shadow answers to devices.
user iotpipe-api
topic write devices/+/config
topic write devices/+/shadow/update/delta
topic write devices/+/shadow/update/accepted
topic write devices/+/shadow/update/rejected
topic write devices/+/shadow/get/accepted

# Every device (CN = device id = %u) writes only the topics a device uses, under its own id
# (telemetry, shadow reports and shadow requests), and reads only its own configuration and
# shadow topics.
pattern write devices/%u/telemetry
pattern write devices/%u/shadow/update
pattern write devices/%u/shadow/get
# Tests only (compose's deploy/mosquitto/acl has no such line): concurrent test runs on this one
# broker keep apart by a level after the device id, devices/<CN>/<run>/telemetry.
pattern write devices/%u/+/telemetry
pattern read devices/%u/config
pattern read devices/%u/shadow/#

$ACL_MARKER
$denied
EOF
  chmod 600 "$d/acl" # Mosquitto 2.0.13+ warns about a world-readable ACL file
  cat >"$d/mosquitto.conf" <<EOF
# Generated by scripts/services.sh; rewritten on every start.
per_listener_settings false
# Stay the user that started us (root would otherwise switch to "mosquitto", which then cannot
# write the state dir).
user $(id -un)

# Plaintext with passwords: for clients without certificates and the legacy tests.
listener $MQTT_PORT $HOST

# Mutual TLS: a client certificate signed by the local CA is required; its CN is the MQTT user
# name, which the ACL patterns bind to devices/<CN>/...; revoked certificates are in the CRL,
# which the broker rereads on SIGHUP (iotpipe devices revoke sends it). TLS 1.2 at least.
listener $MQTT_TLS_PORT $HOST
cafile $STATE_DIR/ca/ca.crt
certfile $d/tls/server.crt
keyfile $d/tls/server.key
crlfile $STATE_DIR/ca/crl.pem
require_certificate true
use_identity_as_username true
tls_version tlsv1.2

allow_anonymous false
password_file $d/passwd
acl_file $d/acl

persistence true
persistence_location $d/data/
persistence_file mosquitto.db
# Also saved on a clean shutdown (SIGTERM), which is what "down" sends.
autosave_interval 60

max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 100
set_tcp_nodelay true

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
}

# mqtt_reload_running: a Mosquitto of an older checkout still running gets this checkout's ACL
# (e.g. narrower device topics): the files are rewritten and, when the ACL or the configuration
# changed, the broker rereads them on SIGHUP (the ACL and password files are reloaded that way;
# a changed listener needs `down` and `up`).
mqtt_reload_running() {
  local pid=$1 before after
  before=$(cat "$STATE_DIR/mqtt/acl" "$STATE_DIR/mqtt/mosquitto.conf" 2>/dev/null | sha256sum)
  configure_mqtt
  after=$(cat "$STATE_DIR/mqtt/acl" "$STATE_DIR/mqtt/mosquitto.conf" 2>/dev/null | sha256sum)
  if [[ $before != "$after" ]]; then
    say "mqtt: the ACL or configuration of the running broker (pid $pid) changed; reloading it (SIGHUP)"
    kill -HUP "$pid"
  fi
}

start_mqtt() {
  require_free_ports mqtt "$MQTT_PORT" "$MQTT_TLS_PORT"
  configure_mqtt
  launch mqtt "$(svc_log mqtt)" "$(mosquitto_bin)" -c "$STATE_DIR/mqtt/mosquitto.conf" \
    || fail_start mqtt "could not launch mosquitto"
}

ready_mqtt() {
  # A real MQTT round trip: the retained $SYS version message, on the plaintext listener with
  # the service password, then on the TLS listener with the bridge's certificate.
  # shellcheck disable=SC2016 # a literal MQTT topic
  timeout 10 mosquitto_sub -h "$HOST" -p "$MQTT_PORT" -u "$MQTT_USER" -P "$MQTT_PASS" \
    -i "iotpipe-services-check-$$" -t '$SYS/broker/version' -C 1 -W 3 >/dev/null 2>&1 || return 1
  # shellcheck disable=SC2016 # a literal MQTT topic
  timeout 10 mosquitto_sub -h "$HOST" -p "$MQTT_TLS_PORT" --cafile "$STATE_DIR/ca/ca.crt" \
    --cert "$STATE_DIR/mqtt/tls/iotpipe-bridge.crt" --key "$STATE_DIR/mqtt/tls/iotpipe-bridge.key" \
    -i "iotpipe-services-tls-check-$$" -t '$SYS/broker/version' -C 1 -W 3 >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# kafka security: every client listener is SASL_SSL (SCRAM-SHA-512) with a server certificate from
# the project's CA; the controller listener is SASL_SSL with PLAIN for the quorum's own user; KRaft's
# StandardAuthorizer denies what no ACL allows; admin (clients) and controller (quorum) are the super
# users. IOTPIPE_KAFKA_SECURITY=plaintext (for a private broker of the PLAINTEXT-vs-SASL_SSL benchmark
# only) runs the old PLAINTEXT listeners without authorisation.
KAFKA_SECURITY=${IOTPIPE_KAFKA_SECURITY:-sasl_ssl}
# IOTPIPE_KAFKA_PLAINTEXT_PORT (single node, SASL_SSL only): a second client listener, PLAINTEXT, on the
# same broker, for the private broker of the SASL_SSL-vs-PLAINTEXT benchmark only (both transports warm
# in one JVM). Its clients are User:ANONYMOUS, allowed only what an ACL grants (nothing by default).
KAFKA_PLAINTEXT_PORT=${IOTPIPE_KAFKA_PLAINTEXT_PORT:-}

kafka_secure() { [[ $KAFKA_SECURITY == sasl_ssl ]]; }

# kafka_tls: on first start, the brokers' key material in <state>/kafka/tls: server.crt/.key issued by
# the project's CA (<state>/ca, made as for Mosquitto) for localhost and $HOST, and server.pem (key +
# certificate, 0600), the PEM key store Kafka reads.
kafka_tls() {
  local ca=$STATE_DIR/ca tls=$STATE_DIR/kafka/tls bin
  if [[ -f $tls/server.pem && -f $ca/ca.crt ]]; then return 0; fi
  mqtt_tls # the CA (and the broker's files), made once for every service
  mkdir -p "$tls"
  if [[ -x $REPO_ROOT/bin/iotpipe ]] || find_go >/dev/null; then
    bin=$(iotpipe_bin)
    "${DAEMON_ENV[@]}" "$bin" ca server --ca-dir "$ca" --dns localhost --ip "$HOST" --out "$tls" --name server >&2 \
      || die "kafka: iotpipe ca server failed"
  else
    command -v openssl >/dev/null || die "kafka: neither Go (to build bin/iotpipe) nor openssl is available to make the brokers' certificate"
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/server.key" 2>/dev/null) \
      || die "kafka: openssl: server key"
    openssl req -new -key "$tls/server.key" -subj "/CN=localhost" 2>/dev/null \
      | openssl x509 -req -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 \
        -extfile <(printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:%s\n' "$HOST") \
        -out "$tls/server.crt" 2>/dev/null || die "kafka: openssl: server certificate"
  fi
  (umask 077 && cat "$tls/server.key" "$tls/server.crt" >"$tls/server.pem.tmp" && mv -f "$tls/server.pem.tmp" "$tls/server.pem")
}

# kafka_listener_props PORT CPORT: the listener, TLS, SASL and authorizer settings of a node.
kafka_listener_props() {
  local port=$1 cport=$2
  if ! kafka_secure; then
    cat <<EOF
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
    return 0
  fi
  local plain='' plainmap=''
  if [[ -n $KAFKA_PLAINTEXT_PORT ]]; then
    plain=",PLAINTEXT://$HOST:$KAFKA_PLAINTEXT_PORT" plainmap=",PLAINTEXT:PLAINTEXT"
  fi
  cat <<EOF
# Clients and brokers: SASL_SSL with SCRAM-SHA-512; the controller quorum: SASL_SSL with PLAIN.
listeners=SASL_SSL://$HOST:$port,CONTROLLER://$HOST:$cport$plain
advertised.listeners=SASL_SSL://$HOST:$port$plain
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL$plainmap
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
# PLAIN (over TLS) knows the admin only: for kcat, whose librdkafka 2.0.2 fails SCRAM against Kafka
# 4.1, and to check iotpipe's PLAIN support against a real broker. Every stage principal is SCRAM.
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASS";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASS" user_$KAFKA_ADMIN_USER="$KAFKA_ADMIN_PASS";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$KAFKA_CONTROLLER_USER" password="$KAFKA_CONTROLLER_PASS" user_$KAFKA_CONTROLLER_USER="$KAFKA_CONTROLLER_PASS";
ssl.keystore.type=PEM
ssl.keystore.location=$STATE_DIR/kafka/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$STATE_DIR/ca/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$KAFKA_ADMIN_USER;User:$KAFKA_CONTROLLER_USER
EOF
}

# kafka_format_args: the SCRAM credentials bootstrapped at storage format (KIP-900).
kafka_format_args() {
  if kafka_secure; then
    printf '%s\0' --add-scram "SCRAM-SHA-512=[name=\"$KAFKA_ADMIN_USER\",password=\"$KAFKA_ADMIN_PASS\"]"
  fi
}

# kafka_check_format DIR: a node's data formatted for another security mode (a PLAINTEXT cluster of an
# older checkout has no SCRAM credentials, so its brokers could never authenticate to each other) is
# formatted again: the data of these loopback services is test and demo data.
kafka_check_format() {
  local d=$1 have
  [[ -f $d/data/meta.properties ]] || return 0
  have=$(cat "$d/security" 2>/dev/null || echo plaintext)
  [[ $have == "$KAFKA_SECURITY" ]] && return 0
  say "kafka: $d was formatted for $have, now $KAFKA_SECURITY (IOTPIPE_KAFKA_SECURITY); deleting its data and formatting it again"
  rm -rf "$d/data"
  mkdir -p "$d/data"
}

# kafka_admin_props: <state>/kafka/admin.properties (0600), the admin's client settings for Kafka's
# own tools (--command-config). librdkafka 2.0.2 (Debian's kcat) fails SCRAM against Kafka 4.1 with
# the right password, so readiness uses Kafka's ConfigCommand instead of kcat.
kafka_admin_props() {
  local f=$STATE_DIR/kafka/admin.properties
  mkdir -p "$STATE_DIR/kafka"
  (umask 077 && cat >"$f.tmp" <<EOF && mv -f "$f.tmp" "$f")
# Generated by scripts/services.sh: the super user's client settings, for Kafka's tools (--command-config).
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASS";
ssl.truststore.type=PEM
ssl.truststore.location=$STATE_DIR/ca/ca.crt
EOF
  cat >"$STATE_DIR/kafka/tool-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="ERROR"><Appenders><Console name="E" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console></Appenders>
<Loggers><Root level="ERROR"><AppenderRef ref="E"/></Root></Loggers></Configuration>
EOF
}

# kafka_brokers_seen ADDR: the "Dynamic configs for broker N" lines of a describe through ADDR: a
# real round trip over the client listener as the admin (a broker is listed once it is unfenced).
kafka_brokers_seen() {
  if ! kafka_secure; then
    timeout 10 kcat -b "$1" -L -m 3 2>/dev/null | sed -n 's/^ *broker \([0-9]*\) at .*/Dynamic configs for broker \1 are:/p'
    return 0
  fi
  [[ -f $STATE_DIR/kafka/admin.properties ]] || kafka_admin_props
  local a
  for a in ${1//,/ }; do # a JVM per probe is costly: only once every broker accepts connections
    (exec 3<>"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null || return 1
  done
  timeout 20 java -Xms32m -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    "-Dlog4j2.configurationFile=$STATE_DIR/kafka/tool-log4j2.xml" -cp "$INSTALL_DIR/kafka/libs/*" \
    kafka.admin.ConfigCommand --bootstrap-server "$1" --command-config "$STATE_DIR/kafka/admin.properties" \
    --describe --entity-type brokers 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# kafka: Apache Kafka, KRaft, one combined broker+controller node

KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml

java_major() {
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
  echo "${v%%.*}"
}

install_kafka() {
  local d=$INSTALL_DIR/kafka libs marker want have
  kafka_check_layout
  libs=$d/libs
  marker=$libs/.installed
  apt_install kcat
  if ! command -v java >/dev/null || (($(java_major) < 17)); then
    apt_install openjdk-17-jre-headless
  fi
  command -v java >/dev/null || die "java not found"
  (($(java_major) >= 17)) || die "Kafka $KAFKA_VERSION needs Java >= 17 (java on PATH is $(java_major))"
  # The marker holds the pom's content hash, so that every checkout sharing IOTPIPE_INSTALL_DIR
  # agrees on it. Older markers ("kafka <version> <hash>", no "pom-sha256:") hashed the pom's path
  # too, so each other checkout deleted and fetched the jars again under running brokers: such a
  # marker of the same Kafka version, with its jar in place, counts as installed.
  want="kafka $KAFKA_VERSION pom-sha256:$(sha256sum <"$KAFKA_POM" | cut -c1-16)"
  have=$(cat "$marker" 2>/dev/null || true)
  if [[ $have == "$want" ]]; then
    return 0
  fi
  if [[ $have == "kafka $KAFKA_VERSION "* && $have != *pom-sha256:* && -f $libs/kafka_2.13-$KAFKA_VERSION.jar ]]; then
    return 0
  fi
  command -v mvn >/dev/null || apt_install maven
  say "installing Kafka $KAFKA_VERSION jars (mvn dependency:copy-dependencies)..."
  rm -rf "$libs"
  mkdir -p "$libs"
  if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >"$d/mvn.log" 2>&1; then
    tail -n 20 "$d/mvn.log" >&2
    die "kafka: mvn could not fetch the Kafka jars (log: $d/mvn.log)"
  fi
  [[ -f $libs/kafka_2.13-$KAFKA_VERSION.jar ]] || die "kafka: kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
  echo "$want" >"$marker"
}

configure_kafka() {
  local d=$STATE_DIR/kafka
  mkdir -p "$d/data" "$d/logs"
  if kafka_secure; then kafka_tls; kafka_admin_props; fi
  cat >"$d/server.properties" <<EOF
# Generated by scripts/services.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
# Static single-voter quorum: the voter is taken from this file on every start, so changing
# the controller port later does not clash with the endpoint recorded at format time.
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
$(kafka_listener_props "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
log.dirs=$d/data

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Share groups stay off (no share.version feature at format time); classic and consumer
# (KIP-848) group protocols are on.
group.coordinator.rebalance.protocols=classic,consumer

num.network.threads=3
num.io.threads=4
log.retention.hours=168
log.segment.bytes=268435456
EOF
  kafka_log4j2 "$d/log4j2.xml"
}

# kafka_log4j2 FILE: the broker's logging configuration (everything to stdout, appended by launch()
# to the node's logs/server.log).
kafka_log4j2() {
  cat >"$1" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/services.sh. Everything goes to stdout, which is appended to logs/server.log. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d{ISO8601}] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel$" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log.LogCleaner" level="WARN"/>
  </Loggers>
</Configuration>
EOF
}

kafka_java() { # MAIN_CLASS ARGS...: the JVM command line for a Kafka main class
  kafka_java_in "$STATE_DIR/kafka" "${IOTPIPE_KAFKA_HEAP:-768m}" "$@"
}

kafka_java_in() { # DIR HEAP MAIN_CLASS ARGS...: same, for the node whose files are in DIR
  local d=$1 heap=$2
  shift 2
  printf '%s\0' "$(command -v java)" -Xms256m "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$d/log4j2.xml" "-Dkafka.logs.dir=$d/logs" \
    -cp "$INSTALL_DIR/kafka/libs/*" "$@"
}

kafka_cluster_id() { # [FILE]
  local f=${1:-$STATE_DIR/kafka/cluster.id} id
  if [[ ! -s $f ]]; then
    # Same shape as `kafka-storage random-uuid`: 16 random bytes, URL-safe base64, no padding,
    # not starting with '-'.
    while :; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
      [[ $id != -* ]] && break
    done
    echo "$id" >"$f"
  fi
  cat "$f"
}

start_kafka() {
  local d=$STATE_DIR/kafka cmd=()
  require_free_ports kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" ${KAFKA_PLAINTEXT_PORT:+"$KAFKA_PLAINTEXT_PORT"}
  configure_kafka
  kafka_check_format "$d"
  if [[ ! -f $d/data/meta.properties ]]; then
    say "formatting Kafka storage (KRaft, $KAFKA_SECURITY)..."
    mapfile -d '' cmd < <(kafka_java kafka.tools.StorageTool format -t "$(kafka_cluster_id)" -c "$d/server.properties")
    mapfile -d '' -O "${#cmd[@]}" cmd < <(kafka_format_args)
    if ! "${DAEMON_ENV[@]}" "${cmd[@]}" >>"$d/logs/server.log" 2>&1; then
      fail_start kafka "kafka-storage format failed"
    fi
    echo "$KAFKA_SECURITY" >"$d/security"
  fi
  mapfile -d '' cmd < <(kafka_java kafka.Kafka "$d/server.properties")
  launch kafka "$(svc_log kafka)" "${cmd[@]}" || fail_start kafka "could not launch java"
}

ready_kafka() {
  # A real metadata round trip: the broker must list itself on the advertised listener.
  local out
  if kafka_multi; then ready_kafka_cluster; return; fi
  out=$(kafka_brokers_seen "$HOST:$KAFKA_PORT") || return 1
  [[ $out == *"Dynamic configs for broker 1 are:"* ]]
}

# ---------------------------------------------------------------------------------------------
# kafka as a cluster (IOTPIPE_KAFKA_NODES > 1): N combined broker+controller nodes with a static
# controller quorum. Node i lives in <state>/kafka/node-i and is the pseudo-service "kafka-i" for
# the process tracking above (pid, tag, log, port); "kafka" stands for the whole cluster.

KAFKA_N=1 KAFKA_NODE_PORTS=() KAFKA_NODE_CPORTS=() KAFKA_STARTED=()

# kafka_layout VERB: the node count and each node's ports. A cluster started by `up` keeps its
# node count (<state>/kafka/nodes) for the other commands until `down kafka`.
kafka_layout() {
  local verb=$1 want=${IOTPIPE_KAFKA_NODES:-1} rec=$STATE_DIR/kafka/nodes have="" i p all=()
  [[ $want =~ ^[1-9]$ ]] || die "IOTPIPE_KAFKA_NODES=$want: want a node count from 1 to 9 (3 for a failover cluster)"
  if [[ -s $rec ]]; then have=$(cat "$rec"); fi
  KAFKA_N=$want
  if [[ $have =~ ^[1-9]$ && $have != "$want" && $verb != up && $verb != start ]]; then
    KAFKA_N=$have
  fi
  ((KAFKA_N > 1)) || return 0
  if [[ -n ${IOTPIPE_KAFKA_PORTS:-} ]]; then
    IFS=, read -r -a KAFKA_NODE_PORTS <<<"$IOTPIPE_KAFKA_PORTS"
  else
    for ((i = 0; i < KAFKA_N; i++)); do KAFKA_NODE_PORTS+=("$((KAFKA_PORT + 2 * i))"); done
  fi
  if [[ -n ${IOTPIPE_KAFKA_CONTROLLER_PORTS:-} ]]; then
    IFS=, read -r -a KAFKA_NODE_CPORTS <<<"$IOTPIPE_KAFKA_CONTROLLER_PORTS"
  else
    for ((i = 0; i < KAFKA_N; i++)); do KAFKA_NODE_CPORTS+=("$((KAFKA_CONTROLLER_PORT + 2 * i))"); done
  fi
  ((${#KAFKA_NODE_PORTS[@]} == KAFKA_N)) \
    || die "IOTPIPE_KAFKA_PORTS=${IOTPIPE_KAFKA_PORTS:-} lists ${#KAFKA_NODE_PORTS[@]} ports; IOTPIPE_KAFKA_NODES=$KAFKA_N needs $KAFKA_N"
  ((${#KAFKA_NODE_CPORTS[@]} == KAFKA_N)) \
    || die "IOTPIPE_KAFKA_CONTROLLER_PORTS=${IOTPIPE_KAFKA_CONTROLLER_PORTS:-} lists ${#KAFKA_NODE_CPORTS[@]} ports; IOTPIPE_KAFKA_NODES=$KAFKA_N needs $KAFKA_N"
  for p in "${KAFKA_NODE_PORTS[@]}"; do check_port_value IOTPIPE_KAFKA_PORTS "$p"; done
  for p in "${KAFKA_NODE_CPORTS[@]}"; do check_port_value IOTPIPE_KAFKA_CONTROLLER_PORTS "$p"; done
  for p in "${KAFKA_NODE_PORTS[@]}" "${KAFKA_NODE_CPORTS[@]}"; do
    [[ " ${all[*]} " != *" $p "* ]] || die "kafka cluster: port $p is used twice (node i uses IOTPIPE_KAFKA_PORT+2(i-1) and IOTPIPE_KAFKA_CONTROLLER_PORT+2(i-1), or the lists IOTPIPE_KAFKA_PORTS / IOTPIPE_KAFKA_CONTROLLER_PORTS)"
    all+=("$p")
  done
}

kafka_multi() { ((KAFKA_N > 1)); }
kafka_node_dir() { printf '%s/kafka/node-%s' "$STATE_DIR" "$1"; }
kafka_node_port() { echo "${KAFKA_NODE_PORTS[$1 - 1]}"; }
kafka_node_cport() { echo "${KAFKA_NODE_CPORTS[$1 - 1]}"; }

# kafka_brokers: the bootstrap list, host:port,... (one broker unless a cluster).
kafka_brokers() {
  local i out=""
  if ! kafka_multi; then
    echo "$HOST:$KAFKA_PORT"
    return 0
  fi
  for ((i = 1; i <= KAFKA_N; i++)); do out+="${out:+,}$HOST:$(kafka_node_port "$i")"; done
  echo "$out"
}

# kafka_cluster_pids: the pids of all nodes; fails when one is not running.
kafka_cluster_pids() {
  local i pid pids=()
  for ((i = 1; i <= KAFKA_N; i++)); do
    pid=$(svc_pid "kafka-$i" 2>/dev/null) || return 1
    pids+=("$pid")
  done
  echo "${pids[*]}"
}

# kafka_cluster_log: the log to show when the cluster fails: the first node not running, else node 1.
kafka_cluster_log() {
  local i
  for ((i = 1; i <= KAFKA_N; i++)); do
    svc_running "kafka-$i" || { svc_log "kafka-$i"; return 0; }
  done
  svc_log kafka-1
}

# kafka_check_layout: refuse to start a layout over a running one of another shape.
kafka_check_layout() {
  local rec=$STATE_DIR/kafka/nodes have i pid
  if kafka_multi && [[ -f $STATE_DIR/kafka/pid ]] \
    && pid_is_ours "$(head -n1 "$STATE_DIR/kafka/pid" | tr -dc '0-9')" "$STATE_DIR/kafka/server.properties"; then
    die "kafka: a single-node Kafka runs in $STATE_DIR; stop it first ($0 down kafka) to start IOTPIPE_KAFKA_NODES=$KAFKA_N"
  fi
  [[ -s $rec ]] || return 0
  have=$(cat "$rec")
  [[ $have != "$KAFKA_N" ]] || return 0
  for ((i = 1; i <= have; i++)); do
    pid=$(head -n1 "$(kafka_node_dir "$i")/pid" 2>/dev/null | tr -dc '0-9') || continue
    if pid_is_ours "$pid" "$(kafka_node_dir "$i")/server.properties"; then
      die "kafka runs as a cluster of $have nodes in $STATE_DIR; set IOTPIPE_KAFKA_NODES=$have, or stop it first ($0 down kafka)"
    fi
  done
}

configure_kafka_node() { # NODE
  local i=$1 d rf misr voters="" j
  d=$(kafka_node_dir "$i")
  mkdir -p "$d/data" "$d/logs"
  if kafka_secure; then kafka_tls; kafka_admin_props; fi
  rf=$((KAFKA_N < 3 ? KAFKA_N : 3))
  misr=$((rf >= 3 ? 2 : 1))
  for ((j = 1; j <= KAFKA_N; j++)); do voters+="${voters:+,}$j@$HOST:$(kafka_node_cport "$j")"; done
  cat >"$d/server.properties" <<EOF
# Generated by scripts/services.sh; rewritten on every start. Node $i of a $KAFKA_N-node KRaft cluster.
process.roles=broker,controller
node.id=$i
# Static quorum of every node's controller, taken from this file on every start.
controller.quorum.voters=$voters
$(kafka_listener_props "$(kafka_node_port "$i")" "$(kafka_node_cport "$i")")
log.dirs=$d/data

# Every topic survives one broker failure without losing an acknowledged (acks=all) record:
# rf $rf, min.insync.replicas $misr, and no out-of-sync replica ever becomes leader.
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$misr
unclean.leader.election.enable=false
auto.create.topics.enable=false
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$misr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$misr
group.initial.rebalance.delay.ms=0
group.coordinator.rebalance.protocols=classic,consumer

# Sized for $KAFKA_N nodes sharing a small (2-core) machine.
num.network.threads=2
num.io.threads=2
background.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=268435456
EOF
  kafka_log4j2 "$d/log4j2.xml"
}

start_kafka_node() { # NODE
  local i=$1 d cmd=() heap=${IOTPIPE_KAFKA_HEAP:-512m}
  d=$(kafka_node_dir "$i")
  require_free_ports "kafka-$i" "$(kafka_node_port "$i")" "$(kafka_node_cport "$i")"
  configure_kafka_node "$i"
  KAFKA_STARTED+=("$i")
  kafka_check_format "$d"
  if [[ ! -f $d/data/meta.properties ]]; then
    say "formatting Kafka storage of node $i (KRaft, $KAFKA_SECURITY)..."
    mapfile -d '' cmd < <(kafka_java_in "$d" "$heap" kafka.tools.StorageTool format \
      -t "$(kafka_cluster_id "$STATE_DIR/kafka/cluster-$KAFKA_N.id")" -c "$d/server.properties")
    mapfile -d '' -O "${#cmd[@]}" cmd < <(kafka_format_args)
    if ! "${DAEMON_ENV[@]}" "${cmd[@]}" >>"$d/logs/server.log" 2>&1; then
      fail_start "kafka-$i" "kafka-storage format failed"
    fi
    echo "$KAFKA_SECURITY" >"$d/security"
  fi
  mapfile -d '' cmd < <(kafka_java_in "$d" "$heap" kafka.Kafka "$d/server.properties")
  launch "kafka-$i" "$(svc_log "kafka-$i")" "${cmd[@]}" || fail_start "kafka-$i" "could not launch java"
  echo "$(kafka_node_port "$i") $(kafka_node_cport "$i")" >"$d/port"
}

# kafka_cluster_up: start the nodes that are not running (first start, or nodes that died); false
# when every node was running and the cluster answers already.
kafka_cluster_up() {
  local i pid have want pids=() down=()
  mkdir -p "$STATE_DIR/kafka"
  for ((i = 1; i <= KAFKA_N; i++)); do
    if pid=$(svc_pid "kafka-$i" 2>/dev/null); then
      have=$(cat "$(kafka_node_dir "$i")/port" 2>/dev/null || true)
      want="$(kafka_node_port "$i") $(kafka_node_cport "$i")"
      if [[ -n $have && $have != "$want" ]]; then
        die "kafka node $i is running on ports $have (broker controller) but $want are configured now; run: $0 down kafka"
      fi
      pids+=("$pid")
    else
      down+=("$i")
    fi
  done
  if ((${#down[@]} == 0)); then
    if ready_kafka_cluster; then
      say "kafka already running ($KAFKA_N nodes, pids ${pids[*]}, $(kafka_brokers))"
      return 1
    fi
    say "kafka running ($KAFKA_N nodes, pids ${pids[*]}) but not every broker answers yet; waiting"
    return 0
  fi
  echo "$KAFKA_N" >"$STATE_DIR/kafka/nodes"
  for i in "${down[@]}"; do
    say "starting kafka node $i of $KAFKA_N on $HOST:$(kafka_node_port "$i") (controller $(kafka_node_cport "$i"))..."
    start_kafka_node "$i"
  done
  return 0
}

# ready_kafka_cluster: every node answers a metadata request that lists all N brokers on their
# advertised listeners (a broker is listed once the controller has unfenced it).
ready_kafka_cluster() {
  local i j out
  if kafka_secure; then
    # One admin round trip through all brokers (each accepts connections, see kafka_brokers_seen)
    # that lists every broker as registered and unfenced.
    out=$(kafka_brokers_seen "$(kafka_brokers)") || return 1
    for ((j = 1; j <= KAFKA_N; j++)); do
      [[ $out == *"Dynamic configs for broker $j are:"* ]] || return 1
    done
    return 0
  fi
  for ((i = 1; i <= KAFKA_N; i++)); do
    out=$(kafka_brokers_seen "$HOST:$(kafka_node_port "$i")") || return 1
    for ((j = 1; j <= KAFKA_N; j++)); do
      [[ $out == *"Dynamic configs for broker $j are:"* ]] || return 1
    done
  done
}

# kafka_stop_nodes TIMEOUT NODE...: SIGTERM the running ones together (a controlled shutdown needs
# the controller quorum, which stays up until their brokers are done), SIGKILL after TIMEOUT seconds.
kafka_stop_nodes() {
  local timeout=$1 i pid deadline left
  shift
  local -A pids=()
  for i in "$@"; do
    pid=$(svc_pid "kafka-$i" 2>/dev/null) || continue
    pids[$i]=$pid
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$(($(now) + timeout))
  while :; do
    left=()
    for i in "${!pids[@]}"; do
      pid_is_ours "${pids[$i]}" "$(svc_tag "kafka-$i")" && left+=("$i")
    done
    ((${#left[@]})) || break
    if (($(now) >= deadline)); then
      say "kafka nodes ${left[*]} did not stop within ${timeout}s, sending SIGKILL"
      for i in "${left[@]}"; do kill -KILL -- "-${pids[$i]}" 2>/dev/null || kill -KILL "${pids[$i]}" 2>/dev/null || true; done
      timeout=10 deadline=$(($(now) + 10))
      while (($(now) < deadline)); do
        left=()
        for i in "${!pids[@]}"; do pid_is_ours "${pids[$i]}" "$(svc_tag "kafka-$i")" && left+=("$i"); done
        ((${#left[@]})) || break
        sleep 0.1
      done
      break
    fi
    sleep 0.2
  done
  for i in "$@"; do rm -f "$(kafka_node_dir "$i")/pid" "$(kafka_node_dir "$i")/port"; done
}

kafka_cluster_down() {
  local i pids nodes=()
  for ((i = 1; i <= KAFKA_N; i++)); do nodes+=("$i"); done
  pids=$(for i in "${nodes[@]}"; do svc_pid "kafka-$i" 2>/dev/null || true; done | xargs)
  if [[ -z $pids ]]; then
    say "kafka not running ($KAFKA_N nodes)"
  else
    say "stopping kafka ($KAFKA_N nodes, pids $pids)..."
    kafka_stop_nodes 60 "${nodes[@]}"
    say "kafka stopped"
  fi
  rm -f "$STATE_DIR/kafka/nodes"
}

# kafka_cluster_status: one line for the cluster, then one per node; false unless all run.
kafka_cluster_status() {
  local i pid n=0 lines=() port
  for ((i = 1; i <= KAFKA_N; i++)); do
    if pid=$(svc_pid "kafka-$i" 2>/dev/null); then
      n=$((n + 1))
      port=$(cat "$(kafka_node_dir "$i")/port" 2>/dev/null || echo "$(kafka_node_port "$i") $(kafka_node_cport "$i")")
      lines+=("$(printf '  %-7s running  pid %-8s %s:%s (controller %s)' "kafka-$i" "$pid" "$HOST" "${port% *}" "${port#* }")")
    else
      lines+=("$(printf '  %-7s stopped' "kafka-$i")")
    fi
  done
  if ((n == KAFKA_N)); then
    printf '%-9s running  %d/%d nodes\n' kafka "$n" "$KAFKA_N"
  elif ((n == 0)); then
    printf '%-9s stopped  (%d nodes)\n' kafka "$KAFKA_N"
  else
    printf '%-9s degraded %d/%d nodes running\n' kafka "$n" "$KAFKA_N"
  fi
  printf '%s\n' "${lines[@]}"
  ((n == KAFKA_N))
}

# ---------------------------------------------------------------------------------------------
# postgres: PostgreSQL (Debian package), run as the postgres user in a data dir of our own

PG_BIN="" PG_BASE="" PG_DATA="" PG_RUN="" PG_LOG=""

pg_find_bin() {
  local b best="" v
  for b in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x $b ]] || continue
    v=$(basename "$(dirname "$(dirname "$b")")")
    if ! [[ $v =~ ^[0-9]+$ ]] || ((v < PG_MIN_MAJOR)); then continue; fi
    if [[ -z $best ]] || ((v > best)); then best=$v; fi
  done
  [[ -n $best ]] || return 1
  PG_BIN=/usr/lib/postgresql/$best/bin
}

# pg_user_cmd CMD...: run as the postgres OS user (or as ourselves when not root).
as_pg() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pg_locate: decide (once, then remembered in <state>/postgres/base) where the PostgreSQL files
# live. Normally <state>/postgres; when the postgres user cannot reach the state dir (e.g. under
# /root with mode 700), or the socket path would be too long, /var/tmp/iotpipe-pg-<hash>.
pg_locate() {
  local rec=$STATE_DIR/postgres/base base
  if [[ -s $rec ]]; then
    base=$(cat "$rec")
  else
    base=$STATE_DIR/postgres
  fi
  PG_BASE=$base PG_DATA=$base/data PG_RUN=$base/run PG_LOG=$base/logs/postgresql.log
}

pg_choose_base() {
  local d=$STATE_DIR/postgres base sock
  mkdir -p "$d"
  if [[ -s $d/base ]]; then
    pg_locate
    return 0
  fi
  chmod 755 "$d"
  base=$d
  sock="$d/run/.s.PGSQL.$PG_PORT"
  if ((EUID == 0)) && ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
    base=/var/tmp/iotpipe-pg-$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-12)
    say "postgres: the postgres user cannot reach $STATE_DIR; using $base for its files"
  elif ((${#sock} > 100)); then
    base=/var/tmp/iotpipe-pg-$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-12)
    say "postgres: socket path under $STATE_DIR would be too long; using $base for its files"
  fi
  echo "$base" >"$d/base"
  pg_locate
}

# --- TimescaleDB ------------------------------------------------------------------------------
# The flavor of the local PostgreSQL is decided by `up` (pg_prepare_flavor) from
# IOTPIPE_PG_TIMESCALEDB: with TimescaleDB, its source release (IOTPIPE_TIMESCALEDB_ARCHIVE,
# checked against TIMESCALEDB_SHA256) is built once with the patches in scripts/timescaledb/
# against the headers of the exact PostgreSQL release that runs, cached in
# $INSTALL_DIR/timescaledb/<key> (key: TimescaleDB version and sha256, PostgreSQL release,
# patches, build flags), installed into PostgreSQL's lib and share folders (again whenever a file
# there is missing or differs, e.g. after the OS package was reinstalled) and preloaded. The
# flavor that runs is recorded in <state>/postgres/flavor; `env` exports it.

PG_FLAVOR="" PG_FLAVOR_NOTE=""
TSDB_PATCH_DIR=$SCRIPT_DIR/timescaledb
# A release build with the SQL surface of the official packages, without the regression and TAP
# test targets; telemetry is compiled in but off by default (no calls home from test machines);
# warnings are not errors (compilers other than upstream CI's); source paths in the binaries do
# not depend on the cache folder (@DIR@), so every build of the same inputs installs the same files.
TSDB_CMAKE_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF
  -DSEND_TELEMETRY_DEFAULT=OFF -DLINTER=OFF "-DCMAKE_C_FLAGS=-ffile-prefix-map=@DIR@=timescaledb-$TIMESCALEDB_VERSION")

pg_major() { basename "$(dirname "$PG_BIN")"; }
pg_pkglibdir() { "$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "$(dirname "$PG_BIN")/lib"; }

# pg_server_release: the release of the server binary, e.g. "15.18 (Debian 15.18-0+deb12u1)".
pg_server_release() { "$PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //'; }

# pg_headers_release: PG_VERSION of the server headers the build would compile against. (pg_config
# comes with the client package and reports the client's release, not the headers'.)
pg_headers_release() {
  local inc
  inc=$("$PG_BIN/pg_config" --includedir-server 2>/dev/null) || return 1
  [[ -f $inc/pg_config.h ]] || return 1
  sed -n 's/^#define PG_VERSION "\(.*\)"$/\1/p' "$inc/pg_config.h"
}

# tsdb_key: the cache folder name of a build for the running PostgreSQL release.
tsdb_key() {
  local rel inputs
  rel=$(pg_server_release | awk '{print $1}')
  inputs=$( (
    pg_server_release
    printf '%s\n' "${TSDB_CMAKE_FLAGS[@]}"
    cat "$TSDB_PATCH_DIR"/*.patch 2>/dev/null || true
  ) | sha256sum | cut -c1-10)
  printf '%s-%s-pg%s-%s' "$TIMESCALEDB_VERSION" "${TIMESCALEDB_SHA256:0:12}" "$rel" "$inputs"
}

# tsdb_build_deps: compiler, cmake, and the server headers of exactly the release that runs. The
# dev package of another minor release compiles an extension against other headers: built with
# 15.20's against a 15.18 server, TimescaleDB calls functions 15.18 does not have
# (heap_datum_check, DatumGetHeapTupleHeader) and does not load.
tsdb_build_deps() {
  local major pkgver want have
  apt_install cmake gcc make patch
  want=$(pg_server_release)
  have=$(pg_headers_release 2>/dev/null || true)
  [[ $have == "$want" ]] && return 0
  major=$(pg_major)
  pkgver=$(dpkg-query -W -f='${Version}' "postgresql-$major" 2>/dev/null) \
    || die "postgres: TimescaleDB needs the server headers of PostgreSQL $want, and the server is not from the Debian package postgresql-$major; install its headers (pg_config --includedir-server), or set IOTPIPE_PG_TIMESCALEDB=0"
  command -v apt-get >/dev/null || die "postgres: need postgresql-server-dev-$major=$pkgver but apt-get is not available"
  say "installing postgresql-server-dev-$major=$pkgver (apt; the headers of the PostgreSQL release that runs)..."
  if ((APT_UPDATED == 0)); then
    "${SUDO[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "postgresql-server-dev-$major=$pkgver" >&2 \
    || die "postgres: apt-get install postgresql-server-dev-$major=$pkgver failed: TimescaleDB is built against the headers of the PostgreSQL release that runs (if apt no longer has that release, upgrade the server: apt-get install postgresql-$major postgresql-server-dev-$major); IOTPIPE_PG_TIMESCALEDB=0 runs plain PostgreSQL"
  have=$(pg_headers_release 2>/dev/null || true)
  [[ $have == "$want" ]] || die "postgres: the server headers are PostgreSQL '$have' but the server is '$want'"
}

# tsdb_build DIR: build TimescaleDB from the archive into DIR/stage (a DESTDIR install tree).
tsdb_build() {
  local dir=$1 log=$1/build.log t0 got p jobs
  [[ -f $TIMESCALEDB_ARCHIVE ]] || die "postgres: TimescaleDB archive $TIMESCALEDB_ARCHIVE not found (IOTPIPE_TIMESCALEDB_ARCHIVE)"
  got=$(sha256sum "$TIMESCALEDB_ARCHIVE" | cut -d' ' -f1)
  [[ $got == "$TIMESCALEDB_SHA256" ]] \
    || die "postgres: $TIMESCALEDB_ARCHIVE has sha256 $got, expected $TIMESCALEDB_SHA256 (TimescaleDB $TIMESCALEDB_VERSION)"
  tsdb_build_deps
  t0=$(now)
  jobs=$(nproc 2>/dev/null || echo 2)
  say "building TimescaleDB $TIMESCALEDB_VERSION for PostgreSQL $(pg_server_release) ($jobs jobs; a few minutes, once; log: $log)..."
  rm -rf "$dir/src" "$dir/build" "$dir/stage"
  mkdir -p "$dir/src" "$dir/build"
  : >"$log"
  tar -xzf "$TIMESCALEDB_ARCHIVE" -C "$dir/src" --strip-components=1 >>"$log" 2>&1 \
    || die "postgres: unpacking $TIMESCALEDB_ARCHIVE failed (log: $log)"
  for p in "$TSDB_PATCH_DIR"/*.patch; do
    [[ -f $p ]] || continue
    printf '=== patch %s\n' "$p" >>"$log"
    patch -d "$dir/src" -p1 --forward --batch <"$p" >>"$log" 2>&1 \
      || die "postgres: patch $(basename "$p") does not apply to TimescaleDB $TIMESCALEDB_VERSION (log: $log)"
  done
  # In the daemons' clean environment: the caller's CC, CFLAGS, ... play no part.
  { "${DAEMON_ENV[@]}" cmake -S "$dir/src" -B "$dir/build" -DPG_CONFIG="$PG_BIN/pg_config" "${TSDB_CMAKE_FLAGS[@]//@DIR@/$dir}" \
    && "${DAEMON_ENV[@]}" cmake --build "$dir/build" -j "$jobs" \
    && "${DAEMON_ENV[@]}" make -C "$dir/build" install DESTDIR="$dir/stage"; } >>"$log" 2>&1 || {
    tail -n 20 "$log" >&2
    die "postgres: building TimescaleDB $TIMESCALEDB_VERSION failed (log: $log)"
  }
  [[ -f $dir/stage$(pg_pkglibdir)/timescaledb-tsl-$TIMESCALEDB_VERSION.so ]] \
    || die "postgres: the TimescaleDB build installed no timescaledb-tsl-$TIMESCALEDB_VERSION.so (log: $log)"
  # Only the install tree is kept; sources and objects are ~100 MB.
  rm -rf "$dir/src" "$dir/build"
  say "TimescaleDB $TIMESCALEDB_VERSION built in $(($(now) - t0))s"
}

# tsdb_install DIR: copy the staged files into PostgreSQL's folders where missing or different.
# Each file is replaced by a rename, never rewritten in place: a running server may have the old
# library mapped.
tsdb_install() {
  local stage=$1/stage f dst n=0
  while IFS= read -r -d '' f; do
    dst=/${f#./}
    cmp -s "$stage/$f" "$dst" && continue
    if ((n == 0)); then say "installing TimescaleDB $TIMESCALEDB_VERSION into $(pg_pkglibdir) and $("$PG_BIN/pg_config" --sharedir)/extension..."; fi
    n=$((n + 1))
    "${SUDO[@]}" install -D -m "$(stat -c %a "$stage/$f")" "$stage/$f" "$dst.iotpipe-new.$$" \
      && "${SUDO[@]}" mv -f "$dst.iotpipe-new.$$" "$dst" \
      || die "postgres: could not install $dst"
  done < <(cd "$stage" && find . -type f -print0)
  if ((n > 0)); then say "installed $n TimescaleDB files"; fi
}

# tsdb_ensure: build (once) and install TimescaleDB for the running PostgreSQL release.
# Returns 1 without building when neither the archive nor a cached build is there.
tsdb_ensure() {
  local dir old
  dir=$INSTALL_DIR/timescaledb/$(tsdb_key)
  mkdir -p "$INSTALL_DIR/timescaledb"
  # One build per install dir at a time (private test services share it); fd 8, closed after.
  exec 8>"$INSTALL_DIR/timescaledb/.lock"
  if ! flock -n 8; then
    say "waiting for another TimescaleDB build in $INSTALL_DIR/timescaledb..."
    flock -w 1800 8 || die "timed out waiting for the lock $INSTALL_DIR/timescaledb/.lock"
  fi
  if [[ ! -f $dir/built ]]; then
    if [[ ! -f $TIMESCALEDB_ARCHIVE ]]; then
      exec 8>&-
      return 1
    fi
    tsdb_build "$dir"
    date -u +%FT%TZ >"$dir/built"
    # Leftovers of interrupted builds (complete builds for other releases stay).
    for old in "$INSTALL_DIR"/timescaledb/*/; do
      [[ -f $old/built ]] || rm -rf "$old"
    done
  fi
  tsdb_install "$dir"
  exec 8>&-
}

# pg_prepare_flavor: decide PG_FLAVOR (timescaledb | postgres) and make TimescaleDB ready if needed.
pg_prepare_flavor() {
  case $PG_TIMESCALEDB in
    0)
      PG_FLAVOR=postgres PG_FLAVOR_NOTE="IOTPIPE_PG_TIMESCALEDB=0"
      say "postgres: plain PostgreSQL (IOTPIPE_PG_TIMESCALEDB=0)"
      ;;
    auto | 1)
      if tsdb_ensure; then
        PG_FLAVOR=timescaledb PG_FLAVOR_NOTE=""
      elif [[ $PG_TIMESCALEDB == 1 ]]; then
        die "postgres: IOTPIPE_PG_TIMESCALEDB=1 but the TimescaleDB archive $TIMESCALEDB_ARCHIVE is missing (IOTPIPE_TIMESCALEDB_ARCHIVE) and nothing is cached in $INSTALL_DIR/timescaledb"
      else
        PG_FLAVOR=postgres PG_FLAVOR_NOTE="no TimescaleDB archive at $TIMESCALEDB_ARCHIVE"
        tsdb_warn_plain
      fi
      ;;
    *) die "IOTPIPE_PG_TIMESCALEDB=$PG_TIMESCALEDB: expected auto, 1 or 0" ;;
  esac
}

tsdb_warn_plain() {
  say "############################################################################################"
  say "WARNING: PostgreSQL runs WITHOUT TimescaleDB: $PG_FLAVOR_NOTE"
  say "WARNING: hypertables, compression, retention and continuous aggregates are NOT exercised."
  say "WARNING: set IOTPIPE_TIMESCALEDB_ARCHIVE to timescaledb-$TIMESCALEDB_VERSION.tar.gz (sha256 ${TIMESCALEDB_SHA256:0:16}...)"
  say "WARNING: and restart PostgreSQL: scripts/services.sh down postgres && scripts/services.sh up postgres"
  say "############################################################################################"
}

# pg_write_flavor: record what the server is configured with (rewritten on every start).
pg_write_flavor() {
  local f=$STATE_DIR/postgres/flavor
  mkdir -p "$STATE_DIR/postgres"
  if [[ $PG_FLAVOR == timescaledb ]]; then
    printf 'flavor=timescaledb\nversion=%s\nnote=\n' "$TIMESCALEDB_VERSION" >"$f"
  else
    printf 'flavor=postgres\nversion=\nnote=%s\n' "$PG_FLAVOR_NOTE" >"$f"
  fi
}

# pg_env_lines: the flavor of the configured server, for `env` (IOTPIPE_PG_SERVER_FLAVOR is
# timescaledb or postgres; IOTPIPE_PG_TIMESCALEDB_VERSION the TimescaleDB release, empty on plain).
pg_env_lines() {
  local f=$STATE_DIR/postgres/flavor k v flavor="" version="" note=""
  if [[ -f $f ]]; then
    while IFS='=' read -r k v; do
      case $k in
        flavor) flavor=$v ;;
        version) version=$v ;;
        note) note=$v ;;
      esac
    done <"$f"
  elif [[ -n $PG_DATA && -f $PG_DATA/iotpipe.conf ]] && grep -q "^shared_preload_libraries = 'timescaledb'" "$PG_DATA/iotpipe.conf" 2>/dev/null; then
    flavor=timescaledb # started by an older services.sh: the version is not recorded
  elif [[ -n $PG_DATA && -f $PG_DATA/iotpipe.conf ]]; then
    flavor=postgres note="started without TimescaleDB"
  fi
  if [[ $flavor == postgres ]]; then
    say "WARNING: PostgreSQL runs WITHOUT TimescaleDB (${note:-plain flavor}); TimescaleDB paths are not tested"
  fi
  env_line IOTPIPE_PG_SERVER_FLAVOR "$flavor"
  env_line IOTPIPE_PG_TIMESCALEDB_VERSION "$version"
}

install_postgres() {
  if ! pg_find_bin; then
    apt_install postgresql postgresql-contrib
    pg_find_bin || die "postgres: no PostgreSQL >= $PG_MIN_MAJOR found under /usr/lib/postgresql after install"
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  if ((EUID == 0)) && ! id postgres >/dev/null 2>&1; then
    die "postgres: the 'postgres' OS user is missing (is the postgresql package installed?)"
  fi
  pg_prepare_flavor
  local running
  running=$(sed -n 's/^flavor=//p' "$STATE_DIR/postgres/flavor" 2>/dev/null || true)
  if svc_running postgres && [[ $running != "$PG_FLAVOR" ]]; then
    say "WARNING: postgres is running as ${running:-postgres} (started earlier) but $PG_FLAVOR is configured now;"
    say "WARNING: restart it to switch: $0 down postgres && $0 up postgres"
  fi
}

pg_init() {
  local pw
  pg_choose_base
  mkdir -p "$PG_BASE" "$PG_RUN" "$(dirname "$PG_LOG")"
  touch "$PG_LOG"
  if ((EUID == 0)); then
    # pg_ctl -l opens the log as the postgres user.
    chown postgres:postgres "$PG_BASE" "$PG_RUN" "$(dirname "$PG_LOG")" "$PG_LOG"
  fi
  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    say "initializing PostgreSQL cluster in $PG_DATA..."
    rm -rf "$PG_DATA"
    pw=$(mktemp "$PG_BASE/pwfile.XXXXXX")
    printf '%s\n' "$PG_SUPER_PASS" >"$pw"
    if ((EUID == 0)); then chown postgres "$pw"; fi
    if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1; then
      rm -f "$pw"
      fail_start postgres "initdb failed"
    fi
    rm -f "$pw"
    echo "include_if_exists = 'iotpipe.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
  fi
}

pg_configure() {
  local preload="" libdir
  [[ -n $PG_FLAVOR ]] || pg_prepare_flavor
  if [[ $PG_FLAVOR == timescaledb ]]; then
    libdir=$(pg_pkglibdir)
    if [[ ! -f $libdir/timescaledb.so ]]; then
      fail_start postgres "TimescaleDB is wanted but $libdir/timescaledb.so does not exist (install TimescaleDB for PostgreSQL $(pg_major))"
    fi
    # Background jobs (policies) run in worker processes: one launcher, one scheduler per
    # database, one per running job; tests run many schemas' jobs at once.
    preload="shared_preload_libraries = 'timescaledb'
max_worker_processes = 32
timescaledb.max_background_workers = 24"
  fi
  pg_write_flavor
  as_pg tee "$PG_DATA/iotpipe.conf" >/dev/null <<EOF
# Generated by scripts/services.sh; rewritten on every start.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
# Write-heavy tuning (the readings table takes tens of thousands of rows/s; docs/OPERATIONS.md):
# index pages of the current chunk stay in shared buffers, and checkpoints (each followed by
# full-page images of every page touched again) are rarer. The compose image's timescaledb-tune
# sets shared_buffers from the container's memory the same way.
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 15min
$preload
EOF
}

# pg_tls: the server certificate (in <base>/tls, readable by the postgres user only), ssl = on in
# iotpipe-tls.conf (included from postgresql.conf), and a pg_hba.conf that takes TCP connections
# over TLS only (hostssl, scram-sha-256) and refuses plaintext TCP (hostnossl ... reject); the unix
# socket (trust) stays for the scripts' admin work. Rewritten on every start, and by `up` for a
# running server of an older version (then reloaded): old state dirs are upgraded in place.
pg_tls() {
  local tls=$PG_BASE/tls
  server_tls postgres "$tls"
  chmod 600 "$tls/server.key"
  if ((EUID == 0)); then chown -R postgres:postgres "$tls"; fi
  grep -qxF "include_if_exists = 'iotpipe-tls.conf'" "$PG_DATA/postgresql.conf" \
    || echo "include_if_exists = 'iotpipe-tls.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
  printf '%s\n' "# Generated by scripts/services.sh; rewritten on every start." \
    "ssl = on" "ssl_cert_file = '$tls/server.crt'" "ssl_key_file = '$tls/server.key'" \
    "ssl_min_protocol_version = 'TLSv1.2'" "password_encryption = 'scram-sha-256'" \
    | as_pg tee "$PG_DATA/iotpipe-tls.conf" >/dev/null
  printf '%s\n' "# Generated by scripts/services.sh; rewritten on every start." \
    "# TYPE     DATABASE USER ADDRESS       METHOD" \
    "local      all      all                trust" \
    "hostssl    all      all  127.0.0.1/32  scram-sha-256" \
    "hostssl    all      all  ::1/128       scram-sha-256" \
    "hostnossl  all      all  0.0.0.0/0     reject" \
    "hostnossl  all      all  ::/0          reject" \
    | as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null
}

# pg_upgrade_running: a server started by an older services.sh (no TLS) gets the TLS settings and
# is reloaded (ssl and pg_hba take effect on reload).
pg_upgrade_running() {
  if [[ -f $PG_DATA/iotpipe-tls.conf && -f $PG_BASE/tls/server.crt ]] && grep -q '^hostnossl' "$PG_DATA/pg_hba.conf" 2>/dev/null; then
    return 0
  fi
  pg_find_bin || die "postgres: PostgreSQL binaries not found"
  say "postgres: switching the running server to TLS only (hostssl) and reloading it"
  pg_tls
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null 2>&1 || die "postgres: pg_ctl reload failed"
}

start_postgres() {
  require_free_ports postgres "$PG_PORT"
  pg_init
  pg_configure
  pg_tls
  rotate_log "$PG_LOG"
  # setsid: the postmaster gets its own session, so a Ctrl-C in the calling terminal does not reach it.
  # shellcheck disable=SC2016 # expanded by the inner shell
  if ! setsid -w "${DAEMON_ENV[@]}" bash -c 'if [ "$(id -u)" = 0 ]; then exec runuser -u postgres -- "$@"; else exec "$@"; fi' \
    start-pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start </dev/null >/dev/null 2>&1 9>&-; then
    fail_start postgres "pg_ctl start failed"
  fi
}

pg_provision() {
  # Roles and database, idempotently, as the superuser over our unix socket.
  local out
  if ! out=$(as_pg "$PG_BIN/psql" -X -q -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 2>&1 <<EOF
DO \$\$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['$PG_OWNER','$PG_WRITER','$PG_READER','$PG_REGISTRY','iotpipe_writer','iotpipe_reader','iotpipe_registry'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I', r);
    END IF;
  END LOOP;
END
\$\$;
ALTER ROLE postgres PASSWORD '$PG_SUPER_PASS';
ALTER ROLE $PG_OWNER LOGIN CREATEROLE PASSWORD '$PG_OWNER_PASS';
ALTER ROLE $PG_WRITER LOGIN PASSWORD '$PG_WRITER_PASS';
ALTER ROLE $PG_READER LOGIN PASSWORD '$PG_READER_PASS';
ALTER ROLE $PG_REGISTRY LOGIN PASSWORD '$PG_REGISTRY_PASS';
ALTER ROLE iotpipe_writer NOLOGIN;
ALTER ROLE iotpipe_reader NOLOGIN;
ALTER ROLE iotpipe_registry NOLOGIN;
SET client_min_messages = warning;
GRANT iotpipe_writer TO $PG_WRITER;
GRANT iotpipe_reader TO $PG_READER;
GRANT iotpipe_registry TO $PG_REGISTRY;
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_OWNER')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
ALTER DATABASE $PG_DB OWNER TO $PG_OWNER;
EOF
  ); then
    printf '%s\n' "$out" >>"$PG_LOG"
    fail_start postgres "creating roles/database failed: $(printf '%s' "$out" | tail -n1)"
  fi
}

PG_PROVISIONED=0
ready_postgres() {
  local out
  if ((PG_PROVISIONED == 0)); then
    # The server answers the superuser on our unix socket first; then roles and database are
    # made sure of (idempotent, also after a restart), then the real check below.
    as_pg "$PG_BIN/psql" -X -q -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres -Atc 'SELECT 1' \
      >/dev/null 2>&1 || return 1
    pg_provision
    PG_PROVISIONED=1
  fi
  out=$(PGCONNECT_TIMEOUT=5 timeout 10 "$PG_BIN/psql" -X -At "$(pg_dsn "$PG_OWNER" "$PG_OWNER_PASS" "$PG_DB")" \
    -c 'SELECT 1' 2>/dev/null) || return 1
  [[ $out == 1 ]]
}

# pg_dsn USER PASSWORD DB: over TLS, the server's certificate checked against the local CA and
# its name against the host (verify-full).
pg_dsn() { printf 'postgres://%s:%s@%s:%s/%s?sslmode=verify-full&sslrootcert=%s' "$1" "$2" "$HOST" "$PG_PORT" "$3" "$STATE_DIR/ca/ca.crt"; }

stop_postgres() { # [quiet]
  local pid tag
  pg_locate
  pid=$(svc_pid postgres) || return 0
  tag=$(svc_tag postgres)
  pg_find_bin || die "postgres: PostgreSQL binaries not found"
  if [[ ${1:-} != quiet ]]; then
    say "stopping postgres (pid $pid)..."
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1; then
    kill_group postgres "$pid" "$tag" 5
  fi
  while pid_is_ours "$pid" "$tag"; do sleep 0.2; done
}

# ---------------------------------------------------------------------------------------------
# s3: versitygw (go install), posix backend

VGW_BIN() { echo "$INSTALL_DIR/bin/versitygw"; }

find_go() {
  if command -v go >/dev/null; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  else
    return 1
  fi
}

install_s3() {
  local bin go have
  bin=$(VGW_BIN)
  command -v curl >/dev/null || apt_install curl
  if [[ -x $bin ]]; then
    go=$(find_go) || go=""
    if [[ -n $go ]]; then
      have=$("$go" version -m "$bin" 2>/dev/null | awk '$1 == "mod" {print $3}')
    else
      have=$(cat "$INSTALL_DIR/bin/versitygw.version" 2>/dev/null || true)
    fi
    [[ $have == "$VERSITYGW_VERSION" ]] && return 0
  fi
  go=$(find_go) || die "s3: Go is needed to install versitygw ($VERSITYGW_MODULE@$VERSITYGW_VERSION) but 'go' is not on PATH"
  say "installing versitygw $VERSITYGW_VERSION (go install; the first build takes a few minutes)..."
  mkdir -p "$INSTALL_DIR/bin" "$STATE_DIR/s3/logs"
  # From a neutral directory with neutral flags, so the repo's go.mod / GOFLAGS play no part.
  if ! (cd "$INSTALL_DIR" && GOBIN="$INSTALL_DIR/bin" GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 \
    "$go" install "$VERSITYGW_MODULE/cmd/versitygw@$VERSITYGW_VERSION") >"$STATE_DIR/s3/logs/install.log" 2>&1; then
    tail -n 20 "$STATE_DIR/s3/logs/install.log" >&2
    die "s3: go install of versitygw failed (log: $STATE_DIR/s3/logs/install.log)"
  fi
  echo "$VERSITYGW_VERSION" >"$INSTALL_DIR/bin/versitygw.version"
}

# versitygw over TLS only (--cert/--key: a server certificate of the local CA), with its internal
# IAM (--iam-dir) so that the lake sink has a user of its own; the admin API (create-user,
# change-bucket-owner) is served on the same port, to the root key only.
start_s3() {
  require_free_ports s3 "$S3_PORT"
  mkdir -p "$STATE_DIR/s3/data" "$STATE_DIR/s3/logs" "$STATE_DIR/s3/iam"
  chmod 700 "$STATE_DIR/s3/iam"
  server_tls s3 "$STATE_DIR/s3/tls"
  launch s3 "$(svc_log s3)" "$(VGW_BIN)" --access "$S3_ACCESS" --secret "$S3_SECRET" \
    --region "$S3_REGION" --port "$HOST:$S3_PORT" \
    --cert "$STATE_DIR/s3/tls/server.crt" --key "$STATE_DIR/s3/tls/server.key" \
    --iam-dir "$STATE_DIR/s3/iam" posix "$STATE_DIR/s3/data" \
    || fail_start s3 "could not launch versitygw"
}

# s3_admin ARGS...: versitygw's admin CLI as root over TLS (Go reads the CA from SSL_CERT_FILE).
s3_admin() {
  "${DAEMON_ENV[@]}" "SSL_CERT_FILE=$STATE_DIR/ca/ca.crt" "$(VGW_BIN)" admin --access "$S3_ACCESS" --secret "$S3_SECRET" \
    --region "$S3_REGION" --endpoint-url "https://$HOST:$S3_PORT" "$@"
}

# s3_provision: the lake sink's user (role "user": no admin API, no bucket creation, only the
# buckets it owns), idempotently; its secret is reset to the one of this script.
s3_provision() {
  local out users
  # The list first, then grep: with pipefail, `list-users | grep -q` fails whenever grep stops
  # reading early (SIGPIPE), and an existing user would be created again (XAdminUserExists).
  users=$(s3_admin list-users 2>/dev/null) || users=
  if grep -qw -- "$S3_LAKE_ACCESS" <<<"$users"; then
    out=$(s3_admin update-user --access "$S3_LAKE_ACCESS" --secret "$S3_LAKE_SECRET" --role user 2>&1) \
      || fail_start s3 "updating the lake user failed: $out"
  else
    out=$(s3_admin create-user --access "$S3_LAKE_ACCESS" --secret "$S3_LAKE_SECRET" --role user 2>&1) \
      || fail_start s3 "creating the lake user failed: $out"
  fi
}

S3_PROVISIONED=0
ready_s3() {
  # A real, SigV4-signed S3 request over TLS, checked against the CA: ListBuckets must answer 200
  # with its XML document. Then the lake user is made sure of (once per run).
  local out
  out=$(curl -sS --max-time 5 --cacert "$STATE_DIR/ca/ca.crt" --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS:$S3_SECRET" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
    -w '\n%{http_code}' "https://$HOST:$S3_PORT/" 2>/dev/null) || return 1
  [[ ${out##*$'\n'} == 200 && $out == *ListAllMyBucketsResult* ]] || return 1
  if ((S3_PROVISIONED == 0)); then
    s3_provision
    S3_PROVISIONED=1
  fi
}

# s3_plaintext_running: a versitygw started by an older services.sh (plain http, no IAM).
s3_plaintext_running() {
  curl -s --max-time 3 -o /dev/null "http://$HOST:$S3_PORT/" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# Commands

lock_state() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  if ! flock -n 9; then
    say "waiting for another services.sh run on $STATE_DIR..."
    flock -w 900 9 || die "timed out waiting for the lock $STATE_DIR/.lock"
  fi
}

parse_services() { # fills SERVICES from the arguments (default: all)
  SERVICES=()
  local a s ok
  for a in "$@"; do
    ok=0
    for s in "${ALL_SERVICES[@]}"; do
      [[ $a == "$s" ]] && ok=1
    done
    ((ok)) || die "unknown service '$a' (known: ${ALL_SERVICES[*]})"
    SERVICES+=("$a")
  done
  ((${#SERVICES[@]})) || SERVICES=("${ALL_SERVICES[@]}")
}

cmd_up() {
  parse_services "$@"
  lock_state
  local svc pid t0 to_wait=() started_at=()
  # 1. install what is missing
  for svc in "${SERVICES[@]}"; do
    "install_$svc"
  done
  # 2. start what is not running (slowest first)
  for svc in kafka mqtt s3 postgres; do
    [[ " ${SERVICES[*]} " == *" $svc "* ]] || continue
    if [[ $svc == kafka ]] && kafka_multi; then
      t0=$(now)
      if kafka_cluster_up; then to_wait+=(kafka) started_at+=("$t0"); fi
      continue
    fi
    if pid=$(svc_pid "$svc"); then
      check_running_port "$svc" "$(svc_port "$svc")"
      if [[ $svc == postgres ]]; then pg_upgrade_running; fi
      if [[ $svc == mqtt ]]; then mqtt_reload_running "$pid"; fi
      if [[ $svc == kafka ]] && [[ $(cat "$STATE_DIR/kafka/security" 2>/dev/null || echo plaintext) != "$KAFKA_SECURITY" ]]; then
        # A broker of an older checkout (PLAINTEXT) still running: it can never answer the
        # readiness check of this one. Stop it; the start below formats it for $KAFKA_SECURITY.
        say "kafka: the running broker (pid $pid) is $(cat "$STATE_DIR/kafka/security" 2>/dev/null || echo plaintext), now $KAFKA_SECURITY; stopping it to start it again"
        kill_group kafka "$pid" "$(svc_tag kafka)" 60
        rm -f "$STATE_DIR/kafka/pid"
        t0=$(now)
        start_kafka
        svc_port kafka >"$STATE_DIR/kafka/port"
        to_wait+=(kafka)
        started_at+=("$t0")
        continue
      elif [[ $svc == s3 ]] && s3_plaintext_running; then
        say "s3: the running versitygw (pid $pid) serves plain http; restarting it with TLS and its IAM"
        kill_group s3 "$pid" "$(svc_tag s3)" 15
        rm -f "$STATE_DIR/s3/pid"
        t0=$(now)
        start_s3
        svc_port s3 >"$STATE_DIR/s3/port"
        to_wait+=(s3)
        started_at+=("$t0")
        continue
      fi
      if "ready_$svc"; then
        say "$svc already running (pid $pid, $(svc_desc "$svc"))"
        continue
      fi
      say "$svc running (pid $pid) but not answering yet; waiting"
      to_wait+=("$svc")
      started_at+=("$(now)")
      continue
    fi
    say "starting $svc on $(svc_desc "$svc")..."
    t0=$(now)
    "start_$svc"
    svc_port "$svc" >"$STATE_DIR/$svc/port"
    to_wait+=("$svc")
    started_at+=("$t0")
  done
  # 3. wait until each really answers (quick ones first)
  local i timeout w
  for w in mqtt s3 postgres kafka; do
    for i in "${!to_wait[@]}"; do
      [[ ${to_wait[$i]} == "$w" ]] || continue
      svc=$w
    case $svc in
      kafka)
        # JVMs (three for a cluster) on a small, busy machine.
        timeout=${IOTPIPE_KAFKA_START_TIMEOUT:-180}
        if kafka_multi; then timeout=${IOTPIPE_KAFKA_START_TIMEOUT:-240}; fi
        ;;
      postgres) timeout=60 ;;
      mqtt) timeout=60 ;;
      *) timeout=30 ;;
    esac
      wait_ready "$svc" "$timeout" "${started_at[$i]}"
    done
  done
}

cmd_down() {
  local purge=0 args=() a
  for a in "$@"; do
    case $a in
      --purge) purge=1 ;;
      *) args+=("$a") ;;
    esac
  done
  parse_services "${args[@]+"${args[@]}"}"
  [[ -d $STATE_DIR ]] || { say "nothing to stop ($STATE_DIR does not exist)"; return 0; }
  lock_state
  local svc pid tag timeout
  for svc in "${SERVICES[@]}"; do
    if [[ $svc == postgres ]]; then
      if svc_running postgres; then
        stop_postgres
        say "postgres stopped"
      else
        say "postgres not running"
      fi
    elif [[ $svc == kafka ]] && kafka_multi; then
      kafka_cluster_down
    elif pid=$(svc_pid "$svc"); then
      tag=$(svc_tag "$svc")
      case $svc in
        kafka) timeout=60 ;;
        mqtt) timeout=60 ;;
        *) timeout=15 ;;
      esac
      say "stopping $svc (pid $pid)..."
      kill_group "$svc" "$pid" "$tag" "$timeout"
      say "$svc stopped"
    else
      say "$svc not running"
    fi
    [[ $svc == postgres ]] || rm -f "$STATE_DIR/$svc/pid"
    rm -f "$STATE_DIR/$svc/port"
    if ((purge)); then
      purge_data "$svc"
    fi
  done
}

purge_data() {
  local svc=$1
  say "purging $svc data and logs"
  case $svc in
    mqtt) rm -rf "$STATE_DIR/mqtt/data" "$STATE_DIR/mqtt/logs" ;;
    kafka) rm -rf "$STATE_DIR/kafka/data" "$STATE_DIR/kafka/logs" "$STATE_DIR/kafka/cluster.id" "$STATE_DIR/kafka/node-"* ;;
    s3) rm -rf "$STATE_DIR/s3/data" "$STATE_DIR/s3/logs/versitygw.log"* ;;
    postgres)
      pg_locate
      rm -rf "$PG_DATA" "$PG_RUN" "$(dirname "$PG_LOG")"
      if [[ $PG_BASE != "$STATE_DIR/postgres" ]]; then
        rm -rf "$PG_BASE"
      fi
      rm -f "$STATE_DIR/postgres/base"
      ;;
  esac
}

cmd_status() {
  parse_services "$@"
  local svc pid all=0
  for svc in "${SERVICES[@]}"; do
    if [[ $svc == kafka ]] && kafka_multi; then
      kafka_cluster_status || all=3
    elif pid=$(svc_pid "$svc" 2>/dev/null); then
      printf '%-9s running  pid %-8s %s:%s\n' "$svc" "$pid" "$HOST" \
        "$(cat "$STATE_DIR/$svc/port" 2>/dev/null || svc_port "$svc")"
    else
      printf '%-9s stopped\n' "$svc"
      all=3
    fi
  done
  return "$all"
}

# Quote a value for the shell only when needed; plain values stay plain so that a Makefile
# `include` of the same output reads them unchanged. ('?' needs no quoting in an assignment.)
env_line() {
  local k=$1 v=$2
  if ((plain)); then
    printf '%s=%s\n' "$k" "$v"
  elif [[ $v =~ ^[A-Za-z0-9_./:@%+=,?-]*$ ]]; then
    printf 'export %s=%s\n' "$k" "$v"
  else
    printf "export %s='%s'\n" "$k" "${v//\'/\'\\\'\'}"
  fi
}

cmd_env() {
  plain=0
  local a
  for a in "$@"; do
    case $a in
      --plain) plain=1 ;;
      *) die "env: unknown argument '$a'" ;;
    esac
  done
  env_line IOTPIPE_STATE_DIR "$STATE_DIR"
  env_line IOTPIPE_MQTT_URL "mqtt://$HOST:$MQTT_PORT"
  env_line IOTPIPE_MQTT_USERNAME "$MQTT_USER"
  env_line IOTPIPE_MQTT_PASSWORD "$MQTT_PASS"
  env_line IOTPIPE_MQTT_DEVICE_USERNAME "$MQTT_DEVICE_USER"
  env_line IOTPIPE_MQTT_DEVICE_PASSWORD "$MQTT_DEVICE_PASS"
  # Mutual TLS (under their own names, so the plaintext settings above keep working as they are).
  env_line IOTPIPE_MQTT_TLS_URL "mqtts://$HOST:$MQTT_TLS_PORT"
  env_line IOTPIPE_MQTT_TLS_CA_FILE "$STATE_DIR/ca/ca.crt"
  env_line IOTPIPE_MQTT_TLS_BRIDGE_CERT_FILE "$STATE_DIR/mqtt/tls/iotpipe-bridge.crt"
  env_line IOTPIPE_MQTT_TLS_BRIDGE_KEY_FILE "$STATE_DIR/mqtt/tls/iotpipe-bridge.key"
  # Read by `iotpipe ca` and `iotpipe devices` (revoke rewrites the CRL and ACL, then SIGHUPs).
  env_line IOTPIPE_CA_DIR "$STATE_DIR/ca"
  env_line IOTPIPE_MQTT_ACL_FILE "$STATE_DIR/mqtt/acl"
  env_line IOTPIPE_MQTT_BROKER_PID_FILE "$STATE_DIR/mqtt/pid"
  env_line IOTPIPE_KAFKA_BROKERS "$(kafka_brokers)"
  if kafka_multi; then env_line IOTPIPE_KAFKA_NODES "$KAFKA_N"; fi
  if [[ -n $KAFKA_PLAINTEXT_PORT ]]; then env_line IOTPIPE_KAFKA_PLAINTEXT_BROKERS "$HOST:$KAFKA_PLAINTEXT_PORT"; fi
  kafka_env_lines
  env_line IOTPIPE_PG_DSN "$(pg_dsn "$PG_OWNER" "$PG_OWNER_PASS" "$PG_DB")"
  env_line IOTPIPE_PG_WRITER_DSN "$(pg_dsn "$PG_WRITER" "$PG_WRITER_PASS" "$PG_DB")"
  env_line IOTPIPE_PG_READER_DSN "$(pg_dsn "$PG_READER" "$PG_READER_PASS" "$PG_DB")"
  env_line IOTPIPE_PG_REGISTRY_DSN "$(pg_dsn "$PG_REGISTRY" "$PG_REGISTRY_PASS" "$PG_DB")"
  env_line IOTPIPE_PG_ADMIN_DSN "$(pg_dsn postgres "$PG_SUPER_PASS" postgres)"
  pg_env_lines
  env_line IOTPIPE_PG_CA_FILE "$STATE_DIR/ca/ca.crt"
  env_line IOTPIPE_S3_ENDPOINT "https://$HOST:$S3_PORT"
  env_line IOTPIPE_S3_CA_FILE "$STATE_DIR/ca/ca.crt"
  # The lake sink's scoped key; the root key is for setup only (iotpipe init, the tests' buckets).
  env_line IOTPIPE_S3_ACCESS_KEY "$S3_LAKE_ACCESS"
  env_line IOTPIPE_S3_SECRET_KEY "$S3_LAKE_SECRET"
  env_line IOTPIPE_S3_BUCKET_OWNER "$S3_LAKE_ACCESS"
  env_line IOTPIPE_S3_ADMIN_ACCESS_KEY "$S3_ACCESS"
  env_line IOTPIPE_S3_ADMIN_SECRET_KEY "$S3_SECRET"
  env_line IOTPIPE_S3_REGION "$S3_REGION"
  env_line IOTPIPE_S3_BUCKET "$S3_BUCKET"
}

# kafka_env_lines: what Kafka clients need. IOTPIPE_KAFKA_SASL_* are the admin's (so a plain eval gives
# a working admin client: init, the tests' helpers); each stage's credentials are under
# IOTPIPE_KAFKA_<STAGE>_USERNAME/PASSWORD, which `iotpipe init --kafka-acls` reads to create them.
kafka_env_lines() {
  local st up
  if ! kafka_secure; then
    env_line IOTPIPE_KAFKA_TLS false
    return 0
  fi
  env_line IOTPIPE_KAFKA_TLS true
  env_line IOTPIPE_KAFKA_CA_FILE "$STATE_DIR/ca/ca.crt"
  env_line IOTPIPE_KAFKA_SASL_MECHANISM SCRAM-SHA-512
  env_line IOTPIPE_KAFKA_SASL_USERNAME "$KAFKA_ADMIN_USER"
  env_line IOTPIPE_KAFKA_SASL_PASSWORD "$KAFKA_ADMIN_PASS"
  for st in "${KAFKA_STAGES[@]}"; do
    up=${st^^}
    up=${up//-/_}
    env_line "IOTPIPE_KAFKA_${up}_USERNAME" "iotpipe-$st"
    env_line "IOTPIPE_KAFKA_${up}_PASSWORD" "$st-dev-secret"
  done
}

cmd_logs() {
  local follow=0 lines=50 args=()
  while (($#)); do
    case $1 in
      -f) follow=1 ;;
      -n) shift; lines=${1:?-n needs a number} ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  parse_services "${args[@]+"${args[@]}"}"
  local svc log
  if ((${#SERVICES[@]} > 1)); then
    for svc in "${SERVICES[@]}"; do
      printf '%-9s %s\n' "$svc" "$(svc_log "$svc")"
    done
    return 0
  fi
  svc=${SERVICES[0]}
  log=$(svc_log "$svc")
  say "log: $log"
  [[ -f $log ]] || die "$svc has no log yet"
  if ((follow)); then
    exec tail -n "$lines" -F "$log"
  fi
  tail -n "$lines" "$log"
}

main() {
  check_port_value IOTPIPE_MQTT_PORT "$MQTT_PORT"
  check_port_value IOTPIPE_KAFKA_PORT "$KAFKA_PORT"
  [[ ${IOTPIPE_KAFKA_START_TIMEOUT:-90} =~ ^[1-9][0-9]{0,4}$ ]] ||
    die "IOTPIPE_KAFKA_START_TIMEOUT=${IOTPIPE_KAFKA_START_TIMEOUT}: want a number of seconds (1-99999)"
  check_port_value IOTPIPE_KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  check_port_value IOTPIPE_PG_PORT "$PG_PORT"
  check_port_value IOTPIPE_S3_PORT "$S3_PORT"
  (($#)) || usage
  kafka_layout "$1"
  if [[ -n $KAFKA_PLAINTEXT_PORT ]]; then
    check_port_value IOTPIPE_KAFKA_PLAINTEXT_PORT "$KAFKA_PLAINTEXT_PORT"
    { ! kafka_multi && kafka_secure; } || die "IOTPIPE_KAFKA_PLAINTEXT_PORT: a second (PLAINTEXT) listener is for a single SASL_SSL node only"
  fi
  pg_locate
  local verb=$1
  shift
  case $verb in
    up | start) cmd_up "$@" ;;
    down | stop) cmd_down "$@" ;;
    purge) cmd_down --purge "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    logs | log) cmd_logs "$@" ;;
    -h | --help | help) usage ;;
    *) say "unknown command '$verb'"; usage ;;
  esac
}

main "$@"
