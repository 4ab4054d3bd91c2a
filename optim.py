"""Optimisation: the warm-up + cosine learning-rate schedule, AdamW with its weight-decay
groups, the AMP loss scaler, the label-smoothed loss and the weights' exponential moving average."""
import math

import paddle
import paddle.nn.functional as F

from errors import UsageError


class WarmupCosine(paddle.optimizer.lr.LRScheduler):
    """Linear warm-up from warmup_start_lr to base_lr over warmup_epochs, then cosine to end_lr at
    total_epochs: the release's LinearWarmup + CosineAnnealingDecay. Like the release, the
    training loop steps it with the fractional epoch before each update (`step(epoch - 1 +
    batch / batches)`), so the learning rate depends only on where in the schedule the update is:
    a run resumed or started with -last_epoch N continues exactly where an uninterrupted one is."""

    def __init__(self, base_lr, warmup_start_lr, end_lr, warmup_epochs, total_epochs):
        self.warmup_start_lr, self.end_lr = warmup_start_lr, end_lr
        self.warmup_epochs, self.total_epochs = warmup_epochs, total_epochs
        super().__init__(learning_rate=base_lr, last_epoch=-1)

    def lr_at(self, epoch):
        """The learning rate at fractional epoch `epoch` (0 = start of training)."""
        if epoch < self.warmup_epochs:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * epoch / self.warmup_epochs
        span = max(1e-12, self.total_epochs - self.warmup_epochs)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.end_lr + 0.5 * (self.base_lr - self.end_lr) * (1 + math.cos(math.pi * progress))

    def get_lr(self):
        return self.lr_at(self.last_epoch)

    def state_dict(self):
        """The state in the layout of the release's scheduler, so that its `-resume`
        (`lr_scheduler.set_state_dict(...)`) reads our checkpoints: with warm-up it ran
        LinearWarmup(CosineAnnealingDecay), whose state nests the cosine's under 'LinearWarmup_LR';
        without, a CosineAnnealingDecay. Values are the ones Paddle's schedulers hold at this epoch."""
        return release_scheduler_state(self.base_lr, self.warmup_start_lr, self.end_lr, self.warmup_epochs,
                                       self.total_epochs, self.last_epoch)

    def set_state_dict(self, state_dict):
        """Both layouts (the release's, and the flat one this project wrote before): only the epoch
        matters, since the learning rate is a function of it."""
        self.step(state_dict['last_epoch'])


def release_scheduler(base_lr, warmup_start_lr, end_lr, warmup_epochs, total_epochs, last_epoch=-1):
    """The scheduler the release built (main_multi_gpu.py, STEP 5), from Paddle's own classes."""
    lr = paddle.optimizer.lr
    if warmup_epochs > 0:
        # The release could not start with NUM_EPOCHS <= WARMUP_EPOCHS (T_max 0); such a run is
        # all warm-up, which never reaches the cosine part, so T_max 1 gives the same state.
        cosine = lr.CosineAnnealingDecay(learning_rate=base_lr, T_max=max(1, int(total_epochs - warmup_epochs)),
                                         eta_min=end_lr, last_epoch=-1)
        return lr.LinearWarmup(learning_rate=cosine, warmup_steps=warmup_epochs, start_lr=warmup_start_lr,
                               end_lr=base_lr, last_epoch=last_epoch)
    return lr.CosineAnnealingDecay(learning_rate=base_lr, T_max=max(1, int(total_epochs)), eta_min=end_lr,
                                   last_epoch=last_epoch)


def release_scheduler_state(base_lr, warmup_start_lr, end_lr, warmup_epochs, total_epochs, epoch):
    """state_dict() of the release's scheduler stepped to `epoch`. Its cosine part only moves once
    warm-up is over (LinearWarmup steps it from get_lr), and epochs only grow during a run, so
    one step from a fresh scheduler leaves it where the release's run would have it."""
    scheduler = release_scheduler(base_lr, warmup_start_lr, end_lr, warmup_epochs, total_epochs)
    scheduler.step(epoch)
    return scheduler.state_dict()


# The loss scaler the release ran: it called paddle.amp.GradScaler() on Paddle 2.2/2.3, whose
# defaults these are; Paddle 2.5+ changed them to 65536 / 2000 / 1.
RELEASE_GRAD_SCALER = {'init_loss_scaling': 32768.0, 'incr_ratio': 2.0, 'decr_ratio': 0.5,
                       'incr_every_n_steps': 1000, 'decr_every_n_nan_or_inf': 2}


