#!/usr/bin/env bash
# Runs `go test -v "$@"`, keeps the full output in $IOTPIPE_STATE_DIR/test.log,
# prints package results, failures and test logs, and ends with a count line
# ("tests: N passed, N failed, N skipped") so a run that executed no test is
# visible at a glance. Exits with go test's exit code.
set -uo pipefail
state="${IOTPIPE_STATE_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.state}"
mkdir -p "$state"
log="$state/test.log"
# Which PostgreSQL flavor the suite runs on (from `scripts/services.sh env`), first and last.
flavor="postgres flavor: ${IOTPIPE_PG_SERVER_FLAVOR:-unknown}${IOTPIPE_PG_TIMESCALEDB_VERSION:+ (TimescaleDB $IOTPIPE_PG_TIMESCALEDB_VERSION)}"
echo "$flavor" | tee "$log"
go test -v "$@" 2>&1 | tee -a "$log" | grep --line-buffered -vE '^(=== (RUN|PAUSE|CONT|NAME)|--- PASS|    --- PASS|PASS$)'
rc=${PIPESTATUS[0]}
passed=$(grep -cE '^ *--- PASS' "$log")
failed=$(grep -cE '^ *--- FAIL' "$log")
skipped=$(grep -cE '^ *--- SKIP' "$log")
if [ "$skipped" -gt 0 ]; then
	echo "skipped tests:"; grep -E '^ *--- SKIP' "$log"
fi
echo "full output: $log"
echo "$flavor"
echo "tests: $passed passed, $failed failed, $skipped skipped"
if [ "$rc" -eq 0 ] && [ "$passed" -eq 0 ]; then
	echo "no test ran" >&2
	exit 1
fi
exit "$rc"
