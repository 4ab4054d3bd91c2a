"""Tracking (preprocess.tracking), sharding (preprocess.shards), the output plan (preprocess.jobs)
and detection on a downscaled copy (preprocess.faceloop) on their own.

The tracks of real detections in generated clips are checked through the two tools in
test_preprocess.py (left/right) and test_predict_video.py (several people).
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from demo.synthetic_video import astronaut_head  # noqa: E402

import launch_env  # noqa: E402
from labels import VideoListError, read_video_list  # noqa: E402
from preprocess import jobs, shards  # noqa: E402
from preprocess.faceloop import Detector, FaceLoop  # noqa: E402
from preprocess.faces import Face, FaceSettings, detection_scale  # noqa: E402
from preprocess.tracking import FaceTracker, TrackedVideo  # noqa: E402
from preprocess.video import write_video  # noqa: E402


def face(x, y=10.0, prob=0.99, size=30.0):
    return Face(np.array([x, y, x + size, y + size * 1.3]), prob, np.zeros((5, 2)))


def track(frames, fps=25, gap_s=1.0):
    tracker = FaceTracker(fps, 0.9, gap_s)
    for faces in frames:
        tracker.update(faces)
    return TrackedVideo(frames, tracker.ids, 0.9, 320, 240)


def test_tracks_survive_gaps_and_are_numbered_by_frames():
    frames = []
    for t in range(30):
        faces = [face(10 + 3 * t)]                      # walks right, missing in frames 10-14
        if 10 <= t < 15:
            faces = []
        faces.append(face(250 - 2 * t, y=120))          # walks left, always there
        if t == 3:
            faces.append(face(150, y=200))              # one spurious frame
        if t == 20:
            faces.append(face(280, y=60, prob=0.8))     # below min_prob: starts no track
        frames.append(faces)
    tracked = track(frames)
    assert [(p.number, len(p.frames)) for p in tracked.people] == [(1, 30), (2, 25), (3, 1)]
    walker = [tracked.person[t][0] for t in range(30) if not 10 <= t < 15]
    assert set(walker) == {2}, 'the gap of 5 frames (0.2 s) keeps the id'
    assert tracked.person[3][2] == 3 and tracked.person[20][-1] == 0
    assert tracked.face_index(2, 15) is None and tracked.face_index(2, 16) == 0  # 1-based frames
    np.testing.assert_allclose(tracked.people[0].mean_box[0], np.mean([250 - 2 * t for t in range(30)]))

    # A gap longer than track_gap_s starts a new track.
    short = track(frames, gap_s=0.1)
    assert len({short.person[t][0] for t in range(30) if not 10 <= t < 15}) == 2


def test_left_right_by_mean_position_where_both_are_visible():
    # Person 1 walks on alone to the right after person 2 left: over all its frames it is right of
    # person 2 on average, over the frames where both are visible it is left of them.
    frames = [[face(20 + 4 * t)] + ([face(200 - 4 * t, y=120)] if t < 20 else []) for t in range(80)]
    tracked = track(frames)
    assert [len(p.frames) for p in tracked.people] == [80, 20]
    assert tracked.people[0].mean_box[0] > tracked.people[1].mean_box[0]
    assert tracked.left_right() == {'left': 1, 'right': 2}
    alone = track([[face(250)] for _ in range(5)])
    assert alone.left_right() == {'left': None, 'right': 1}
    assert track([[] for _ in range(3)]).left_right() == {'left': None, 'right': None}


def test_shards_balance_bytes_and_agree(monkeypatch):
    sizes = {'a': 7, 'b': 6, 'c': 5, 'd': 4, 'e': 3, 'f': 3}
    jobs_list = [(name, {name: None}) for name in sorted(sizes)]
    split = shards.split_by_size(jobs_list, 2, size_of=sizes.get)
    assert [sum(sizes[path] for path, _ in shard) for shard in split] == [14, 14]
    assert sorted(path for shard in split for path, _ in shard) == sorted(sizes)
    assert split == shards.split_by_size(list(reversed(jobs_list)), 2, size_of=sizes.get)

    assert shards.parse_shard('1/4') == shards.Shard(1, 4, False)
    for bad in ('4/4', '-1/2', '1', 'a/b', '1/0'):
        with pytest.raises(ValueError, match='-shard'):
            shards.parse_shard(bad)
    launcher = {'PADDLE_TRAINER_ID': '2', 'PADDLE_TRAINERS_NUM': '4', 'PADDLE_LOCAL_SIZE': '2',
                'FLAGS_selected_gpus': '1'}
    assert shards.launcher_shard(launcher) == shards.Shard(2, 4, True)
    assert shards.launcher_shard({'PADDLE_TRAINER_ID': '0', 'PADDLE_TRAINERS_NUM': '1'}) is None
    assert shards.launcher_shard({}) is None
    assert launch_env.processes_on_this_machine(launcher) == 2 and shards.launcher_gpu(launcher) == '1'
    # Without PADDLE_LOCAL_SIZE a launcher runs on one machine: all its processes are here.
    assert launch_env.processes_on_this_machine({'PADDLE_TRAINERS_NUM': '3'}) == 3
    assert launch_env.processes_on_this_machine({}) == 1


def test_plan_names_outputs_from_annotations_list_and_videos(tmp_path):
    anno = tmp_path / 'anno' / 'Train_Set'
    anno.mkdir(parents=True)
    header = 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n'
    (anno / 'pair_left.txt').write_text(header + '0\n1\n')
    (anno / 'solo.txt').write_text(header + '0\n')
    (anno / 'bad.txt').write_text(header + '9\n')
    videos = {name: str(tmp_path / f'{name}.mp4') for name in ('pair', 'solo', 'bad', 'test1', 'x_left')}
    plan = jobs.plan_jobs(videos, str(tmp_path / 'anno'))
    assert dict((os.path.basename(path), outputs) for path, outputs in plan.jobs) == {
        'pair.mp4': {'pair_left': 'left'}, 'solo.mp4': {'solo': None},
        'test1.mp4': {'test1': None}, 'x_left.mp4': {'x_left': None}}
    assert plan.unannotated == ['test1', 'x_left']
    assert plan.label_counts == {'pair_left': 2, 'solo': 1}
    assert len(plan.problems) == 1 and 'bad.txt' in plan.problems[0]

    listed = tmp_path / 'test_set.txt'
    listed.write_text('# ABAW test set\npair_right  # right person\n\ntest1.mp4\nmissing_left\n')
    names = read_video_list(str(listed))
    assert names == ['pair_right', 'test1', 'missing_left']
    plan = jobs.plan_jobs(videos, None, names)
    assert [outputs for _, outputs in plan.jobs] == [{'pair_right': 'right'}, {'test1': None}]
    assert plan.problems == ["missing_left: no video 'missing.*' in VIDEO_DIR"]
    listed.write_text('../etc\n')
    with pytest.raises(VideoListError, match='line 1'):
        read_video_list(str(listed))
    listed.write_text('test1\n\npair_right\ntest1.mp4  # again\n')
    with pytest.raises(VideoListError, match=r"line 4: 'test1' is listed twice \(first on line 1\)"):
        read_video_list(str(listed))


def test_downscaled_detection_gives_the_full_resolution_crop(tmp_path):
    head = astronaut_head(300)
    frames = []
    for x in (300, 700):
        frame = np.full((720, 1280, 3), 90, np.uint8)
        frame[200:500, x:x + 300] = head
        frames.append(frame)
    video = tmp_path / 'hd.mp4'
    write_video(video, frames, fps=25)
    assert detection_scale((720, 1280), 720) == pytest.approx(720 / 1280)

    results = {}
    for detect_size in (0, 720):
        with Detector(FaceSettings(detect_size=detect_size)) as detector:
            loop = FaceLoop(str(video), detector, fps=25)
            results[detect_size] = list(loop)
    full, small = results[0], results[720]
    assert [c.frame for c in full] == [c.frame for c in small] == [1, 2]
    import cv2
    for a, b in zip(full, small):
        # Box and landmarks in full-frame pixels, within a few pixels of full-resolution detection.
        assert np.abs(a.face.landmarks - b.face.landmarks).max() < 4
        assert np.abs(a.face.box - b.face.box).max() < 8
        crop_a = cv2.imdecode(np.frombuffer(a.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(float)
        crop_b = cv2.imdecode(np.frombuffer(b.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(float)
        assert crop_a.shape == crop_b.shape == (224, 224, 3)
        assert np.abs(crop_a - crop_b).mean() < 8
