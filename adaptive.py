"""Adaptive frame rate: classify a strided subset of frames and densify only where it matters.

Expressions last much longer than a frame (what Smooth Predicting exploits), so most frames can be
filled in from their neighbours. `Sampler` takes every decoded frame in order and chooses which to
process (detect, track, align, classify):

- with strides (8, 2, 1), every 8th frame first;
- an interval between two processed frames is *filled* without processing when both ends show
  the same tracked people, each person with the same fused label at both ends and a fused
  probability of at least `agree_prob` at both;
- otherwise the interval is processed at the next stride (every 2nd frame), and each of the
  smaller intervals is judged the same way, down to every frame.

A filled frame gets each person's face box, detection probability, landmarks and both models'
logits interpolated linearly between the two ends of the interval, so smoothing and fusion then
run exactly as on processed frames and every frame keeps one row. A faceless end, or a person
present at one end only (a track starting or ending), never lets an interval be filled.

Tracking sees the processed frames in time order: an end tried and then refined is tracked
again after the frames before it (`FaceTracker.fork` makes the trial copy). Detection and
classification results are kept, so no frame is processed twice.

Frames that arrive without an image (a live source that fell behind, live.py) cannot be
processed: an interval that would need them is filled along the people present at both ends
(whatever their labels), and its frames have no face otherwise.
"""
import collections
import io
import time

import numpy as np

import datasets
from labels import COARSE_CLASSES, NEGATIVE_CLASSES
from preprocess.faceloop import FALLBACK_FPS, StageClock
from preprocess.faces import detection_scale, encode_face, scale_face, shrink
from preprocess.tracking import FaceTracker, TrackedVideo
from preprocess.video import VideoDecodeError, iter_frames
from fusion import fuse

DEFAULT_STRIDES = (8, 2, 1)
# Chosen on the demo's validation videos (benchmarks/bench_predict_video.py, benchmarks/RESULTS.md).
DEFAULT_AGREE_PROB = 0.3

FrameRecord = collections.namedtuple('FrameRecord', ['frame', 'processed', 'faces', 'ids', 'coarse', 'negative'])
FrameRecord.__doc__ = """One frame's result, in frame order: frame (1-based), processed (False: filled
or skipped), faces (preprocess.faces.Face list), ids (raw track id of each face, -1 for none),
coarse [F, 5] and negative [F, 4] logits of each face (NaN rows for faces not classified: below
min_prob)."""

Analysis = collections.namedtuple('Analysis', ['faces', 'coarse', 'negative'])
Analysis.__doc__ = """What `analyse(frames, images)` returns for each processed frame: faces (all
detections, most confident first) and coarse [F, 5] / negative [F, 4] logits (NaN rows for the
faces it did not classify)."""


def parse_strides(text):
    """(8, 2, 1) from '8,2,1'; ValueError unless the strides are integers >= 1, strictly
    decreasing and end with 1 (an interval that still disagrees is processed frame by frame)."""
    if isinstance(text, (tuple, list)):
        text = ','.join(map(str, text))
    try:
        strides = tuple(int(part) for part in str(text).split(','))
    except ValueError:
        raise ValueError(f"{text!r}: give comma-separated integers, e.g. 8,2,1") from None
    if any(stride < 1 for stride in strides):
        raise ValueError(f"{text!r}: strides must be >= 1")
    if any(later >= earlier for earlier, later in zip(strides, strides[1:])):
        raise ValueError(f"{text!r}: strides must decrease, e.g. 8,2,1")
    if strides[-1] != 1:
        raise ValueError(f"{text!r}: the last stride must be 1, so disagreeing intervals reach every frame")
    return strides


def face_labels(ids, faces, coarse, negative, fusion, min_prob):
    """{track id: (fused label, fused probability)} of the tracked faces of at least min_prob."""
    chosen = [i for i, (track, face) in enumerate(zip(ids, faces)) if track >= 0 and face.prob >= min_prob]
    if not chosen:
        return {}
    probs = fuse(coarse[chosen], negative[chosen], fusion)
    return {ids[i]: (int(np.argmax(p)), float(np.max(p))) for i, p in zip(chosen, probs)}


def ends_agree(labels_a, labels_b, agree_prob):
    """Whether an interval may be filled: the same people at both ends (at least one), each with
    one fused label at both ends and a probability of at least agree_prob at both."""
    if not labels_a or labels_a.keys() != labels_b.keys():
        return False
    return all(labels_a[track][0] == labels_b[track][0]
               and min(labels_a[track][1], labels_b[track][1]) >= agree_prob for track in labels_a)


