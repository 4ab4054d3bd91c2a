"""Coarse-to-fine fusion and Smooth Predicting of per-frame outputs into ABAW EXPR predictions.

Reads the `predictions.npz` files that `-eval` writes for the coarse (5-class) and the negative
(4-class) model, smooths each video over time and fuses the two models into the 8 ABAW classes,
fills the frames that have no face with the nearest prediction, scores against annotations,
optionally searches the smoothing settings, and writes ABAW submission files.

    python smooth_predict.py -coarse coarse/predictions.npz -negative negative/predictions.npz \
        -output out -anno_folder ANNO/Validation_Set -search

Smooth Predicting (SP) has two modes. `-smooth_on logits` (the default, with K = 2) is SP as the
release's overview figure draws it: inside each model, before fusion, the window mean of the
logits is added to each frame's logits, then softmax, then the cascade. `-smooth_on fused` blends
the fused 8-class probabilities with their window mean instead. The rules (fusion formulas,
window definition, tie-breaking, filling) are documented on the functions below;
`predict_video.py` reuses them.
"""
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass, field

import numpy as np

import console
from errors import UsageError
from fileio import atomic_open, check_writable_dir, is_inside, is_temporary
from labels import (ABAW_CLASSES, ANNOTATION_HEADER, CLASS_NAMES, COARSE_CLASSES,
                    NEGATIVE_CLASSES, NEGATIVE_TO_ABAW, read_annotation,
                    read_video_list, write_annotation)
from metrics import classification_scores, format_table, macro_f1
from plots import plot_confusion, plot_timeline

log = logging.getLogger('smooth_predict')

SMOOTH_MODES = ('logits', 'fused')
DEFAULT_SMOOTH_ON = 'logits'
# The release's figure averages f_{i-2}..f_{i+2}: five frames, K = 2.
DEFAULT_WINDOW = FIGURE_WINDOW = 2
DEFAULT_ALPHA = 0.5  # -smooth_on fused only
SEARCH_WINDOWS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
SEARCH_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
CSV_HEADER = 'image_location,' + ANNOTATION_HEADER
NUM_ABAW = len(ABAW_CLASSES)
NUM_COARSE = len(COARSE_CLASSES)
NEUTRAL = ABAW_CLASSES.index('Neutral')
COARSE_NEGATIVE = COARSE_CLASSES.index('Negative')
# ABAW label of every coarse class except Negative, which the negative model splits.
COARSE_TO_ABAW = tuple(ABAW_CLASSES.index(name) if name != 'Negative' else -1
                       for name in COARSE_CLASSES)
_COARSE_KEPT = [c for c in range(len(COARSE_CLASSES)) if c != COARSE_NEGATIVE]


class InputError(UsageError):
    """Unusable input; the message is one line that names the file (or flag) at fault."""


# ----------------------------------------------------------------------------- reading inputs

def _parse_frame_paths(paths, file):
    """'video/00001.jpg' -> (video names, frame numbers); anything else is an InputError.

    numpy's vectorised string functions: a Python loop over 280k paths costs over a second.
    """
    texts = np.strings.replace(paths.astype(str), '\\', '/')
    videos, slash, names = np.strings.rpartition(texts, '/')
    stems, dot, _ = np.strings.rpartition(names, '.')
    good = ((slash == '/') & (np.strings.str_len(videos) > 0) & ~np.strings.endswith(videos, '/')
            & (dot == '.') & np.strings.isdecimal(stems) & (np.strings.str_len(stems) <= 9))
    if not good.all():
        i = int(np.argmin(good))
        raise InputError(f"{file}: path '{paths[i]}' (entry {i}) is not "
                         "'<video>/<frame number>.jpg'")
    try:
        frames = stems.astype(np.int64)
    except ValueError:  # non-ASCII digits pass isdecimal but not int conversion
        i = next(i for i, stem in enumerate(stems.tolist()) if not stem.isascii())
        raise InputError(f"{file}: path '{paths[i]}' (entry {i}) is not "
                         "'<video>/<frame number>.jpg'") from None
    if frames.min() < 1:
        i = int(np.argmin(frames))
        raise InputError(f"{file}: path '{paths[i]}' (entry {i}) has frame number 0; "
                         "frames are numbered from 1")
    return videos, frames


