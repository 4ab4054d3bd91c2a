"""Coarse-to-fine fusion and Smooth Predicting of per-frame outputs into ABAW EXPR predictions.

Reads the `predictions.npz` files that `-eval` writes for the coarse (5-class) and the negative
(4-class) model, fuses them into the 8 ABAW classes, smooths each video over time, fills the
frames that have no face with the nearest prediction, scores against annotations, optionally
grid-searches the smoothing window K and blend A, and writes ABAW submission files.

    python smooth_predict.py -coarse coarse/predictions.npz -negative negative/predictions.npz \
        -output out -anno_folder ANNO/Validation_Set -search

The rules (fusion formulas, window definition, tie-breaking, filling) are documented on the
functions below; `predict_video.py` reuses them.
"""
import argparse
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

import console
from fileio import atomic_open, check_writable_dir, is_inside, is_temporary
from labels import (ABAW_CLASSES, ANNOTATION_HEADER, CLASS_NAMES, COARSE_CLASSES,
                    NEGATIVE_CLASSES, NEGATIVE_TO_ABAW, AnnotationError, read_annotation,
                    read_video_list, write_annotation)
from metrics import classification_scores, format_table, macro_f1

log = logging.getLogger('smooth_predict')

SEARCH_WINDOWS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
SEARCH_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
CSV_HEADER = 'image_location,' + ANNOTATION_HEADER
NUM_ABAW = len(ABAW_CLASSES)
NEUTRAL = ABAW_CLASSES.index('Neutral')
COARSE_NEGATIVE = COARSE_CLASSES.index('Negative')
# ABAW label of every coarse class except Negative, which the negative model splits.
COARSE_TO_ABAW = tuple(ABAW_CLASSES.index(name) if name != 'Negative' else -1
                       for name in COARSE_CLASSES)
_COARSE_KEPT = [c for c in range(len(COARSE_CLASSES)) if c != COARSE_NEGATIVE]


