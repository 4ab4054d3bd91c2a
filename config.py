"""Configuration (yacs) with the original release's keys and defaults (PaddleViT
facial_expression/config.py): every key it has exists here with its value, so its YAML files and
`-opts` load unchanged.

`get_config(cfg_file)` gives the defaults merged with a YAML file (which may name `BASE: [...]`
files to merge first), `update_config(config, args)` applies command-line flags as the release's
did. Keys this project adds are tagged `# [added]` and listed in ADDED_KEYS; the defaults of the
added keys reproduce what the release executed, and configs/swin_small_patch4_window7_224_fixed.yaml turns every fix on.
"""
import os

import yaml
from yacs.config import CfgNode as CN

from console import ArgumentParser
from errors import UsageError
from labels import NUM_CLASSES, check_class_type

_C = CN()
_C.BASE = ['']

_C.DATA = CN()
_C.DATA.BATCH_SIZE = 256  # per process
_C.DATA.BATCH_SIZE_EVAL = None  # None: same as BATCH_SIZE
# [added] accepted and unused: PaddleViT's other models name their data folder with it; ABAW uses
# DATA_FOLDER and ANNO_FOLDER.
_C.DATA.DATA_PATH = ''
_C.DATA.ANNO_FOLDER = './anno'  # ABAW EXPR annotations' root: Train_Set/, Validation_Set/
_C.DATA.DATA_FOLDER = './data'  # aligned faces: <video>/00001.jpg
# Optional lists in the release's format: 'video/00001.jpg label' per line, the label already in
# the class type's space. A list that does not exist yet is written from the annotations.
_C.DATA.DATA_LIST_TRAIN = None
_C.DATA.DATA_LIST_VAL = None
# [added] the ANNO_FOLDER sub-folders training and validation read (a folder without them is read
# as it is; labels.annotation_files)
_C.DATA.TRAIN_SPLIT = 'Train_Set'  # [added]
_C.DATA.VAL_SPLIT = 'Validation_Set'  # [added]
# [added] -eval on videos without annotations (the test set): a video list (labels.read_video_list)
_C.DATA.VIDEO_LIST = ''
_C.DATA.DATASET = 'ABAW'
_C.DATA.CLASS_TYPE = 'all'  # all (8) | coarse (5) | negative (4)
_C.DATA.IMAGE_SIZE = 224
_C.DATA.IMAGE_CHANNELS = 3
_C.DATA.CROP_PCT = 0.9  # validation resize = floor(IMAGE_SIZE / CROP_PCT), then center crop
_C.DATA.NUM_WORKERS = 2
# [added] batches each loader worker keeps ready, and whether workers hand batches over through
# shared memory (much faster than pipes for float32 batches; benchmarks/RESULTS.md).
# If /dev/shm cannot hold them, the loader keeps 1 batch per worker or else uses pipes, and says
# so, instead of dying with a bus error inside a worker.
_C.DATA.PREFETCH_FACTOR = 2  # [added]
_C.DATA.USE_SHARED_MEMORY = True  # [added]
_C.DATA.IMAGENET_MEAN = [0.485, 0.456, 0.406]
_C.DATA.IMAGENET_STD = [0.229, 0.224, 0.225]
# [added] the release's random-apply helper compared the wrong way round, so a transform meant to
# run with probability p ran with 1 - p (grayscale 0.8, colour jitter 0.2). True (default)
# reproduces that; False applies the probabilities the release's code wrote down.
_C.DATA.RELEASE_RANDOM_APPLY = True
# [added] a corrupt or truncated image is an error naming the file; True skips it and counts it.
_C.DATA.SKIP_BAD_IMAGES = False

_C.MODEL = CN()
_C.MODEL.TYPE = 'swin'
_C.MODEL.NAME = 'swin'
_C.MODEL.RESUME = None
_C.MODEL.PRETRAINED = None
_C.MODEL.NUM_CLASSES = 8
_C.MODEL.DROPOUT = 0.0
_C.MODEL.ATTENTION_DROPOUT = 0.0
_C.MODEL.DROPPATH = 0.1
_C.MODEL.PATCH_SIZE = 16  # the release's default; its Swin YAML sets 4
_C.MODEL.WINDOW_SIZE = 7
_C.MODEL.EMBED_DIM = 96
_C.MODEL.NUM_HEADS = [3, 6, 12, 24]
_C.MODEL.STAGE_DEPTHS = [2, 2, 6, 2]
_C.MODEL.MLP_RATIO = 4.0
_C.MODEL.QKV_BIAS = True
_C.MODEL.QK_SCALE = None
_C.MODEL.APE = False
_C.MODEL.PATCH_NORM = True
# [added] the released ABAW models skip the final LayerNorm before pooling (their norm.* weights
# exist but are unused); ImageNet Swin and timm apply it. Set True for weights from those.
_C.MODEL.FINAL_NORM = False