def interpolate(record_a, record_b, frame):
    """The FrameRecord of `frame` between processed records a and b: every person tracked (id >= 0)
    at both ends, box, probability, landmarks and logits linear in the frame number."""
    weight = (frame - record_a.frame) / (record_b.frame - record_a.frame)
    index_b = {track: i for i, track in enumerate(record_b.ids) if track >= 0}
    faces, ids, coarse, negative = [], [], [], []
    for i, track in enumerate(record_a.ids):
        j = index_b.get(track)
        # Only faces classified at both ends (a track may go on through a face below min_prob).
        if track < 0 or j is None or np.isnan(record_a.coarse[i]).any() or np.isnan(record_b.coarse[j]).any():
            continue
        face_a, face_b = record_a.faces[i], record_b.faces[j]
        faces.append(face_a._replace(box=(1 - weight) * face_a.box + weight * face_b.box,
                                     prob=(1 - weight) * face_a.prob + weight * face_b.prob,
                                     landmarks=(1 - weight) * face_a.landmarks + weight * face_b.landmarks))
        ids.append(track)
        coarse.append((1 - weight) * record_a.coarse[i] + weight * record_b.coarse[j])
        negative.append((1 - weight) * record_a.negative[i] + weight * record_b.negative[j])
    return FrameRecord(frame, False, faces, ids, _rows(coarse, record_a.coarse), _rows(negative, record_a.negative))


def _rows(rows, like):
    return np.array(rows, np.float64).reshape(len(rows), like.shape[1])


