"""Generate the demo's synthetic, Aff-Wild2-shaped data set from scikit-image's astronaut photo.

    python demo/make_demo_data.py [OUT] [--seed 0] [--num-train 8] [--num-val 4] [--frames 100]

OUT (default demo_work/data) receives

    videos/<name>.mp4                         640x480, 30 fps, H.264 through FFmpeg
    annotations/Train_Set/<name>.txt          ABAW EXPR files, one label per frame, -1 = invalid
    annotations/Validation_Set/<name>.txt     (the two-face video has <name>_left / <name>_right)
    README.txt                                what the data is and is not
    summary.json                              written last: its presence means the set is complete

Each of the 8 ABAW classes is drawn as its own bold change inside the face (a tint, a mark on the
forehead or a cheek, the mouth), so the class survives MTCNN detection and alignment to a tight
crop and a small model can learn it in minutes. That makes the data a check that the machinery
works end to end; it says nothing about accuracy on real expressions.

Everything random comes from one seeded numpy Generator, so a seed always yields the same
annotation bytes and the same decoded frames.
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import console  # noqa: E402  (both spellings of every flag, errors as one line)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data as skimage_data  # noqa: E402

from fileio import atomic_open  # noqa: E402
from labels import ABAW_CLASSES, write_annotation  # noqa: E402
from preprocess.video import write_video  # noqa: E402

FRAME_WIDTH, FRAME_HEIGHT = 640, 480
FPS = 30
SUMMARY_NAME = 'summary.json'
# Bump when the rendering changes, so a folder made by an older generator is rebuilt, not reused.
GENERATOR_VERSION = 1

# The astronaut photo (512x512): the head region we cut out, and MTCNN's five landmarks on the
# original photo (left eye, right eye, nose, left and right mouth corner), measured once.
HEAD_BOX = (125, 5, 325, 245)  # x1, y1, x2, y2
PHOTO_LANDMARKS = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0],
                            [201.7, 139.2], [245.3, 141.9]])
HEAD_SCALE = 1.6  # head cut-out upscaled once; the face is then ~140x175 px in a single-face frame
PAIR_SCALE = 0.75  # relative size of each face in the two-face video

RUN_LENGTHS = (10, 40)  # frames a label is held, inclusive
CLASS_WEIGHTS = np.array([1.3, 1, 1, 1, 1, 1, 1, 1])  # Neutral a little more frequent, as in Aff-Wild2
NO_FACE_FRACTION = 0.03
NOISE_PROBABILITIES = {'blur': 0.08, 'occlusion': 0.07, 'lighting': 0.10, 'sensor_noise': 0.08}

RENDERINGS = {
    'Neutral': 'the unchanged photo',
    'Anger': 'thick red horizontal bar across the forehead',
    'Disgust': 'green disc on the image-left cheek',
    'Fear': 'blue triangle on the image-right cheek',
    'Happiness': 'strong yellow tint of the face skin (blue removed)',
    'Sadness': 'dark navy diamond on the chin',
    'Surprise': 'mouth replaced by a large black open-mouth oval',
    'Other': 'magenta diagonal stripes over the face',
}

README_TEXT = """\
SYNTHETIC DEMO DATA - NOT Aff-Wild2
====================================

Made by demo/make_demo_data.py (seed {seed}) from the one face photo scikit-image ships
(skimage.data.astronaut(), public domain, NASA). Nothing here comes from Aff-Wild2.

Layout follows Aff-Wild2 / ABAW3 EXPR: videos/<name>.mp4 ({width}x{height}, {fps} fps) and
annotations/Train_Set|Validation_Set/<name>.txt with the header
{header}
and one label per decoded frame (-1 = invalid). Video {pair} shows two faces side by side and is
annotated as {pair}_left.txt and {pair}_right.txt.

The 8 "expressions" are not expressions. Each class is painted onto the face as a bold mark:
{renderings}
Labels are held for runs of {run_min}-{run_max} frames; the face drifts slowly; some frames are
blurred, partly occluded, darkened/brightened or noisy; about {no_face:.0%} of frames show no face
and a few labels are -1.