def load_predictions(path, expected):
    """Read one predictions.npz and check it is the `expected` ('coarse'|'negative') model's.

    Returns a dict: file, class_type, class_names, paths [N], video_names (sorted unique),
    video_ids [N] (index into video_names), frames [N] (1-based), logits [N, C] float64,
    labels [N] (model class space, -1 unknown). Rows keep the file's order.
    """
    if expected not in ('coarse', 'negative'):
        raise ValueError(f"expected must be 'coarse' or 'negative', not {expected!r}")
    want = CLASS_NAMES[expected]
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: predictions file not found") from None
    except ValueError as err:
        if 'pickled' in str(err):  # numpy's message advises unsafe loading: never
            raise InputError(f"{path}: cannot read predictions file: not an .npz archive (a "
                             ".pdparams checkpoint?); pass the predictions.npz that -eval writes") from None
        raise InputError(f"{path}: cannot read predictions file ({err})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path}: cannot read predictions file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not a .npz predictions file (expected keys paths, logits, "
                         "class_names)")
    with archive:
        missing = [key for key in ('paths', 'logits', 'class_names') if key not in archive.files]
        if missing:
            raise InputError(f"{path}: missing key(s) {', '.join(missing)} "
                             f"(has {', '.join(archive.files) or 'nothing'})")
        try:
            paths = archive['paths']
            logits = archive['logits']
            class_names = tuple(str(name) for name in np.atleast_1d(archive['class_names']))
            labels = archive['labels'] if 'labels' in archive.files else None
            class_type = str(archive['class_type']) if 'class_type' in archive.files else None
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise InputError(f"{path}: cannot read predictions file ({err})") from None

    if class_names != want:
        known = [kind for kind, names in CLASS_NAMES.items() if names == class_names]
        what = f"the {known[0]} model's classes" if known else "not a known class set"
        raise InputError(f"{path}: class_names {list(class_names)} are {what}; "
                         f"-{expected} needs the {expected} classes {list(want)}")
    if class_type is not None and class_type != expected:
        raise InputError(f"{path}: class_type is '{class_type}' but -{expected} needs '{expected}'")
    if paths.ndim != 1:
        raise InputError(f"{path}: paths must be 1-D, got shape {paths.shape}")
    count = paths.shape[0]
    if count == 0:
        raise InputError(f"{path}: empty predictions file (no frames)")
    if logits.shape != (count, len(want)):
        raise InputError(f"{path}: logits have shape {logits.shape} but {count} paths and "
                         f"{len(want)} class_names need ({count}, {len(want)})")
    if not (np.issubdtype(logits.dtype, np.floating) or np.issubdtype(logits.dtype, np.integer)):
        raise InputError(f"{path}: logits must be numbers, got dtype {logits.dtype}")
    logits = logits.astype(np.float64)
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: non-finite logits for path '{paths[np.argmax(bad)]}'")
    if labels is None:
        labels = np.full(count, -1, dtype=np.int64)
    elif labels.shape != (count,):
        raise InputError(f"{path}: labels have shape {labels.shape} but there are {count} paths")

    if paths.dtype.kind == 'S':  # written as bytes: decode rather than parse "b'...'"
        paths = np.char.decode(paths, 'utf-8')
    videos, frames = _parse_frame_paths(paths, path)
    video_names, video_ids = np.unique(videos, return_inverse=True)
    return {
        'file': str(path), 'class_type': expected, 'class_names': class_names,
        'paths': paths.astype(str), 'video_names': [str(v) for v in video_names],
        'video_ids': video_ids.astype(np.int64).reshape(-1), 'frames': frames,
        'logits': logits, 'labels': labels.astype(np.int64),
    }


def _sorted_keys(video_ids, frames, stride, preds):
    """Sort rows by (video, frame), rejecting a frame predicted twice."""
    keys = video_ids * stride + frames
    order = np.argsort(keys, kind='stable')
    keys = keys[order]
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.size:
        raise InputError(f"{preds['file']}: path '{preds['paths'][order[dup[0] + 1]]}' is "
                         "predicted more than once")
    return keys, order


def align(coarse, negative):
    """Join the two models' rows by (video, frame); the coarse file defines the frame set.

    Returns a dict sorted by (video, frame): video_names, video_ids, frames, paths,
    coarse_logits [N, 5], negative_logits [N, 4] (rows of NaN where the negative file has no
    prediction), has_negative [N] bool. Frames only the negative file has are dropped (warned).
    """
    names = sorted(set(coarse['video_names']) | set(negative['video_names']))
    index = {name: i for i, name in enumerate(names)}
    coarse_vid = np.array([index[v] for v in coarse['video_names']])[coarse['video_ids']]
    negative_vid = np.array([index[v] for v in negative['video_names']])[negative['video_ids']]
    stride = int(max(coarse['frames'].max(), negative['frames'].max())) + 1
    coarse_keys, coarse_order = _sorted_keys(coarse_vid, coarse['frames'], stride, coarse)
    negative_keys, negative_order = _sorted_keys(negative_vid, negative['frames'], stride, negative)

    pos = np.searchsorted(coarse_keys, negative_keys)
    found = pos < coarse_keys.size
    found[found] = coarse_keys[pos[found]] == negative_keys[found]
    if not found.all():
        example = negative['paths'][negative_order[np.argmin(found)]]
        log.warning("%d frame(s) of %s are not in the coarse file %s (e.g. '%s'); they are "
                    "ignored", int((~found).sum()), negative['file'], coarse['file'], example)
    negative_logits = np.full((coarse_keys.size, len(NEGATIVE_CLASSES)), np.nan)
    negative_logits[pos[found]] = negative['logits'][negative_order[found]]
    has_negative = np.zeros(coarse_keys.size, dtype=bool)
    has_negative[pos[found]] = True
    if not has_negative.all():
        example = coarse['paths'][coarse_order[np.argmin(has_negative)]]
        log.warning("%d frame(s) of %s have no prediction in the negative file %s (e.g. '%s'); "
                    "their Negative share uses n = 0.25 for each negative class",
                    int((~has_negative).sum()), coarse['file'], negative['file'], example)

    used = np.unique(coarse_vid)  # videos that only the negative file knows have no frames left
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return {
        'video_names': [names[i] for i in used],
        'video_ids': remap[coarse_vid[coarse_order]],
        'frames': coarse['frames'][coarse_order],
        'paths': coarse['paths'][coarse_order],
        'coarse_logits': coarse['logits'][coarse_order],
        'negative_logits': negative_logits,
        'has_negative': has_negative,
        'file': coarse['file'],
    }


