#!/bin/sh
# Fault drill: SIGKILL a 2-process CPU training run and preprocessing at random points, resume
# them, feed every bad input, and print a table; exits 0 only when everything was survived.
#   usage: sh scripts/fault_drill.sh [-quick] [-seed N] [-kills N] [-epochs N] [-work DIR] [-keep]
# PYTHON picks the interpreter (default: <repo>/.venv/bin/python if it exists, else python3).
set -eu
REPO=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" "$REPO/scripts/fault_drill.py" "$@"
