#!/usr/bin/env bash
# Shared launcher behind scripts/run_{train,eval}_{multi,single}_{coarse,negative}.sh.
#   usage: run_abaw.sh train|eval multi|single coarse|negative [extra main_*.py flags...]
# Paths and devices come from the environment. Batch 128 per GPU, 4 GPUs and -amp are the release's
# recipe; the default paths are this project's suggested layout (see README, "Preparing Aff-Wild2").
#   DATA_FOLDER   aligned faces               (default ./data/cropped_aligned)
#   ANNO_FOLDER   ABAW EXPR annotations       (default ./data/annotations/EXPR_Set)
#   PRETRAINED    train: MS1M Swin-S backbone (default ./pretrained/swin_small_patch4_window7_224_ms1m.pdparams)
#                 eval:  the model to evaluate (default ./output/<class_type>/best.pdparams)
#   GPUS          GPU list                    (default 0,1,2,3; single-process scripts use the first)
#   BATCH_SIZE    per process                 (default 128, the release's)
#   OUTPUT        output folder               (default ./output/<class_type> for train, ./output/eval-<class_type>)
#   NPROC         CPU processes when no GPU is present (default 2)
#   NUM_WORKERS   data-loader workers per process (default on GPU: the CPU cores per GPU process
#                 minus one, at most 16, since one worker augments only ~240 images/s and a GPU
#                 trains Swin-S at ~1,000; on CPU: the config's DATA.NUM_WORKERS)
#   PYTHON        interpreter                 (default python)
# Without a usable GPU the same job runs on CPU processes (-device cpu, no AMP).
set -euo pipefail
MODE=${1:?train|eval}; LAYOUT=${2:?multi|single}; CLASS_TYPE=${3:?coarse|negative}; shift 3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
DATA_FOLDER=${DATA_FOLDER:-./data/cropped_aligned}
ANNO_FOLDER=${ANNO_FOLDER:-./data/annotations/EXPR_Set}
GPUS=${GPUS:-0,1,2,3}
BATCH_SIZE=${BATCH_SIZE:-128}
NPROC=${NPROC:-2}
CFG=${CFG:-$HERE/configs/swin_small_patch4_window7_224.yaml}
if [ "$MODE" = train ]; then
  PRETRAINED=${PRETRAINED:-./pretrained/swin_small_patch4_window7_224_ms1m.pdparams}
  OUTPUT=${OUTPUT:-./output/$CLASS_TYPE}
  MODE_FLAGS=(-batch_size "$BATCH_SIZE" -amp)
else
  PRETRAINED=${PRETRAINED:-./output/$CLASS_TYPE/best.pdparams}
  OUTPUT=${OUTPUT:-./output/eval-$CLASS_TYPE}
  MODE_FLAGS=(-batch_size_eval "$BATCH_SIZE" -eval)
fi

if "$PYTHON" -c "import paddle, sys; sys.exit(0 if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else 1)" 2>/dev/null; then
  DEVICE=gpu
else
  DEVICE=cpu
  echo "run_abaw.sh: no GPU visible to Paddle; running on CPU" >&2
fi

LOADER_FLAGS=()
if [ "$DEVICE" = gpu ] && [ -z "${NUM_WORKERS:-}" ]; then
  if [ "$LAYOUT" = single ]; then PROCESSES=1; else PROCESSES=$(awk -F, '{print NF}' <<<"$GPUS"); fi
  NUM_WORKERS=$(( $(nproc) / PROCESSES - 1 ))
  [ "$NUM_WORKERS" -gt 16 ] && NUM_WORKERS=16
  [ "$NUM_WORKERS" -lt 1 ] && NUM_WORKERS=1
fi
[ -n "${NUM_WORKERS:-}" ] && LOADER_FLAGS=(-opts DATA.NUM_WORKERS "$NUM_WORKERS")

ARGS=(-cfg "$CFG" -dataset ABAW -data_folder "$DATA_FOLDER" -anno_folder "$ANNO_FOLDER"
      -class_type "$CLASS_TYPE" -pretrained "$PRETRAINED" -output "$OUTPUT" -device "$DEVICE"
      "${MODE_FLAGS[@]}" ${LOADER_FLAGS[@]+"${LOADER_FLAGS[@]}"} "$@")

if [ "$LAYOUT" = single ]; then
  [ "$DEVICE" = gpu ] && export CUDA_VISIBLE_DEVICES=${GPUS%%,*}
  exec "$PYTHON" "$HERE/main_single_gpu.py" "${ARGS[@]}"
elif [ "$DEVICE" = gpu ]; then
  exec "$PYTHON" -m paddle.distributed.launch --gpus "$GPUS" --log_dir "$OUTPUT/launch_logs" \
       "$HERE/main_multi_gpu.py" "${ARGS[@]}"
else
  exec "$PYTHON" -m paddle.distributed.launch --nproc_per_node "$NPROC" --log_dir "$OUTPUT/launch_logs" \
       "$HERE/main_multi_gpu.py" "${ARGS[@]}"
fi
