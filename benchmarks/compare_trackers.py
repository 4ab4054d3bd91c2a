"""Face tracking: ByteTrack (Roboflow's `trackers`, where supervision's ByteTrack moved) vs norfair, fed
with the same MTCNN detections, scored against the known identity of every face.

    python benchmarks/compare_trackers.py [--demo_aligned DIR]

norfair is not a project dependency (norfair 2.3.0 pins numpy<2; its maintained fork norfair-enough
does not): to include it, install it beside the venv and put it on the path, e.g.
    pip install --no-deps --target /tmp/nf norfair-enough==2.4.3 rich markdown-it-py mdurl
    PYTHONPATH=/tmp/nf python benchmarks/compare_trackers.py

Clips (generated from the scikit-image face photo, as in the tests; detection runs once per clip):
- crossing: two people at different heights walk past each other (their heads overlap while they
  cross), one disappears for 5 frames, a third is visible for 10 frames.
- fast_gap: the same two people walking three times as far in as many frames, the lower one
  gone for 12 frames.
- --demo_aligned: the detections.csv files `python -m preprocess` wrote for the `make demo` data
  (single-person videos with faceless frames, one side-by-side pair), identity by image half.

Per tracker and clip: tracks per person (1 = never fragmented; a spurious single detection also
counts as a track of the person it is nearest to), identity switches (a track that holds two
people's faces), confident faces left without a track, and milliseconds per frame.
"""
import csv
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import console  # noqa: E402  (both spellings of every flag, errors as one line)

from demo.synthetic_video import crossing_actors, head_position, scene_frames  # noqa: E402

from preprocess.faces import Face, FaceAligner  # noqa: E402
from preprocess.tracking import FaceTracker  # noqa: E402

MIN_PROB = 0.9


def crossing_clip(width, gap, count=36):
    """(frames, actors, count): demo/synthetic_video.py's crossing clip."""
    actors = list(crossing_actors(count, width, gap=gap).values())
    return scene_frames(count, actors, width, 176), actors, count


def label_by_nearest_head(actors, count):
    """Ground truth for a generated clip: the actor whose face centre is nearest the detection."""
    def label(frame_index, box):
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        best, best_distance = None, np.inf
        for number, actor in enumerate(actors):
            visible = actor[3]
            if visible is not None and frame_index not in visible:
                continue
            x, y = head_position(actor, frame_index, count)
            side = actor[0].shape[0]
            distance = np.linalg.norm(centre - (x + side / 2, y + side * 0.45))
            if distance < best_distance:
                best, best_distance = number, distance
        return best
    return label


def detect_clip(frames):
    aligner = FaceAligner('cpu')
    return [[(face.box, face.prob) for face in faces] for faces in aligner.detect_batch(frames)]


