"""Facial expressions of every frame of any video, in one command: the whole CFC-SP method.

    python predict_video.py VIDEO_OR_FOLDER -output DIR [-coarse_weights W -negative_weights W]
        [-fusion soft|hard] [-smooth_on logits|fused -window K -alpha A] [-device cpu|gpu] [-annotate]
        [-people all|main]

Each video goes through the project's own stages, in memory and in one pass: the face loop of
`python -m preprocess` (preprocess.faceloop: FFmpeg decoding, MTCNN detection, tracking of each
person, alignment), the validation transform (transforms.val_transform), the coarse and negative Swin
models (predictor.load_classifier), Smooth Predicting and fusion (fusion.Smoothing, by
default SP on each model's logits with K = 2 as the release's figure draws it, then soft fusion;
fill_missing). Every aligned face is JPEG-encoded and decoded exactly as `python -m preprocess`
writes it and `-eval` reads it, so the labels equal those of running the three steps separately.

Per video, in DIR, when one person is found (or with -people main: person 1, present longest):
    <video>.csv           one row per frame: frame, time, face found, face box, the 8 smoothed
                          fused probabilities (empty where no face was found) and the label
    <video>.txt           ABAW3 submission format (header, one label per frame)
    <video>_timeline.png  smoothed probabilities and labels over time
    <video>_annotated.mp4 with -annotate: the input with the face box and the label drawn
    <video>_summary.csv   the person's share of face frames with each label, dominant label and
                          longest run of each label in seconds (summary.py; printed at the end)
    <video>_report.html   with -report: the video beside each person's timeline, one
                          self-contained page (report.py, docs/report.md)
When several people are each present for at least -min_track_s seconds, each gets the first three,
smoothed along their own track, as <video>_person<k>.csv/.txt/_timeline.png (k = 1 for the person
present longest), plus <video>_people.csv (person, frames, first and last frame, mean box and the
summary columns); the annotated video shows every person's box, number and label.

Frames without a face take the label of the nearest frame with one (fusion.fill_missing);
a video without any face is all Neutral and is listed at the end. <video>_settings.json, written
after every other output, records what made them (models, smoothing, face settings, -people,
-min_track_s): the next run skips a video whose outputs all exist with the same settings, redoes
one made with other settings, and -overwrite redoes every video.
"""
import argparse
import csv
import functools
import glob
import io
import json
import logging
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import cpu_env  # noqa: E402,F401  (threads and MKL settings before paddle is imported)
import numpy as np  # noqa: E402

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

import config as config_module  # noqa: E402
import console  # noqa: E402
import datasets  # noqa: E402
import transforms  # noqa: E402
from errors import UsageError  # noqa: E402
from fileio import atomic_open, check_writable_dir, is_inside  # noqa: E402
from fusion import Smoothing, fill_missing  # noqa: E402
from labels import (ABAW_CLASSES, COARSE_CLASSES, NEGATIVE_CLASSES, annotation_files,  # noqa: E402
                    read_annotation, write_annotation)
from plots import plot_timeline  # noqa: E402
from checkpoints import training_config  # noqa: E402
import adaptive  # noqa: E402
import live  # noqa: E402
from predictor import exported_files, load_classifier  # noqa: E402
from report import PersonSeries, write_report  # noqa: E402
from preprocess.faceloop import (FALLBACK_FPS, VIDEO_FAILURES, Detector, FaceLoop,  # noqa: E402
                                 StageClock, default_workers, torch_device, video_failure)
from preprocess.faces import FaceSettings  # noqa: E402
from preprocess.jobs import PlanError, find_videos  # noqa: E402
from preprocess.pipeline import clean_stale_temporaries  # noqa: E402
from preprocess.video import (VIDEO_EXTENSIONS, iter_frames, probe_frame_count,  # noqa: E402
                              probe_frame_rate, write_video)
from summary import SUMMARY_COLUMNS, summarise  # noqa: E402

log = logging.getLogger('predict_video')

DEMO_WORK = os.path.join(ROOT, 'demo_work')
DEMO_CFG = os.path.join(ROOT, 'configs', 'demo_tiny.yaml')
RELEASE_CFG = os.path.join(ROOT, 'configs', 'swin_small_patch4_window7_224.yaml')
MODEL_KINDS = ('coarse', 'negative')
DEMO_SOURCE = 'demo model from `make demo`'
DEMO_WARNING = ("the demo's models learned synthetic marks drawn on one photo (demo/pattern_data.py): "
                "their labels mean nothing on real faces; pass -coarse_weights and -negative_weights "
                "(docs/weights.md) for real predictions")