_C.TRAIN = CN()
_C.TRAIN.LAST_EPOCH = 0
_C.TRAIN.NUM_EPOCHS = 80
_C.TRAIN.WARMUP_EPOCHS = 5
_C.TRAIN.WEIGHT_DECAY = 0.05
_C.TRAIN.BASE_LR = 5e-4
_C.TRAIN.WARMUP_START_LR = 5e-5
_C.TRAIN.END_LR = 0.0
_C.TRAIN.GRAD_CLIP = 5.0
_C.TRAIN.ACCUM_ITER = 1
_C.TRAIN.LINEAR_SCALED_LR = 512  # lr *= effective batch / this; None disables scaling
_C.TRAIN.KEEP_CHECKPOINTS = 0  # [added] newest N periodic checkpoints kept (0: all); best/last always
# [added] exempt norms, biases and relative_position_bias_table from weight decay, as the release's
# code intended. Its exemption compared structured names with Paddle's generated parameter names
# and never matched, so every parameter was decayed: False (default) reproduces that.
_C.TRAIN.NO_DECAY_NORM_BIAS = False

_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.NAME = 'AdamW'
_C.TRAIN.OPTIMIZER.EPS = 1e-8
_C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)

_C.TRAIN.MODEL_EMA = False
_C.TRAIN.MODEL_EMA_DECAY = 0.99996
_C.TRAIN.MODEL_EMA_FORCE_CPU = False  # keep the EMA copy in host memory, as the release
# [added] validate with the EMA weights and keep the best checkpoint by their macro F1 (the release
# validated the trained weights only and saved the EMA alongside).
_C.TRAIN.VALIDATE_EMA = False

_C.TRAIN.SMOOTHING = 0.1
# [added] without mixup the release's loss smoothed labels by 0.1 whatever TRAIN.SMOOTHING said
# (0 turned it off); True uses TRAIN.SMOOTHING's value. Mixup always used TRAIN.SMOOTHING.
_C.TRAIN.USE_CONFIG_SMOOTHING = False
# Accepted and unused, as in the release, whose training transform is fixed (see datasets.py).
_C.TRAIN.COLOR_JITTER = 0.4
_C.TRAIN.AUTO_AUGMENT = False
_C.TRAIN.RAND_AUGMENT = True
_C.TRAIN.RAND_AUGMENT_LAYERS = 2
_C.TRAIN.RAND_AUGMENT_MAGNITUDE = 9
_C.TRAIN.MIXUP_ALPHA = 0.8
_C.TRAIN.MIXUP_PROB = 0.0
_C.TRAIN.MIXUP_SWITCH_PROB = 0.5
_C.TRAIN.MIXUP_MODE = 'batch'
_C.TRAIN.CUTMIX_ALPHA = 0.0
_C.TRAIN.CUTMIX_MINMAX = None
_C.TRAIN.RANDOM_ERASE_PROB = 0.25
_C.TRAIN.RANDOM_ERASE_MODE = 'pixel'
_C.TRAIN.RANDOM_ERASE_COUNT = 1
_C.TRAIN.RANDOM_ERASE_SPLIT = False

_C.SAVE = './output'
_C.SAVE_FREQ = 10
_C.REPORT_FREQ = 20
_C.VALIDATE_FREQ = 1
_C.SEED = 0
_C.EVAL = False
_C.AMP = False
# [added] False: the AMP loss scaler starts as the release's did on Paddle 2.2/2.3 (scale 32768,
# doubled after 1000 clean steps, halved after 2 overflowing ones); True: the installed Paddle's
# GradScaler defaults (65536 / 2000 / 1 since Paddle 2.5).
_C.AMP_PADDLE_DEFAULTS = False
# [added] seconds without a sign of life (a heartbeat every second) before a process of a
# multi-process run counts as lost and every other one ends with one error line (distributed.py);
# below gloo's own 30 s, so that the watch, not a C++ abort, ends a run whose peer froze
_C.PEER_TIMEOUT = 20
# [added] also write each epoch's numbers as VisualDL scalars to OUTPUT/visualdl (instruments.py);
# OUTPUT/training_curves.png is drawn either way.
_C.VISUALDL = False
_C.DEVICE = ''  # [added] '' picks gpu when Paddle has CUDA and one is visible, else cpu