# ----------------------------------------------------------------------------- the rules

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


def _check_window(window):
    if int(window) != window or window < 0:
        raise ValueError(f"window K must be an integer >= 0, got {window}")


def _check_smoothing(window, alpha):
    _check_window(window)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha A must be in [0, 1], got {alpha}")


class WindowMeans:
    """Means of the rows over the predicted frames within +-K frame numbers, any K, O(N) per K.

    Rows must be sorted by (group, frame) with no repeats. Each group (video) sits on its own
    stretch of a key axis with a gap wider than any window, so one cumulative sum and two binary
    searches serve all videos at once and a window never reaches into the next video. A NaN
    entry means "no prediction": it is left out of the means of its column (and a row's own NaN
    stays NaN in `add_mean`).
    """

    def __init__(self, values, frames=None, groups=None, max_window=max(SEARCH_WINDOWS)):
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
        if window > self.max_window:
            raise ValueError(f"window {window} exceeds max_window {self.max_window}")
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
        _check_smoothing(window, alpha)
        if window == 0 or alpha == 0:
            return self.values
        means = self.mean(window)
        if alpha == 1:
            return means
        return alpha * means + (1.0 - alpha) * self.values

    def add_mean(self, window):
        """The release's figure: values + mean; K = 0 returns the values."""
        _check_window(window)
        if window == 0:
            return self.values
        return self.values + self.mean(window)


def smooth(probs, window, alpha, frames=None, groups=None):
    """Smooth Predicting on fused probabilities: f_t = A * u_t + (1 - A) * p_t, u_t = mean of p_s
    over the predicted frames s of the same group (video) with |s - t| <= K. K = 0 or A = 0
    returns p unchanged.

    probs [N, C]; frames: frame numbers (default 0..N-1, i.e. consecutive); groups: video ids.
    Rows must be sorted by (group, frame). The label is argmax f (lowest index on ties).
    """
    _check_smoothing(window, alpha)
    return WindowMeans(probs, frames, groups, max_window=window).smooth(window, alpha)


def smooth_logits(logits, window, frames=None, groups=None):
    """Smooth Predicting as the release's figure draws it, on one model's logits:
    l'_t = l_t + u_t, u_t = mean of l_s over the predicted frames s of the same group (video)
    with |s - t| <= K. K = 0 returns l unchanged. Softmax and fusion follow (`Smoothing.apply`).

    Same frames / groups / ordering as `smooth`. A row of NaN (no prediction) is left out of its
    neighbours' means and stays NaN.
    """
    _check_window(window)
    return WindowMeans(logits, frames, groups, max_window=window).add_mean(window)


@dataclass(frozen=True)
class Smoothing:
    """One Smooth Predicting setting: mode ('logits' | 'fused'), fusion, window K, A (fused only).

    The defaults are the release's figure: logits, soft fusion, K = 2. A left None in fused mode
    is DEFAULT_ALPHA; A given in logits mode is an error (the figure adds the mean, unweighted).
    """
    mode: str = DEFAULT_SMOOTH_ON
    fusion: str = 'soft'
    window: int = DEFAULT_WINDOW
    alpha: float = None

    def __post_init__(self):
        if self.mode not in SMOOTH_MODES:
            raise ValueError(f"unknown smoothing mode {self.mode!r}: choose logits or fused")
        if self.fusion not in ('soft', 'hard'):
            raise ValueError(f"unknown fusion mode {self.fusion!r}: choose soft or hard")
        _check_window(self.window)
        object.__setattr__(self, 'window', int(self.window))
        if self.mode == 'logits':
            if self.alpha is not None:
                raise ValueError("alpha A applies only to the fused mode; the logits mode adds "
                                 "the window mean with no weight")
        else:
            alpha = DEFAULT_ALPHA if self.alpha is None else float(self.alpha)
            _check_smoothing(self.window, alpha)
            object.__setattr__(self, 'alpha', alpha)

    @property
    def is_figure(self):
        return self.mode == 'logits' and self.window == FIGURE_WINDOW

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
            unsmoothed = self.window == 0
        else:
            text = (f"Smooth Predicting on the fused probabilities, {self.fusion} fusion, "
                    f"K={self.window}, A={self.alpha:g}")
            unsmoothed = self.window == 0 or self.alpha == 0
        return text + (' (no smoothing)' if unsmoothed else '')

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
        """Fused 8-class probabilities [N, 8] after this smoothing; the label is their argmax."""
        return Smoother(coarse_logits, negative_logits, self.fusion, self.mode, frames, groups,
                        max_window=self.window).probs(self.window, self.alpha)


