"""Checkpoints: the one weights loader every script uses, and a training run's files (atomic
checkpoints, resume, history, the output folder's lock).

Accepts every layout the original release produced: a plain state dict, or a training
checkpoint `{'model': ..., 'model_ema': ..., 'optimizer': ..., 'epoch': ..., ...}` (the release
took `model_ema` when present). Buffers the model recomputes are dropped; a classifier of another
shape is dropped with one log line (e.g. the MS1M face backbone into a 5-class model) unless the
caller needs the head (evaluation), and anything else that does not fit is an error that lists it.
"""
import glob
import hashlib
import json
import logging
import os
import re
import shutil

import numpy as np
import paddle

from errors import TrainingError, UsageError
from fileio import atomic_open, atomic_path, is_temporary

logger = logging.getLogger(__name__)

# Recomputed from the config when the model is built; the release's files still carry them.
BUFFER_SUFFIXES = ('relative_position_index', 'attn_mask')
HEAD_PREFIX = 'fc.'


CHECKPOINT_RE = re.compile(r'^Epoch-(\d+)-Loss-.*\.pdparams$')


class CheckpointError(UsageError):
    """A weights file that cannot be used for this model; the message names the file and keys."""


def read_checkpoint(path):
    """paddle.load with a clear error for a missing, unreadable or non-dict file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found (where to get the released weights: "
                              "docs/weights.md)")
    try:
        content = paddle.load(path, return_numpy=True)
    except Exception as err:  # paddle raises assorted types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable Paddle checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a state dict or a dict with 'model', got {type(content).__name__}")
    return content


def extract_state_dict(content, path='checkpoint'):
    """The model weights inside a loaded checkpoint, whatever its layout."""
    if 'model' in content and isinstance(content['model'], dict):
        ema = content.get('model_ema')
        if isinstance(ema, dict) and ema:
            logger.info("%s: using the 'model_ema' weights (the release preferred them)", path)
            return ema
        return content['model']
    if any(isinstance(v, dict) for v in content.values()):
        raise CheckpointError(f"{path}: a dict of dicts without a 'model' entry "
                              f"(keys: {', '.join(sorted(content)[:8])})")
    return content


def _shape(value):
    return list(value.shape) if hasattr(value, 'shape') else None


def checkpoint_num_classes(state_dict):
    """Number of classes of the classifier in a state dict (None if it has none)."""
    bias = state_dict.get(HEAD_PREFIX + 'bias')
    return int(_shape(bias)[0]) if bias is not None else None


def _listing(keys, limit=10):
    return ', '.join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else '')


def training_config(checkpoint):
    """The config.yaml a training run wrote beside `checkpoint` (its output folder), or None."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), 'config.yaml')
    return path if os.path.isfile(path) else None


def _resize_grid(table, side):
    """[C, s, s] -> [C, side, side], bicubic with half-pixel centres (align_corners False): the
    release's interpolate_position_embedding.py, through the same Paddle call."""
    grid = paddle.to_tensor(np.asarray(table, dtype=np.float32))[None]
    return paddle.nn.functional.interpolate(grid, size=(side, side), mode='bicubic',
                                           align_corners=False)[0].numpy()


def resize_position_tables(state, expected):
    """Resize, in `state`, the position tables whose token count differs from the model's
    (`expected`: key -> shape), as the release did before loading -pretrained weights (e.g. a
    window-12 ImageNet-22k backbone into a window-7 model). Relative tables [(2w-1)^2, heads]
    are resized per head on their (2w-1) x (2w-1) grid, absolute ones [1, n*n, dim] per channel on
    their n x n grid. Returns the resized keys; other mismatches are left to the shape check."""
    resized = []
    for key, value in state.items():
        want = expected.get(key)
        have = _shape(value)
        if want is None or have == want:
            continue
        if 'relative_position_bias_table' in key and len(have) == 2 and len(want) == 2 and have[1] == want[1]:
            side_in, side_out = int(have[0] ** 0.5), int(want[0] ** 0.5)
            if side_in ** 2 == have[0] and side_out ** 2 == want[0]:
                grid = np.asarray(value).T.reshape(have[1], side_in, side_in)
                state[key] = _resize_grid(grid, side_out).reshape(want[1], want[0]).T
                resized.append(key)
        elif 'absolute_positional_embedding' in key and len(have) == 3 and len(want) == 3 and have[2] == want[2]:
            side_in, side_out = int(have[1] ** 0.5), int(want[1] ** 0.5)
            if side_in ** 2 == have[1] and side_out ** 2 == want[1]:
                grid = np.asarray(value)[0].reshape(side_in, side_in, have[2]).transpose(2, 0, 1)
                state[key] = _resize_grid(grid, side_out).transpose(1, 2, 0).reshape(want)
                resized.append(key)
    return resized


