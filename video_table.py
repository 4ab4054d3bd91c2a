"""Per-frame predictions of whole videos: the `predictions.npz` files that `-eval` writes, joined
by (video, frame) into one table with each video's frame count and ground truth, and the ABAW
submission files written from it. The rules applied to the table are fusion.py's.
"""
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from errors import UsageError
from fileio import DONE_MARKER, atomic_open, is_temporary
from fusion import NEUTRAL, NUM_ABAW, Smoother, fuse, nearest_predicted
from labels import (ABAW_CLASSES, ANNOTATION_HEADER, CLASS_NAMES, NEGATIVE_CLASSES,
                    annotation_files, read_annotation, write_annotation)
from plots import plot_confusion, plot_timeline

log = logging.getLogger('smooth_predict.video_table')

FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
CSV_HEADER = 'image_location,' + ANNOTATION_HEADER
# The split smooth_predict.py scores: fusion and SP are tuned on the validation set.
DEFAULT_SPLIT = 'Validation_Set'


class InputError(UsageError):
    """Unusable input; the message is one line that names the file (or flag) at fault."""



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

    def smoother(self, mode, max_window):
        """A `Smoother` of this table's fusion over its videos, for windows up to max_window."""
        return Smoother(self.coarse_logits, self.negative_logits, self.fusion, mode, max_window,
                        self.frames, self.video_ids)

    def smoothed(self, setting):
        """Fused probabilities [N, 8] of the rows after `setting` (a Smoothing of this fusion)."""
        return self.smoother(setting.mode, setting.window).probs(setting)

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


def read_annotations(anno_folder, split=DEFAULT_SPLIT):
    """{video: labels [T] int64} of the annotations of `split` under the root anno_folder."""
    files = annotation_files(anno_folder, split, log=log)
    return {name: np.asarray(read_annotation(path), dtype=np.int64) for name, path in files.items()}


def _count_frame_files(folder, video):
    """Frames of `video`: the count `python -m preprocess` recorded in its aligned folder's `.done`
    manifest (the aligned folder holds only the frames with a face), else the files in the folder."""
    path = os.path.join(folder, video)
    if not os.path.isdir(path):
        return None
    manifest = os.path.join(path, DONE_MARKER)
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding='utf-8') as f:
                return int(json.load(f)['frames'])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{manifest}: unreadable preprocessing manifest (re-run python -m preprocess)") from None
    return sum(1 for entry in os.scandir(path) if entry.is_file() and not is_temporary(entry.name)
               and os.path.splitext(entry.name)[1].lower() in FRAME_EXTENSIONS)


def build_video_table(coarse, negative, fusion='soft', anno_folder=None, frames_folder=None,
                      video_names=None, split=DEFAULT_SPLIT):
    """Align two `load_predictions` results, fuse them unsmoothed, attach frame counts and truth.

    anno_folder: the annotations' root, `split` its sub-folder (labels.annotation_files).
    Frame counts: the annotation's number of label lines, else the number of frame files in
    frames_folder/<video>/, else (neither folder given) the largest predicted frame number.
    Videos: every predicted video, every annotated one and every name in `video_names` (the test
    set's list, so a video in which no face was found still gets its file); those without a
    single prediction are all Neutral, with a warning.
    """
    aligned = align(coarse, negative)
    probs = fuse(aligned['coarse_logits'], aligned['negative_logits'], fusion)
    annotations = read_annotations(anno_folder, split) if anno_folder else {}
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



# ----------------------------------------------------------------------------- outputs


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