class Smoother:
    """Fused probabilities of one mode and fusion for any K (and A), reusing one cumulative sum.

    logits mode: the coarse and negative logits side by side [N, 9], each column smoothed on its
    own by `WindowMeans.add_mean`, then `fuse`. fused mode: `fuse`, then `WindowMeans.smooth`.
    """

    def __init__(self, coarse_logits, negative_logits, fusion='soft', mode=DEFAULT_SMOOTH_ON,
                 frames=None, groups=None, max_window=max(SEARCH_WINDOWS)):
        if mode not in SMOOTH_MODES:
            raise ValueError(f"unknown smoothing mode {mode!r}: choose logits or fused")
        self.fusion, self.mode = fusion, mode
        coarse_logits = np.asarray(coarse_logits, dtype=np.float64)
        if negative_logits is None:
            negative_logits = np.full((coarse_logits.shape[0], len(NEGATIVE_CLASSES)), np.nan)
        if mode == 'logits':
            rows = np.hstack([coarse_logits, np.asarray(negative_logits, dtype=np.float64)])
        else:
            rows = fuse(coarse_logits, negative_logits, fusion)
        self.means = WindowMeans(rows, frames, groups, max_window=max_window)

    def probs(self, window, alpha=None):
        if self.mode == 'fused':
            return self.means.smooth(window, DEFAULT_ALPHA if alpha is None else alpha)
        if alpha is not None:
            raise ValueError("alpha A applies only to the fused mode")
        logits = self.means.add_mean(window)
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


# ----------------------------------------------------------------------------- per-video table

@dataclass
class VideoTable:
    """Both models' logits and their unsmoothed fusion for all videos, sorted by (video, frame),
    plus each video's frame count, ground truth, and the map from every frame 1..T to its nearest
    predicted row."""
    video_names: list
    num_frames: np.ndarray              # [V]
    frame_count_source: list            # [V] 'annotation' | 'frames_folder' | 'largest prediction'
    truth: list                         # [V] int array [T] (-1 = unannotated) or None
    video_ids: np.ndarray               # [N]
    frames: np.ndarray                  # [N]
    probs: np.ndarray                   # [N, 8] fused, unsmoothed
    fusion: str = 'soft'
    coarse_logits: np.ndarray = None    # [N, 5]
    negative_logits: np.ndarray = None  # [N, 4], rows of NaN where the negative file has none
    frame_offsets: np.ndarray = field(default=None)  # [V + 1] into the all-frames axis
    fill_source: np.ndarray = field(default=None)    # [sum T] row index, -1 = video has no rows
    row_offsets: np.ndarray = field(default=None)    # [V + 1] into the rows

    def __post_init__(self):
        self.row_offsets = np.searchsorted(self.video_ids, np.arange(len(self.video_names) + 1))
        self.frame_offsets = np.concatenate([[0], np.cumsum(self.num_frames)]).astype(np.int64)
        sources = []
        for v in range(len(self.video_names)):
            start, stop = self.row_offsets[v], self.row_offsets[v + 1]
            nearest = nearest_predicted(self.frames[start:stop], int(self.num_frames[v]))
            sources.append(np.where(nearest >= 0, nearest + start, -1))
        self.fill_source = np.concatenate(sources) if sources else np.zeros(0, np.int64)

    def window_means(self, max_window=max(SEARCH_WINDOWS)):
        return WindowMeans(self.probs, self.frames, self.video_ids, max_window=max_window)

    def smoother(self, mode, max_window=max(SEARCH_WINDOWS)):
        """A `Smoother` of this table's fusion over its videos."""
        return Smoother(self.coarse_logits, self.negative_logits, self.fusion, mode, self.frames,
                        self.video_ids, max_window=max_window)

    def smoothed(self, setting):
        """Fused probabilities [N, 8] of the rows after `setting` (a Smoothing of this fusion)."""
        if setting.fusion != self.fusion:
            raise ValueError(f"the table holds {self.fusion} fusion, the setting asks for "
                             f"{setting.fusion}")
        return self.smoother(setting.mode, setting.window).probs(setting.window, setting.alpha)

    def all_frame_labels(self, row_labels):
        """Labels of every frame 1..T of every video, concatenated in video order."""
        filled = row_labels[np.maximum(self.fill_source, 0)]
        return np.where(self.fill_source >= 0, filled, NEUTRAL)

    def annotated(self):
        """(positions on the all-frames axis, truth) of every annotated frame (label != -1)."""
        positions, truth = [], []
        for v, labels in enumerate(self.truth):
            if labels is None:
                continue
            known = np.flatnonzero(labels >= 0)
            positions.append(known + self.frame_offsets[v])
            truth.append(labels[known])
        if not positions:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(positions), np.concatenate(truth).astype(np.int64)


