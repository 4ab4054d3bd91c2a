"""Training and evaluation of the ABAW Swin models, shared by main_single_gpu.py and main_multi_gpu.py.

One code path serves one process and N processes (`paddle.distributed.launch`): data are split by
a seeded, epoch-indexed sampler, gradients are averaged by `paddle.DataParallel`, evaluation
results are gathered on every rank and the distributed sampler's padding removed by sample index.

Reliability (issue 9): checkpoints are written atomically (periodic `Epoch-E-Loss-L.pdparams`,
`best.pdparams` by validation macro F1, `last.pdparams` every epoch); `-resume auto` picks the newest
complete one in the output folder; a NaN/inf loss stops the run naming the step; every known bad
input ends in one `error: ...` line (see `main`).
"""
import datetime
import glob
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import time

import cpu_env  # (threading / MKL settings before paddle is imported)
import numpy as np
import paddle
import paddle.nn.functional as F

import datasets
import labels as abaw_labels
from fileio import atomic_open, atomic_path, check_writable_dir, is_temporary

CHECKPOINT_RE = re.compile(r'^Epoch-(\d+)-Loss-.*\.pdparams$')


class TrainingError(RuntimeError):
    """A failure the user must act on; main() prints its message as one line."""


class NonFiniteLossError(TrainingError):
    pass


class CheckpointError(TrainingError):
    pass


# ---------------------------------------------------------------------------------------------
# Processes, devices, logging

def world():
    """(rank, world_size) as set by paddle.distributed.launch (0, 1 when run directly)."""
    return paddle.distributed.get_rank(), paddle.distributed.get_world_size()


def setup_device(config, logger):
    wanted = config.DEVICE or ''
    has_cuda = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if not wanted:
        wanted = 'gpu' if has_cuda else 'cpu'
    if wanted == 'gpu' and not has_cuda:
        raise TrainingError("-device gpu: this Paddle has no CUDA support or no GPU is visible")
    if wanted == 'gpu':
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().device_id}")
    else:
        paddle.set_device('cpu')
    logger.info(f"device: {wanted}")
    return wanted