# Every key above that the release's config.py does not have (each tagged `# [added]`);
# tests/test_config.py checks that the release's keys plus these are exactly the config's keys.
ADDED_KEYS = (
    'DATA.DATA_PATH', 'DATA.TRAIN_SPLIT', 'DATA.VAL_SPLIT', 'DATA.VIDEO_LIST', 'DATA.PREFETCH_FACTOR',
    'DATA.USE_SHARED_MEMORY', 'DATA.RELEASE_RANDOM_APPLY', 'DATA.SKIP_BAD_IMAGES', 'MODEL.FINAL_NORM',
    'TRAIN.KEEP_CHECKPOINTS', 'TRAIN.NO_DECAY_NORM_BIAS', 'TRAIN.VALIDATE_EMA',
    'TRAIN.USE_CONFIG_SMOOTHING', 'AMP_PADDLE_DEFAULTS', 'PEER_TIMEOUT', 'VISUALDL', 'DEVICE',
)


class ConfigError(UsageError):
    """A config file or key that does not exist or does not fit; the message names it."""


_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


def _resolve(cfg_file, relative_to=None):
    """Find a YAML file as given, beside the file that names it, or in this project's configs/."""
    candidates = [cfg_file]
    if relative_to and not os.path.isabs(cfg_file):
        candidates.append(os.path.join(os.path.dirname(relative_to), cfg_file))
    candidates.append(os.path.join(_CONFIG_DIR, os.path.basename(cfg_file)))
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = f" (named in {relative_to})" if relative_to else ''
    raise ConfigError(f"config file '{cfg_file}' not found{where}")


def _merge_file(config, cfg_file, relative_to=None, seen=()):
    path = _resolve(cfg_file, relative_to)
    if os.path.abspath(path) in seen:
        raise ConfigError(f"{path}: BASE inheritance loops back to itself")
    try:
        with open(path, 'r', encoding='utf-8') as f:
            content = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    for base in content.get('BASE', ['']) or ['']:
        if base:
            _merge_file(config, base, path, seen + (os.path.abspath(path),))
    content = {k: v for k, v in content.items() if k != 'BASE'}
    config.defrost()
    try:
        config.merge_from_other_cfg(CN(content))
    except (KeyError, ValueError) as err:
        raise ConfigError(f"{path}: {err.args[0] if err.args else err}") from None
    config.freeze()


def get_config(cfg_file=None):
    """Defaults, merged with `cfg_file` (and the BASE files it names) when given."""
    config = _C.clone()
    if cfg_file:
        _merge_file(config, cfg_file)
    config.freeze()
    return config


def merge_opts(config, opts):
    """Apply KEY VALUE pairs (yacs style, e.g. ['TRAIN.NUM_EPOCHS', '3']); unknown keys raise."""
    config.defrost()
    try:
        config.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as err:
        raise ConfigError(f"-opts: {err.args[0] if err.args else err}") from None
    config.freeze()
    return config


# flag -> config key; flags not given (None/False) leave the config unchanged, as in the release.
_FLAG_KEYS = {
    'dataset': 'DATA.DATASET',
    'batch_size': 'DATA.BATCH_SIZE',
    'batch_size_eval': 'DATA.BATCH_SIZE_EVAL',
    'image_size': 'DATA.IMAGE_SIZE',
    'data_path': 'DATA.DATA_PATH',
    'data_folder': 'DATA.DATA_FOLDER',
    'anno_folder': 'DATA.ANNO_FOLDER',
    'data_list_train': 'DATA.DATA_LIST_TRAIN',
    'data_list_val': 'DATA.DATA_LIST_VAL',
    'video_list': 'DATA.VIDEO_LIST',
    'num_classes': 'MODEL.NUM_CLASSES',
    'output': 'SAVE',
    'pretrained': 'MODEL.PRETRAINED',
    'resume': 'MODEL.RESUME',
    'last_epoch': 'TRAIN.LAST_EPOCH',
    'accum_iter': 'TRAIN.ACCUM_ITER',
    'device': 'DEVICE',
    'seed': 'SEED',
}


