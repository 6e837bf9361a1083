#!/usr/bin/env bash
# scripts/pyenv.sh — a Python virtual environment with the independent Parquet reader (pyarrow)
# that the lake sink's integration tests use to read the lake back without arrow-go.
#
#   scripts/pyenv.sh          create/update the venv if needed, print the path of its python
#
# The venv lives in ${IOTPIPE_STATE_DIR:-<repo>/.state}/py. It is created on first use and
# reused afterwards: a second run only checks that the packages import (idempotent, offline).
# Progress goes to stderr; stdout holds only the interpreter path. Exits non-zero when the reader
# cannot be installed, so that tests fail loudly instead of skipping.
set -euo pipefail

PYARROW_SPEC=${IOTPIPE_PYARROW_SPEC:-pyarrow>=15}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
STATE_DIR=$(realpath -m "${IOTPIPE_STATE_DIR:-$REPO_ROOT/.state}")
VENV="$STATE_DIR/py"
PY="$VENV/bin/python"

say() { printf 'pyenv: %s\n' "$*" >&2; }

ready() { [ -x "$PY" ] && "$PY" -c 'import pyarrow, pyarrow.parquet' >/dev/null 2>&1; }

if ! ready; then
	mkdir -p "$STATE_DIR"
	# Serialise concurrent first runs (several test packages may call this at once).
	exec 9>"$STATE_DIR/py.lock"
	flock 9
	if ! ready; then
		base=${PYTHON:-$(command -v python3 || true)}
		[ -n "$base" ] || { say "python3 not found: install it (apt-get install python3 python3-venv)"; exit 1; }
		if [ ! -x "$PY" ]; then
			say "creating venv $VENV with $base"
			"$base" -m venv "$VENV" >&2 || { say "python3 -m venv failed (apt-get install python3-venv?)"; exit 1; }
		fi
		say "installing $PYARROW_SPEC"
		"$PY" -m pip install --disable-pip-version-check -q "$PYARROW_SPEC" >&2
		ready || { say "pyarrow does not import after install"; exit 1; }
	fi
fi
"$PY" -c 'import pyarrow; import sys; sys.stderr.write("pyenv: pyarrow %s\n" % pyarrow.__version__)'
echo "$PY"
