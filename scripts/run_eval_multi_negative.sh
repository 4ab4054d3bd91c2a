#!/bin/sh
# Evaluate the negative Swin-S model (all GPUs in $GPUS, or $NPROC CPU processes; NNODES machines), e.g. `sh scripts/run_eval_multi_negative.sh`.
# Settings: the environment variables listed in run_abaw.sh; extra flags pass through to the main.
exec sh "$(dirname -- "$0")/run_abaw.sh" eval multi negative "$@"