def load_pretrained(model, path, keep_head=False):
    """Load `path` into `model`; returns the loaded checkpoint dict (for epoch etc.).

    keep_head=True (evaluation, export): every weight must fit the model, classifier included;
    anything else is an error that lists the keys. keep_head=False (fine-tuning, as the release
    loaded -pretrained): keys the model lacks (e.g. a face-recognition head), keys the file lacks
    and weights of another shape (e.g. a classifier of another size) are skipped with one warning
    that lists them, and the model keeps its own initial values there; only a file of which no
    backbone weight fits is an error. Position tables of another window or image size are first
    resized as the release did (resize_position_tables).
    """
    content = read_checkpoint(path)
    state = extract_state_dict(content, path)
    state = {k: v for k, v in state.items() if not k.endswith(BUFFER_SUFFIXES)}
    expected = {k: list(v.shape) for k, v in model.state_dict().items()
                if not k.endswith(BUFFER_SUFFIXES)}
    resized = resize_position_tables(state, expected)
    if resized:
        logger.info("%s: %d position tables resized (bicubic) to this model's window/image size: %s",
                    path, len(resized), _listing(resized, 3))

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in state if k in expected and _shape(state[k]) != expected[k]]
    head_mismatch = [k for k in wrong_shape if k.startswith(HEAD_PREFIX)]
    found, wanted = checkpoint_num_classes(state), expected.get(HEAD_PREFIX + 'bias', [None])[0]
    if head_mismatch and keep_head and found != wanted:
        raise CheckpointError(
            f"{path}: classifier has {found} classes but the model has {wanted} "
            f"(check -class_type / MODEL.NUM_CLASSES)")
    if keep_head and (missing or unexpected or wrong_shape):
        parts = [f"{title}: {_listing(keys)}" for title, keys in (
            ('missing', missing), ('unexpected', unexpected),
            ('shape mismatch', [f"{k}: file {_shape(state[k])} vs model {expected[k]}" for k in wrong_shape]))
            if keys]
        beside = training_config(path)
        if beside:  # one line naming the config that fits, rather than hundreds of keys
            raise CheckpointError(
                f"{path}: does not fit this config's model ({len(missing) + len(unexpected) + len(wrong_shape)} "
                f"weights differ); it was trained with {beside}: pass -cfg {beside}")
        raise CheckpointError(f"{path}: does not fit this model ({'; '.join(parts)}). "
                              f"Check the config (-cfg) matches the weights")
    fitting = {k: np.asarray(v) for k, v in state.items() if k in expected and k not in wrong_shape}
    if not any(not k.startswith(HEAD_PREFIX) for k in fitting):
        raise CheckpointError(f"{path}: no weight of this file fits the model's backbone "
                              f"(file keys: {_listing(sorted(state), 5)}). Check the config (-cfg)")
    if head_mismatch:
        logger.info("%s: classifier has %s classes, the model %s: starting a new classifier",
                    path, found, wanted)
    skipped = [k for k in wrong_shape if k not in head_mismatch]
    if missing or unexpected or skipped:
        logger.warning("%s: fine-tuning from the weights that fit; skipped %s", path, '; '.join(
            f"{title} {_listing(keys)}" for title, keys in (
                ('(not in the file, kept as initialised):', missing),
                ('(not in the model):', unexpected),
                ('(other shape):', [f"{k} file {_shape(state[k])} vs model {expected[k]}" for k in skipped]))
            if keys))
    current = model.state_dict()
    model.set_state_dict({**{k: current[k].numpy() for k in expected if k not in fitting}, **fitting})
    return content


