#!/bin/sh
# Evaluate the negative Swin-S model (one process), e.g. `sh scripts/run_eval_single_negative.sh`.
# Settings: the environment variables listed in run_abaw.sh; extra flags pass through to the main.
exec sh "$(dirname -- "$0")/run_abaw.sh" eval single negative "$@"
