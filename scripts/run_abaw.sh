#!/bin/sh
# Shared launcher behind scripts/run_{train,eval}_{multi,single}_{coarse,negative}.sh.
#   usage: sh scripts/run_abaw.sh train|eval multi|single coarse|negative [extra main_*.py flags...]
# POSIX sh: runs the same under dash (Debian/Ubuntu `sh`), bash, or directly, from the repository
# root or from inside scripts/ (the release's `cd scripts && sh run_train_multi_coarse.sh`).
# Settings come from the environment. Defaults follow the release's run_*.sh: training batch 128
# per GPU, evaluation batch 256, 4 GPUs, -amp for the coarse model only (the release's negative
# training script lost -amp to a missing line continuation, so that model trained in fp32).
# Default paths are relative to the repository root; paths you set are taken as you give them.
#   DATA_FOLDER   aligned faces               (default <repo>/data/cropped_aligned)
#   ANNO_FOLDER   ABAW EXPR annotations       (default <repo>/data/annotations/EXPR_Set;
#                 set it empty to evaluate unannotated videos, e.g. with -video_list)
#   PRETRAINED    train: MS1M Swin-S backbone (default <repo>/pretrained/swin_small_patch4_window7_224_ms1m.pdparams;
#                        set it empty to train from scratch)
#                 eval:  the model to evaluate (default <repo>/output/<class_type>/best.pdparams)
#   GPUS          GPU list                    (default 0,1,2,3; single-process scripts use the first)
#   BATCH_SIZE    per process                 (default 128 for training, 256 for evaluation)
#   AMP           1 / 0: mixed precision in training (default 1 coarse, 0 negative, as the release ran)
#   OUTPUT        output folder               (default <repo>/output/<class_type>, <repo>/output/eval-<class_type>)
#   CFG           YAML config                 (default <repo>/configs/swin_small_patch4_window7_224.yaml)
#   NPROC         CPU processes when no GPU is present (default 2)
#   NUM_WORKERS   data-loader workers per process (default on GPU: the CPU cores per GPU process
#                 minus one, at most 16, because one worker cannot keep a GPU busy; on CPU: the
#                 config's DATA.NUM_WORKERS)
#   PYTHON        interpreter                 (default <repo>/.venv/bin/python if it exists, else python3)
# Several machines (multi scripts only; docs/multinode.md): start the same command on each, with
#   NNODES        number of machines          (default 1: this machine alone)
#   MASTER        IP:PORT of machine 0, reachable from every machine (needed when NNODES > 1)
#   NODE_RANK     this machine's number, 0 .. NNODES-1 (default 0)
# The world size is NNODES x processes per machine; rank 0 (on machine 0) writes OUTPUT, which must
# be one folder every machine reads (a shared filesystem); launcher logs go to OUTPUT/launch_logs/node<R>.
# Without a usable GPU the same job runs on CPU processes (-device cpu, no AMP).
set -eu
usage="usage: sh scripts/run_abaw.sh train|eval multi|single coarse|negative [flags...]"
[ $# -ge 3 ] || { echo "error: $usage" >&2; exit 2; }
MODE=$1 LAYOUT=$2 CLASS_TYPE=$3
shift 3
case "$MODE/$LAYOUT/$CLASS_TYPE" in
  train/multi/coarse|train/multi/negative|train/single/coarse|train/single/negative) ;;
  eval/multi/coarse|eval/multi/negative|eval/single/coarse|eval/single/negative) ;;
  *) echo "error: '$MODE $LAYOUT $CLASS_TYPE': $usage" >&2; exit 2 ;;
esac

REPO=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
DATA_FOLDER=${DATA_FOLDER:-$REPO/data/cropped_aligned}
ANNO_FOLDER=${ANNO_FOLDER-$REPO/data/annotations/EXPR_Set}
GPUS=${GPUS:-0,1,2,3}
NPROC=${NPROC:-2}
CFG=${CFG:-$REPO/configs/swin_small_patch4_window7_224.yaml}
if [ "$MODE" = train ]; then
  PRETRAINED=${PRETRAINED-$REPO/pretrained/swin_small_patch4_window7_224_ms1m.pdparams}
  OUTPUT=${OUTPUT:-$REPO/output/$CLASS_TYPE}
  BATCH_SIZE=${BATCH_SIZE:-128}
  if [ "$CLASS_TYPE" = coarse ]; then AMP=${AMP:-1}; else AMP=${AMP:-0}; fi
else
  PRETRAINED=${PRETRAINED:-$REPO/output/$CLASS_TYPE/best.pdparams}
  OUTPUT=${OUTPUT:-$REPO/output/eval-$CLASS_TYPE}
  BATCH_SIZE=${BATCH_SIZE:-256}
  AMP=0
fi

# Checked here so that a mistyped path gives one line, the same in every shell, instead of a
# traceback in each worker's log.
fail() { echo "error: $*" >&2; exit 2; }
[ -d "$DATA_FOLDER" ] || fail "DATA_FOLDER $DATA_FOLDER: folder does not exist"
[ -z "$ANNO_FOLDER" ] || [ -d "$ANNO_FOLDER" ] || fail "ANNO_FOLDER $ANNO_FOLDER: folder does not exist"
if [ -z "$ANNO_FOLDER" ]; then
  [ "$MODE" = eval ] || fail "ANNO_FOLDER is empty: training needs the annotations"
  case " $* " in
    *" -video_list "*|*" --video_list "*) ;;
    *) fail "ANNO_FOLDER is empty: evaluating videos without annotations needs -video_list FILE (one video name a line)" ;;
  esac