COARSE_NEGATIVE = COARSE_CLASSES.index('Negative')
CSV_HEADER = (['frame', 'time', 'face', 'x1', 'y1', 'x2', 'y2', 'face_prob']
              + list(ABAW_CLASSES) + ['label', 'label_id'])
PEOPLE_HEADER = ['person', 'frames', 'first_frame', 'last_frame', 'x1', 'y1', 'x2', 'y2']
FACE_FIELDS = ('min_prob', 'min_face_size', 'detect_size', 'track_gap_s', 'mode', 'image_size', 'jpeg_quality')


# ----------------------------------------------------------------------------- models

def demo_weights(kind):
    """Where `make demo` leaves its trained `kind` model."""
    return os.path.join(DEMO_WORK, f'train_{kind}', 'best.pdparams')


def resolve_model(kind, cfg, weights):
    """(config file, weights, where from) for one model; the `make demo` model when no weights."""
    if weights is None:
        weights = demo_weights(kind)
        if not os.path.isfile(weights):
            raise UsageError(f"-{kind}_weights not given and the demo model {weights} does not exist: "
                             f"run `make demo` to train it, or pass -{kind}_weights (a .pdparams "
                             "checkpoint, a tools/export_model.py prefix or .onnx file)")
        return cfg or DEMO_CFG, weights, DEMO_SOURCE
    if weights.endswith(('.pdparams', '.onnx')):
        if not os.path.isfile(weights):
            raise UsageError(f"-{kind}_weights {weights}: file not found (where to get weights: "
                             "docs/weights.md)")
    elif exported_files(re.sub(r'\.(json|pdmodel|pdiparams|meta\.json)$', '', weights)) is None:
        raise UsageError(f"-{kind}_weights {weights}: neither a .pdparams file, an exported model "
                         "prefix (PREFIX.json or .pdmodel with PREFIX.pdiparams) nor a .onnx file")
    if cfg is None and weights.endswith('.pdparams') and training_config(weights):
        return training_config(weights), weights, 'given; config.yaml of its training run'
    # An export records its own input settings: the config only supplies what it lacks.
    return cfg or RELEASE_CFG, weights, 'given'


class Model:
    """One of the two Swin classifiers with the validation transform of its own config."""

    def __init__(self, kind, cfg_file, weights, device='cpu', cfg_given=True):
        if not os.path.isfile(cfg_file):
            raise UsageError(f"-{kind}_cfg {cfg_file}: file not found")
        # Exactly what `main_single_gpu.py -cfg CFG -class_type KIND -eval` builds.
        config = config_module.update_config(config_module.get_config(cfg_file),
                                             argparse.Namespace(class_type=kind))
        self.kind = kind
        # cfg_given False: an export's own image size, crop and normalisation win over cfg_file's.
        self.classify = load_classifier(config, weights, device=device, config_given=cfg_given)
        self.config = self.classify.config
        self.transform = transforms.val_transform(self.config)

    def __call__(self, faces):
        """Logits [N, classes] (float64) of PIL face images."""
        images = np.stack([self.transform(face) for face in faces]).astype(np.float32)
        return np.asarray(self.classify(images), dtype=np.float64)


# ----------------------------------------------------------------------------- one video

def classify_faces(models, smoothing, faces, clock):
    """(coarse [n, 5], negative [n, 4]) logits of PIL faces; the negative model runs where
    `smoothing` reads it (NaN rows elsewhere). Seconds go to clock's 'classify'."""
    start = time.perf_counter()
    coarse_model, negative_model = models
    coarse = coarse_model(faces)
    negative = np.full((len(faces), len(NEGATIVE_CLASSES)), np.nan)
    needed = (np.arange(len(faces)) if smoothing.needs_negative_everywhere
              else np.flatnonzero(np.argmax(coarse, axis=1) == COARSE_NEGATIVE))
    if needed.size:
        negative[needed] = negative_model([faces[i] for i in needed])
    clock.add('classify', time.perf_counter() - start)
    return coarse, negative