def _read_annotations(folder):
    annotations = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith('.txt') and not is_temporary(name):
            annotations[name[:-4]] = np.asarray(read_annotation(os.path.join(folder, name)),
                                                dtype=np.int64)
    if not annotations:
        raise InputError(f"-anno_folder {folder}: no annotation files (<video>.txt) found")
    return annotations


def _count_frame_files(folder, video):
    """Frames of `video`: the count `python -m preprocess` recorded in its aligned folder's `.done`
    manifest (the aligned folder holds only the frames with a face), else the files in the folder."""
    path = os.path.join(folder, video)
    if not os.path.isdir(path):
        return None
    manifest = os.path.join(path, '.done')
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding='utf-8') as f:
                return int(json.load(f)['frames'])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{manifest}: unreadable preprocessing manifest (re-run python -m preprocess)") from None
    return sum(1 for entry in os.scandir(path) if entry.is_file() and not is_temporary(entry.name)
               and os.path.splitext(entry.name)[1].lower() in FRAME_EXTENSIONS)


def build_video_table(coarse, negative, fusion='soft', anno_folder=None, frames_folder=None,
                      video_names=None):
    """Align two `load_predictions` results, fuse them unsmoothed, attach frame counts and truth.

    Frame counts: the annotation's number of label lines, else the number of frame files in
    frames_folder/<video>/, else (neither folder given) the largest predicted frame number.
    Videos: every predicted video, every annotated one and every name in `video_names` (the test
    set's list, so a video in which no face was found still gets its file); those without a
    single prediction are all Neutral, with a warning.
    """
    aligned = align(coarse, negative)
    probs = fuse(aligned['coarse_logits'], aligned['negative_logits'], fusion)
    annotations = _read_annotations(anno_folder) if anno_folder else {}
    predicted = aligned['video_names']
    names = sorted(set(predicted) | set(annotations) | set(video_names or ()))
    index = {name: i for i, name in enumerate(names)}
    video_ids = np.array([index[name] for name in predicted], dtype=np.int64)[aligned['video_ids']]
    last_frame = np.zeros(len(names), dtype=np.int64)
    np.maximum.at(last_frame, video_ids, aligned['frames'])

    num_frames, sources, truth = [], [], []
    if not anno_folder and not frames_folder:
        log.info("no -anno_folder/-frames_folder: each video ends at its largest predicted frame "
                 "number (frames after the last detected face are not written)")
    for v, name in enumerate(names):
        if name in annotations:
            count, source = annotations[name].size, 'annotation'
        elif frames_folder and (count := _count_frame_files(frames_folder, name)) is not None:
            source = 'frames_folder'
        elif not anno_folder and not frames_folder:
            count, source = int(last_frame[v]), 'largest prediction'
        else:
            if not np.any(video_ids == v):
                raise InputError(f"-video_list: video '{name}' has no annotation and no folder in "
                                 f"-frames_folder {frames_folder}, so its frame count is unknown")
            row = np.argmax(video_ids == v)
            where = ' or '.join(f"{flag} {folder}" for flag, folder in
                                (('-anno_folder', anno_folder), ('-frames_folder', frames_folder))
                                if folder)
            raise InputError(f"{aligned['file']}: path '{aligned['paths'][row]}' is outside the "
                             f"known videos: '{name}' is not in {where}")
        if last_frame[v] > count:
            row = np.flatnonzero(video_ids == v)[-1]
            raise InputError(f"{aligned['file']}: path '{aligned['paths'][row]}' is frame "
                             f"{last_frame[v]} but video '{name}' has {count} frames ({source})")
        num_frames.append(count)
        sources.append(source)
        truth.append(annotations.get(name))
    predicted_set = set(predicted)
    for name in names:
        if name not in predicted_set:
            log.warning("video '%s' has no predicted frame (no face found?): all its frames "
                        "are labelled Neutral", name)
    return VideoTable(video_names=names, num_frames=np.asarray(num_frames, dtype=np.int64),
                      frame_count_source=sources, truth=truth, video_ids=video_ids,
                      frames=aligned['frames'], probs=probs, fusion=fusion,
                      coarse_logits=aligned['coarse_logits'],
                      negative_logits=aligned['negative_logits'])


# ----------------------------------------------------------------------------- scoring / search

def score(table, row_labels):
    """classification_scores over every annotated frame (faceless frames filled), or None."""
    positions, truth = table.annotated()
    if truth.size == 0:
        return None
    predicted = table.all_frame_labels(row_labels)[positions]
    return classification_scores(truth, predicted, ABAW_CLASSES)


