"""The rules of CFC-SP's last stage: coarse-to-fine fusion, both Smooth Predicting modes and the
filling of faceless frames, on arrays (no files). `smooth_predict.py` and `predict_video.py` apply
them; `Smoothing` is the one description (and the one validator) of a smoothing setting.

Smooth Predicting (SP) has two modes. `logits` (the default, with K = 2) is SP as the release's
overview figure draws it: inside each model, before fusion, the window mean of the logits is added
to each frame's logits, then softmax, then the cascade. `fused` blends the fused 8-class
probabilities with their window mean instead. The rules (fusion formulas, window definition,
tie-breaking, filling) are documented on the functions below.
"""
from dataclasses import dataclass

import numpy as np

from errors import UsageError
from labels import ABAW_CLASSES, COARSE_CLASSES, NEGATIVE_CLASSES, NEGATIVE_TO_ABAW

SMOOTH_MODES = ('logits', 'fused')
FUSION_MODES = ('soft', 'hard')
DEFAULT_SMOOTH_ON = 'logits'
# The release's figure averages f_{i-2}..f_{i+2}: five frames, K = 2.
DEFAULT_WINDOW = FIGURE_WINDOW = 2
DEFAULT_ALPHA = 0.5  # fused mode only
NUM_ABAW = len(ABAW_CLASSES)
NUM_COARSE = len(COARSE_CLASSES)
NEUTRAL = ABAW_CLASSES.index('Neutral')
COARSE_NEGATIVE = COARSE_CLASSES.index('Negative')
# ABAW label of every coarse class except Negative, which the negative model splits.
COARSE_TO_ABAW = tuple(ABAW_CLASSES.index(name) if name != 'Negative' else -1
                       for name in COARSE_CLASSES)
_COARSE_KEPT = [c for c in range(len(COARSE_CLASSES)) if c != COARSE_NEGATIVE]