def analyse_video(path, detector, models, smoothing=None, classify_batch=32, fps=None, progress=None):
    """Detect, track, align and classify every face of every frame of one video.

    Returns a dict: frames (count), tracked (preprocess.tracking.TrackedVideo: every detection
    and its person), keys [N] (frame, face index) of the classified faces, coarse_logits [N, 5],
    negative_logits [N, 4] (NaN rows where `smoothing` (a fusion.Smoothing, default the
    release's SP) does not read them: hard fusion, fused mode or K = 0, coarse label not
    Negative), seconds per stage (decode, detect, track, align, classify).
    """
    smoothing = smoothing or Smoothing()
    clock = StageClock()
    keys, coarse_logits, negative_logits = [], [], []
    pending = []

    def classify(faces):
        coarse, negative = classify_faces(models, smoothing, faces, clock)
        coarse_logits.append(coarse)
        negative_logits.append(negative)

    loop = FaceLoop(path, detector, fps=fps, progress=progress, clock=clock)
    for crop in loop:
        start = time.perf_counter()
        keys.append((crop.frame, crop.index))
        pending.append(datasets.load_image(io.BytesIO(crop.jpeg)))
        clock.add('align', time.perf_counter() - start)
        if len(pending) >= classify_batch:
            classify(pending)
            pending = []
    if pending:
        classify(pending)
    no_rows = {'coarse_logits': len(COARSE_CLASSES), 'negative_logits': len(NEGATIVE_CLASSES)}
    return {
        'frames': loop.tracked.frames,
        'tracked': loop.tracked,
        'keys': keys,
        'coarse_logits': (np.concatenate(coarse_logits) if coarse_logits
                          else np.zeros((0, no_rows['coarse_logits']))),
        'negative_logits': (np.concatenate(negative_logits) if negative_logits
                            else np.zeros((0, no_rows['negative_logits']))),
        'seconds': clock.seconds,
    }


def person_analyses(video, min_track_s, fps, people='all'):
    """[(person number, analysis)] to report: person 1 (present longest) and, with people 'all',
    everyone else with a face in at least min_track_s * fps frames; [(None, no faces)] without any.

    An analysis holds one person's track only: frames, face_frames [N] (1-based frames with their
    face), boxes [T, 4] and face_prob [T] (NaN elsewhere), coarse_logits [N, 5], negative_logits [N, 4].
    """
    tracked = video['tracked']
    chosen = [person for person in tracked.people
              if person.number == 1 or (people == 'all' and len(person.frames) >= min_track_s * fps)]
    row_of = {key: row for row, key in enumerate(video['keys'])}
    frames = video['frames']
    if not chosen:
        empty = {'frames': frames, 'face_frames': np.zeros(0, np.int64), 'boxes': np.full((frames, 4), np.nan),
                 'face_prob': np.full(frames, np.nan), 'coarse_logits': video['coarse_logits'][:0],
                 'negative_logits': video['negative_logits'][:0]}
        return [(None, empty)]
    result = []
    for person in chosen:
        boxes, face_prob = np.full((frames, 4), np.nan), np.full(frames, np.nan)
        rows = []
        for frame in person.frames:
            index = tracked.face_index(person.number, frame)
            face = tracked.faces[frame - 1][index]
            boxes[frame - 1], face_prob[frame - 1] = face.box, face.prob
            rows.append(row_of[(frame, index)])
        result.append((person.number, {
            'frames': frames, 'face_frames': np.asarray(person.frames, np.int64), 'boxes': boxes,
            'face_prob': face_prob, 'coarse_logits': video['coarse_logits'][rows],
            'negative_logits': video['negative_logits'][rows]}))
    return result


def fuse_and_smooth(analysis, smoothing=None):
    """(smoothed fused probabilities [N, 8] of the face frames, label of every frame [T]) by
    fusion.py's rules: `smoothing` (default the release's SP) over frame numbers, fusion,
    argmax, faceless frames filled."""
    smoothing = smoothing or Smoothing()
    smoothed = smoothing.apply(analysis['coarse_logits'], analysis['negative_logits'],
                               frames=analysis['face_frames'])
    row_labels = np.argmax(smoothed, axis=1)
    return smoothed, fill_missing(analysis['face_frames'], row_labels, analysis['frames'])


def per_frame_probs(analysis, smoothed):
    """[T, 8] smoothed probabilities by frame, NaN rows where no face was classified."""
    probs = np.full((analysis['frames'], len(ABAW_CLASSES)), np.nan)
    probs[analysis['face_frames'] - 1] = smoothed
    return probs