def search(table, windows=SEARCH_WINDOWS, alphas=SEARCH_ALPHAS, modes=SMOOTH_MODES):
    """Macro F1 (and accuracy) on the annotated frames for every setting of the table's fusion:
    logits mode for each K, fused mode for each (K, A).

    Returns (rows, best): rows are dicts mode, window, alpha (None in logits mode), macro_f1,
    accuracy, the logits rows first, then the fused grid in (K, A) order; best is the row with the
    highest macro F1, ties going to the logits mode, then the smaller K, then the smaller A.
    """
    positions, truth = table.annotated()
    if truth.size == 0:
        raise InputError("-search: the annotations hold no annotated frame (all labels are -1)")
    for window in windows:
        _check_window(window)
    for alpha in alphas:
        _check_smoothing(0, alpha)
    unsmoothed = None  # K = 0 in either mode, or A = 0, gives the raw labels: score them once

    def scored(smoother, window, alpha):
        nonlocal unsmoothed
        if window == 0 or alpha == 0:
            if unsmoothed is None:
                unsmoothed = _grid_score(table, np.argmax(table.probs, axis=1), positions, truth)
            return unsmoothed
        labels = np.argmax(smoother.probs(window, alpha), axis=1)
        return _grid_score(table, labels, positions, truth)

    rows = []
    for mode in SMOOTH_MODES:
        if mode not in modes:
            continue
        # One smoother per mode: memory stays a few arrays of the rows' size whatever the grid.
        smoother = table.smoother(mode, max_window=max(windows))
        for window in windows:
            for alpha in ((None,) if mode == 'logits' else alphas):
                rows.append({'mode': mode, 'window': int(window),
                             'alpha': None if alpha is None else float(alpha),
                             **scored(smoother, window, alpha)})
    best = max(rows, key=lambda row: (row['macro_f1'], -SMOOTH_MODES.index(row['mode']),
                                      -row['window'], -(row['alpha'] or 0.0)))
    return rows, best


def best_setting(best, fusion):
    """The Smoothing of a `search` row."""
    return Smoothing(best['mode'], fusion, best['window'], best['alpha'])


def _grid_score(table, row_labels, positions, truth):
    predicted = table.all_frame_labels(row_labels)[positions]
    return {'macro_f1': macro_f1(truth, predicted, NUM_ABAW),
            'accuracy': float(np.mean(predicted == truth))}


def format_search(rows):
    """Macro F1 of a `search`: one line per K; a column for the logits mode, one per fused A."""
    windows = list(dict.fromkeys(row['window'] for row in rows))
    alphas = list(dict.fromkeys(row['alpha'] for row in rows if row['mode'] == 'fused'))
    table = {(row['mode'], row['window'], row['alpha']): row['macro_f1'] for row in rows}
    columns = ([('logits', None, '  logits ')] if any(r['mode'] == 'logits' for r in rows) else [])
    columns += [('fused', alpha, f"  A={alpha:<5g}") for alpha in alphas]
    lines = ['macro F1   ' + ''.join(title for _, _, title in columns)]
    for window in windows:
        lines.append(f"K={window:<8d}" + ''.join(f"  {table[(mode, window, alpha)]:.5f}"
                                                 for mode, alpha, _ in columns))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- outputs

def write_search_csv(path, rows):
    """One line per searched setting; alpha is empty in the logits mode, which has none."""
    with atomic_open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write('mode,window,alpha,macro_f1,accuracy\n')
        for r in rows:
            alpha = '' if r['alpha'] is None else f"{r['alpha']:g}"
            f.write(f"{r['mode']},{r['window']},{alpha},{r['macro_f1']:.6f},{r['accuracy']:.6f}\n")


def write_abaw3(folder, table, frame_labels):
    """One `<video>.txt` per video: the ABAW header, then one label per frame 1..T."""
    for v, name in enumerate(table.video_names):
        labels = frame_labels[table.frame_offsets[v]:table.frame_offsets[v + 1]]
        write_annotation(os.path.join(folder, name + '.txt'), labels)


def write_csv(path, table, frame_labels):
    """The single-file format: header, then `video/00001.jpg,<label>` for every frame."""
    with atomic_open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write(CSV_HEADER + '\n')
        for v, name in enumerate(table.video_names):
            labels = frame_labels[table.frame_offsets[v]:table.frame_offsets[v + 1]].tolist()
            f.write(''.join(f"{name}/{frame:05d}.jpg,{label}\n"
                            for frame, label in enumerate(labels, start=1)))


def write_plots(folder, table, smoothed, frame_labels, count, scores=None, setting_text=''):
    """The confusion matrix and the timelines of the first `count` annotated videos."""
    written = []
    # Annotated videos first: a timeline with ground truth says more.
    order = sorted(range(len(table.video_names)),
                   key=lambda v: (table.truth[v] is None, table.video_names[v]))
    for v in order[:count]:
        name = table.video_names[v]
        probs = np.full((int(table.num_frames[v]), NUM_ABAW), np.nan)
        start, stop = table.row_offsets[v], table.row_offsets[v + 1]
        probs[table.frames[start:stop] - 1] = smoothed[start:stop]
        labels = frame_labels[table.frame_offsets[v]:table.frame_offsets[v + 1]]
        safe = name.replace('/', '_')
        written.append(plot_timeline(os.path.join(folder, f"timeline_{safe}.png"), probs, labels,
                                     truth=table.truth[v],
                                     title=f"{name}: {setting_text}" if setting_text else name))
    if count > 0 and scores is not None:
        written.append(plot_confusion(os.path.join(folder, 'confusion.png'), scores['confusion'],
                                      ABAW_CLASSES, setting_text or 'smoothed predictions'))
    return written


# ----------------------------------------------------------------------------- command line