def grad_scaler_settings(config):
    """GradScaler's arguments: the release's values, or with AMP_PADDLE_DEFAULTS none (the
    installed Paddle's defaults). Separate from build_grad_scaler because a scaler built on a
    CPU disables itself and keeps none of them."""
    return {} if config.AMP_PADDLE_DEFAULTS else dict(RELEASE_GRAD_SCALER)


def build_grad_scaler(config):
    """The AMP loss scaler for training with -amp."""
    return paddle.amp.GradScaler(**grad_scaler_settings(config))


def scaled_learning_rates(config, world_size):
    """(base, warmup_start, end) learning rates, scaled by effective batch / LINEAR_SCALED_LR."""
    lrs = (config.TRAIN.BASE_LR, config.TRAIN.WARMUP_START_LR, config.TRAIN.END_LR)
    if config.TRAIN.LINEAR_SCALED_LR:
        effective = config.DATA.BATCH_SIZE * config.TRAIN.ACCUM_ITER * world_size
        lrs = tuple(lr * effective / config.TRAIN.LINEAR_SCALED_LR for lr in lrs)
    return lrs


def _no_weight_decay(name, param):
    """The exemption the release's code meant: norms and other 1-D parameters, biases, position tables."""
    return (len(param.shape) <= 1 or name.endswith('.bias') or 'relative_position_bias_table' in name
            or 'absolute_positional_embedding' in name)


def decayed_parameters(config, model):
    """Structured names of the parameters AdamW decays: all of them, as the release ran, or with
    TRAIN.NO_DECAY_NORM_BIAS all but norms, biases and relative_position_bias_table."""
    exempt = bool(config.TRAIN.NO_DECAY_NORM_BIAS)
    return [n for n, p in model.named_parameters() if not (exempt and _no_weight_decay(n, p))]


def build_optimizer(config, model, lr_scheduler):
    """The release's AdamW with global-norm gradient clipping, stepping `lr_scheduler`."""
    name = config.TRAIN.OPTIMIZER.NAME
    if name != 'AdamW':
        raise UsageError(f"TRAIN.OPTIMIZER.NAME '{name}': only AdamW (the release's optimizer) is supported")
    params = dict(model.named_parameters())
    # AdamW asks by Paddle's generated parameter name (linear_0.w_0), not the structured one.
    decayed = {params[n].name for n in decayed_parameters(config, model)}
    betas = config.TRAIN.OPTIMIZER.BETAS
    clip = paddle.nn.ClipGradByGlobalNorm(config.TRAIN.GRAD_CLIP) if config.TRAIN.GRAD_CLIP else None
    return paddle.optimizer.AdamW(
        learning_rate=lr_scheduler, beta1=betas[0], beta2=betas[1],
        epsilon=config.TRAIN.OPTIMIZER.EPS, parameters=model.parameters(),
        weight_decay=config.TRAIN.WEIGHT_DECAY, apply_decay_param_fun=lambda n: n in decayed,
        grad_clip=clip)


def label_smoothing(config):
    """The smoothing of the loss without mixup: the release's loss used 0.1 whenever
    TRAIN.SMOOTHING was non-zero (TRAIN.USE_CONFIG_SMOOTHING takes the configured value)."""
    smoothing = float(config.TRAIN.SMOOTHING or 0.0)
    if smoothing and not config.TRAIN.USE_CONFIG_SMOOTHING:
        return 0.1
    return smoothing


def smoothed_targets(labels, num_classes, smoothing):
    """One-hot targets with `smoothing` spread over every class (the release's smoothing)."""
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def soft_cross_entropy(logits, targets):
    """Cross-entropy against soft targets, averaged over the batch."""
    return (-targets * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()


class ModelEma:
    """Exponential moving average of the weights (TRAIN.MODEL_EMA, decay TRAIN.MODEL_EMA_DECAY).
    force_cpu (TRAIN.MODEL_EMA_FORCE_CPU) keeps the average in host memory, as the release's
    `model_ema.to('cpu')` did, to spare GPU memory."""

    def __init__(self, model, decay, force_cpu=False):
        self.decay, self.force_cpu = decay, bool(force_cpu)
        self.shadow = {k: self._here(v) for k, v in model.state_dict().items()}

    def _here(self, value):
        value = value.detach()
        return value.cpu() if self.force_cpu else value.clone()

    @paddle.no_grad()
    def update(self, model):
        for key, value in model.state_dict().items():
            if paddle.is_floating_point(value):
                self.shadow[key] = self.shadow[key] * self.decay + self._here(value) * (1.0 - self.decay)
            else:
                self.shadow[key] = self._here(value)

    def state_dict(self):
        return self.shadow

    def set_state_dict(self, state):
        place = paddle.CPUPlace() if self.force_cpu else None
        self.shadow = {k: paddle.to_tensor(v, place=place) for k, v in state.items()}