def softmax(logits):
    """Row-wise softmax, stable for large logits."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fuse(coarse_logits, negative_logits, mode='soft'):
    """8-class ABAW probabilities [N, 8] from coarse [N, 5] and negative [N, 4] logits.

    soft: c = softmax(coarse), n = softmax(negative);
          p = (c0, c4*n0, c4*n1, c4*n2, c1, c4*n3, c2, c3).
    hard: the coarse argmax, or when that is Negative the negative argmax mapped to
          Anger/Disgust/Fear/Sadness (argmaxes of the logits); p is its one-hot.
    A negative row of NaN (or negative_logits None) means no negative prediction: n = 0.25 each.
    Ties in an argmax go to the lowest index.
    """
    coarse_logits = np.asarray(coarse_logits, dtype=np.float64)
    count = coarse_logits.shape[0]
    if coarse_logits.ndim != 2 or coarse_logits.shape[1] != len(COARSE_CLASSES):
        raise ValueError(f"coarse logits must be [N, {len(COARSE_CLASSES)}], "
                         f"got {coarse_logits.shape}")
    if negative_logits is None:
        negative_logits = np.full((count, len(NEGATIVE_CLASSES)), np.nan)
    negative_logits = np.asarray(negative_logits, dtype=np.float64)
    if negative_logits.shape != (count, len(NEGATIVE_CLASSES)):
        raise ValueError(f"negative logits must be [{count}, {len(NEGATIVE_CLASSES)}], "
                         f"got {negative_logits.shape}")
    absent = None  # the usual case: every row has negative logits, no masks to copy through
    if np.isnan(negative_logits).any():
        absent = np.isnan(negative_logits).any(axis=1)

    if mode == 'soft':
        if absent is None:
            negative_probs = softmax(negative_logits)
        else:
            negative_probs = np.full(negative_logits.shape, 1.0 / len(NEGATIVE_CLASSES))
            if not absent.all():
                negative_probs[~absent] = softmax(negative_logits[~absent])
        coarse_probs = softmax(coarse_logits)
        probs = np.empty((count, NUM_ABAW))
        probs[:, [COARSE_TO_ABAW[c] for c in _COARSE_KEPT]] = coarse_probs[:, _COARSE_KEPT]
        probs[:, list(NEGATIVE_TO_ABAW)] = coarse_probs[:, [COARSE_NEGATIVE]] * negative_probs
        return probs
    if mode == 'hard':
        coarse_label = np.argmax(coarse_logits, axis=1)
        label = np.asarray(COARSE_TO_ABAW)[coarse_label]
        refine = coarse_label == COARSE_NEGATIVE
        # The argmax of the logits themselves (a softmax could round two of them into a tie);
        # a row without negative logits is uniform, whose argmax is the first class.
        negative = negative_logits[refine]
        if absent is not None:
            negative = np.where(absent[refine][:, None], 0.0, negative)
        label[refine] = np.asarray(NEGATIVE_TO_ABAW)[np.argmax(negative, axis=1)]
        probs = np.zeros((count, NUM_ABAW))
        probs[np.arange(count), label] = 1.0
        return probs
    raise ValueError(f"unknown fusion mode {mode!r}: choose soft or hard")


class WindowMeans:
    """Means of the rows over the predicted frames within +-K frame numbers, any K, O(N) per K.

    Rows must be sorted by (group, frame) with no repeats. Each group (video) sits on its own
    stretch of a key axis with a gap wider than any window, so one cumulative sum and two binary
    searches serve all videos at once and a window never reaches into the next video. A NaN
    entry means "no prediction": it is left out of the means of its column (and a row's own NaN
    stays NaN in `add_mean`).
    """

    def __init__(self, values, frames=None, groups=None, max_window=DEFAULT_WINDOW):
        values = np.asarray(values, dtype=np.float64)
        count = values.shape[0]
        frames = np.arange(count, dtype=np.int64) if frames is None else np.asarray(frames, np.int64)
        groups = np.zeros(count, np.int64) if groups is None else np.asarray(groups, np.int64)
        if values.ndim != 2 or frames.shape != (count,) or groups.shape != (count,):
            raise ValueError(f"values {values.shape}, frames {frames.shape} and groups "
                             f"{groups.shape} disagree")
        if count and (frames.min() < 0 or groups.min() < 0):
            raise ValueError("frame numbers and groups must be >= 0")
        self.max_window = int(max_window)
        stride = (int(frames.max()) if count else 0) + self.max_window + 1
        self.keys = groups * stride + frames
        if np.any(self.keys[1:] <= self.keys[:-1]):
            raise ValueError("rows must be sorted by (group, frame) without repeated frames")
        self.values = values
        self._last = None
        missing = np.isnan(values)
        self.cumulative = np.zeros((count + 1, values.shape[1]))
        np.cumsum(np.where(missing, 0.0, values), axis=0, out=self.cumulative[1:])
        # Counting per column only when something is missing keeps the usual case one cumsum.
        self.present = None
        if missing.any():
            self.present = np.zeros((count + 1, values.shape[1]), dtype=np.int64)
            np.cumsum(~missing, axis=0, out=self.present[1:])

    def mean(self, window):
        if not 0 <= window <= self.max_window:
            raise ValueError(f"window {window} is outside 0..max_window {self.max_window}")
        # The search asks for one K under every A in a row: keep the last K's means (one array).
        if self._last is not None and self._last[0] == window:
            return self._last[1]
        low = np.searchsorted(self.keys, self.keys - window, side='left')
        high = np.searchsorted(self.keys, self.keys + window, side='right')
        total = self.cumulative[high] - self.cumulative[low]
        if self.present is None:
            means = total / (high - low)[:, None]
        else:
            with np.errstate(invalid='ignore', divide='ignore'):  # nothing in the window: NaN
                means = total / (self.present[high] - self.present[low])
        means.flags.writeable = False  # shared by later calls
        self._last = (window, means)
        return means

    def smooth(self, window, alpha):
        """The fused rule: A * mean + (1 - A) * values; K = 0 or A = 0 returns the values."""
        if window == 0 or alpha == 0:
            return self.values
        means = self.mean(window)
        if alpha == 1:
            return means
        return alpha * means + (1.0 - alpha) * self.values

    def add_mean(self, window):
        """The release's figure: values + mean; K = 0 returns the values."""
        if window == 0:
            return self.values
        return self.values + self.mean(window)


# What each setting is called where it is checked: in code, and on the command line.
_FIELD_NAMES = {'mode': 'smoothing mode', 'fusion': 'fusion mode', 'window': 'window K',
                'alpha': 'alpha A', 'fused': 'the fused mode'}
SMOOTHING_FLAGS = {'mode': '-smooth_on', 'fusion': '-fusion', 'window': '-window', 'alpha': '-alpha',
                   'fused': '-smooth_on fused'}


def _setting_problem(mode, fusion, window, alpha, names):
    """The first thing wrong with a smoothing setting, worded with `names`, or None."""
    if mode not in SMOOTH_MODES:
        return f"unknown {names['mode']} {mode!r}: choose logits or fused"
    if fusion not in FUSION_MODES:
        return f"unknown {names['fusion']} {fusion!r}: choose soft or hard"
    if int(window) != window:
        return f"{names['window']} must be an integer, got {window}"
    if window < 0:
        return f"{names['window']} must be >= 0, got {window}"
    if mode == 'logits' and alpha is not None:
        return (f"{names['alpha']} applies only to {names['fused']}; the logits mode (the "
                "release's Smooth Predicting) adds the window mean to the logits with no weight")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        return f"{names['alpha']} must be in [0, 1], got {alpha}"
    return None