def build_parser():
    """The command line of smooth_predict.py."""
    parser = console.ArgumentParser(
        description='Smooth coarse and negative model predictions over time, fuse them into ABAW '
                    'EXPR labels, score them and write submission files. Without flags: '
                    "-smooth_on logits -window 2 -fusion soft, Smooth Predicting as the release's "
                    'figure draws it (per model, on the logits, five frames), then soft fusion.')
    parser.add_argument('-coarse', required=True, help='predictions.npz of the coarse model')
    parser.add_argument('-negative', required=True, help='predictions.npz of the negative model')
    parser.add_argument('-output', required=True, help='output folder')
    parser.add_argument('-anno_folder', help='ABAW EXPR annotations (<video>.txt): ground truth '
                        'and frame counts')
    parser.add_argument('-frames_folder', help='frame counts of videos without annotations: the '
                        'aligned-faces folder of python -m preprocess (its .done manifests), or '
                        'extracted frames (FRAMES/<video>/*.jpg)')
    parser.add_argument('-video_list', help='videos to write (one name per line), e.g. the test '
                        'set: a listed video without any detected face is written all Neutral')
    add_smoothing_arguments(parser)
    parser.add_argument('-search', action='store_true', help='score both smoothing modes on the '
                        'annotated videos (logits: every K of ' + ' '.join(map(str, SEARCH_WINDOWS))
                        + '; fused: every K x A of ' + ' '.join(f'{a:g}' for a in SEARCH_ALPHAS)
                        + '), write search.csv and use the best; replaces -smooth_on/-window/-alpha')
    parser.add_argument('-settings_from', metavar='METRICS_JSON',
                        help="use the setting another run chose and recorded in its metrics.json "
                             "(e.g. -search's on the validation set, for the test set); replaces "
                             '-fusion/-smooth_on/-window/-alpha')
    parser.add_argument('-format', choices=('abaw3', 'csv'), default='abaw3')
    parser.add_argument('-plot', type=int, default=2, help='timeline plots for this many videos')
    return parser


def read_setting(path):
    """The Smoothing a smooth_predict.py run used, from the 'smoothed' entry of its metrics.json."""
    try:
        with open(path, encoding='utf-8') as f:
            fields = json.load(f)['smoothed']
        return Smoothing(fields['mode'] or DEFAULT_SMOOTH_ON, fields['fusion'], fields['window'],
                         fields['alpha'] if fields['mode'] == 'fused' else None)
    except OSError as err:
        raise InputError(f"-settings_from {path}: cannot read it ({err.strerror})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"-settings_from {path}: not a smooth_predict.py metrics.json "
                         f"(no usable 'smoothed' setting: {err})") from None


def apply_settings_from(parser, args):
    """-settings_from FILE: its setting replaces the smoothing flags, which must then be left out."""
    defaults = {name: parser.get_default(name) for name in ('fusion', 'smooth_on', 'window', 'alpha')}
    given = [f"-{name}" for name, value in defaults.items() if getattr(args, name) != value]
    if given or args.search:
        parser.error(f"-settings_from sets the smoothing: leave out {', '.join(given or ['-search'])}")
    setting = read_setting(args.settings_from)
    args.fusion, args.smooth_on, args.window, args.alpha = (setting.fusion, setting.mode, setting.window,
                                                            setting.alpha)


def add_smoothing_arguments(parser):
    """-fusion, -smooth_on, -window, -alpha: the same flags and defaults in predict_video.py."""
    parser.add_argument('-fusion', choices=('soft', 'hard'), default='soft',
                        help='soft (default): coarse probabilities, Negative split by the negative '
                             "model's; hard: the coarse argmax, refined by the negative argmax "
                             'when it is Negative')
    parser.add_argument('-smooth_on', choices=SMOOTH_MODES, default=DEFAULT_SMOOTH_ON,
                        help="logits (default): Smooth Predicting as the release's figure draws "
                             "it, inside each model before fusion: l'_t = l_t + mean of l_s over "
                             "|s - t| <= K, then softmax and fusion; fused: on the fused 8-class "
                             'probabilities, f = A * mean + (1 - A) * p')
    parser.add_argument('-window', type=int, default=DEFAULT_WINDOW,
                        help=f'window K in frames: the mean is over frames t-K..t+K that have a '
                             f'face (default {DEFAULT_WINDOW}: the five frames of the figure; '
                             '0 = no smoothing)')
    parser.add_argument('-alpha', type=float, default=None,
                        help=f'-smooth_on fused only: weight A of the window mean (default '
                             f'{DEFAULT_ALPHA:g})')


def check_smoothing_flags(parser, args):
    """-window / -alpha checks (parser.error on a bad one), shared with predict_video.py."""
    if args.window < 0:
        parser.error(f"-window must be >= 0, got {args.window}")
    if args.alpha is not None:
        if args.smooth_on == 'logits':
            parser.error("-alpha applies only to -smooth_on fused; -smooth_on logits (the "
                         "default, the release's Smooth Predicting) adds the window mean to the "
                         "logits with no weight")
        if not 0.0 <= args.alpha <= 1.0:
            parser.error(f"-alpha must be in [0, 1], got {args.alpha}")