def write_frame_csv(path, analysis, probs, labels, fps):
    """One CSV row per frame: time, face box and probability, the 8 probabilities and the label;
    with adaptive sampling (analysis['processed']) also whether the frame was processed (1) or
    filled (0)."""
    processed = analysis.get('processed')
    with atomic_open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(CSV_HEADER + (['processed'] if processed is not None else []))
        for index in range(analysis['frames']):
            found = not np.isnan(analysis['face_prob'][index])
            time_text = f"{index / fps:.3f}" if fps else ''
            face = ([f"{v:.1f}" for v in analysis['boxes'][index]] + [f"{analysis['face_prob'][index]:.4f}"]
                    if found else [''] * 5)
            scores = [f"{p:.6f}" for p in probs[index]] if found else [''] * len(ABAW_CLASSES)
            writer.writerow([index + 1, time_text, int(found)] + face + scores
                            + [ABAW_CLASSES[labels[index]], int(labels[index])]
                            + ([int(processed[index])] if processed is not None else []))


def write_people_csv(path, people, summaries):
    """One row per reported person: how many frames, first and last frame, mean face box, and
    their summary.PersonSummary (shares of each label, dominant label, longest runs)."""
    with atomic_open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(PEOPLE_HEADER + SUMMARY_COLUMNS)
        for (number, analysis), summary in zip(people, summaries):
            frames = analysis['face_frames']
            if len(frames):
                track = [number, len(frames), int(frames[0]), int(frames[-1])] + [
                    f"{v:.1f}" for v in np.nanmean(analysis['boxes'], axis=0)]
            else:
                track = ['', 0] + [''] * (len(PEOPLE_HEADER) - 2)
            writer.writerow(track + summary.csv_fields())


def _draw_label(frame, text, anchor, colour, scale, thickness):
    cv2.putText(frame, text, anchor, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(frame, text, anchor, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def annotated_frames(path, people):
    """The decoded frames with each person's box and label drawn: people is [(number, boxes [T, 4],
    labels [T])]; with one person no number is drawn, and its label stays (grey) where no face is."""
    numbered = len(people) > 1
    for index, frame in enumerate(iter_frames(path)):
        frame = frame.copy()
        height = frame.shape[0]
        scale = max(0.4, height / 600)
        thickness = max(1, int(round(height / 300)))
        for number, boxes, labels in people:
            name = ABAW_CLASSES[labels[index]] if index < len(labels) else '?'
            box = boxes[index] if index < len(boxes) else (np.nan,) * 4
            if not np.isnan(box[0]):
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), thickness)
                anchor = (max(0, x1), max(int(20 * scale), y1 - 6))
                _draw_label(frame, f"{number}: {name}" if numbered else name, anchor, (0, 255, 0), scale, thickness)
            elif not numbered:
                # No face in this frame: the label is the nearest face frame's, drawn in grey.
                _draw_label(frame, name + ' (no face)', (8, int(24 * scale) + 4), (200, 200, 200), scale, thickness)
        yield frame


def output_paths(out_dir, name, annotate):
    """{kind: path} of one output name's files (txt, timeline, csv, and the annotated video)."""
    paths = {'txt': os.path.join(out_dir, name + '.txt'),
             'timeline': os.path.join(out_dir, name + '_timeline.png'),
             'csv': os.path.join(out_dir, name + '.csv')}
    if annotate:
        paths['video'] = os.path.join(out_dir, name + '_annotated.mp4')
    return paths


def person_name(name, number, people_count):
    """The output name of person `number`: the video's own name when only one person is reported."""
    return name if people_count == 1 else f"{name}_person{number}"


def settings_path(out_dir, name):
    """Where the settings that made video `name`'s outputs are recorded (written after them)."""
    return os.path.join(out_dir, name + '_settings.json')


def run_settings(args, specs, smoothing):
    """Everything that decides a video's outputs, as recorded beside them."""
    face = face_settings(args).as_dict()
    face.pop('detect_batch', None)  # speed only
    return {'models': {kind: {'cfg': os.path.abspath(cfg), 'weights': os.path.abspath(weights)}
                       for kind, (cfg, weights, _) in specs.items()},
            'smoothing': smoothing.fields(), 'face': face, 'people': args.people,
            'min_track_s': args.min_track_s,
            'sampling': ({'mode': 'adaptive', 'strides': adaptive.parse_strides(args.strides),
                          'agree_prob': args.agree_prob} if args.sampling == 'adaptive' else {'mode': 'all'})}


