#!/usr/bin/env bash
# Train the coarse Swin-S model (one process).
# Environment: DATA_FOLDER ANNO_FOLDER PRETRAINED GPUS BATCH_SIZE OUTPUT (see run_abaw.sh); extra flags pass through.
exec "$(dirname "${BASH_SOURCE[0]}")/run_abaw.sh" train single coarse "$@"
