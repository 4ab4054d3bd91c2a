"""predict_video.py -sampling adaptive and -live on generated clips with tiny random-weight models.

The live runs are real subprocesses reading a video file at its own frame rate: the CSV is read
while they run, then they are stopped with SIGTERM / SIGINT, or left to reach the end of the file.
"""
import argparse
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from demo.synthetic_video import write_face_clip  # noqa: E402
from helpers import save_random_classifier  # noqa: E402

import live  # noqa: E402
import predict_video  # noqa: E402
from labels import ABAW_CLASSES  # noqa: E402
from preprocess.faces import Face, FaceSettings  # noqa: E402
from fusion import Smoothing  # noqa: E402

HAS_FACE = [1] * 10 + [0] * 3 + [1] * 11


@pytest.fixture(scope='module')
def clip(tmp_path_factory, tiny_cfg_file):
    root = tmp_path_factory.mktemp('realtime')
    video = root / 'clip.mp4'
    write_face_clip(video, HAS_FACE)
    weights = {kind: save_random_classifier(tiny_cfg_file, kind, str(root / f'{kind}.pdparams'), seed)
               for seed, kind in enumerate(('coarse', 'negative'), start=1)}
    flags = []
    for kind in ('coarse', 'negative'):
        flags += [f'-{kind}_cfg', tiny_cfg_file, f'-{kind}_weights', weights[kind]]
    return {'root': root, 'video': video, 'flags': flags}


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _predict(clip, name, *flags):
    out = clip['root'] / name
    assert predict_video.main([str(clip['video']), '-output', str(out), '-workers', '0']
                              + clip['flags'] + list(flags)) == 0
    return out


@pytest.fixture(scope='module')
def sampled_all(clip):
    return _predict(clip, 'all')


def test_sampling_all_is_the_default_and_writes_what_it_wrote_before(clip, sampled_all):
    explicit = _predict(clip, 'explicit_all', '-sampling', 'all')
    for name in ('clip.csv', 'clip.txt'):
        assert (explicit / name).read_bytes() == (sampled_all / name).read_bytes()
    with open(sampled_all / 'clip.csv', newline='') as f:
        assert next(csv.reader(f)) == predict_video.CSV_HEADER  # no `processed` column


def test_adaptive_with_stride_one_processes_every_frame_like_all(clip, sampled_all):
    every = _rows(_predict(clip, 'stride1', '-sampling', 'adaptive', '-strides', '1') / 'clip.csv')
    reference = _rows(sampled_all / 'clip.csv')
    assert [row['processed'] for row in every] == ['1'] * len(HAS_FACE)
    assert [row['label'] for row in every] == [row['label'] for row in reference]
    assert [row['face'] for row in every] == [row['face'] for row in reference]
    for row, ref in zip(every, reference):
        if row['face'] == '1':
            np.testing.assert_allclose([float(row[c]) for c in ABAW_CLASSES],
                                       [float(ref[c]) for c in ABAW_CLASSES], atol=1e-4)


def test_adaptive_fills_between_agreeing_ends_and_keeps_one_row_per_frame(clip, sampled_all):
    # agree_prob 0: the random models' labels are never confident; what is tested is the filling.
    rows = _rows(_predict(clip, 'adaptive', '-sampling', 'adaptive', '-strides', '4,1',
                          '-agree_prob', '0') / 'clip.csv')
    assert [int(row['frame']) for row in rows] == list(range(1, len(HAS_FACE) + 1))
    processed = [int(row['processed']) for row in rows]
    assert 0 < sum(processed) < len(HAS_FACE)
    for row, face in zip(rows, HAS_FACE):
        if row['processed'] == '1':
            assert int(row['face']) == face
    # The faceless frames 11-13 sit between frames 9 and 13 / 13 and 17: never filled with a face.
    assert [row['face'] for row in rows[10:13]] == ['0', '0', '0']
    reference = _rows(sampled_all / 'clip.csv')
    agree = np.mean([row['label'] == ref['label'] for row, ref in zip(rows, reference)])
    assert agree >= 0.5


def test_bad_strides_and_agree_prob_are_usage_errors(clip, tmp_path, capsys):
    for flags, text in ((['-strides', '8,2'], '-strides'), (['-agree_prob', '1.5'], '-agree_prob'),
                        (['-show'], '-show goes with -live')):
        assert predict_video.main([str(clip['video']), '-output', str(tmp_path)] + flags) == 2
        assert text in capsys.readouterr().err


# ----------------------------------------------------------------------------- live

class _FakeDetector:
    """One fixed face per frame, found instantly; the aligned crop is black."""
    settings = FaceSettings()

    class aligner:
        @staticmethod
        def align(frame, face):
            return np.zeros((224, 224, 3), np.uint8)

    def map(self, items):
        for key, frames in items:
            yield key, [[Face(np.array([10., 10., 60., 70.]), 0.999, np.zeros((5, 2)))] for _ in frames]