# ---------------------------------------------------------------------------------------------
# A training run's checkpoints

def unwrap(model):
    """The model inside a paddle.DataParallel wrapper (or the model itself)."""
    return model._layers if isinstance(model, paddle.DataParallel) else model


def checkpoint_state(model, optimizer, epoch, lr_scheduler, scaler=None, ema=None, best_macro_f1=None):
    """The release's checkpoint dict (+ best_macro_f1 so resumed runs keep the right 'best')."""
    state = {'model': unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch,
             'lr_scheduler': lr_scheduler.state_dict(),
             # Optimizer state is keyed by Paddle's generated parameter names, which depend on how many
             # layers the process built before; this map lets restore() rename them (see below).
             'param_names': {n: p.name for n, p in unwrap(model).named_parameters()}}
    if scaler is not None:
        state['amp_grad_scaler'] = scaler.state_dict()
    if ema is not None:
        state['model_ema'] = ema.state_dict()
    if best_macro_f1 is not None:
        state['best_macro_f1'] = float(best_macro_f1)
    return state


def save_checkpoint(path, state):
    """Write atomically: a kill mid-write leaves the previous file (or none), never half of one."""
    with atomic_path(path) as tmp:
        paddle.save(state, tmp)
    return path


def find_resume_checkpoint(output_dir, logger):
    """Newest readable checkpoint in output_dir (highest epoch; `last` wins ties), or None."""
    candidates = []
    for path in glob.glob(os.path.join(output_dir, '*.pdparams')):
        name = os.path.basename(path)
        if is_temporary(name):
            continue
        match = CHECKPOINT_RE.match(name)
        if match:
            candidates.append((int(match.group(1)), 0, path))
        elif name == 'last.pdparams':
            candidates.append((None, 1, path))
    # `last` is rewritten every epoch, so read its epoch (which also proves it readable); periodic
    # files carry it in the name and are read only when their turn comes.
    resolved = []
    for epoch, priority, path in candidates:
        if epoch is None:
            try:
                epoch = int(read_checkpoint(path).get('epoch', -1))
            except CheckpointError as err:
                logger.info(f"resume auto: skipping {err}")
                continue
        resolved.append((epoch, priority, path))
    for epoch, priority, path in sorted(resolved, reverse=True):
        if priority == 0:
            try:
                read_checkpoint(path)
            except CheckpointError as err:
                logger.info(f"resume auto: skipping {err}")
                continue
        return path
    return None


def check_num_classes(state, path, config):
    """Refuse a checkpoint whose classifier does not match the class type being trained."""
    found = checkpoint_num_classes(state['model'])
    wanted = config.MODEL.NUM_CLASSES
    if found is not None and found != wanted:
        raise CheckpointError(
            f"{path}: checkpoint has {found} classes but class_type '{config.DATA.CLASS_TYPE}' "
            f"needs {wanted}")


def _rename_optimizer_state(opt_state, saved_names, model):
    """Optimizer accumulators are stored as '<generated param name>_<accumulator>_0'; map the
    generated names of the saving process to this process's through the structured names."""
    if not saved_names:
        return opt_state
    current = {n: p.name for n, p in unwrap(model).named_parameters()}
    renames = {old: current[n] for n, old in saved_names.items() if n in current and current[n] != old}
    if not renames:
        return opt_state
    renamed = {}
    for key, value in opt_state.items():
        new_key = key
        for old, new in renames.items():
            if key.startswith(old + '_'):
                new_key = new + key[len(old):]
                break
        renamed[new_key] = value
    if 'master_weights' in opt_state and isinstance(opt_state['master_weights'], dict):
        renamed['master_weights'] = {renames.get(k, k): v for k, v in opt_state['master_weights'].items()}
    return renamed