def recorded_settings(out_dir, name):
    """The settings recorded beside video `name`'s outputs, or None."""
    try:
        with open(settings_path(out_dir, name), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def changed_settings(recorded, settings):
    """Dotted names of the settings that differ, e.g. ['smoothing.window']."""
    if not isinstance(recorded, dict):
        return ['(none recorded)']
    changed = []
    for group, value in settings.items():
        old = recorded.get(group)
        if isinstance(value, dict) and isinstance(old, dict):
            changed += [f"{group}.{key}" for key in sorted(set(value) | set(old)) if value.get(key) != old.get(key)]
        elif old != value:
            changed.append(group)
    return changed


def is_finished(out_dir, name, annotate, people, report=False):
    """True when a previous run wrote every output of this video (one person, or each person's)."""
    if report and not os.path.isfile(os.path.join(out_dir, name + '_report.html')):
        return False
    if (all(os.path.isfile(p) for p in output_paths(out_dir, name, annotate).values())
            and os.path.isfile(os.path.join(out_dir, name + '_summary.csv'))):
        return True
    people_csv = os.path.join(out_dir, name + '_people.csv')
    if people != 'all' or not os.path.isfile(people_csv):
        return False
    if annotate and not os.path.isfile(os.path.join(out_dir, name + '_annotated.mp4')):
        return False
    with open(people_csv, newline='', encoding='utf-8') as f:
        numbers = [row['person'] for row in csv.DictReader(f)]
    return all(os.path.isfile(p) for number in numbers
               for p in output_paths(out_dir, f"{name}_person{number}", False).values())


def read_truth(truth_files, output, frames):
    """Ground truth [frames] of one output name (-1 where not annotated), from its file in
    `truth_files` ({name: path}, labels.annotation_files), or None when it has none."""
    path = truth_files.get(output)
    if path is None:
        return None
    truth = np.full(frames, -1, np.int64)
    labels = read_annotation(path)[:frames]
    truth[:len(labels)] = labels
    return truth


def write_outputs(path, name, out_dir, people, smoothing, annotate, fps, report=False, truth_files=None):
    """Each reported person's CSV, TXT and timeline (one person: unsuffixed names), the annotated
    video, with `report` the report page, and last the summary CSV (several people: the people
    CSV). Returns {output name: summary.PersonSummary}."""
    drawn, written, series = [], {}, []
    for number, analysis in people:
        output = person_name(name, number, len(people))
        paths = output_paths(out_dir, output, False)
        smoothed, labels = fuse_and_smooth(analysis, smoothing)
        probs = per_frame_probs(analysis, smoothed)
        write_annotation(paths['txt'], labels)
        plot_timeline(paths['timeline'], probs, labels,
                      title=f"{output}: {smoothing.summary}")
        write_frame_csv(paths['csv'], analysis, probs, labels, fps)
        drawn.append((number, analysis['boxes'], labels))
        written[output] = summarise(labels, analysis['face_frames'], fps or FALLBACK_FPS)
        truth = read_truth(truth_files, output, len(labels)) if truth_files else None
        series.append(PersonSeries(output, number, probs, labels, truth, written[output], paths['csv']))
    annotated = os.path.join(out_dir, name + '_annotated.mp4')
    if annotate:
        write_video(annotated, annotated_frames(path, drawn), fps=fps or 30)
    table = os.path.join(out_dir, name + ('_people.csv' if len(people) > 1 else '_summary.csv'))
    if report:
        write_report(os.path.join(out_dir, name + '_report.html'), name, annotated if annotate else path,
                     series, fps or FALLBACK_FPS, fps_known=bool(fps), settings=smoothing.summary,
                     files=[table] + [s.csv for s in series])
    # Last: its presence marks the video finished for the next run.
    write_people_csv(table, people, list(written.values()))
    stale = [os.path.join(out_dir, name + '_people.csv')]
    if len(people) > 1:
        stale = [os.path.join(out_dir, name + '.csv'), os.path.join(out_dir, name + '_summary.csv')]
    else:
        stale += glob.glob(os.path.join(glob.escape(out_dir), glob.escape(name) + '_person*'))
    for leftover in stale:
        if os.path.isfile(leftover):
            os.remove(leftover)
    return written


# ----------------------------------------------------------------------------- command line

def build_parser():
    parser = console.ArgumentParser(
        prog='predict_video.py',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Per-frame facial expressions (the 8 Aff-Wild2 classes) of a video, or of every\n'
                    'video in a folder: frames, faces, the coarse and negative models, fusion and\n'
                    'Smooth Predicting in one pass.',
        epilog='weights:\n'
               '  Without -coarse_weights / -negative_weights the models `make demo` trained are\n'
               '  used: demo_work/train_{coarse,negative}/best.pdparams. A -*_cfg left out defaults\n'
               '  to configs/demo_tiny.yaml for those, and to the paper\'s Swin-S,\n'
               '  configs/swin_small_patch4_window7_224.yaml, for weights you give. Weights are\n'
               '  .pdparams in any layout training writes, or a tools/export_model.py prefix.\n\n'
               'outputs, per video, in -output:\n'
               '  <video>.csv, <video>.txt (ABAW3 format), <video>_timeline.png,\n'
               '  <video>_summary.csv, with -annotate <video>_annotated.mp4 and with -report\n'
               '  <video>_report.html. Each person is tracked through the video;\n'
               '  when several are present for at least -min_track_s seconds each, every one\n'
               '  gets <video>_person<k>.csv/.txt/_timeline.png (1 = present longest) and\n'
               '  <video>_people.csv lists them. Face settings default to those of\n'
               '  `python -m preprocess`, so the results equal running it, `main_single_gpu.py\n'
               '  -eval` for both models and smooth_predict.py one after the other.\n\n'
               'smoothing (the same flags and defaults as smooth_predict.py):\n'
               '  by default Smooth Predicting as the release\'s figure draws it: per model, on the\n'
               '  logits, K=2 (-smooth_on logits -window 2), then soft fusion. The negative model\n'
               '  runs on every face, except with -fusion hard and -smooth_on fused or -window 0,\n'
               '  where it runs only where the coarse model says Negative.')
    parser.add_argument('input', metavar='VIDEO_OR_FOLDER',
                        help='a video file, or a folder searched recursively for videos')
    parser.add_argument('-output', required=True, help='output folder (never inside the input folder)')
    for kind in MODEL_KINDS:
        parser.add_argument(f'-{kind}_cfg', help=f'YAML config of the {kind} model')
        parser.add_argument(f'-{kind}_weights', help=f'{kind} model: .pdparams, exported prefix or .onnx file')
    Smoothing.add_arguments(parser)
    parser.add_argument('-device', choices=('cpu', 'gpu'), default='cpu',
                        help='where the models and face detection run')
    parser.add_argument('-annotate', action='store_true', help='also write <video>_annotated.mp4')
    parser.add_argument('-report', action='store_true',
                        help='also write <video>_report.html: the video beside each person\'s timeline '
                             '(one self-contained page, see docs/report.md)')
    parser.add_argument('-anno_folder',
                        help='ABAW EXPR annotations, the folder holding Train_Set/ and Validation_Set/ '
                             '(or the .txt files themselves): <video>.txt or <video>_person<k>.txt, '
                             'ground truth drawn on the report page')
    parser.add_argument('-workers', type=int, default=None,
                        help='face detection worker processes (default: as python -m preprocess, '
                             'one per core on cpu, 0 = in-process on gpu)')
    parser.add_argument('-classify_batch', type=int, default=32, help='faces per model call')
    parser.add_argument('-people', choices=('all', 'main'), default='all',
                        help='all: every person present at least -min_track_s gets outputs; '
                             'main: only person 1, the one present longest')
    parser.add_argument('-min_track_s', type=float, default=1.0,
                        help='seconds a second, third, ... person must be visible to be reported')
    # The face flags default to python -m preprocess's, so the faces classified here are the
    # faces the models were trained and evaluated on.
    FaceSettings.add_arguments(parser, FACE_FIELDS)
    parser.add_argument('-overwrite', action='store_true', help='redo videos whose outputs exist')
    adaptive.add_arguments(parser)
    live.add_arguments(parser)
    return parser


def _check_args(parser, args):
    Smoothing.from_args(args)  # the smoothing flags' checks
    if args.workers is not None and args.workers < 0:
        parser.error(f"-workers must be >= 0, got {args.workers}")
    if args.classify_batch < 1:
        parser.error(f"-classify_batch must be >= 1, got {args.classify_batch}")
    if args.min_track_s < 0:
        parser.error(f"-min_track_s must be >= 0, got {args.min_track_s}")
    face_settings(args)
    adaptive.check_arguments(parser, args)
    live.check_arguments(parser, args)


def face_settings(args):
    """FaceSettings from the face flags; a bad value is a UsageError naming the flag."""
    return FaceSettings.from_args(args, FACE_FIELDS)


def find_inputs(path):
    """{output name: video path} for a file or a folder (recursive; stems must be unique)."""
    if os.path.isfile(path):
        return {os.path.splitext(os.path.basename(path))[0]: path}
    if os.path.isdir(path):
        try:
            videos = find_videos(path)
        except PlanError as err:
            raise UsageError(str(err)) from None
        if not videos:
            raise UsageError(f"{path}: no video files (looked for {' '.join(VIDEO_EXTENSIONS)})")
        return videos
    raise UsageError(f"{path}: no such file or folder")


def skipped_files(folder, videos):
    """Files of `folder` (recursive, hidden ones aside) that a folder run does not process."""
    taken = {os.path.abspath(p) for p in videos.values()}
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, files in os.walk(folder) for name in files
                  if not name.startswith('.') and os.path.abspath(os.path.join(root, name)) not in taken)


