"""Batch-wise mixup and cutmix (TRAIN.MIXUP_* / TRAIN.CUTMIX_* keys; off at the defaults)."""
import math

import numpy as np
import paddle

from errors import UsageError
from optim import smoothed_targets


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
            raise UsageError(f"TRAIN.MIXUP_MODE '{mode}': only 'batch' is supported")

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