def setting_fields(setting):
    """mode, fusion, window, alpha of a Smoothing, as metrics.json records them."""
    return {'mode': setting.mode, 'fusion': setting.fusion, 'window': setting.window,
            'alpha': setting.alpha}


def smoothing_from_args(args):
    """The Smoothing that the -fusion / -smooth_on / -window / -alpha flags ask for."""
    return Smoothing(args.smooth_on, args.fusion, args.window, args.alpha)


def _check_args(parser, args):
    if args.settings_from:
        apply_settings_from(parser, args)
    check_smoothing_flags(parser, args)
    if args.plot < 0:
        parser.error(f"-plot must be >= 0, got {args.plot}")
    if args.search and not args.anno_folder:
        parser.error("-search needs -anno_folder (the ground truth to score against)")
    for flag, folder in (('-anno_folder', args.anno_folder), ('-frames_folder', args.frames_folder)):
        if folder is None:
            continue
        if not os.path.isdir(folder):
            parser.error(f"{flag} {folder}: not a folder")
        if is_inside(args.output, folder):
            parser.error(f"-output {args.output} is inside {flag} {folder}; inputs are never "
                         "written to: choose another folder")


def run(args):
    """Fuse, smooth, score and write the outputs; returns the metrics written to metrics.json."""
    setting = smoothing_from_args(args)
    figure = Smoothing('logits', args.fusion, FIGURE_WINDOW)
    coarse = load_predictions(args.coarse, 'coarse')
    negative = load_predictions(args.negative, 'negative')
    video_names = None
    if args.video_list:
        try:
            video_names = read_video_list(args.video_list)
        except ValueError as err:
            raise InputError(str(err)) from None
    table = build_video_table(coarse, negative, args.fusion, args.anno_folder, args.frames_folder,
                              video_names)
    check_writable_dir(args.output, '-output')  # only now: bad inputs leave no empty folder
    log.info("%d videos, %d predicted frames, %d frames in all (%s fusion)", len(table.video_names),
             table.frames.size, int(table.num_frames.sum()), args.fusion)

    if args.search:
        rows, best = search(table)
        log.info("search on the annotated frames, %s fusion (logits: SP on each model's logits, "
                 "as the release's figure; A=: SP on the fused probabilities):\n%s", args.fusion,
                 format_search(rows))
        write_search_csv(os.path.join(args.output, 'search.csv'), rows)
        setting = best_setting(best, args.fusion)
        drawn = next((row for row in rows if row['mode'] == figure.mode
                      and row['window'] == figure.window), None)
        log.info("best: %s, macro F1 %.5f%s", setting.summary, best['macro_f1'],
                 f" (the release's figure, SP on logits K={FIGURE_WINDOW}: {drawn['macro_f1']:.5f})"
                 if drawn else '')
    log.info("%s", setting.describe())

    smoothed = table.smoothed(setting)
    row_labels = np.argmax(smoothed, axis=1)
    frame_labels = table.all_frame_labels(row_labels)

    raw_scores = score(table, np.argmax(table.probs, axis=1))
    smooth_scores = score(table, row_labels)
    figure_scores = smooth_scores
    if raw_scores is not None and setting != figure:
        figure_scores = score(table, np.argmax(table.smoothed(figure), axis=1))
    no_smoothing = {'mode': None, 'fusion': args.fusion, 'window': 0, 'alpha': None}
    metrics = {
        'raw': {**no_smoothing, **(raw_scores or {})},
        'figure': {**setting_fields(figure), **(figure_scores or {})},
        'smoothed': {**setting_fields(setting), **(smooth_scores or {})},
        'searched': bool(args.search),
        'videos': len(table.video_names),
        'predicted_frames': int(table.frames.size),
        'frames': int(table.num_frames.sum()),
        'annotated': raw_scores is not None,
    }
    if raw_scores is not None:
        columns = {'no smoothing': raw_scores, f'logits K={FIGURE_WINDOW} (figure)': figure_scores}
        if setting != figure:
            columns[setting.short] = smooth_scores
        print(format_table(columns, title=f"{args.fusion} fusion, scored on {raw_scores['count']} "
                                          "annotated frames"))
    with atomic_open(os.path.join(args.output, 'metrics.json'), 'w', encoding='utf-8') as f:
        json.dump(metrics, f, indent=2)

    if args.format == 'abaw3':
        write_abaw3(args.output, table, frame_labels)
        log.info("wrote %d <video>.txt files to %s", len(table.video_names), args.output)
    else:
        write_csv(os.path.join(args.output, 'predictions.csv'), table, frame_labels)
        log.info("wrote %s", os.path.join(args.output, 'predictions.csv'))
    if args.plot:
        write_plots(args.output, table, smoothed, frame_labels, args.plot, smooth_scores,
                    setting.summary)
    return metrics


def main(argv=None):
    """Command-line entry; returns the exit code (errors: one `error:` line, see console.py)."""
    return console.run_command(_parse_and_run, argv)


def _parse_and_run(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    console.setup(log)
    run(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