class Sampler:
    """Chooses the frames to process and fills the others; feed frames in order, then finish.

        sampler = Sampler(analyse, tracker, strides=(8, 2, 1), agree_prob=DEFAULT_AGREE_PROB, fusion='soft', min_prob=0.95)
        for number, image in enumerate(frames, start=1):
            for record in sampler.feed(number, image):   # FrameRecords, in frame order
                ...
        for record in sampler.finish(): ...

    analyse(frames, images) -> [Analysis] (detection, alignment, classification; no tracking) of
    several frames at once; tracker: a preprocess.tracking.FaceTracker, updated with processed
    frames in order. An image of None marks a frame that cannot be processed (skipped by a live
    source). strides (1,) processes every frame it gets. lookahead: intervals of the first stride
    gathered before deciding, so that their ends are analysed in one batch (faster models, more
    frames held and a later answer: 1 for live sources).
    """

    def __init__(self, analyse, tracker, strides=DEFAULT_STRIDES, agree_prob=DEFAULT_AGREE_PROB, fusion='soft',
                 min_prob=0.0, lookahead=1):
        self.analyse = analyse
        self.lookahead = lookahead
        self.tracker = tracker
        self.strides = tuple(strides)
        self.agree_prob = agree_prob
        self.fusion = fusion
        self.min_prob = min_prob
        self.anchor = None      # the last processed record, its tracking committed
        self.pending = {}       # frame -> image (or None) after the anchor
        self.analysed = {}      # frame -> Analysis, kept while its interval is decided
        self.last_frame = 0
        self.returned = 0       # the last frame whose record was returned

    # -- frames in

    def feed(self, frame, image):
        """Take frame `frame` (the next number); returns the FrameRecords now decided."""
        if frame != self.last_frame + 1:
            raise ValueError(f"frame {frame} fed after frame {self.last_frame}: frames must come in order")
        self.last_frame = frame
        if self.anchor is None:
            return self._returning([_empty(frame) if image is None else self._commit_first(frame, image)])
        self.pending[frame] = image
        if image is not None and frame - self.anchor.frame >= self.strides[0] * self.lookahead:
            return self._returning(self._decide_through(frame))
        return []

    def finish(self):
        """The records of the frames still undecided (the last processed frame closes the video)."""
        if self.anchor is None or not self.pending:
            return []
        available = [frame for frame, image in self.pending.items() if image is not None]
        records = self._decide_through(available[-1]) if available else []
        start = records[-1].frame if records else self.anchor.frame
        records += [_empty(frame) for frame in range(start + 1, self.last_frame + 1)]
        self.pending = {}
        return self._returning(records)

    def abandon(self):
        """Records without a face for every frame fed but not returned yet, processing nothing:
        for a run stopped at any moment (even inside a decision), so every frame keeps a row."""
        records = [_empty(frame) for frame in range(self.returned + 1, self.last_frame + 1)]
        self.pending, self.analysed = {}, {}
        return self._returning(records)

    def _returning(self, records):
        if records:
            self.returned = records[-1].frame
        return records

    # -- deciding an interval

    def _commit_first(self, frame, image):
        analysis = self.analyse([frame], [image])[0]
        ids = self.tracker.update(analysis.faces)
        self.anchor = FrameRecord(frame, True, analysis.faces, ids, analysis.coarse, analysis.negative)
        return self.anchor

    def _prefetch(self, frames):
        todo = [frame for frame in frames if frame not in self.analysed]
        if todo:
            self.analysed.update(zip(todo, self.analyse(todo, [self.pending[frame] for frame in todo])))

    def _analysis(self, frame):
        self._prefetch([frame])
        return self.analysed[frame]

    def _decide_through(self, end):
        # The ends of the first-stride intervals up to `end`, analysed in one batch, then decided in order.
        step = self.strides[0]
        ends = [frame for frame in range(self.anchor.frame + step, end, step)
                if self.pending.get(frame) is not None] + [end]
        self._prefetch(ends)
        records = []
        for frame in ends:
            records += self._decide(frame)
        return records

    def _decide(self, end):
        decided = {}
        self._refine(self.anchor, end, 0, decided)
        self.pending = {frame: image for frame, image in self.pending.items() if frame > end}
        self.analysed = {frame: analysis for frame, analysis in self.analysed.items() if frame > end}
        return [decided[frame] for frame in sorted(decided)]

    def _labels(self, record):
        return face_labels(record.ids, record.faces, record.coarse, record.negative, self.fusion, self.min_prob)

    def _refine(self, start, end, level, decided):
        """Decide frames start+1..end (start processed and tracked); leaves the tracker after end."""
        analysis = self._analysis(end)
        trial = self.tracker.fork()
        ids = trial.update(analysis.faces)
        end_record = FrameRecord(end, True, analysis.faces, ids, analysis.coarse, analysis.negative)
        gap = end - start.frame
        if gap == 1 or ends_agree(self._labels(start), self._labels(end_record), self.agree_prob):
            self._commit(trial, end_record, decided)
            for frame in range(start.frame + 1, end):
                decided[frame] = interpolate(start, end_record, frame)
            return
        finer = [i for i in range(level + 1, len(self.strides)) if self.strides[i] < gap]
        if not finer:
            # Only frames without an image lie between: fill along the people at both ends.
            self._commit(trial, end_record, decided)
            for frame in range(start.frame + 1, end):
                decided[frame] = interpolate(start, end_record, frame)
            return
        level = finer[0]
        stride = self.strides[level]
        points = [frame for frame in range(start.frame + stride, end, stride) if self.pending.get(frame) is not None]
        if not points:
            self._refine(start, end, level, decided)
            return
        self._prefetch(points)
        previous = start
        for point in points + [end]:
            self._refine(previous, point, level, decided)
            previous = decided[point]

    def _commit(self, trial, record, decided):
        # The trial tracker saw exactly the frames before `record` that were kept, then `record`.
        self.tracker.ids.extend(trial.ids)
        trial.ids = self.tracker.ids
        self.tracker = trial
        decided[record.frame] = record
        self.anchor = record


def _empty(frame):
    return FrameRecord(frame, False, [], [], np.zeros((0, 5)), np.zeros((0, 4)))


# ----------------------------------------------------------------------------- one video, offline