def check_device(device):
    """-device gpu needs a CUDA build of Paddle with a GPU for the models (face detection's torch
    is checked by preprocess.faceloop.torch_device)."""
    if not device.startswith(('gpu', 'cuda')):
        return
    import paddle
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        build = '' if paddle.is_compiled_with_cuda() else ' (a CPU build)'
        raise UsageError(f"-device {device}: no GPU usable by Paddle{build} here; use -device cpu "
                         "(the default), or install the GPU builds (docs/training.md, 'GPU')")


def _rate(count, seconds):
    # A stage too quick for the clock to see has no rate worth printing.
    return f"{count / seconds:.1f}" if seconds > 0 else '-'


def stage_report(frames, faces, seconds, wall):
    """One line of frames/s end to end and per stage; a stage that had nothing to do (align and
    classify of a video without faces) says so rather than showing a rate."""
    if frames == 0:
        return "0 frames: nothing decoded"
    face_stages = ('align', 'classify')
    parts = [f"{stage} {_rate(frames, seconds.get(stage, 0.0))}"
             for stage in ('decode', 'detect', 'track', 'align', 'classify')
             if faces or stage not in face_stages]
    rates = (f"per stage {', '.join(parts)} (classify {_rate(faces, seconds.get('classify', 0.0))} faces/s)"
             if faces else f"per stage {', '.join(parts)}; no face, so nothing aligned or classified")
    return f"{frames} frames, {faces} faces; frames/s end to end {_rate(frames, wall)}; {rates}"