def demo_detections(folder):
    """Per-frame (box, prob) lists from a preprocess output folder's detections.csv."""
    with open(os.path.join(folder, 'detections.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    frames = max(int(row['frame']) for row in rows)
    detections = [[] for _ in range(frames)]
    for row in rows:
        if row['face'] != '':
            box = np.array([float(row[k]) for k in ('x1', 'y1', 'x2', 'y2')])
            detections[int(row['frame']) - 1].append((box, float(row['prob'])))
    return detections


# ---- trackers, all given the same settings: tracks survive 1 s (25 frames) without a face ----------

def run_bytetrack(detections, fps=25.0, buffer_frames=25):
    """The project's tracker: ByteTrack as preprocess.tracking configures it."""
    tracker = FaceTracker(fps, MIN_PROB, buffer_frames / fps)
    for faces in detections:
        tracker.update([Face(box, prob, np.zeros((5, 2))) for box, prob in faces])
    return tracker.ids


def run_norfair(detections, fps=25.0, buffer_frames=25):
    from norfair import Detection, Tracker

    tracker = Tracker(distance_function='iou', distance_threshold=0.9, hit_counter_max=buffer_frames,
                      initialization_delay=0)
    ids = []
    for frame_index, faces in enumerate(detections):
        # norfair hands back copies of the detections: `data` says which frame and face each was.
        inputs = [Detection(points=box.reshape(2, 2), scores=np.array([prob, prob]),
                            data=(frame_index, index))
                  for index, (box, prob) in enumerate(faces) if prob >= MIN_PROB]
        frame_ids = [-1] * len(faces)
        for tracked in tracker.update(inputs):
            seen_in, index = tracked.last_detection.data
            if seen_in == frame_index:
                frame_ids[index] = int(tracked.id)
        ids.append(frame_ids)
    return ids


def score(detections, ids, label):
    """tracks per person, identity switches, untracked confident faces."""
    tracks_of, people_of = {}, {}
    untracked = 0
    for frame_index, (faces, frame_ids) in enumerate(zip(detections, ids)):
        for (box, prob), track in zip(faces, frame_ids):
            if prob < MIN_PROB:
                continue
            person = label(frame_index, box)
            if track < 0:
                untracked += 1
                continue
            tracks_of.setdefault(person, set()).add(track)
            people_of.setdefault(track, set()).add(person)
    switches = sum(len(people) - 1 for people in people_of.values())
    fragments = {person: len(tracks) for person, tracks in sorted(tracks_of.items(), key=str)}
    return fragments, switches, untracked


def main():
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo_aligned', help="preprocess output of the demo data (detections.csv per video)")
    args = parser.parse_args()

    clips = []
    # fast_gap: 728 px wide, so they walk 612 px instead of 204 in as many frames; a 12-frame gap.
    for name, width, gap in (('crossing', 320, range(24, 29)), ('fast_gap', 728, range(14, 26))):
        frames, actors, count = crossing_clip(width, gap)
        clips.append((name, detect_clip(frames), label_by_nearest_head(actors, count)))
    if args.demo_aligned:
        for video in sorted(os.listdir(args.demo_aligned)):
            folder = os.path.join(args.demo_aligned, video)
            if video.endswith('_right') or not os.path.isfile(os.path.join(folder, 'detections.csv')):
                continue  # _left and _right share one video's detections
            if video.endswith('_left'):
                label = lambda _, box: 'left' if (box[0] + box[2]) / 2 < 320 else 'right'  # noqa: E731
            else:
                label = lambda _, box: 'face'  # noqa: E731
            clips.append((video.replace('_left', '_pair'), demo_detections(folder), label))

    runners = {'bytetrack': run_bytetrack}
    try:
        import norfair  # noqa: F401
        runners['norfair'] = run_norfair
    except ImportError:
        print("norfair not importable: only ByteTrack is measured (see the module docstring)")
    totals = {name: [0, 0, 0, 0.0, 0] for name in runners}
    print(f"{'clip':<16}{'tracker':<11}{'tracks per person':<34}{'switches':>9}{'untracked':>10}{'ms/frame':>9}")
    for clip_name, detections, label in clips:
        for name, runner in runners.items():
            start = time.perf_counter()
            ids = runner(detections)
            ms = (time.perf_counter() - start) * 1000 / len(detections)
            fragments, switches, untracked = score(detections, ids, label)
            extra = sum(count - 1 for count in fragments.values())
            total = totals[name]
            total[0] += extra
            total[1] += switches
            total[2] += untracked
            total[3] += ms * len(detections)
            total[4] += len(detections)
            text = ' '.join(f"{person}:{count}" for person, count in fragments.items())
            print(f"{clip_name:<16}{name:<11}{text:<34}{switches:>9}{untracked:>10}{ms:>9.2f}")
    print()
    for name, (extra, switches, untracked, ms, frames) in totals.items():
        print(f"{name}: {extra} extra track(s) (fragmentation), {switches} identity switch(es), "
              f"{untracked} confident face(s) without a track, {ms / frames:.2f} ms/frame over {frames} frames")


if __name__ == '__main__':
    sys.exit(console.run_command(main))