What it is for: showing that the whole pipeline (FFmpeg decoding, MTCNN detection and
alignment, training and evaluating both Swin models, fusion, smoothing, submission files) runs
and learns a visible signal. Scores on this data say nothing about how the method does on
Aff-Wild2; for that, see the paper's reported figures and run on the licensed data.
"""


# ---- the face and its class renderings -------------------------------------------------------

def _head_cutout():
    """The upscaled head patch (RGB uint8), its soft alpha mask, and its landmarks in patch pixels."""
    x1, y1, x2, y2 = HEAD_BOX
    photo = skimage_data.astronaut()
    head = photo[y1:y2, x1:x2]
    size = (round((x2 - x1) * HEAD_SCALE), round((y2 - y1) * HEAD_SCALE))
    head = cv2.resize(head, size, interpolation=cv2.INTER_CUBIC)
    landmarks = (PHOTO_LANDMARKS - (x1, y1)) * HEAD_SCALE
    height, width = head.shape[:2]
    # Hair, face and neck as one soft-edged oval, so the head sits naturally on any background.
    mask = np.zeros((height, width), np.float32)
    centre = landmarks[2] + (0, -0.1 * height)
    cv2.ellipse(mask, _pt(centre), (int(0.37 * width), int(0.46 * height)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), 4)
    return head, mask, landmarks


def _pt(xy):
    return int(round(xy[0])), int(round(xy[1]))


def _face_geometry(landmarks):
    left_eye, right_eye, nose, mouth_left, mouth_right = landmarks
    eye_distance = float(np.linalg.norm(right_eye - left_eye))
    return {
        'd': eye_distance,
        'eyes': (left_eye + right_eye) / 2,
        'left_eye': left_eye, 'right_eye': right_eye, 'nose': nose,
        'mouth': (mouth_left + mouth_right) / 2,
        'left_cheek': left_eye + (-0.12 * eye_distance, 0.55 * eye_distance),
        'right_cheek': right_eye + (0.12 * eye_distance, 0.55 * eye_distance),
    }


def _skin_mask(shape, geometry):
    """Soft oval over the face proper (brow to chin, cheek to cheek)."""
    d = geometry['d']
    mask = np.zeros(shape[:2], np.float32)
    centre = geometry['eyes'] + (0, 0.45 * d)
    cv2.ellipse(mask, _pt(centre), (int(1.0 * d), int(1.45 * d)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, d / 14))


def render_class(head, landmarks, label):
    """Copy of `head` with class `label` painted on, and the mask of the painted area."""
    image = head.astype(np.float32)
    geometry = _face_geometry(landmarks)
    d = geometry['d']
    mark = np.zeros(head.shape[:2], np.float32)
    colour = (0, 0, 0)  # Neutral paints nothing (mark stays zero)
    name = ABAW_CLASSES[label]
    if name == 'Anger':
        top_left = geometry['eyes'] + (-0.95 * d, -0.78 * d)
        bottom_right = geometry['eyes'] + (0.95 * d, -0.42 * d)
        cv2.rectangle(mark, _pt(top_left), _pt(bottom_right), 1.0, -1, cv2.LINE_AA)
        colour = (215, 25, 25)
    elif name == 'Disgust':
        cv2.circle(mark, _pt(geometry['left_cheek']), int(0.33 * d), 1.0, -1, cv2.LINE_AA)
        colour = (20, 190, 40)
    elif name == 'Fear':
        centre, r = geometry['right_cheek'], 0.42 * d
        corners = np.array([centre + (0, -r), centre + (0.9 * r, 0.6 * r), centre + (-0.9 * r, 0.6 * r)])
        cv2.fillPoly(mark, [np.round(corners).astype(np.int32)], 1.0, cv2.LINE_AA)
        colour = (25, 60, 235)
    elif name == 'Happiness':
        # Multiplicative (blue taken out of the skin) rather than painted over: shading and eye
        # contrast survive, which MTCNN needs once a frame is also brightened.
        mark = _skin_mask(head.shape, geometry)
        image = image * (1 - mark[..., None] * (0.0, 0.1, 0.75))
        return np.clip(image, 0, 255).astype(np.uint8), mark
    elif name == 'Sadness':
        # On the chin, well away from eyes, nose and mouth corners: marks near those landmarks
        # (e.g. tear stripes under the eyes) made MTCNN miss the face.
        centre, r = geometry['mouth'] + (0, 0.5 * d), 0.28 * d
        corners = np.array([centre + (0, -r), centre + (1.25 * r, 0), centre + (0, r), centre + (-1.25 * r, 0)])
        cv2.fillPoly(mark, [np.round(corners).astype(np.int32)], 1.0, cv2.LINE_AA)
        colour = (15, 20, 110)
    elif name == 'Surprise':
        cv2.ellipse(mark, _pt(geometry['mouth'] + (0, 0.05 * d)), (int(0.36 * d), int(0.3 * d)),
                    0, 0, 360, 1.0, -1, cv2.LINE_AA)
        colour = (15, 5, 5)
    elif name == 'Other':
        yy, xx = np.mgrid[0:head.shape[0], 0:head.shape[1]].astype(np.float32)
        period = 0.55 * d
        stripes = (((xx + yy) % period) < period * 0.4).astype(np.float32)
        mark = stripes * _skin_mask(head.shape, geometry) * 0.55
        colour = (220, 0, 200)
    elif name != 'Neutral':
        raise ValueError(f"no rendering for class {label}")
    alpha = mark[..., None]
    image = image * (1 - alpha) + np.array(colour, np.float32) * alpha
    return np.clip(image, 0, 255).astype(np.uint8), mark


# ---- backgrounds, motion and per-frame noise -------------------------------------------------

def _background(rng):
    """A plain, gradient or softly textured 640x480 background (never face-like)."""
    kind = rng.integers(0, 3)
    base = rng.uniform(70, 190) + rng.normal(0, 18, 3)  # muted: grey plus a slight colour
    if kind == 0:
        image = np.broadcast_to(base, (FRAME_HEIGHT, FRAME_WIDTH, 3)).astype(np.float32)
    elif kind == 1:
        ramp = np.linspace(-1, 1, FRAME_HEIGHT, dtype=np.float32)[:, None, None]
        image = np.broadcast_to(base + ramp * rng.uniform(20, 45, 3), (FRAME_HEIGHT, FRAME_WIDTH, 3))
    else:
        # Mostly-grey blotches plus fine grain, like a painted wall; colour kept faint.
        coarse = rng.normal(0, 1, (6, 8, 1)) + rng.normal(0, 0.3, (6, 8, 3))
        smooth = cv2.resize(coarse.astype(np.float32), (FRAME_WIDTH, FRAME_HEIGHT), interpolation=cv2.INTER_CUBIC)
        image = base + smooth * 20 + rng.normal(0, 3, (FRAME_HEIGHT, FRAME_WIDTH, 1))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _trajectory(rng, frames, amplitude):
    """Slow drift: per-frame (dx, dy, scale, angle) from a few random low-frequency sinusoids."""
    t = np.arange(frames, dtype=np.float64)
    motion = np.zeros((frames, 4))
    limits = np.array([25.0, 15.0, 0.06, 4.0]) * (amplitude, amplitude, 1, 1)
    for k in range(4):
        for _ in range(2):
            period = rng.uniform(40, 160)
            motion[:, k] += np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) * limits[k] / 2
    motion[:, 2] += 1.0
    return motion


def _placement(centre_patch, centre_frame, scale, angle, shift):
    """2x3 affine taking patch pixels to frame pixels: rotate/scale about the face, then move."""
    matrix = cv2.getRotationMatrix2D(tuple(map(float, centre_patch)), float(angle), float(scale))
    matrix[:, 2] += np.asarray(centre_frame, np.float64) - centre_patch + shift
    return matrix


def _occluder_rect(rng, geometry, mark):
    """A box over part of the face (chin, one side, hair line) that leaves most of the class mark visible."""
    d, eyes = geometry['d'], geometry['eyes']
    candidates = {
        'chin': (eyes + (-1.0 * d, 1.45 * d), eyes + (1.0 * d, 2.2 * d)),
        'left': (eyes + (-1.7 * d, -0.6 * d), eyes + (-0.85 * d, 1.8 * d)),
        'right': (eyes + (0.85 * d, -0.6 * d), eyes + (1.7 * d, 1.8 * d)),
        'top': (eyes + (-1.1 * d, -1.6 * d), eyes + (1.1 * d, -0.95 * d)),
    }
    mark_area = float(mark.sum())
    allowed = []
    for name in sorted(candidates):
        (x1, y1), (x2, y2) = (np.clip(candidates[name][0], 0, None).astype(int),
                              np.clip(candidates[name][1], 0, None).astype(int))
        covered = float(mark[y1:y2, x1:x2].sum())
        if mark_area == 0 or covered <= 0.25 * mark_area:
            allowed.append((x1, y1, x2, y2))
    return allowed[rng.integers(0, len(allowed))]


def _apply_frame_noise(frame, rng, kinds):
    """The uint8 frame with this frame's lighting change, blur and sensor noise (a new array if any)."""
    if not set(kinds) & {'lighting', 'blur', 'sensor_noise'}:
        return frame
    frame = frame.astype(np.float32)
    if 'lighting' in kinds:
        # Brighter than ~1.3x washes the pale face out to white and MTCNN loses it; real footage clips too.
        gain = rng.uniform(0.45, 0.75) if rng.random() < 0.6 else rng.uniform(1.15, 1.3)
        cast = rng.uniform(0.9, 1.1, 3)
        if rng.random() < 0.5:
            # light from one side: a horizontal gain ramp
            ramp = np.linspace(gain, 1.0, FRAME_WIDTH, dtype=np.float32)
            if rng.random() < 0.5:
                ramp = ramp[::-1]
            frame = frame * ramp[None, :, None] * cast
        else:
            frame = frame * gain * cast
    if 'blur' in kinds:
        if rng.random() < 0.5:
            frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(1.5, 3.0))
        else:
            length = int(rng.integers(7, 15))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2, :] = 1.0 / length
            rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
            kernel = cv2.warpAffine(kernel, rotation, (length, length))
            frame = cv2.filter2D(frame, -1, kernel / kernel.sum())
    if 'sensor_noise' in kinds:
        frame = frame + rng.normal(0, rng.uniform(6, 14), frame.shape).astype(np.float32)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