def restore(path, model, optimizer, lr_scheduler, scaler, ema, config, logger):
    """Resume from `path`, as the release did: a training checkpoint restores the weights, optimizer,
    AMP scaler, EMA and epoch; a plain state dict only the weights (training continues after
    -last_epoch). Returns (last finished epoch, best macro F1 so far or None)."""
    content = read_checkpoint(path)
    last_epoch = int(config.TRAIN.LAST_EPOCH)
    if not ('model' in content and isinstance(content['model'], dict)):
        check_num_classes({'model': content}, path, config)
        unwrap(model).set_state_dict(content)
        if ema is not None:
            ema.set_state_dict(unwrap(model).state_dict())
        logger.warning(f"----- Resume Training: Load {path}, w/o opt/epoch/scaler (a plain state dict: "
                       f"optimizer, scheduler and epoch not restored; continuing after -last_epoch {last_epoch})")
        return last_epoch, None
    check_num_classes(content, path, config)
    unwrap(model).set_state_dict(content['model'])
    opt_state = content.get('optimizer')
    if opt_state is not None:
        opt_state = _rename_optimizer_state(opt_state, content.get('param_names'), model)
        names = {p.name for p in unwrap(model).parameters()}
        moments = [k[:-len('_moment1_0')] for k in opt_state if k.endswith('_moment1_0')]
        # A file from another program (the release's) names its optimizer state after that program's
        # generated parameter names, which cannot be matched to this model's: start AdamW afresh.
        if not moments or not set(moments) <= names:
            logger.warning(f"{path}: its optimizer state names parameters this model does not have "
                           "(a checkpoint of another program); AdamW starts afresh")
            opt_state = None
    if opt_state is not None:
        optimizer.set_state_dict(opt_state)
    elif 'optimizer' not in content:
        logger.warning(f"{path}: no optimizer state; AdamW starts afresh")
    if scaler is not None and 'amp_grad_scaler' in content:
        scaler.load_state_dict(content['amp_grad_scaler'])
    if ema is not None:
        ema.set_state_dict(content.get('model_ema') or content['model'])
    last_epoch = int(content.get('epoch', last_epoch))
    # The schedule is a function of the epoch (optim.WarmupCosine): the epoch is all it needs, from
    # either layout of 'lr_scheduler' (the release's or the flat one written before).
    lr_scheduler.step(last_epoch)
    logger.info(f"----- Resume Training: Load model from {path}, w/t "
                f"opt = [{'optimizer' in content}], lr_scheduler = [{'lr_scheduler' in content}], "
                f"model_ema = [{'model_ema' in content}], epoch = [{content.get('epoch', -1)}], "
                f"amp_grad_scaler = [{'amp_grad_scaler' in content}]")
    return last_epoch, content.get('best_macro_f1')


def weights_digest(model):
    """sha256 over the state dict: equal digests mean identical weights (e.g. across ranks)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value.numpy()).tobytes())
    return digest.hexdigest()


def prune_periodic(output_dir, keep):
    """Keep only the newest `keep` periodic `Epoch-E-Loss-L.pdparams` files (best/last untouched)."""
    found = []
    for path in glob.glob(os.path.join(output_dir, 'Epoch-*-Loss-*.pdparams')):
        match = CHECKPOINT_RE.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found)[:-keep]:
        os.remove(path)


# ---------------------------------------------------------------------------------------------
# The run's output folder: history and lock

def read_history(output_dir):
    """The per-epoch records of OUTPUT/history.json ([] when there is none yet)."""
    path = os.path.join(output_dir, 'history.json')
    if not os.path.isfile(path):
        return []
    with open(path, 'r', encoding='utf-8') as f:
        return json.load(f)


def append_history(output_dir, record):
    """Add (or, after a resume, replace) one epoch's record in OUTPUT/history.json, atomically."""
    path = os.path.join(output_dir, 'history.json')
    history = read_history(output_dir)
    # A resumed run re-does epochs after its checkpoint: replace, never duplicate them.
    history = [h for h in history if h.get('epoch', 0) < record['epoch']] + [record]
    with atomic_open(path, 'w', encoding='utf-8') as f:
        json.dump(history, f, indent=1)