@dataclass(frozen=True)
class Smoothing:
    """One Smooth Predicting setting: mode ('logits' | 'fused'), fusion, window K, A (fused only).

    The defaults are the release's figure: logits, soft fusion, K = 2. A left None in fused mode
    is DEFAULT_ALPHA; A given in logits mode is an error (the figure adds the mean, unweighted).
    Every setting is checked here, once (ValueError); `from_args` words the same checks as
    UsageErrors naming the flag.

    The rules, per video, on predicted frames sorted by frame number, u_t being the mean over the
    predicted frames s with |s - t| <= K (frames without a prediction are left out of the mean):
      logits: l'_t = l_t + u_t on each model's logits, then softmax and `fuse`;
      fused:  f_t = A * u_t + (1 - A) * p_t on the fused probabilities p = `fuse`(logits).
    K = 0 (or A = 0) leaves the predictions unchanged. The label is the argmax (lowest index on ties).
    """
    mode: str = DEFAULT_SMOOTH_ON
    fusion: str = 'soft'
    window: int = DEFAULT_WINDOW
    alpha: float = None

    def __post_init__(self):
        problem = _setting_problem(self.mode, self.fusion, self.window, self.alpha, _FIELD_NAMES)
        if problem:
            raise ValueError(problem)
        object.__setattr__(self, 'window', int(self.window))
        if self.mode == 'fused':
            object.__setattr__(self, 'alpha',
                               DEFAULT_ALPHA if self.alpha is None else float(self.alpha))

    @staticmethod
    def add_arguments(parser):
        """-fusion, -smooth_on, -window, -alpha: the same flags and defaults in every tool."""
        parser.add_argument('-fusion', choices=FUSION_MODES, default='soft',
                            help="soft (default): coarse probabilities, Negative split by the "
                                 "negative model's; hard: the coarse argmax, refined by the "
                                 'negative argmax when it is Negative')
        parser.add_argument('-smooth_on', choices=SMOOTH_MODES, default=DEFAULT_SMOOTH_ON,
                            help="logits (default): Smooth Predicting as the release's figure "
                                 "draws it, inside each model before fusion: l'_t = l_t + mean of "
                                 "l_s over |s - t| <= K, then softmax and fusion; fused: on the "
                                 'fused 8-class probabilities, f = A * mean + (1 - A) * p')
        parser.add_argument('-window', type=int, default=DEFAULT_WINDOW,
                            help=f'window K in frames: the mean is over frames t-K..t+K that have '
                                 f'a face (default {DEFAULT_WINDOW}: the five frames of the figure;'
                                 ' 0 = no smoothing)')
        parser.add_argument('-alpha', type=float, default=None,
                            help=f'-smooth_on fused only: weight A of the window mean (default '
                                 f'{DEFAULT_ALPHA:g})')

    @classmethod
    def from_args(cls, args):
        """The Smoothing the flags of `add_arguments` ask for; a bad one is a UsageError naming it."""
        problem = _setting_problem(args.smooth_on, args.fusion, args.window, args.alpha,
                                   SMOOTHING_FLAGS)
        if problem:
            raise UsageError(problem)
        return cls(args.smooth_on, args.fusion, args.window, args.alpha)

    def fields(self):
        """mode, fusion, window, alpha, as metrics.json records them."""
        return {'mode': self.mode, 'fusion': self.fusion, 'window': self.window, 'alpha': self.alpha}

    @property
    def is_figure(self):
        return self.mode == 'logits' and self.window == FIGURE_WINDOW

    @property
    def is_unsmoothed(self):
        return self.window == 0 or self.alpha == 0

    @property
    def short(self):
        """Mode, K and A, e.g. 'logits K=2', 'fused K=8 A=0.5'."""
        alpha = f" A={self.alpha:g}" if self.mode == 'fused' else ''
        return f"{self.mode} K={self.window}{alpha}"

    @property
    def summary(self):
        """For titles, e.g. 'soft fusion, SP on logits K=2'."""
        return f"{self.fusion} fusion, SP on {self.short}"

    def describe(self):
        """The log line's wording: mode, fusion, K (and A)."""
        if self.mode == 'logits':
            text = (f"Smooth Predicting on each model's logits before fusion (the release's "
                    f"figure draws K={FIGURE_WINDOW}), {self.fusion} fusion, K={self.window}")
        else:
            text = (f"Smooth Predicting on the fused probabilities, {self.fusion} fusion, "
                    f"K={self.window}, A={self.alpha:g}")
        return text + (' (no smoothing)' if self.is_unsmoothed else '')

    @property
    def needs_negative_everywhere(self):
        """Whether the negative model's logits are read on every face frame.

        Soft fusion always reads them. Hard fusion reads a frame's negative logits only where the
        coarse label is Negative; that label is the unsmoothed coarse argmax unless the coarse
        logits are smoothed, and smoothing the negative logits then also reads the neighbours'.
        So hard fusion spares the negative model only in fused mode or with K = 0.
        """
        return self.fusion == 'soft' or (self.mode == 'logits' and self.window > 0)

    def apply(self, coarse_logits, negative_logits, frames=None, groups=None):
        """Fused 8-class probabilities [N, 8] after this smoothing; the label is their argmax.

        frames: frame numbers (default 0..N-1, consecutive); groups: video ids (default one
        video). Rows must be sorted by (group, frame) without repeats.
        """
        return Smoother(coarse_logits, negative_logits, self.fusion, self.mode, self.window,
                        frames, groups).probs(self)