class FrameAnalyser:
    """analyse(frames, images) for Sampler: detection on copies shrunk to detect_size, alignment and
    the JPEG round trip of `python -m preprocess`'s face files, then classify(PIL faces, clock) ->
    (coarse [n, 5], negative [n, 4]) on the faces of at least min_prob. Seconds go to `clock`
    (detect, align; classify charges its own)."""

    def __init__(self, detector, classify, clock):
        self.detector = detector
        self.classify = classify
        self.clock = clock

    def __call__(self, frames, images):
        settings = self.detector.settings
        start = time.perf_counter()
        scales = [detection_scale(image.shape, settings.detect_size) for image in images]
        shrunk = [shrink(image, scale) for image, scale in zip(images, scales)]
        step = settings.detect_batch
        # Batches of detect_batch frames, spread over the detection workers.
        detections = [faces for _, batch in self.detector.map(
            (first, shrunk[first:first + step]) for first in range(0, len(shrunk), step)) for faces in batch]
        faces = [[scale_face(face, 1 / scale) for face in found] for found, scale in zip(detections, scales)]
        self.clock.add('detect', time.perf_counter() - start)
        start = time.perf_counter()
        chosen = [(n, i) for n, found in enumerate(faces) for i, face in enumerate(found)
                  if face.prob >= settings.min_prob]
        crops = [datasets.load_image(io.BytesIO(encode_face(self.detector.aligner.align(images[n], faces[n][i]),
                                                            settings.jpeg_quality)))
                 for n, i in chosen]
        self.clock.add('align', time.perf_counter() - start)
        coarse = [np.full((len(found), len(COARSE_CLASSES)), np.nan) for found in faces]
        negative = [np.full((len(found), len(NEGATIVE_CLASSES)), np.nan) for found in faces]
        if chosen:
            coarse_rows, negative_rows = self.classify(crops, self.clock)
            for (n, i), c, g in zip(chosen, coarse_rows, negative_rows):
                coarse[n][i], negative[n][i] = c, g
        return [Analysis(*parts) for parts in zip(faces, coarse, negative)]


def analyse_video_adaptive(path, detector, classify, strides=DEFAULT_STRIDES, agree_prob=DEFAULT_AGREE_PROB, fusion='soft',
                           fps=None, progress=None, lookahead=4):
    """predict_video's analysis of one video with adaptive sampling: the same dict as its
    analyse_video (frames, tracked, keys, coarse_logits, negative_logits, seconds) plus
    processed [T] (bool: False for a filled frame)."""
    settings = detector.settings
    clock = StageClock()
    tracker = FaceTracker(fps or FALLBACK_FPS, settings.min_prob, settings.track_gap_s)
    sampler = Sampler(FrameAnalyser(detector, classify, clock), tracker, strides, agree_prob, fusion,
                      settings.min_prob, lookahead)
    records, size = [], (0, 0)
    frames = clock.timed_iter(iter_frames(path), 'decode')
    try:
        for number, image in enumerate(frames, start=1):
            size = image.shape[1], image.shape[0]
            records += sampler.feed(number, image)
            if progress is not None:
                progress(1)
    finally:
        frames.close()
    records += sampler.finish()
    if not records:
        raise VideoDecodeError(f"{path}: ffmpeg decoded no frames")
    return records_to_video(records, settings.min_prob, size, clock.seconds)


def records_to_video(records, min_prob, size, seconds):
    """The analysis dict predict_video reads, built from FrameRecords in frame order."""
    keys, coarse, negative = [], [], []
    for record in records:
        for index in range(len(record.faces)):
            if not np.isnan(record.coarse[index]).any():
                keys.append((record.frame, index))
                coarse.append(record.coarse[index])
                negative.append(record.negative[index])
    return {
        'frames': len(records),
        'tracked': TrackedVideo([r.faces for r in records], [r.ids for r in records], min_prob, *size),
        'keys': keys,
        'coarse_logits': np.array(coarse, np.float64).reshape(len(coarse), len(COARSE_CLASSES)),
        'negative_logits': np.array(negative, np.float64).reshape(len(negative), len(NEGATIVE_CLASSES)),
        'seconds': seconds,
        'processed': np.array([r.processed for r in records], bool),
    }


# ----------------------------------------------------------------------------- flags

def add_arguments(parser):
    """-sampling, -strides, -agree_prob (predict_video.py)."""
    parser.add_argument('-sampling', choices=('all', 'adaptive'), default='all',
                        help='all (default): detect and classify every frame; adaptive: every '
                             '-strides frame first, densified only where neighbouring results disagree '
                             '(the others filled along the tracks; see docs/realtime.md)')
    parser.add_argument('-strides', default=','.join(map(str, DEFAULT_STRIDES)),
                        help='-sampling adaptive: the strides tried in turn, ending with 1 (default %(default)s)')
    parser.add_argument('-agree_prob', type=float, default=DEFAULT_AGREE_PROB,
                        help='-sampling adaptive: an interval is filled only when both ends have the same '
                             'fused label with at least this probability (default %(default)s)')


def check_arguments(parser, args):
    """parser.error on a bad -strides or -agree_prob."""
    try:
        parse_strides(args.strides)
    except ValueError as err:
        parser.error(f"-strides {err}")
    if not 0.0 <= args.agree_prob <= 1.0:
        parser.error(f"-agree_prob must be in [0, 1], got {args.agree_prob}")