# ---- labels -----------------------------------------------------------------------------------

def _label_runs(rng, frames, counts):
    """Per-frame class schedule of one face: runs of 10-40 frames, the least-shown class next.

    `counts` (frames per class so far in this split) is updated, which keeps every class, including
    the four negative ones, well represented in each split.
    """
    labels = []
    previous = -1
    low, high = RUN_LENGTHS
    while len(labels) < frames:
        length = int(min(rng.integers(low, high + 1), frames - len(labels)))
        score = counts / CLASS_WEIGHTS + rng.uniform(0, high, len(counts))
        if previous >= 0:
            score[previous] = np.inf
        label = int(np.argmin(score))
        labels.extend([label] * length)
        counts[label] += length
        previous = label
    return np.array(labels)


def _invalid_frames(rng, frames):
    """A short stretch of -1 labels (annotators unsure) in about half the faces."""
    invalid = np.zeros(frames, bool)
    if rng.random() < 0.5 and frames >= 20:
        length = int(rng.integers(3, 9))
        start = int(rng.integers(0, frames - length))
        invalid[start:start + length] = True
    return invalid


def _no_face_frames(rng, frames):
    """~3% of frames, in stretches of 1-2 frames, where the face is out of shot."""
    missing = np.zeros(frames, bool)
    target = max(1, round(NO_FACE_FRACTION * frames))
    while missing.sum() < target:
        length = int(min(rng.integers(1, 3), target - missing.sum()))
        start = int(rng.integers(0, frames - length + 1))
        missing[start:start + length] = True
    return missing