_held_locks = []


def claim_output_dir(output_dir):
    """Hold an exclusive lock on the output folder for this process's life, then clear the
    temporary files a killed run left. A second run on the same folder (say, a restart while
    the killed launcher's orphaned workers still write) would race it and mix checkpoints."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, as before
        return
    path = os.path.join(output_dir, '.run.lock')
    handle = open(path, 'a+', encoding='utf-8')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or 'unknown'
        handle.close()
        raise TrainingError(f"-output {output_dir}: another run (pid {holder}) is using this folder; "
                            "wait for it to end or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held_locks.append(handle)
    for name in os.listdir(output_dir):
        if is_temporary(name):
            os.remove(os.path.join(output_dir, name))


# ---------------------------------------------------------------------------------------------
# An output folder that already holds a run

EVAL_FILES = ('predictions.npz', 'metrics.json')
# Everything a training run writes besides checkpoints; removed with them by -overwrite so that
# nothing of the old run mixes into the new one, its own log files (train_log.py) included. The
# launchers' logs (launch_logs/) stay: the launcher has already opened them for this very run.
RUN_MARKERS = ('history.json', 'best.json', 'best.pdparams', 'last.pdparams')
TRAINING_FILES = RUN_MARKERS + ('config.yaml', 'training_curves.png', 'log_all.txt', 'log.txt')
TRAINING_FOLDERS = ('visualdl',)
RANK_LOG_RE = re.compile(r'log_\d+\.txt')


def training_run_files(output_dir):
    """The files of an earlier training run in `output_dir` (checkpoints, history), sorted."""
    if not os.path.isdir(output_dir):
        return []
    found = [name for name in os.listdir(output_dir)
             if name in RUN_MARKERS or CHECKPOINT_RE.match(name)]
    return sorted(found)


def evaluation_files(output_dir):
    """The results of an earlier -eval in `output_dir`."""
    return [name for name in EVAL_FILES if os.path.isfile(os.path.join(output_dir, name))]


def _named(files, limit=4):
    return ', '.join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else '')


def check_output_dir(output_dir, evaluating, resume, overwrite):
    """Refuse (UsageError, exit 2) to start a run into a folder that holds another run's results,
    before anything is written: training over a finished run would replace `best` and the history
    while the old epoch files stay, and a later `-resume auto` would pick those. Training may
    continue the run with -resume; -overwrite starts over (remove_previous_run clears the folder)."""
    if overwrite:
        return
    run_files = training_run_files(output_dir)
    if evaluating:
        if run_files:
            raise UsageError(f"-output {output_dir} holds a training run ({_named(run_files)}); "
                             "-eval would write its results among them: choose another -output")
        results = evaluation_files(output_dir)
        if results:
            raise UsageError(f"-output {output_dir} holds the results of an earlier -eval "
                             f"({_named(results)}): add -overwrite to replace them, or choose "
                             "another -output")
    elif run_files and not resume:
        raise UsageError(f"-output {output_dir} holds another training run ({_named(run_files)}): "
                         "add -resume auto to continue it, -overwrite to start over (its files are "
                         "removed first), or choose another -output")


def remove_previous_run(output_dir, evaluating):
    """-overwrite: delete what an earlier run of the same kind left in `output_dir`."""
    if evaluating:
        if training_run_files(output_dir):
            raise UsageError(f"-output {output_dir} holds a training run; -eval -overwrite replaces "
                             "only -eval results: choose another -output")
        names = evaluation_files(output_dir)
    else:
        names = sorted(set(training_run_files(output_dir))
                       | {n for n in TRAINING_FILES if os.path.isfile(os.path.join(output_dir, n))}
                       | {n for n in os.listdir(output_dir) if RANK_LOG_RE.fullmatch(n)})
    for name in names:
        os.remove(os.path.join(output_dir, name))
    for name in () if evaluating else TRAINING_FOLDERS:
        shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    return names
