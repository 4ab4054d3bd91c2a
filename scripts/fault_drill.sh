#!/usr/bin/env bash
# Fault drill (issue 9): SIGKILL a 2-process CPU training run and preprocessing at random points,
# resume them, feed every bad input, and print a table; exits 0 only when everything was survived.
#   usage: scripts/fault_drill.sh [--quick] [--seed N] [--kills N] [--epochs N] [--work DIR] [--keep]
# PYTHON picks the interpreter (default: python).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "${PYTHON:-python}" "$HERE/scripts/fault_drill.py" "$@"
