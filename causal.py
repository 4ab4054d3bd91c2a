"""Causal Smooth Predicting: the release's window, taken from the past only, for live sources.

The release smooths frame t with the frames t-K..t+K, which a live source has not delivered yet.
The causal form keeps the window's size, 2K+1 frames, and ends it at t:

    logits mode:  l'_t = l_t + mean of l_s over that person's face frames s in [t - 2K, t]
    fused mode:   f_t  = A * mean of p_s over the same frames + (1 - A) * p_t

then softmax and fusion as fusion.Smoothing does. K = 0 (or A = 0) leaves the values
unchanged, as there. A NaN entry (no negative logits) is left out of its column's mean, and a
row's own NaN stays NaN.

Hook beside fusion.Smoothing: `causal_apply(smoothing, coarse, negative, frames)` has the
arguments and result of `smoothing.apply(coarse, negative, frames)`, so Smoothing can offer it as
a mode (`apply(..., causal=True)` calling it); `CausalSmoother` is the same rule fed one frame at
a time (live.py).
"""
import collections

import numpy as np

from labels import ABAW_CLASSES, COARSE_CLASSES
from fusion import fuse

_COARSE = len(COARSE_CLASSES)


class CausalSmoother:
    """Per person, the last 2K+1 frames' values; push() returns the fused probabilities [8] of the
    frame just pushed. Frames of one person must come in increasing order."""

    def __init__(self, smoothing):
        self.smoothing = smoothing
        self.span = 2 * smoothing.window
        self.history = collections.defaultdict(collections.deque)

    def _values(self, coarse, negative):
        if self.smoothing.mode == 'logits':
            return np.concatenate([coarse, negative]).astype(np.float64)
        return fuse(np.asarray(coarse)[None], np.asarray(negative)[None], self.smoothing.fusion)[0]

    def push(self, person, frame, coarse, negative):
        values = self._values(coarse, negative)
        kept = self.history[person]
        kept.append((frame, values))
        while kept[0][0] < frame - self.span:
            kept.popleft()
        smoothing = self.smoothing
        unsmoothed = smoothing.window == 0 or (smoothing.mode == 'fused' and smoothing.alpha == 0)
        if not unsmoothed:
            window = np.array([v for _, v in kept])
            present = ~np.isnan(window)
            with np.errstate(invalid='ignore', divide='ignore'):  # a column with nothing: NaN
                mean = np.where(present, window, 0.0).sum(axis=0) / present.sum(axis=0)
            if smoothing.mode == 'logits':
                values = values + mean
            else:
                values = smoothing.alpha * mean + (1.0 - smoothing.alpha) * values
        if smoothing.mode == 'logits':
            return fuse(values[None, :_COARSE], values[None, _COARSE:], smoothing.fusion)[0]
        return values

    def forget(self, person):
        """Drop a person whose track ended."""
        self.history.pop(person, None)


def causal_apply(smoothing, coarse_logits, negative_logits, frames=None, groups=None):
    """Fused probabilities [N, 8] after causal smoothing; the arguments of Smoothing.apply (rows
    sorted by (group, frame); groups: people or videos, each smoothed on its own)."""
    count = len(coarse_logits)
    frames = np.arange(count) if frames is None else np.asarray(frames)
    groups = np.zeros(count, np.int64) if groups is None else np.asarray(groups)
    smoother = CausalSmoother(smoothing)
    result = np.empty((count, len(ABAW_CLASSES)))
    for row in range(count):
        result[row] = smoother.push(int(groups[row]), int(frames[row]), coarse_logits[row], negative_logits[row])
    return result