def _set(config, dotted, value):
    node = config
    *parents, leaf = dotted.split('.')
    for name in parents:
        node = node[name]
    node[leaf] = value


def update_config(config, args):
    """Apply the command-line flags in `args` (an argparse Namespace) to a copy of `config`."""
    if getattr(args, 'cfg', None):
        config = config.clone()
        _merge_file(config, args.cfg)
    config = config.clone()
    config.defrost()
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None and value != '':
            _set(config, key, value)
    class_type = getattr(args, 'class_type', None)
    if class_type:
        try:
            check_class_type(class_type)
        except ValueError as err:
            raise ConfigError(f"-class_type: {err}") from None
        config.DATA.CLASS_TYPE = class_type
        config.MODEL.NUM_CLASSES = NUM_CLASSES[class_type]
    # As the release: -batch_size sets the evaluation batch too, unless -batch_size_eval is given.
    if getattr(args, 'batch_size', None) and not getattr(args, 'batch_size_eval', None):
        config.DATA.BATCH_SIZE_EVAL = args.batch_size
    if getattr(args, 'eval', False):
        config.EVAL = True
    if getattr(args, 'amp', False):
        config.AMP = not config.EVAL  # mixed precision is for training only, as in the release
    config.freeze()
    if getattr(args, 'opts', None):
        merge_opts(config, args.opts)
    return config


def add_common_args(parser):
    """The release's flags (plus -device, -seed and -opts), shared by every entry point."""
    parser.add_argument('-cfg', type=str, default=None, help='YAML config file')
    parser.add_argument('-dataset', type=str, default=None)
    parser.add_argument('-batch_size', type=int, default=None)
    parser.add_argument('-batch_size_eval', type=int, default=None)
    parser.add_argument('-image_size', type=int, default=None)
    parser.add_argument('-data_path', type=str, default=None, help='accepted, unused (see -data_folder)')
    parser.add_argument('-data_folder', type=str, default=None, help='aligned faces: DIR/<video>/00001.jpg')
    parser.add_argument('-anno_folder', type=str, default=None, help='ABAW EXPR annotations (Train_Set/, Validation_Set/)')
    parser.add_argument('-data_list_train', type=str, default=None)
    parser.add_argument('-data_list_val', type=str, default=None)
    parser.add_argument('-video_list', type=str, default=None,
                        help='-eval on these videos (one name per line), e.g. the unannotated test set')
    parser.add_argument('-class_type', type=str, default=None, help='all | coarse | negative')
    parser.add_argument('-num_classes', type=int, default=None)
    parser.add_argument('-output', type=str, default=None, help='output folder')
    parser.add_argument('-pretrained', type=str, default=None,
                        help='.pdparams to start from; with -eval the model to evaluate (a .pdparams, '
                             'the prefix of an exported predictor or a .onnx file from tools/export_model.py)')
    parser.add_argument('-resume', type=str, default=None, help="checkpoint to resume, or 'auto'")
    parser.add_argument('-last_epoch', type=int, default=None)
    parser.add_argument('-accum_iter', type=int, default=None)
    parser.add_argument('-device', type=str, default=None, choices=['cpu', 'gpu'])
    parser.add_argument('-seed', type=int, default=None)
    parser.add_argument('-eval', action='store_true')
    parser.add_argument('-amp', action='store_true')
    parser.add_argument('-overwrite', action='store_true',
                        help='start over in an -output folder that holds an earlier run of the same '
                             'kind (its checkpoints and history, or its -eval results, are removed first)')
    # extend: a launcher's -opts and the user's own -opts after it both apply, the user's last.
    parser.add_argument('-opts', nargs='+', action='extend', default=None, metavar='KEY VALUE',
                        help='override config keys, e.g. -opts TRAIN.NUM_EPOCHS 3 (may be repeated)')
    return parser


def get_arguments(argv=None, description='CFC-SP Swin'):
    """Parse the common flags (a mistake raises UsageError, see console.ArgumentParser)."""
    return add_common_args(ArgumentParser(description)).parse_args(argv)