class InputError(ValueError):
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
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
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
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fuse(coarse_logits, negative_logits, mode='soft'):
    """8-class ABAW probabilities [N, 8] from coarse [N, 5] and negative [N, 4] logits.

    soft: c = softmax(coarse), n = softmax(negative);
          p = (c0, c4*n0, c4*n1, c4*n2, c1, c4*n3, c2, c3).
    hard: the coarse argmax, or when that is Negative the negative argmax mapped to
          Anger/Disgust/Fear/Sadness; p is its one-hot.
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
    absent = np.isnan(negative_logits).any(axis=1)
    negative_probs = np.full(negative_logits.shape, 1.0 / len(NEGATIVE_CLASSES))
    if not absent.all():
        negative_probs[~absent] = softmax(negative_logits[~absent])

    if mode == 'soft':
        coarse_probs = softmax(coarse_logits)
        probs = np.empty((count, NUM_ABAW))
        probs[:, [COARSE_TO_ABAW[c] for c in _COARSE_KEPT]] = coarse_probs[:, _COARSE_KEPT]
        probs[:, list(NEGATIVE_TO_ABAW)] = coarse_probs[:, [COARSE_NEGATIVE]] * negative_probs
        return probs
    if mode == 'hard':
        coarse_label = np.argmax(coarse_logits, axis=1)
        label = np.asarray(COARSE_TO_ABAW)[coarse_label]
        refine = coarse_label == COARSE_NEGATIVE
        label[refine] = np.asarray(NEGATIVE_TO_ABAW)[np.argmax(negative_probs[refine], axis=1)]
        probs = np.zeros((count, NUM_ABAW))
        probs[np.arange(count), label] = 1.0
        return probs
    raise ValueError(f"unknown fusion mode {mode!r}: choose soft or hard")


def _check_smoothing(window, alpha):
    if int(window) != window or window < 0:
        raise ValueError(f"window K must be an integer >= 0, got {window}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha A must be in [0, 1], got {alpha}")


class WindowMeans:
    """Means of p over predicted frames within +-K frame numbers, for any K, in O(N) per K.

    Rows must be sorted by (group, frame) with no repeats. Each group (video) sits on its own
    stretch of a key axis with a gap wider than any window, so one cumulative sum and two binary
    searches serve all videos at once and a window never reaches into the next video.
    """

    def __init__(self, probs, frames=None, groups=None, max_window=max(SEARCH_WINDOWS)):
        probs = np.asarray(probs, dtype=np.float64)
        count = probs.shape[0]
        frames = np.arange(count, dtype=np.int64) if frames is None else np.asarray(frames, np.int64)
        groups = np.zeros(count, np.int64) if groups is None else np.asarray(groups, np.int64)
        if probs.ndim != 2 or frames.shape != (count,) or groups.shape != (count,):
            raise ValueError(f"probs {probs.shape}, frames {frames.shape} and groups "
                             f"{groups.shape} disagree")
        if count and (frames.min() < 0 or groups.min() < 0):
            raise ValueError("frame numbers and groups must be >= 0")
        self.max_window = int(max_window)
        stride = (int(frames.max()) if count else 0) + self.max_window + 1
        self.keys = groups * stride + frames
        if np.any(self.keys[1:] <= self.keys[:-1]):
            raise ValueError("rows must be sorted by (group, frame) without repeated frames")
        self.probs = probs
        self.cumulative = np.zeros((count + 1, probs.shape[1]))
        np.cumsum(probs, axis=0, out=self.cumulative[1:])

    def mean(self, window):
        if window > self.max_window:
            raise ValueError(f"window {window} exceeds max_window {self.max_window}")
        low = np.searchsorted(self.keys, self.keys - window, side='left')
        high = np.searchsorted(self.keys, self.keys + window, side='right')
        return (self.cumulative[high] - self.cumulative[low]) / (high - low)[:, None]

    def smooth(self, window, alpha):
        _check_smoothing(window, alpha)
        if window == 0 or alpha == 0:
            return self.probs
        means = self.mean(window)
        if alpha == 1:
            return means
        return alpha * means + (1.0 - alpha) * self.probs


def smooth(probs, window, alpha, frames=None, groups=None):
    """Smooth Predicting: f_t = A * u_t + (1 - A) * p_t, u_t = mean of p_s over the predicted
    frames s of the same group (video) with |s - t| <= K. K = 0 or A = 0 returns p unchanged.

    probs [N, C]; frames: frame numbers (default 0..N-1, i.e. consecutive); groups: video ids.
    Rows must be sorted by (group, frame). The label is argmax f (lowest index on ties).
    """
    _check_smoothing(window, alpha)
    return WindowMeans(probs, frames, groups, max_window=window).smooth(window, alpha)


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
    """Fused predictions of all videos, sorted by (video, frame), plus each video's frame count,
    ground truth, and the map from every frame 1..T to its nearest predicted row."""
    video_names: list
    num_frames: np.ndarray              # [V]
    frame_count_source: list            # [V] 'annotation' | 'frames_folder' | 'largest prediction'
    truth: list                         # [V] int array [T] (-1 = unannotated) or None
    video_ids: np.ndarray               # [N]
    frames: np.ndarray                  # [N]
    probs: np.ndarray                   # [N, 8] fused
    fusion: str = 'soft'
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
    """Fuse two `load_predictions` results and attach frame counts and ground truth.

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
                      frames=aligned['frames'], probs=probs, fusion=fusion)


# ----------------------------------------------------------------------------- scoring / search

def score(table, row_labels):
    """classification_scores over every annotated frame (faceless frames filled), or None."""
    positions, truth = table.annotated()
    if truth.size == 0:
        return None
    predicted = table.all_frame_labels(row_labels)[positions]
    return classification_scores(truth, predicted, ABAW_CLASSES)


def search(table, windows=SEARCH_WINDOWS, alphas=SEARCH_ALPHAS):
    """Macro F1 (and accuracy) on the annotated frames for every (K, A) of the grid.

    Returns (rows, best): rows are dicts window, alpha, macro_f1, accuracy in grid order; best is
    the row with the highest macro F1, ties going to the smaller K, then the smaller A.
    """
    positions, truth = table.annotated()
    if truth.size == 0:
        raise InputError("-search: the annotations hold no annotated frame (all labels are -1)")
    means = table.window_means(max_window=max(windows))
    raw_labels = np.argmax(table.probs, axis=1)
    unsmoothed = None  # K = 0 or A = 0 all give the raw labels: score them once
    rows = []
    for window in windows:
        window_mean = means.mean(window) if window > 0 else None
        for alpha in alphas:
            _check_smoothing(window, alpha)
            if window == 0 or alpha == 0:
                if unsmoothed is None:
                    unsmoothed = _grid_score(table, raw_labels, positions, truth)
                result = unsmoothed
            else:
                blended = window_mean if alpha == 1 else alpha * window_mean + (1 - alpha) * table.probs
                result = _grid_score(table, np.argmax(blended, axis=1), positions, truth)
            rows.append({'window': int(window), 'alpha': float(alpha), **result})
    best = max(rows, key=lambda row: (row['macro_f1'], -row['window'], -row['alpha']))
    return rows, best


