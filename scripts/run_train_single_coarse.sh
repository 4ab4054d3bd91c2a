#!/bin/sh
# Train the coarse Swin-S model (one process), e.g. `sh scripts/run_train_single_coarse.sh`.
# Settings: the environment variables listed in run_abaw.sh; extra flags pass through to the main.
exec sh "$(dirname -- "$0")/run_abaw.sh" train single coarse "$@"