fi
# An exported model is named by its prefix (PREFIX.json or PREFIX.pdmodel beside PREFIX.pdiparams).
if [ "$MODE" = train ]; then
  weights_hint="where to get it: docs/weights.md; PRETRAINED= (empty) trains from scratch"
else
  weights_hint="train the model first, or set PRETRAINED to the checkpoint to evaluate (released checkpoints: docs/weights.md)"
fi
[ -z "$PRETRAINED" ] || [ -e "$PRETRAINED" ] || [ -e "$PRETRAINED.pdiparams" ] \
  || fail "PRETRAINED $PRETRAINED: file does not exist ($weights_hint)"
[ -f "$CFG" ] || fail "CFG $CFG: file does not exist"
case "$AMP" in 0|1) ;; *) fail "AMP must be 1 or 0, not '$AMP'" ;; esac
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
case "$NNODES" in ''|*[!0-9]*|0) fail "NNODES must be a number of machines (1 or more), not '$NNODES'" ;; esac
if [ "$NNODES" -gt 1 ]; then
  [ "$LAYOUT" = multi ] || fail "NNODES $NNODES: several machines need the run_*_multi_*.sh launchers"
  case "${MASTER:-}" in
    ?*:*[!0-9]*|*:) fail "MASTER '${MASTER:-}' must be IP:PORT of machine 0" ;;
    ?*:[0-9]*) ;;
    *) fail "MASTER '${MASTER:-}' must be IP:PORT of machine 0 (needed when NNODES > 1)" ;;
  esac
  case "$NODE_RANK" in *[!0-9]*|'') fail "NODE_RANK must be 0 .. $((NNODES - 1)), not '$NODE_RANK'" ;; esac
  [ "$NODE_RANK" -lt "$NNODES" ] || fail "NODE_RANK must be 0 .. $((NNODES - 1)), not '$NODE_RANK'"
fi
command -v "$PYTHON" >/dev/null 2>&1 || fail "PYTHON $PYTHON: no such interpreter (run 'make test' to build .venv)"

if "$PYTHON" -c "import paddle, sys; sys.exit(0 if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 else 1)" 2>/dev/null; then
  DEVICE=gpu
else
  DEVICE=cpu
  echo "run_abaw.sh: no GPU visible to Paddle; running on CPU" >&2
fi

if [ "$DEVICE" = gpu ] && [ -z "${NUM_WORKERS:-}" ]; then
  if [ "$LAYOUT" = single ]; then PROCESSES=1; else PROCESSES=$(echo "$GPUS" | awk -F, '{print NF}'); fi
  NUM_WORKERS=$(( $(nproc) / PROCESSES - 1 ))
  [ "$NUM_WORKERS" -gt 16 ] && NUM_WORKERS=16
  [ "$NUM_WORKERS" -lt 1 ] && NUM_WORKERS=1
fi

# Build the argument list in front of the user's own flags, which come last and so win.
if [ -n "${NUM_WORKERS:-}" ]; then set -- -opts DATA.NUM_WORKERS "$NUM_WORKERS" "$@"; fi
if [ "$MODE" = eval ]; then set -- -eval "$@"; elif [ "$AMP" = 1 ]; then set -- -amp "$@"; fi
if [ -n "$PRETRAINED" ]; then set -- -pretrained "$PRETRAINED" "$@"; fi
if [ -n "$ANNO_FOLDER" ]; then set -- -anno_folder "$ANNO_FOLDER" "$@"; fi
set -- -cfg "$CFG" -dataset ABAW -batch_size "$BATCH_SIZE" -data_folder "$DATA_FOLDER" \
  -class_type "$CLASS_TYPE" -output "$OUTPUT" -device "$DEVICE" "$@"

# paddle.distributed.launch imports Paddle before any of this project's code could filter its
# import-time warning that ccache (a compiler cache for custom ops; nothing here compiles any) is
# missing: without this the line would open every run. A PYTHONWARNINGS of your own is kept.
PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::UserWarning:paddle.utils.cpp_extension.extension_utils}
export PYTHONWARNINGS

if [ "$LAYOUT" = single ]; then
  if [ "$DEVICE" = gpu ]; then CUDA_VISIBLE_DEVICES=${GPUS%%,*}; export CUDA_VISIBLE_DEVICES; fi
  exec "$PYTHON" "$REPO/main_single_gpu.py" "$@"
fi
if [ "$DEVICE" = gpu ]; then PER_NODE="--gpus $GPUS"; else PER_NODE="--nproc_per_node $NPROC"; fi
if [ "$NNODES" -gt 1 ]; then
  # shellcheck disable=SC2086  # PER_NODE is two words on purpose
  exec "$PYTHON" -m paddle.distributed.launch --nnodes "$NNODES" --master "$MASTER" --rank "$NODE_RANK" \
       $PER_NODE --log_dir "$OUTPUT/launch_logs/node$NODE_RANK" "$REPO/main_multi_gpu.py" "$@"
fi
# shellcheck disable=SC2086
exec "$PYTHON" -m paddle.distributed.launch $PER_NODE --log_dir "$OUTPUT/launch_logs" "$REPO/main_multi_gpu.py" "$@"