class Smoother:
    """Fused probabilities of one mode and fusion for any K (and A), reusing one cumulative sum.

    logits mode: the coarse and negative logits side by side [N, 9], each column smoothed on its
    own by `WindowMeans.add_mean`, then `fuse`. fused mode: `fuse`, then `WindowMeans.smooth`.
    """

    def __init__(self, coarse_logits, negative_logits, fusion, mode, max_window, frames=None,
                 groups=None):
        self.fusion, self.mode = fusion, mode
        coarse_logits = np.asarray(coarse_logits, dtype=np.float64)
        if negative_logits is None:
            negative_logits = np.full((coarse_logits.shape[0], len(NEGATIVE_CLASSES)), np.nan)
        if mode == 'logits':
            rows = np.hstack([coarse_logits, np.asarray(negative_logits, dtype=np.float64)])
        else:
            rows = fuse(coarse_logits, negative_logits, fusion)
        self.means = WindowMeans(rows, frames, groups, max_window=max_window)

    def probs(self, setting):
        """Fused probabilities [N, 8] after `setting` (a Smoothing of this mode and fusion)."""
        if (setting.mode, setting.fusion) != (self.mode, self.fusion):
            raise ValueError(f"this Smoother does {self.fusion} fusion, SP on {self.mode}; the "
                             f"setting asks for {setting.summary}")
        if self.mode == 'fused':
            return self.means.smooth(setting.window, setting.alpha)
        logits = self.means.add_mean(setting.window)
        return fuse(logits[:, :NUM_COARSE], logits[:, NUM_COARSE:], self.fusion)


def nearest_predicted(pred_frames, num_frames):
    """For frames 1..num_frames: index into sorted `pred_frames` of the nearest predicted frame
    (the earlier one on a tie), or -1 everywhere when there is none."""
    pred_frames = np.asarray(pred_frames, dtype=np.int64)
    if pred_frames.size == 0:
        return np.full(num_frames, -1, dtype=np.int64)
    frames = np.arange(1, num_frames + 1)
    after = np.searchsorted(pred_frames, frames, side='left')  # first predicted frame >= t
    before = after - 1
    last = pred_frames.size - 1
    gap_after = np.where(after <= last, pred_frames[np.minimum(after, last)] - frames, np.iinfo(np.int64).max)
    gap_before = np.where(before >= 0, frames - pred_frames[np.maximum(before, 0)], np.iinfo(np.int64).max)
    return np.where(gap_before <= gap_after, np.maximum(before, 0), np.minimum(after, last))


def fill_missing(pred_frames, labels, num_frames, default=NEUTRAL):
    """Labels of frames 1..num_frames: predicted frames keep theirs, the others take the label of
    the nearest predicted frame (earlier on ties); no predicted frame at all -> `default`."""
    pred_frames = np.asarray(pred_frames, dtype=np.int64)
    labels = np.asarray(labels)
    if pred_frames.shape != labels.shape:
        raise ValueError(f"{pred_frames.size} predicted frames but {labels.size} labels")
    order = np.argsort(pred_frames, kind='stable')
    source = nearest_predicted(pred_frames[order], num_frames)
    if pred_frames.size == 0:
        return np.full(num_frames, default, dtype=np.int64)
    return labels[order][source].astype(np.int64)