# ---- one video --------------------------------------------------------------------------------

class _Face:
    """One person in a video: class schedule, labels, motion and where the head sits in the frame."""

    def __init__(self, rng, frames, counts, centre, scale, amplitude):
        self.classes = _label_runs(rng, frames, counts)
        self.labels = np.where(_invalid_frames(rng, frames), -1, self.classes)
        self.motion = _trajectory(rng, frames, amplitude)
        self.centre = np.asarray(centre, np.float64)
        self.scale = scale


class VideoPlan:
    """Everything about one video except its pixels: faces, labels, frames without a face, noise.

    `noise[i]` lists the per-frame disturbances of frame i (0-based) among NOISE_PROBABILITIES.
    """

    def __init__(self, name, split, annotations, faces, no_face, noise):
        self.name, self.split, self.annotations = name, split, annotations
        self.faces, self.no_face, self.noise = faces, no_face, noise

    @property
    def labels(self):
        """{annotation name: per-frame labels}."""
        return {name: face.labels for name, face in zip(self.annotations, self.faces)}


def plan_demo_data(seed=0, num_train=8, num_val=4, frames=100):
    """The per-video plans of the data set, cheap (no pixels); make_demo_data renders exactly these.

    Training videos come first; the last validation video holds two faces (`_left`, `_right`).
    """
    _check_arguments(num_train, num_val, frames)
    class_counts = {'Train_Set': np.zeros(len(ABAW_CLASSES)), 'Validation_Set': np.zeros(len(ABAW_CLASSES))}
    plans = []
    total = num_train + num_val
    for number in range(1, total + 1):
        name = f'astro-{number:02d}'
        split = 'Train_Set' if number <= num_train else 'Validation_Set'
        rng = np.random.default_rng([seed, number, 0])
        if number == total:
            faces = [_Face(rng, frames, class_counts[split], (FRAME_WIDTH * x, FRAME_HEIGHT * 0.52), PAIR_SCALE, 0.5)
                     for x in (0.26, 0.74)]
            annotations = [f'{name}_left', f'{name}_right']
        else:
            centre = (FRAME_WIDTH / 2 + rng.uniform(-50, 50), FRAME_HEIGHT / 2 + rng.uniform(-15, 15))
            faces = [_Face(rng, frames, class_counts[split], centre, rng.uniform(0.95, 1.1), 1.0)]
            annotations = [name]
        no_face = _no_face_frames(rng, frames)
        drawn = rng.random((frames, len(NOISE_PROBABILITIES))) < list(NOISE_PROBABILITIES.values())
        # Nothing to occlude when the face is out of shot.
        noise = [[kind for kind, hit in zip(NOISE_PROBABILITIES, row) if hit and not (gone and kind == 'occlusion')]
                 for row, gone in zip(drawn, no_face)]
        plans.append(VideoPlan(name, split, annotations, faces, no_face, noise))
    return plans