def make_logger(output_dir, rank):
    logger = logging.getLogger(f"cfcsp.engine.{rank}.{output_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(message)s", "%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if output_dir:
        handler = logging.FileHandler(os.path.join(output_dir, f"log-{rank}.txt"))
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def seed_epoch(seed, epoch, rank=0, worker=0):
    """Seed every RNG from (seed, epoch, rank, worker) so epoch k draws the same randomness whether
    the run started at epoch 1 or was resumed at k (resume equivalence)."""
    value = (seed * 1_000_003 + epoch * 10_007 + rank * 101 + worker) % (2 ** 31)
    random.seed(value)
    np.random.seed(value)
    paddle.seed(value)


def _worker_init(seed, rank):
    def init(worker_id):
        info = paddle.io.get_worker_info()
        epoch = getattr(info.dataset, 'epoch', 0) if info is not None else 0
        seed_epoch(seed, epoch, rank, worker_id + 1)
    return init


# ---------------------------------------------------------------------------------------------
# Data

class EpochBatchSampler(paddle.io.Sampler):
    """Batches of this rank's share of the indices; order fixed by (seed, epoch).

    Every rank gets the same number of samples: the index list is padded by repeating its start
    (as paddle's DistributedBatchSampler does); evaluation removes the repeats by sample index.
    """

    def __init__(self, num_samples, batch_size, rank, world_size, shuffle, seed, drop_last=False):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.per_rank = int(math.ceil(num_samples / world_size))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        indices = np.arange(self.num_samples)
        if self.shuffle:
            np.random.RandomState((self.seed * 7919 + self.epoch) % (2 ** 31)).shuffle(indices)
        total = self.per_rank * self.world_size
        if total > len(indices):
            indices = np.concatenate([indices, np.resize(indices, total - len(indices))])
        mine = indices[self.rank:total:self.world_size].tolist()
        for start in range(0, len(mine), self.batch_size):
            batch = mine[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self):
        if self.drop_last:
            return self.per_rank // self.batch_size
        return int(math.ceil(self.per_rank / self.batch_size))


SHARED_MEMORY_DIR = '/dev/shm'


def shared_memory_fits(config, batch_size, workers, processes=1, prefetch=None, folder=SHARED_MEMORY_DIR):
    """(fits, bytes needed, bytes free): can `folder` hold every batch the loaders keep in flight?

    Each worker keeps DATA.PREFETCH_FACTOR float32 batches ready in shared memory, in every
    training process on the machine, and the main process holds two more (the one in use and
    the one its reader thread has taken).
    """
    size, channels = int(config.DATA.IMAGE_SIZE), int(config.DATA.IMAGE_CHANNELS)
    prefetch = int(config.DATA.PREFETCH_FACTOR if prefetch is None else prefetch)
    in_flight = processes * (workers * max(1, prefetch) + 2)
    needed = in_flight * batch_size * channels * size * size * 4
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # no such folder (not Linux): Paddle then uses its own mechanism
        return True, needed, None
    return needed <= free, needed, free


def build_loader(dataset, config, train, rank, world_size, logger=None):
    batch_size = config.DATA.BATCH_SIZE if train else (config.DATA.BATCH_SIZE_EVAL or config.DATA.BATCH_SIZE)
    sampler = EpochBatchSampler(len(dataset), batch_size, rank, world_size, shuffle=train,
                                seed=config.SEED)
    workers = int(config.DATA.NUM_WORKERS)
    if workers < 0:
        raise ValueError(f"DATA.NUM_WORKERS must be 0 or more, not {workers}")
    prefetch = int(config.DATA.PREFETCH_FACTOR)
    if prefetch < 1:
        raise ValueError(f"DATA.PREFETCH_FACTOR must be 1 or more, not {config.DATA.PREFETCH_FACTOR}")
    shared = bool(config.DATA.USE_SHARED_MEMORY) and workers > 0
    if shared:
        # A docker container's default /dev/shm is 64 MB; overflowing it kills a worker with a
        # bus error that names nothing, so check up front. Pipes carry float32 batches 5-6x slower
        # than shared memory here (benchmarks/RESULTS.md), so first try fewer batches in flight.
        processes = cpu_env.processes_on_this_machine()
        fits, needed, free = shared_memory_fits(config, batch_size, workers, processes)
        if not fits:
            config_prefetch = prefetch
            if prefetch > 1 and shared_memory_fits(config, batch_size, workers, processes, prefetch=1)[0]:
                prefetch, fallback = 1, "keeping 1 batch per worker instead"
            else:
                shared, fallback = False, "handing batches over through pipes instead (several times slower)"
            if logger is not None and rank == 0:
                logger.warning(
                    f"{SHARED_MEMORY_DIR} has {free / 2**20:.0f} MB free but the {'training' if train else 'validation'} "
                    f"loader would need {needed / 2**20:.0f} MB (DATA.NUM_WORKERS {workers} x DATA.PREFETCH_FACTOR "
                    f"{config_prefetch} batches of {batch_size}); {fallback}. Enlarge it (e.g. docker run "
                    f"--shm-size=8g) or lower DATA.PREFETCH_FACTOR / DATA.NUM_WORKERS / -batch_size.")
    # Without workers, Paddle's prefetch thread hangs the loop forever when a sample raises; load
    # in the main thread instead (the deterministic NUM_WORKERS 0 mode is for tests and resume checks).
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                  use_buffer_reader=workers > 0, prefetch_factor=prefetch,
                                  use_shared_memory=shared,
                                  worker_init_fn=_worker_init(config.SEED, rank) if workers else None)
    return loader, sampler


# ---------------------------------------------------------------------------------------------
# Optimisation pieces

class WarmupCosine(paddle.optimizer.lr.LRScheduler):
    """Linear warm-up from warmup_start_lr to base_lr over warmup_epochs, then cosine to end_lr,
    evaluated at fractional epochs (`last_epoch` counts optimiser updates)."""

    def __init__(self, base_lr, warmup_start_lr, end_lr, warmup_epochs, total_epochs, steps_per_epoch):
        self.warmup_start_lr, self.end_lr = warmup_start_lr, end_lr
        self.warmup_epochs, self.total_epochs = warmup_epochs, total_epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        super().__init__(learning_rate=base_lr, last_epoch=-1)

    def get_lr(self):
        epoch = self.last_epoch / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * epoch / self.warmup_epochs
        span = max(1e-12, self.total_epochs - self.warmup_epochs)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.end_lr + 0.5 * (self.base_lr - self.end_lr) * (1 + math.cos(math.pi * progress))


def scaled_learning_rates(config, world_size):
    """(base, warmup_start, end) learning rates, scaled by effective batch / LINEAR_SCALED_LR."""
    lrs = (config.TRAIN.BASE_LR, config.TRAIN.WARMUP_START_LR, config.TRAIN.END_LR)
    if config.TRAIN.LINEAR_SCALED_LR:
        effective = config.DATA.BATCH_SIZE * config.TRAIN.ACCUM_ITER * world_size
        lrs = tuple(lr * effective / config.TRAIN.LINEAR_SCALED_LR for lr in lrs)
    return lrs