def test_live_queue_skips_frames_a_slow_model_cannot_take(tmp_path):
    video = tmp_path / 'short.mp4'
    write_face_clip(video, [1] * 50)  # 2 s at 25 frames/s

    def slow_classify(faces, clock):
        time.sleep(0.2)  # 5 frames/s against 25 arriving
        return np.tile([4.0, 0, 0, 0, 0], (len(faces), 1)), np.zeros((len(faces), 4))

    args = argparse.Namespace(input=str(video), live_queue=2, overwrite=False, sampling='all', strides='8,2,1',
                              agree_prob=0.3, show=False, live_timeout=10.0)
    result = live.run_live(args, _FakeDetector(), slow_classify, Smoothing(), predict_video.CSV_HEADER, str(tmp_path))
    counts = result['stats'].counts
    assert counts['seen'] == 50
    assert counts['skipped'] >= 20 and 5 <= counts['processed'] <= 30
    assert counts['processed'] + counts['filled'] + counts['skipped'] == 50
    rows = _rows(result['csv'])
    assert [int(row['frame']) for row in rows] == list(range(1, 51))
    # A skipped frame between two frames of the same person is filled along the track.
    assert all(row['face'] == '1' and row['label'] == 'Neutral' for row in rows)
    assert sum(row['processed'] == '1' for row in rows) == counts['processed']
    assert len(result['stats'].latency) == 50


# ----------------------------------------------------------------------------- live, in subprocesses

@pytest.fixture(scope='module')
def long_clip(tmp_path_factory):
    """20 s at 25 frames/s with a face in every frame: long enough to stop it part-way on a loaded
    machine (frames the models cannot keep up with are skipped, so the run takes about 20 s)."""
    video = tmp_path_factory.mktemp('live') / 'talk.mp4'
    write_face_clip(video, [1] * 500)
    return video


def _live(clip, video, out, *flags):
    command = [sys.executable, os.path.join(ROOT, 'predict_video.py'), str(video), '-live', '-output', str(out),
               '-workers', '0'] + clip['flags'] + list(flags)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(path, rows, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and len(_rows(path)) >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path}: fewer than {rows} rows after {timeout} s")


def _summary(stderr):
    line = [line for line in stderr.splitlines() if 'frames seen' in line][-1]
    words = line.replace(',', '').replace(';', '').split()
    return {key: int(words[words.index(key) + 1]) for key in ('seen', 'processed', 'filled', 'skipped')}


@pytest.mark.parametrize('stop', [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_live_rows_are_flushed_while_running_and_complete_after_a_stop(clip, long_clip, tmp_path, stop):
    out = tmp_path / 'out'
    proc = _live(clip, long_clip, out)
    csv_path = out / 'talk.csv'
    # Rows appear while the run goes on: flushed at least once a second, not only at the end.
    _wait_for_rows(csv_path, 10, proc)
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    rows = _rows(csv_path)
    summary = _summary(stderr)
    assert f"stopped by {'SIGTERM' if stop == signal.SIGTERM else 'Ctrl-C'}" in stderr
    assert 10 <= summary['seen'] < 500
    assert sorted({int(row['frame']) for row in rows}) == list(range(1, summary['seen'] + 1))
    assert summary['processed'] + summary['filled'] + summary['skipped'] == summary['seen']
    assert {row['smoothing'] for row in rows} == {'causal'}
    assert 'latency from arrival to row: median' in stderr
    assert 'person 1:' in stderr  # the line per second


@pytest.mark.slow
def test_live_to_the_end_of_a_file_with_adaptive_sampling(clip, long_clip, tmp_path):
    out = tmp_path / 'out'
    proc = _live(clip, long_clip, out, '-sampling', 'adaptive', '-agree_prob', '0')
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = _rows(out / 'talk.csv')
    assert [int(row['frame']) for row in rows] == list(range(1, 501))
    summary = _summary(stderr)
    assert summary['seen'] == 500 and summary['filled'] > 0
    assert summary['processed'] == sum(row['processed'] == '1' for row in rows)


def test_live_source_that_cannot_be_opened(clip, tmp_path, capsys):
    missing = tmp_path / 'nothing.mp4'
    assert predict_video.main([str(missing), '-live', '-output', str(tmp_path / 'out')] + clip['flags']) == 1
    assert capsys.readouterr().err.strip() == \
        f"error: {missing}: cannot open the live source: no such file, camera index or URL"
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video')
    assert predict_video.main([str(broken), '-live', '-output', str(tmp_path / 'out'), '-workers', '0']
                              + clip['flags']) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and errors[0].startswith(f"error: {broken}: cannot open the live source (")