def _compose(background, faces, index, rendered, head_mask, face_centre, rng, noise_kinds):
    frame = background.copy()  # uint8; only the head's box is blended in float
    for face in faces:
        dx, dy, scale, angle = face.motion[index]
        patch, mark = rendered[face.classes[index]]
        alpha = head_mask
        if 'occlusion' in noise_kinds:
            patch, alpha = patch.copy(), head_mask.copy()
            x1, y1, x2, y2 = _occluder_rect(rng, _face_geometry(rendered['landmarks']), mark)
            colour = rng.uniform(30, 220, 3)
            cv2.rectangle(patch, (x1, y1), (x2, y2), tuple(float(c) for c in colour), -1)
            cv2.rectangle(alpha, (x1, y1), (x2, y2), 1.0, -1)
        matrix = _placement(face_centre, face.centre, face.scale * scale, angle, (dx, dy))
        # Warp and blend only inside the head's bounding box: a full-frame warp costs far more.
        height, width = patch.shape[:2]
        corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64) @ matrix.T
        x1, y1 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        x2, y2 = np.minimum(np.ceil(corners.max(axis=0)).astype(int), (FRAME_WIDTH, FRAME_HEIGHT))
        if x2 <= x1 or y2 <= y1:
            continue
        matrix[:, 2] -= (x1, y1)
        size = (int(x2 - x1), int(y2 - y1))
        warped = cv2.warpAffine(patch, matrix, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        weight = cv2.warpAffine(alpha, matrix, size, flags=cv2.INTER_LINEAR)[..., None]
        region = frame[y1:y2, x1:x2].astype(np.float32)
        frame[y1:y2, x1:x2] = np.clip(region + (warped - region) * weight + 0.5, 0, 255).astype(np.uint8)
    return _apply_frame_noise(frame, rng, noise_kinds)


def _video_frames(plan, rng, rendered, head_mask, face_centre, background):
    for index, kinds in enumerate(plan.noise):
        if plan.no_face[index]:
            yield _apply_frame_noise(background, rng, kinds)
        else:
            yield _compose(background, plan.faces, index, rendered, head_mask, face_centre, rng, kinds)


# ---- the data set -----------------------------------------------------------------------------

def _parameters(seed, num_train, num_val, frames):
    return {'generator_version': GENERATOR_VERSION, 'seed': int(seed), 'num_train': int(num_train),
            'num_val': int(num_val), 'frames': int(frames)}


def _read_summary(out_dir):
    try:
        with open(os.path.join(out_dir, SUMMARY_NAME), encoding='utf-8') as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    # Anything but our own layout (e.g. a hand-edited file) counts as absent: the set is rebuilt.
    if not isinstance(summary, dict) or not isinstance(summary.get('videos'), list):
        return None
    if not all(isinstance(v, dict) and {'video', 'split', 'annotations'} <= set(v) for v in summary['videos']):
        return None
    return summary


def _listed_outputs(out_dir, summary):
    paths = [os.path.join(out_dir, 'README.txt')]
    for video in summary.get('videos', []):
        paths.append(os.path.join(out_dir, 'videos', video['video'] + '.mp4'))
        folder = os.path.join(out_dir, 'annotations', video['split'])
        paths += [os.path.join(folder, name + '.txt') for name in video['annotations']]
    return paths


def _remove_listed_outputs(out_dir, summary):
    """Delete the videos/annotations an earlier run listed, so no stale file mixes into a new set."""
    for path in _listed_outputs(out_dir, summary):
        if os.path.isfile(path):
            os.remove(path)


def _check_arguments(num_train, num_val, frames):
    if int(num_train) < 1:
        raise ValueError(f"--num-train {num_train}: need at least 1 training video")
    if int(num_val) < 1:
        raise ValueError(f"--num-val {num_val}: need at least 1 validation video (it holds the two-face pair)")
    if int(frames) < 20:
        raise ValueError(f"--frames {frames}: need at least 20 frames per video")


def make_demo_data(out_dir='demo_work/data', seed=0, num_train=8, num_val=4, frames=100, verbose=False):
    """Write the synthetic data set into `out_dir` (skipped if already complete) and return its summary.

    The last validation video holds two faces (annotations `<name>_left`, `<name>_right`). The summary
    lists, per video, its split, annotation names, frame count and the 1-based frames without a face,
    and the per-split frame counts of each class (valid labels on frames with a face).
    """
    _check_arguments(num_train, num_val, frames)
    out_dir = os.path.abspath(out_dir)
    parameters = _parameters(seed, num_train, num_val, frames)
    previous = _read_summary(out_dir)
    if (previous is not None and previous.get('parameters') == parameters
            and all(os.path.isfile(path) for path in _listed_outputs(out_dir, previous))):
        previous['reused'] = True
        return previous
    if previous is not None:
        _remove_listed_outputs(out_dir, previous)
        os.remove(os.path.join(out_dir, SUMMARY_NAME))

    start = time.perf_counter()
    plans = plan_demo_data(seed, num_train, num_val, frames)
    head, head_mask, landmarks = _head_cutout()
    rendered = {label: render_class(head, landmarks, label) for label in range(len(ABAW_CLASSES))}
    rendered['landmarks'] = landmarks
    geometry = _face_geometry(landmarks)
    face_centre = geometry['eyes'] + (0, 0.4 * geometry['d'])

    frame_counts = {split: np.zeros(len(ABAW_CLASSES), int) for split in ('Train_Set', 'Validation_Set')}
    videos = []
    for number, plan in enumerate(plans, start=1):
        # Pixels draw from their own stream (the plan used [seed, number, 0]), so labels never depend
        # on rendering details and each video is reproducible on its own.
        rng = np.random.default_rng([seed, number, 1])
        background = _background(rng)
        written = write_video(os.path.join(out_dir, 'videos', plan.name + '.mp4'),
                              _video_frames(plan, rng, rendered, head_mask, face_centre, background), fps=FPS,
                              preset='veryfast')
        for annotation, labels in plan.labels.items():
            write_annotation(os.path.join(out_dir, 'annotations', plan.split, annotation + '.txt'), labels)
            visible = labels[~plan.no_face]
            frame_counts[plan.split] += np.bincount(visible[visible >= 0], minlength=len(ABAW_CLASSES))
        noise_frames = {kind: [i + 1 for i, kinds in enumerate(plan.noise) if kind in kinds]
                        for kind in NOISE_PROBABILITIES}
        videos.append({'video': plan.name, 'split': plan.split, 'annotations': plan.annotations, 'frames': written,
                       'no_face_frames': [int(i) + 1 for i in np.flatnonzero(plan.no_face)],
                       'noise_frames': noise_frames,
                       'invalid_labels': {a: int((labels < 0).sum()) for a, labels in plan.labels.items()}})
        if verbose:
            print(f"  {plan.split}/{plan.name}: {written} frames, {', '.join(plan.annotations)}", flush=True)

    readme = README_TEXT.format(
        seed=seed, width=FRAME_WIDTH, height=FRAME_HEIGHT, fps=FPS, header=','.join(ABAW_CLASSES),
        pair=videos[-1]['video'], run_min=RUN_LENGTHS[0], run_max=RUN_LENGTHS[1], no_face=NO_FACE_FRACTION,
        renderings=''.join(f"  {i} {name:<10} {RENDERINGS[name]}\n" for i, name in enumerate(ABAW_CLASSES)))
    with atomic_open(os.path.join(out_dir, 'README.txt'), 'w', encoding='utf-8', newline='\n') as f:
        f.write(readme)
    summary = {
        'parameters': parameters,
        'videos': videos,
        'class_frames': {split: dict(zip(ABAW_CLASSES, counts.tolist())) for split, counts in frame_counts.items()},
        'renderings': RENDERINGS,
        'seconds': round(time.perf_counter() - start, 2),
    }
    with atomic_open(os.path.join(out_dir, SUMMARY_NAME), 'w', encoding='utf-8', newline='\n') as f:
        json.dump(summary, f, indent=1)
    summary['reused'] = False
    return summary


def main(argv=None):
    parser = console.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', nargs='?', default='demo_work/data', help='output folder (default demo_work/data)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=8, help='training videos (default 8)')
    parser.add_argument('--num-val', type=int, default=4,
                        help='validation videos, the last one with two faces (default 4)')
    parser.add_argument('--frames', type=int, default=100, help='frames per video (default 100)')
    args = parser.parse_args(argv)
    try:
        summary = make_demo_data(args.out, args.seed, args.num_train, args.num_val, args.frames, verbose=True)
    except ValueError as err:
        parser.error(str(err))
    if summary['reused']:
        print(f"demo data already complete in {args.out} (delete {SUMMARY_NAME} there to rebuild)")
    else:
        print(f"demo data written to {args.out} in {summary['seconds']:.1f} s")
    for split, counts in summary['class_frames'].items():
        print(f"  {split}: " + ', '.join(f"{name} {count}" for name, count in counts.items()))


if __name__ == '__main__':
    sys.exit(console.run_command(main))