def _no_weight_decay(name, param):
    return (len(param.shape) <= 1 or name.endswith('.bias') or 'relative_position_bias_table' in name
            or 'absolute_positional_embedding' in name)


def build_optimizer(config, model, lr_scheduler):
    name = config.TRAIN.OPTIMIZER.NAME
    if name != 'AdamW':
        raise TrainingError(f"TRAIN.OPTIMIZER.NAME '{name}': only AdamW (the release's optimizer) is supported")
    decayed = {p.name for n, p in model.named_parameters() if not _no_weight_decay(n, p)}
    betas = config.TRAIN.OPTIMIZER.BETAS
    clip = paddle.nn.ClipGradByGlobalNorm(config.TRAIN.GRAD_CLIP) if config.TRAIN.GRAD_CLIP else None
    return paddle.optimizer.AdamW(
        learning_rate=lr_scheduler, beta1=betas[0], beta2=betas[1],
        epsilon=config.TRAIN.OPTIMIZER.EPS, parameters=model.parameters(),
        weight_decay=config.TRAIN.WEIGHT_DECAY, apply_decay_param_fun=lambda n: n in decayed,
        grad_clip=clip)


def smoothed_targets(labels, num_classes, smoothing):
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def soft_cross_entropy(logits, targets):
    return (-targets * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()


class Mixup:
    """Batch-wise mixup / cutmix with label smoothing (TRAIN.MIXUP_* / CUTMIX_* keys)."""

    def __init__(self, config, num_classes):
        t = config.TRAIN
        self.mixup_alpha, self.cutmix_alpha = t.MIXUP_ALPHA, t.CUTMIX_ALPHA
        self.cutmix_minmax = config.TRAIN.CUTMIX_MINMAX
        self.prob = t.MIXUP_PROB
        self.switch_prob = config.TRAIN.MIXUP_SWITCH_PROB
        self.smoothing, self.num_classes = t.SMOOTHING, num_classes
        # Own generator: the data loader's prefetch thread draws from the global numpy RNG for the
        # augmentations concurrently, which would make the mixing order-dependent (non-reproducible).
        self.rng = np.random.RandomState(0)
        mode = config.TRAIN.MIXUP_MODE
        if mode != 'batch':
            raise TrainingError(f"TRAIN.MIXUP_MODE '{mode}': only 'batch' is supported")

    def set_epoch(self, seed, epoch, rank=0):
        self.rng = np.random.RandomState((seed * 7717 + epoch * 131 + rank) % (2 ** 31))

    @staticmethod
    def enabled(config):
        t = config.TRAIN
        return t.MIXUP_PROB > 0 and (t.MIXUP_ALPHA > 0 or t.CUTMIX_ALPHA > 0 or config.TRAIN.CUTMIX_MINMAX)

    def _cut_box(self, lam, height, width):
        if self.cutmix_minmax:
            lo, hi = self.cutmix_minmax
            h = self.rng.randint(int(height * lo), int(height * hi))
            w = self.rng.randint(int(width * lo), int(width * hi))
        else:
            ratio = math.sqrt(1 - lam)
            h, w = int(height * ratio), int(width * ratio)
        cy, cx = self.rng.randint(height), self.rng.randint(width)
        y0, y1 = np.clip(cy - h // 2, 0, height), np.clip(cy + h // 2, 0, height)
        x0, x1 = np.clip(cx - w // 2, 0, width), np.clip(cx + w // 2, 0, width)
        return int(y0), int(y1), int(x0), int(x1)

    def __call__(self, images, labels):
        lam, use_cutmix = 1.0, False
        if self.rng.rand() < self.prob:
            use_cutmix = self.cutmix_alpha > 0 or self.cutmix_minmax
            if use_cutmix and self.mixup_alpha > 0:
                use_cutmix = self.rng.rand() < self.switch_prob
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(self.rng.beta(alpha, alpha)) if alpha > 0 else 1.0
        flipped = images.flip(axis=0)
        if lam < 1.0:
            if use_cutmix:
                height, width = images.shape[2], images.shape[3]
                y0, y1, x0, x1 = self._cut_box(lam, height, width)
                mask = np.ones((1, 1, height, width), np.float32)
                mask[..., y0:y1, x0:x1] = 0
                mask = paddle.to_tensor(mask)
                images = images * mask + flipped * (1 - mask)
                lam = 1 - (y1 - y0) * (x1 - x0) / float(height * width)
            else:
                images = images * lam + flipped * (1 - lam)
        targets = (smoothed_targets(labels, self.num_classes, self.smoothing) * lam
                   + smoothed_targets(labels.flip(axis=0), self.num_classes, self.smoothing) * (1 - lam))
        return images, targets


class ModelEma:
    """Exponential moving average of the weights (TRAIN.MODEL_EMA, decay TRAIN.MODEL_EMA_DECAY)."""

    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @paddle.no_grad()
    def update(self, model):
        for key, value in model.state_dict().items():
            if paddle.is_floating_point(value):
                self.shadow[key] = self.shadow[key] * self.decay + value.detach() * (1.0 - self.decay)
            else:
                self.shadow[key] = value.detach().clone()

    def state_dict(self):
        return self.shadow

    def set_state_dict(self, state):
        self.shadow = {k: paddle.to_tensor(v) for k, v in state.items()}


def _unwrap(model):
    return model._layers if isinstance(model, paddle.DataParallel) else model


def _all_reduce_mean(value, world_size):
    if world_size == 1:
        return value
    tensor = paddle.to_tensor([value], dtype='float64')
    paddle.distributed.all_reduce(tensor)
    return float(tensor.numpy()[0]) / world_size


# ---------------------------------------------------------------------------------------------
# Checkpoints

def checkpoint_state(model, optimizer, epoch, lr_scheduler, scaler=None, ema=None, best_macro_f1=None):
    """The release's checkpoint dict (+ best_macro_f1 so resumed runs keep the right 'best')."""
    state = {'model': _unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch,
             'lr_scheduler': lr_scheduler.state_dict(),
             # Optimizer state is keyed by Paddle's generated parameter names, which depend on how many
             # layers the process built before; this map lets restore() rename them (see below).
             'param_names': {n: p.name for n, p in _unwrap(model).named_parameters()}}
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


def _load_checkpoint(path):
    try:
        state = paddle.load(path)
    except Exception as err:  # paddle raises assorted types for truncated/corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint dict")
    return state


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
    # `last` is rewritten every epoch, so read its epoch; periodic files carry it in the name.
    resolved = []
    for epoch, priority, path in candidates:
        if epoch is None:
            try:
                epoch = int(_load_checkpoint(path).get('epoch', -1))
            except CheckpointError as err:
                logger.info(f"resume auto: skipping {err}")
                continue
        resolved.append((epoch, priority, path))
    for epoch, _, path in sorted(resolved, reverse=True):
        try:
            _load_checkpoint(path)
        except CheckpointError as err:
            logger.info(f"resume auto: skipping {err}")
            continue
        return path
    return None


def check_num_classes(state, path, config):
    import checkpoints
    found = checkpoints.checkpoint_num_classes(state['model'])
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
    current = {n: p.name for n, p in _unwrap(model).named_parameters()}
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
    state = _load_checkpoint(path)
    if 'model' not in state or 'epoch' not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (needs 'model' and 'epoch' to resume)")
    check_num_classes(state, path, config)
    _unwrap(model).set_state_dict(state['model'])
    if 'optimizer' in state:
        optimizer.set_state_dict(_rename_optimizer_state(state['optimizer'], state.get('param_names'), model))
    if 'lr_scheduler' in state:
        lr_scheduler.set_state_dict(state['lr_scheduler'])
    if scaler is not None and 'amp_grad_scaler' in state:
        scaler.load_state_dict(state['amp_grad_scaler'])
    if ema is not None:
        ema.set_state_dict(state.get('model_ema', state['model']))
    logger.info(f"resumed from {path} (epoch {state['epoch']})")
    return int(state['epoch']), state.get('best_macro_f1')


def load_weights(model, path, config, logger, strict_head):
    """Pretrained/evaluated weights. strict_head: the classifier must match (evaluation)."""
    import checkpoints
    checkpoints.load_pretrained(_unwrap(model), path, keep_head=strict_head)
    logger.info(f"loaded weights from {path}")


# ---------------------------------------------------------------------------------------------
# History

def append_history(output_dir, record):
    path = os.path.join(output_dir, 'history.json')
    history = []
    if os.path.isfile(path):
        with open(path, 'r', encoding='utf-8') as f:
            history = json.load(f)
    # A resumed run re-does epochs after its checkpoint: replace, never duplicate them.
    history = [h for h in history if h.get('epoch', 0) < record['epoch']] + [record]
    with atomic_open(path, 'w', encoding='utf-8') as f:
        json.dump(history, f, indent=1)


# ---------------------------------------------------------------------------------------------
# Train / evaluate

def _ok_rows(images, labels, ok, index, dataset):
    """Drop rows whose image was corrupt when DATA.SKIP_BAD_IMAGES, else stop naming the file.
    Returns (images, labels, n_bad)."""
    bad = int((ok == 0).sum())
    if bad == 0:
        return images, labels, 0
    if not dataset.skip_bad_images:
        raise dataset.bad_image_error(int(index.numpy()[(ok.numpy() == 0)][0]))
    keep = paddle.nonzero(ok != 0).flatten()
    return paddle.gather(images, keep), paddle.gather(labels, keep), bad


def train_one_epoch(model, loader, optimizer, lr_scheduler, config, epoch, logger, world_size=1,
                    scaler=None, ema=None, mixup=None):
    """One epoch; returns dict(train_loss, lr, images, seconds, bad_images)."""
    model.train()
    accum = max(1, config.TRAIN.ACCUM_ITER)
    num_batches = len(loader)
    num_classes = config.MODEL.NUM_CLASSES
    total_loss, total_count, bad_images, seen = 0.0, 0, 0, 0
    start = time.time()
    optimizer.clear_grad()
    for batch_id, (images, labels, index, ok) in enumerate(loader):
        images, labels, bad = _ok_rows(images, labels, ok, index, loader.dataset)
        bad_images += bad
        with paddle.amp.auto_cast(enable=scaler is not None):
            if images.shape[0] == 0:
                # Every image of this batch was corrupt: a zero loss keeps the ranks' collectives in step.
                loss = model(paddle.zeros([1, 3, config.DATA.IMAGE_SIZE, config.DATA.IMAGE_SIZE])).sum() * 0
            elif mixup is not None:
                mixed, targets = mixup(images, labels)
                loss = soft_cross_entropy(model(mixed), targets)
            else:
                targets = smoothed_targets(labels, num_classes, config.TRAIN.SMOOTHING)
                loss = soft_cross_entropy(model(images), targets)
        loss_value = _all_reduce_mean(float(loss), world_size)
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at epoch {epoch} step {batch_id + 1}/{num_batches} "
                f"(global step {(epoch - 1) * num_batches + batch_id + 1}); training stopped")
        scaled = loss / accum
        if scaler is not None:
            scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if (batch_id + 1) % accum == 0 or batch_id + 1 == num_batches:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.clear_grad()
            lr_scheduler.step()
            if ema is not None:
                ema.update(_unwrap(model))
        count = int(images.shape[0])
        total_loss += loss_value * count
        total_count += count
        seen += count
        if config.REPORT_FREQ and (batch_id + 1) % config.REPORT_FREQ == 0:
            logger.info(f"Epoch[{epoch:03d}/{config.TRAIN.NUM_EPOCHS:03d}] Step[{batch_id + 1:04d}/{num_batches:04d}] "
                        f"loss {total_loss / max(1, total_count):.4f} lr {optimizer.get_lr():.3e} "
                        f"{seen * world_size / (time.time() - start):.1f} images/s")
    seconds = time.time() - start
    return {'train_loss': total_loss / max(1, total_count), 'lr': float(optimizer.get_lr()),
            'images': seen * world_size, 'seconds': seconds, 'bad_images': bad_images}


def _all_gather_array(array, world_size):
    if world_size == 1:
        return array
    parts = []
    paddle.distributed.all_gather(parts, paddle.to_tensor(array))
    return np.concatenate([p.numpy() for p in parts])


@paddle.no_grad()
def predict(model, loader, world_size=1):
    """(indices, logits float32 [N,C], skipped) over the whole dataset, each sample exactly once."""
    model.eval()
    all_index, all_logits, all_ok = [], [], []
    with paddle.no_grad():
        for images, _labels, index, ok in loader:
            all_logits.append(np.asarray(model(images), dtype=np.float32))
            all_index.append(index.numpy())
            all_ok.append(ok.numpy())
    index = _all_gather_array(np.concatenate(all_index).astype(np.int64), world_size)
    logits = _all_gather_array(np.concatenate(all_logits), world_size)
    ok = _all_gather_array(np.concatenate(all_ok).astype(np.int64), world_size)
    # The sampler padded with repeats; keep each sample's first occurrence, in dataset order.
    index, first = np.unique(index, return_index=True)
    logits, ok = logits[first], ok[first]
    skipped = int((ok == 0).sum())
    return index[ok == 1], logits[ok == 1], skipped


def score(logits, labels, class_names):
    """Loss/accuracy/F1 over the frames labelled in the model's classes (None when there are none)."""
    from metrics import classification_scores
    mask = labels >= 0
    if not mask.any():
        return None
    result = classification_scores(labels[mask], logits[mask].argmax(axis=1), list(class_names))
    result['loss'] = float(F.cross_entropy(paddle.to_tensor(logits[mask]),
                                           paddle.to_tensor(labels[mask].astype(np.int64))))
    return result


class ExportedModel:
    """An exported predictor (tools/export_model.py) in the eager model's place for -eval: the
    fast CPU path, giving the same logits within 1e-4."""

    def __init__(self, prefix, config, device, logger):
        from predictor import PredictorError, load_classifier
        try:
            self.classify = load_classifier(config, prefix, device)
        except PredictorError as err:
            raise CheckpointError(str(err)) from None
        logger.info(f"-eval through the exported predictor {prefix}")

    def eval(self):
        return self

    def __call__(self, images):
        return self.classify(images.numpy())


def evaluate(model, loader, dataset, class_names, world_size=1):
    index, logits, skipped = predict(model, loader, world_size)
    if skipped and not dataset.skip_bad_images:
        bad = sorted(set(range(len(dataset))) - set(index.tolist()))
        raise dataset.bad_image_error(bad[0])
    if len(index) != len(dataset) - skipped:
        raise TrainingError(f"evaluation covered {len(index)} of {len(dataset) - skipped} frames")
    labels = np.array([dataset.samples[i][1] for i in index], dtype=np.int64)
    paths = [dataset.samples[i][0] for i in index]
    return {'paths': paths, 'logits': logits, 'labels': labels, 'skipped': skipped,
            'scores': score(logits, labels, class_names)}


def write_predictions(output_dir, result, class_names, class_type):
    with atomic_path(os.path.join(output_dir, 'predictions.npz')) as tmp:
        np.savez(tmp, paths=np.array(result['paths'], dtype=str),
                 logits=result['logits'].astype(np.float32), labels=result['labels'].astype(np.int64),
                 class_names=np.array(class_names, dtype=str), class_type=np.array(class_type))


def _f1_fields(scores, prefix='val_'):
    if scores is None:
        return {f'{prefix}loss': None, f'{prefix}acc': None, f'{prefix}macro_f1': None}
    return {f'{prefix}loss': scores['loss'], f'{prefix}acc': scores['accuracy'],
            f'{prefix}macro_f1': scores['macro_f1'], f'{prefix}per_class_f1': scores['per_class_f1'],
            f'{prefix}confusion': scores['confusion']}


# ---------------------------------------------------------------------------------------------
# Entry

def resolve_output(config, args_output, rank):
    if args_output:
        return config.SAVE
    mode = 'eval' if config.EVAL else 'train'
    return os.path.join(config.SAVE, f"{mode}-{datetime.datetime.now().strftime('%Y%m%d-%H-%M')}")


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


def run(config, output_given=True, distributed=False):
    """Train (or with config.EVAL, evaluate) as configured. Returns a result dict (rank-local)."""
    import swin_transformer
    abaw_labels.check_class_type(config.DATA.CLASS_TYPE)
    class_names = abaw_labels.CLASS_NAMES[config.DATA.CLASS_TYPE]
    if config.MODEL.NUM_CLASSES != len(class_names):
        raise TrainingError(f"MODEL.NUM_CLASSES {config.MODEL.NUM_CLASSES} does not match class_type "
                            f"'{config.DATA.CLASS_TYPE}' ({len(class_names)} classes)")
    if distributed and paddle.distributed.get_world_size() > 1:
        paddle.distributed.init_parallel_env()
    rank, world_size = world()
    output_dir = resolve_output(config, output_given, rank)
    if rank == 0:
        check_writable_dir(output_dir)
        claim_output_dir(output_dir)
    logger = make_logger(output_dir if rank == 0 else None, rank)
    device = setup_device(config, logger)
    use_amp = bool(config.AMP)
    if use_amp and device == 'cpu':
        logger.info("-amp: ignored on CPU (mixed precision needs a GPU); training in float32")
        use_amp = False
    if rank == 0:
        with atomic_open(os.path.join(output_dir, 'config.yaml'), 'w', encoding='utf-8') as f:
            f.write(config.dump())
    seed_epoch(config.SEED, 0, rank)

    val_set = datasets.build_dataset(config, 'val')
    logger.info(f"validation frames: {len(val_set)} ({config.DATA.CLASS_TYPE}, "
                f"{int(sum(1 for _, l in val_set.samples if l >= 0))} labelled in its classes)")
    val_loader, _ = build_loader(val_set, config, False, rank, world_size, logger)
    model = swin_transformer.build_swin(config)

    if config.EVAL:
        weights = config.MODEL.PRETRAINED or (config.MODEL.RESUME if config.MODEL.RESUME != 'auto' else None)
        if not weights:
            raise TrainingError("-eval needs -pretrained CHECKPOINT.pdparams (the model to evaluate)")
        if weights.endswith('.pdparams'):
            load_weights(model, weights, config, logger, strict_head=True)
            if world_size > 1:
                model = paddle.DataParallel(model)
        else:
            model = ExportedModel(weights, config, device, logger)
        result = evaluate(model, val_loader, val_set, class_names, world_size)
        if rank == 0:
            write_predictions(output_dir, result, class_names, config.DATA.CLASS_TYPE)
            metrics = {'class_type': config.DATA.CLASS_TYPE, 'class_names': list(class_names),
                       'checkpoint': weights, 'frames': len(result['paths']),
                       'labelled_frames': int((result['labels'] >= 0).sum()),
                       'skipped_bad_images': result['skipped'], 'scores': result['scores']}
            with atomic_open(os.path.join(output_dir, 'metrics.json'), 'w', encoding='utf-8') as f:
                json.dump(metrics, f, indent=1)
            s = result['scores']
            logger.info(f"eval: {len(result['paths'])} frames -> {output_dir}/predictions.npz"
                        + (f"; loss {s['loss']:.4f} acc {s['accuracy']:.4f} macro F1 {s['macro_f1']:.4f}" if s else
                           "; no labelled frames, no scores"))
        return result

    train_set = datasets.build_dataset(config, 'train')
    logger.info(f"training frames: {len(train_set)}")
    train_loader, train_sampler = build_loader(train_set, config, True, rank, world_size, logger)
    accum = max(1, config.TRAIN.ACCUM_ITER)
    updates_per_epoch = int(math.ceil(len(train_loader) / accum))
    base_lr, warmup_lr, end_lr = scaled_learning_rates(config, world_size)
    lr_scheduler = WarmupCosine(base_lr, warmup_lr, end_lr, config.TRAIN.WARMUP_EPOCHS,
                                config.TRAIN.NUM_EPOCHS, updates_per_epoch)
    if config.MODEL.PRETRAINED and not config.MODEL.RESUME:
        load_weights(model, config.MODEL.PRETRAINED, config, logger, strict_head=False)
    ema = ModelEma(model, config.TRAIN.MODEL_EMA_DECAY) if config.TRAIN.MODEL_EMA else None
    optimizer = build_optimizer(config, model, lr_scheduler)
    scaler = paddle.amp.GradScaler() if use_amp else None
    mixup = Mixup(config, config.MODEL.NUM_CLASSES) if Mixup.enabled(config) else None

    last_epoch, best_f1 = config.TRAIN.LAST_EPOCH, None
    resume = config.MODEL.RESUME
    if resume == 'auto':
        if not output_given:
            raise TrainingError("-resume auto needs -output DIR (the folder of the run to resume)")
        resume = find_resume_checkpoint(output_dir, logger)
        if resume is None:
            logger.info(f"resume auto: no checkpoint in {output_dir}; starting from scratch")
    if resume:
        if not os.path.isfile(resume):
            raise CheckpointError(f"-resume {resume}: checkpoint file does not exist")
        last_epoch, best_f1 = restore(resume, model, optimizer, lr_scheduler, scaler, ema, config, logger)
    if world_size > 1:
        model = paddle.DataParallel(model)
    eval_model = None

    keep = int(config.TRAIN.KEEP_CHECKPOINTS or 0)
    last_good = resume
    last_scores = None
    for epoch in range(last_epoch + 1, config.TRAIN.NUM_EPOCHS + 1):
        seed_epoch(config.SEED, epoch, rank)
        train_sampler.set_epoch(epoch)
        train_set.epoch = epoch
        if mixup is not None:
            mixup.set_epoch(config.SEED, epoch, rank)
        try:
            stats = train_one_epoch(model, train_loader, optimizer, lr_scheduler, config, epoch, logger,
                                    world_size, scaler, ema, mixup)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}; last good checkpoint: {last_good or 'none'}") from None
        bad = int(_all_reduce_mean(stats['bad_images'], world_size) * world_size)
        logger.info(f"Epoch[{epoch:03d}/{config.TRAIN.NUM_EPOCHS:03d}] train loss {stats['train_loss']:.4f} "
                    f"lr {stats['lr']:.3e} {stats['images'] / max(stats['seconds'], 1e-9):.1f} images/s"
                    + (f", skipped {bad} corrupt images" if bad else ''))
        record = {'epoch': epoch, 'train_loss': stats['train_loss'], 'lr': stats['lr'],
                  'train_images_per_s': stats['images'] / max(stats['seconds'], 1e-9)}
        if bad:
            record['skipped_bad_images'] = bad
        validate = config.VALIDATE_FREQ and (epoch % config.VALIDATE_FREQ == 0 or epoch == config.TRAIN.NUM_EPOCHS)
        improved = False
        if validate:
            net = model
            if ema is not None:
                eval_model = eval_model or swin_transformer.build_swin(config)
                eval_model.set_state_dict(ema.state_dict())
                net = eval_model
            result = evaluate(net, val_loader, val_set, class_names, world_size)
            last_scores = result['scores']
            record.update(_f1_fields(last_scores))
            if last_scores is not None:
                logger.info(f"Epoch[{epoch:03d}] val loss {last_scores['loss']:.4f} acc {last_scores['accuracy']:.4f} "
                            f"macro F1 {last_scores['macro_f1']:.4f} per class "
                            + ' '.join(f"{k}:{v:.3f}" for k, v in last_scores['per_class_f1'].items()))
                improved = best_f1 is None or last_scores['macro_f1'] > best_f1
                if improved:
                    best_f1 = last_scores['macro_f1']
        record['best_macro_f1'] = best_f1
        if rank == 0:
            state = checkpoint_state(model, optimizer, epoch, lr_scheduler, scaler, ema, best_f1)
            # Order matters for -resume auto: any checkpoint of epoch E marks E finished, so the
            # epoch's history record and best model are written before the first of them (a kill in
            # between redoes epoch E; the other way round would lose E's record and best model).
            append_history(output_dir, record)
            if improved:
                save_checkpoint(os.path.join(output_dir, 'best.pdparams'), state)
                with atomic_open(os.path.join(output_dir, 'best.json'), 'w', encoding='utf-8') as f:
                    json.dump({'epoch': epoch, 'macro_f1': best_f1}, f)
                logger.info(f"----- New best macro F1 {best_f1:.4f}: {output_dir}/best.pdparams")
            if epoch % config.SAVE_FREQ == 0 or epoch == config.TRAIN.NUM_EPOCHS:
                path = save_checkpoint(os.path.join(
                    output_dir, f"Epoch-{epoch}-Loss-{stats['train_loss']:.4f}.pdparams"), state)
                logger.info(f"----- Save model: {path}")
                if keep > 0:
                    _prune_periodic(output_dir, keep)
            last_good = save_checkpoint(os.path.join(output_dir, 'last.pdparams'), state)
    digest = weights_digest(_unwrap(model))
    # Every rank logs it: equal digests prove the processes ended with identical weights.
    logger.info(f"final weights sha256 {digest}")
    return {'output': output_dir, 'best_macro_f1': best_f1, 'last_scores': last_scores,
            'model': _unwrap(model), 'weights_sha256': digest}


def weights_digest(model):
    import hashlib
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value.numpy()).tobytes())
    return digest.hexdigest()


def _prune_periodic(output_dir, keep):
    found = []
    for path in glob.glob(os.path.join(output_dir, 'Epoch-*-Loss-*.pdparams')):
        match = CHECKPOINT_RE.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found)[:-keep]:
        os.remove(path)


def build_parser(description):
    import argparse
    import config as config_module
    return config_module.add_common_args(argparse.ArgumentParser(description))


def main(argv=None, distributed=False, description='CFC-SP Swin training/evaluation'):
    """Command-line entry: every expected failure ends as one 'error: ...' line and exit code 2."""
    import config as config_module
    args = build_parser(description).parse_args(argv)
    try:
        config = config_module.update_config(config_module.get_config(), args)
        run(config, output_given=bool(args.output), distributed=distributed)
    except (TrainingError, datasets.DataError, abaw_labels.AnnotationError, config_module.ConfigError,
            ValueError, FileNotFoundError) as err:
        rank = paddle.distributed.get_rank()
        print(f"error{f' (rank {rank})' if rank else ''}: {err}", file=sys.stderr, flush=True)
        return 2
    return 0
