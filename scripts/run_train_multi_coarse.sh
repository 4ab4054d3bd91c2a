#!/bin/sh
# Train the coarse Swin-S model (all GPUs in $GPUS, or $NPROC CPU processes; NNODES machines), e.g. `sh scripts/run_train_multi_coarse.sh`.
# Settings: the environment variables listed in run_abaw.sh; extra flags pass through to the main.
exec sh "$(dirname -- "$0")/run_abaw.sh" train multi coarse "$@"
