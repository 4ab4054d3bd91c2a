"""Batch-wise mixup and cutmix as the release's mixup.py did them (TRAIN.MIXUP_* / TRAIN.CUTMIX_*
keys; off at the defaults): each batch is mixed with itself reversed, by one lambda per batch."""
import math

import numpy as np
import paddle

from errors import UsageError
from optim import smoothed_targets


class Mixup:
    """Mixes a batch with its reverse and returns (images, soft targets), as the release did.

    With probability MIXUP_PROB a lambda is drawn from Beta(alpha, alpha); when both MIXUP_ALPHA and
    CUTMIX_ALPHA are set, cutmix is picked with probability MIXUP_SWITCH_PROB. CUTMIX_MINMAX
    (min, max fractions of the side) switches cutmix to a box of random size placed wholly inside
    the image, and implies CUTMIX_ALPHA 1. Cutmix's lambda becomes the share of pixels kept.
    """

    def __init__(self, config, num_classes):
        t = config.TRAIN
        self.mixup_alpha, self.cutmix_alpha = float(t.MIXUP_ALPHA), float(t.CUTMIX_ALPHA)
        self.cutmix_minmax = t.CUTMIX_MINMAX
        if self.cutmix_minmax is not None:
            if len(self.cutmix_minmax) != 2:
                raise UsageError(f"TRAIN.CUTMIX_MINMAX {self.cutmix_minmax}: give two fractions (min, max)")
            self.cutmix_alpha = 1.0
        if self.mixup_alpha <= 0 and self.cutmix_alpha <= 0:
            raise UsageError("TRAIN.MIXUP_ALPHA and TRAIN.CUTMIX_ALPHA are both 0: mixup has nothing to draw "
                             "(set one, or TRAIN.MIXUP_PROB 0 and TRAIN.CUTMIX_ALPHA 0 to turn it off)")
        if t.MIXUP_MODE != 'batch':
            raise UsageError(f"TRAIN.MIXUP_MODE '{t.MIXUP_MODE}': only 'batch' is supported (as in the release)")
        if int(config.DATA.BATCH_SIZE) % 2:
            raise UsageError(f"-batch_size {config.DATA.BATCH_SIZE}: mixup needs an even batch size")
        self.prob, self.switch_prob = float(t.MIXUP_PROB), float(t.MIXUP_SWITCH_PROB)
        self.smoothing, self.num_classes = float(t.SMOOTHING), num_classes
        # Own generator, reseeded every epoch: the loader's threads draw from the global one.
        self.rng = np.random.RandomState(0)

    def set_epoch(self, seed, epoch, rank=0):
        self.rng = np.random.RandomState((seed * 7717 + epoch * 131 + rank) % (2 ** 31))

    @staticmethod
    def enabled(config):
        """The release's condition for building its mixup function."""
        t = config.TRAIN
        return t.MIXUP_PROB > 0 or t.CUTMIX_ALPHA > 0 or t.CUTMIX_MINMAX is not None

    def draw(self):
        """(lambda, use_cutmix) for one batch."""
        if self.rng.rand() >= self.prob:
            return 1.0, False
        use_cutmix = False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = self.rng.rand() < self.switch_prob
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        elif self.cutmix_alpha > 0:
            use_cutmix, alpha = True, self.cutmix_alpha
        else:
            alpha = self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def cut_box(self, lam, height, width):
        """(x1, y1, x2, y2) of the pasted box."""
        if self.cutmix_minmax is not None:
            low, high = self.cutmix_minmax
            cut_h = self.rng.randint(int(height * low), int(height * high))
            cut_w = self.rng.randint(int(width * low), int(width * high))
            x1, y1 = self.rng.randint(0, width - cut_w), self.rng.randint(0, height - cut_h)
            return x1, y1, x1 + cut_w, y1 + cut_h
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(ratio * height), int(ratio * width)
        cy, cx = self.rng.randint(0, height), self.rng.randint(0, width)
        return (int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cy - cut_h // 2, 0, height)),
                int(np.clip(cx + cut_w // 2, 0, width)), int(np.clip(cy + cut_h // 2, 0, height)))

    def __call__(self, images, labels):
        lam, use_cutmix = self.draw()
        if lam < 1.0:
            flipped = images.flip(axis=0)
            if use_cutmix:
                height, width = images.shape[2], images.shape[3]
                x1, y1, x2, y2 = self.cut_box(lam, height, width)
                lam = 1.0 - (y2 - y1) * (x2 - x1) / float(height * width)
                # The release indexed rows with the x range and columns with the y range; kept, so
                # the same box lands in the same place (on square faces nothing else changes).
                mask = np.ones((1, 1, height, width), np.float32)
                mask[..., x1:x2, y1:y2] = 0
                mask = paddle.to_tensor(mask)
                images = images * mask + flipped * (1 - mask)
            else:
                images = images * lam + flipped * (1 - lam)
        targets = (smoothed_targets(labels, self.num_classes, self.smoothing) * lam
                   + smoothed_targets(labels.flip(axis=0), self.num_classes, self.smoothing) * (1 - lam))
        return images, targets