def _grid_score(table, row_labels, positions, truth):
    predicted = table.all_frame_labels(row_labels)[positions]
    return {'macro_f1': macro_f1(truth, predicted, NUM_ABAW),
            'accuracy': float(np.mean(predicted == truth))}


def format_search(rows, windows=SEARCH_WINDOWS, alphas=SEARCH_ALPHAS):
    """Grid of macro F1: one line per K, one column per A."""
    table = {(row['window'], row['alpha']): row['macro_f1'] for row in rows}
    lines = ['macro F1   ' + ''.join(f"  A={alpha:<5g}" for alpha in alphas)]
    for window in windows:
        lines.append(f"K={window:<8d}" + ''.join(f"  {table[(window, alpha)]:.5f}"
                                                 for alpha in alphas))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- outputs

def write_search_csv(path, rows):
    with atomic_open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write('window,alpha,macro_f1,accuracy\n')
        f.writelines(f"{r['window']},{r['alpha']:g},{r['macro_f1']:.6f},{r['accuracy']:.6f}\n"
                     for r in rows)


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


def write_plots(folder, table, smoothed, frame_labels, count, scores=None):
    from plots import plot_confusion, plot_timeline
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
                                     truth=table.truth[v], title=name))
    if count > 0 and scores is not None:
        written.append(plot_confusion(os.path.join(folder, 'confusion.png'), scores['confusion'],
                                      ABAW_CLASSES, 'smoothed predictions'))
    return written


# ----------------------------------------------------------------------------- command line

def build_parser():
    parser = argparse.ArgumentParser(
        description='Fuse coarse and negative model predictions into ABAW EXPR labels, smooth '
                    'them over time, score them and write submission files.')
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
    parser.add_argument('-fusion', choices=('soft', 'hard'), default='soft')
    parser.add_argument('-window', type=int, default=0, help='smoothing window K in frames '
                        '(0 = no smoothing)')
    parser.add_argument('-alpha', type=float, default=0.5, help='weight A of the window mean')
    parser.add_argument('-search', action='store_true', help='grid-search K and A on the '
                        'annotated videos and use the best')
    parser.add_argument('-format', choices=('abaw3', 'csv'), default='abaw3')
    parser.add_argument('-plot', type=int, default=2, help='timeline plots for this many videos')
    return parser


def check_smoothing_flags(parser, args):
    """-window / -alpha range checks, shared with predict_video.py."""
    if args.window < 0:
        parser.error(f"-window must be >= 0, got {args.window}")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"-alpha must be in [0, 1], got {args.alpha}")


def _check_args(parser, args):
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

    window, alpha = args.window, args.alpha
    if args.search:
        rows, best = search(table)
        log.info("search over K x A on the annotated frames:\n%s", format_search(rows))
        write_search_csv(os.path.join(args.output, 'search.csv'), rows)
        window, alpha = best['window'], best['alpha']
        log.info("best: K=%d A=%g macro F1 %.5f", window, alpha, best['macro_f1'])
    if window == 0 or alpha == 0:
        log.info("no smoothing (K=%d, A=%g)", window, alpha)

    smoothed = table.window_means(max_window=window).smooth(window, alpha)
    row_labels = np.argmax(smoothed, axis=1)
    frame_labels = table.all_frame_labels(row_labels)

    settings = {'fusion': args.fusion, 'window': int(window), 'alpha': float(alpha)}
    raw_scores = score(table, np.argmax(table.probs, axis=1))
    smooth_scores = score(table, row_labels)
    metrics = {
        'raw': {'fusion': args.fusion, 'window': 0, 'alpha': 0.0, **(raw_scores or {})},
        'smoothed': {**settings, **(smooth_scores or {})},
        'searched': bool(args.search),
        'videos': len(table.video_names),
        'predicted_frames': int(table.frames.size),
        'frames': int(table.num_frames.sum()),
        'annotated': raw_scores is not None,
    }
    if raw_scores is not None:
        print(format_table({'fused raw': raw_scores, f'K={window} A={alpha:g}': smooth_scores},
                           title=f"{args.fusion} fusion, scored on {raw_scores['count']} "
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
        write_plots(args.output, table, smoothed, frame_labels, args.plot, smooth_scores)
    return metrics


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    console.setup(log)
    try:
        return run(args)
    except (InputError, AnnotationError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == '__main__':
    main()