def run(args):
    """Predict every video of the input; returns {done, skipped, no_face, failures, totals}."""
    smoothing = Smoothing.from_args(args)
    settings = face_settings(args)
    check_device(args.device)
    detect_on = torch_device(args.device)
    if args.live:
        live.describe_source(args.input)  # a missing source fails before the models load
        videos = {}
    else:
        videos = find_inputs(args.input)
    if os.path.isdir(args.input) and not args.live:
        others = skipped_files(args.input, videos)
        if others:
            log.info("skipped %d file(s) that are not videos (extensions %s): %s", len(others),
                     ' '.join(VIDEO_EXTENSIONS), ', '.join(others[:10]) + (' ...' if len(others) > 10 else ''))
    if os.path.isdir(args.input) and is_inside(args.output, args.input):
        raise UsageError(f"-output {args.output} is inside the input folder {args.input}; "
                         "inputs are never written to: choose another folder")
    specs = {kind: resolve_model(kind, getattr(args, f'{kind}_cfg'), getattr(args, f'{kind}_weights'))
             for kind in MODEL_KINDS}
    check_writable_dir(args.output, '-output')
    truth_files = annotation_files(args.anno_folder, log=log) if args.anno_folder else None
    settings_record = run_settings(args, specs, smoothing)

    clean_stale_temporaries(args.output)  # what a killed run left never looks finished

    models = []
    for kind in MODEL_KINDS:
        cfg, weights, source = specs[kind]
        log.info("%s model: %s (%s), config %s", kind, weights, source, cfg)
        if source == DEMO_SOURCE and kind == MODEL_KINDS[0]:
            log.warning(DEMO_WARNING)
        models.append(Model(kind, cfg, weights, 'gpu' if args.device == 'gpu' else 'cpu',
                            cfg_given=getattr(args, f'{kind}_cfg') is not None))
        log.info("%s model runs on %s", kind, models[-1].classify.backend)

    workers = default_workers(detect_on) if args.workers is None else args.workers
    log.info("%d video(s); %s; face detection on %s, %d worker process(es)",
             len(videos), smoothing.describe(), detect_on, workers)

    done, skipped, no_face, failures = [], [], [], []
    totals = {'frames': 0, 'faces': 0, 'wall': 0.0, 'seconds': {}}
    classify = functools.partial(classify_faces, models, smoothing)
    with Detector(settings, device=detect_on, workers=workers) as detector:
        if args.live:
            return live.run_live(args, detector, classify, smoothing, CSV_HEADER, args.output)
        overall = console.progress(videos.items(), desc='videos', unit='video', position=0,
                                   disable=len(videos) < 2)
        for name, path in overall:
            if not args.overwrite and is_finished(args.output, name, args.annotate, args.people, args.report):
                changed = changed_settings(recorded_settings(args.output, name), settings_record)
                if not changed:
                    skipped.append(name)
                    continue
                tqdm.write(f"{name}: redone, its outputs were made with other settings "
                           f"({', '.join(changed)})", file=sys.stderr)
            started = time.perf_counter()
            # Gone until the new outputs are complete: a killed run must not look finished.
            if os.path.isfile(settings_path(args.output, name)):
                os.remove(settings_path(args.output, name))
            try:
                total = probe_frame_count(path)
                fps = probe_frame_rate(path)
                if fps is None:
                    tqdm.write(f"warning: {path}: no frame rate found; the time column is empty and "
                               f"tracking assumes {FALLBACK_FPS:g} frames/s", file=sys.stderr)
                with console.progress(total=total or None, desc=name[:40], unit='frame', position=1,
                          leave=False) as bar:
                    if args.sampling == 'adaptive':
                        video = adaptive.analyse_video_adaptive(
                            path, detector, classify, adaptive.parse_strides(args.strides), args.agree_prob,
                            smoothing.fusion, fps=fps, progress=bar.update)
                    else:
                        video = analyse_video(path, detector, models, smoothing, args.classify_batch,
                                              fps=fps, progress=bar.update)
                people = person_analyses(video, args.min_track_s, fps or FALLBACK_FPS, args.people)
                for _, analysis in people:
                    analysis['processed'] = video.get('processed')
                summaries = write_outputs(path, name, args.output, people, smoothing, args.annotate, fps,
                                          args.report, truth_files)
                with atomic_open(settings_path(args.output, name), 'w', encoding='utf-8') as f:
                    json.dump(settings_record, f, indent=1)
            except VIDEO_FAILURES as err:
                failures.append(video_failure(name, err, detector))
                continue
            wall = time.perf_counter() - started
            faces = len(video['keys'])
            if people[0][0] is None:
                no_face.append(name)
            totals['frames'] += video['frames']
            totals['faces'] += faces
            totals['wall'] += wall
            for stage, seconds in video['seconds'].items():
                totals['seconds'][stage] = totals['seconds'].get(stage, 0.0) + seconds
            done.append({'name': name, 'frames': video['frames'], 'faces': faces,
                         'people': [number for number, _ in people if number is not None],
                         'seconds': video['seconds'], 'wall': wall, 'summaries': summaries})
            reported = f"; {len(people)} people" if len(people) > 1 else ''
            tqdm.write(f"{name}: {stage_report(video['frames'], faces, video['seconds'], wall)}{reported}",
                       file=sys.stderr)
        overall.close()

    log.info("done: %d video(s) written to %s, %d already finished, %d failed",
             len(done), args.output, len(skipped), len(failures))
    if done:
        log.info("all videos: %s", stage_report(totals['frames'], totals['faces'],
                                                totals['seconds'], totals['wall']))
    for video in done:
        for number, summary in zip(video['people'] or [None], video['summaries'].values()):
            who = f"{video['name']} person {number}" if number is not None else video['name']
            print(f"{who}: {summary.describe()}", flush=True)
    for name in no_face:
        log.warning("%s: no face found in any frame; every frame is labelled Neutral", name)
    for failure in failures:
        log.error("failed: %s", failure)
    return {'done': done, 'skipped': skipped, 'no_face': no_face, 'failures': failures,
            'totals': totals}


def main(argv=None):
    """Command-line entry; returns the exit code: 1 when a video failed, 2 for a bad flag or
    input (one `error:` line, see console.py)."""
    return console.run_command(_parse_and_run, argv)


def _parse_and_run(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    console.setup(log, propagate=False)
    result = run(args)
    return 1 if result['failures'] else 0


if __name__ == '__main__':
    sys.exit(main())
