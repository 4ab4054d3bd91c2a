"""preprocess: FFmpeg decoding, MTCNN detection + alignment, the resumable `python -m preprocess` run.

Videos are generated from skimage's astronaut photo (a real face) at 320x240 to keep MTCNN fast.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import ffmpeg
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from demo.synthetic_video import face_frames, write_crossing_clip, write_face_clip, write_two_face_clip  # noqa: E402
from helpers import run_on_two_nodes  # noqa: E402

from errors import UsageError  # noqa: E402
from fileio import DONE_MARKER, is_temporary  # noqa: E402
from preprocess import cli  # noqa: E402
from preprocess.faceloop import Detector  # noqa: E402
from preprocess.faces import ALIGN_TEMPLATE, FaceAligner, FaceSettings, select_face  # noqa: E402
from preprocess.video import (VideoDecodeError, extract_frames, ffmpeg_exe,  # noqa: E402
                              iter_frames, probe_frame_count, write_video)

HEADER = 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n'


@pytest.fixture(scope='module')
def aligner():
    return FaceAligner('cpu')


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def jpgs(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith('.jpg'))


def run_cli(args, capsys):
    code = cli.main([str(arg) for arg in args] + ['-workers', '0'])
    return code, capsys.readouterr().err


# ---- video.py ------------------------------------------------------------------------------------

def test_every_decoded_frame_in_order(tmp_path):
    levels = [10, 60, 110, 160, 210, 30, 230]
    frames = [np.full((50, 66, 3), level, np.uint8) for level in levels]
    # An odd frame size and a frame rate that no default resampling would keep.
    video = tmp_path / 'ramp.mkv'
    assert write_video(video, frames, fps=7) == len(levels)
    decoded = list(iter_frames(video))
    assert len(decoded) == len(levels) == probe_frame_count(video)
    assert decoded[0].shape == (50, 66, 3) and decoded[0].dtype == np.uint8
    np.testing.assert_allclose([frame.mean() for frame in decoded], levels, atol=4)

    count = extract_frames(video, tmp_path / 'frames', quality=3)
    assert count == len(levels)
    names = jpgs(tmp_path / 'frames')
    assert names == [f'{i:05d}.jpg' for i in range(1, len(levels) + 1)]
    means = [cv2.imread(str(tmp_path / 'frames' / name)).mean() for name in names]
    np.testing.assert_allclose(means, levels, atol=5)


def test_variable_frame_rate_is_not_resampled(tmp_path):
    # Gaps between timestamps grow after frame 3; FFmpeg's default constant-rate output to an image
    # sequence would duplicate frames into the gaps (41 images here instead of 7).
    levels = [10, 50, 90, 130, 170, 210, 250]
    write_video(tmp_path / 'cfr.mp4', [np.full((48, 64, 3), level, np.uint8) for level in levels], fps=25)
    stream = (ffmpeg.input(str(tmp_path / 'cfr.mp4'))
              .output(str(tmp_path / 'vfr.mkv'), vf="setpts='(N+if(gte(N,3),N*5,0))/(25*TB)'",
                      fps_mode='passthrough', vcodec='libx264'))
    subprocess.run(ffmpeg.compile(stream, cmd=ffmpeg_exe()) + ['-v', 'error'], check=True)
    decoded = list(iter_frames(tmp_path / 'vfr.mkv'))
    np.testing.assert_allclose([frame.mean() for frame in decoded], levels, atol=4)
    assert extract_frames(tmp_path / 'vfr.mkv', tmp_path / 'frames') == len(levels)
    assert len(jpgs(tmp_path / 'frames')) == len(levels)


def test_undecodable_video_raises_naming_file(tmp_path):
    bad = tmp_path / 'garbage.mp4'
    bad.write_bytes(b'\x00not a video' * 50)
    with pytest.raises(VideoDecodeError, match='garbage.mp4'):
        list(iter_frames(bad))
    with pytest.raises(VideoDecodeError, match='garbage.mp4'):
        probe_frame_count(bad)
    assert not (tmp_path / 'out').exists()
    with pytest.raises(VideoDecodeError, match='garbage.mp4'):
        extract_frames(bad, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


# ---- faces.py ------------------------------------------------------------------------------------

def test_alignment_levels_eyes_and_centres_face(aligner):
    upright = face_frames([True], width=320, height=240)[0]
    tilted = cv2.warpAffine(upright, cv2.getRotationMatrix2D((160, 120), 25, 1.0), (320, 240),
                            borderValue=(90, 90, 90))
    detections = aligner.detect_batch([upright, tilted, np.full_like(upright, 90)])
    assert len(detections) == 3 and detections[2] == []
    tilted_face = select_face(detections[1], min_prob=0.9)
    left_eye, right_eye = tilted_face.landmarks[:2]
    roll = np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    assert abs(roll) > 15, 'the test frame should really be tilted'

    crop = aligner.align(tilted, tilted_face)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # Detect again in the aligned crop: eyes now level and where the template puts them.
    again = select_face(aligner.detect_batch([crop])[0], min_prob=0.9)
    assert again is not None
    eyes = again.landmarks[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 6
    np.testing.assert_allclose(eyes, ALIGN_TEMPLATE[:2] * 224, atol=12)

    box_crop = FaceAligner('cpu', FaceSettings(mode='crop')).align(upright, select_face(detections[0]))
    assert box_crop.shape == (224, 224, 3)


# ---- the command -----------------------------------------------------------------------------

def test_cli_faces_blank_frames_and_undecodable(tmp_path, capsys):
    videos, out = tmp_path / 'videos', tmp_path / 'out'
    videos.mkdir()
    has_face = [True, True, False, True, False, True]
    write_face_clip(videos / 'clip.mp4', has_face)
    (videos / 'broken.avi').write_bytes(b'\x00' * 2000)

    code, err = run_cli([videos, out], capsys)
    assert code != 0
    assert 'broken' in err and 'Traceback' not in err
    assert sorted(os.listdir(videos)) == ['broken.avi', 'clip.mp4']  # input folder untouched
    assert not (out / 'broken').exists()

    folder = out / 'clip'
    expected = [f'{i:05d}.jpg' for i, face in enumerate(has_face, start=1) if face]
    assert jpgs(folder) == expected
    for name in expected:
        assert cv2.imread(str(folder / name)).shape == (224, 224, 3)
    rows = read_csv(folder / 'detections.csv')
    chosen = [row for row in rows if row['chosen'] == '1']
    assert [row['image'] for row in chosen] == expected
    assert [int(row['frame']) for row in chosen] == [i for i, face in enumerate(has_face, 1) if face]
    assert {int(row['frame']) for row in rows} == set(range(1, len(has_face) + 1))
    assert all(float(row['prob']) >= 0.9 for row in chosen)
    manifest = json.loads((folder / DONE_MARKER).read_text())
    assert manifest['frames'] == len(has_face) and manifest['faces'] == len(expected)

    # Second run: the finished video is skipped untouched, the broken one fails again.
    marker_time = os.stat(folder / DONE_MARKER).st_mtime_ns
    code, err = run_cli([videos, out], capsys)
    assert code != 0 and '1 already finished' in err
    assert os.stat(folder / DONE_MARKER).st_mtime_ns == marker_time


def test_left_right_from_annotation_names(tmp_path, capsys):
    videos, anno, out = tmp_path / 'videos', tmp_path / 'anno', tmp_path / 'out'
    (anno / 'Train_Set').mkdir(parents=True)
    (anno / 'Validation_Set').mkdir()
    videos.mkdir()
    write_two_face_clip(videos / 'pair.mkv', 3)
    write_face_clip(videos / 'unannotated.mp4', [True])
    (anno / 'Train_Set' / 'pair_left.txt').write_text(HEADER + '4\n0\n-1\n')
    (anno / 'Validation_Set' / 'pair_right.txt').write_text(HEADER + '1\n1\n1\n')

    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code == 0, err
    # The video no annotation names is processed too, as a single-subject video, and counted.
    assert sorted(name for name in os.listdir(out) if not name.startswith('.')) == [
        'pair_left', 'pair_right', 'unannotated']
    assert '1 output(s) have no annotation' in err
    assert jpgs(out / 'unannotated') == ['00001.jpg']
    blue_minus_red = {}
    for side in ('left', 'right'):
        folder = out / f'pair_{side}'
        assert jpgs(folder) == ['00001.jpg', '00002.jpg', '00003.jpg']
        chosen = [row for row in read_csv(folder / 'detections.csv') if row['chosen'] == '1']
        centres = [(float(row['x1']) + float(row['x2'])) / 2 for row in chosen]
        assert all((c < 160) if side == 'left' else (c > 160) for c in centres)
        image = cv2.imread(str(folder / '00001.jpg'))  # BGR
        blue_minus_red[side] = image[..., 0].mean() - image[..., 2].mean()
        assert json.loads((folder / DONE_MARKER).read_text())['annotation_frames'] == 3
    # The right-hand person was tinted blue when the clip was made.
    assert blue_minus_red['right'] > blue_minus_red['left'] + 20

    # An annotation without a video is reported by name and makes the run fail.
    (anno / 'Train_Set' / 'ghost.txt').write_text(HEADER + '0\n')
    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code != 0 and 'ghost' in err and '3 already finished' in err


def test_resume_redoes_only_the_unfinished_person_of_a_two_person_video(tmp_path, capsys):
    # A run killed after pair_left was committed but before pair_right: the next run decodes the
    # video again for pair_right alone, leaves pair_left untouched and writes pair_right as a whole run did.
    videos, anno, out = tmp_path / 'videos', tmp_path / 'anno', tmp_path / 'out'
    videos.mkdir()
    anno.mkdir()
    write_two_face_clip(videos / 'pair.mkv', 3)
    for side in ('left', 'right'):
        (anno / f'pair_{side}.txt').write_text(HEADER + '1\n1\n1\n')
    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code == 0, err
    whole_run = {name: (out / 'pair_right' / name).read_bytes() for name in jpgs(out / 'pair_right')}
    left_marker = os.stat(out / 'pair_left' / DONE_MARKER).st_mtime_ns
    os.remove(out / 'pair_right' / DONE_MARKER)  # what a kill before pair_right's commit leaves
    os.replace(out / 'pair_right', out / '.pair_right.tmp-partial')

    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code == 0, err
    assert '1 output(s) written, 1 already finished' in err
    assert os.stat(out / 'pair_left' / DONE_MARKER).st_mtime_ns == left_marker
    assert {name: (out / 'pair_right' / name).read_bytes() for name in jpgs(out / 'pair_right')} == whole_run
    assert json.loads((out / 'pair_right' / DONE_MARKER).read_text())['side'] == 'right'
    assert sorted(os.listdir(out)) == ['pair_left', 'pair_right']


def test_unfinished_outputs_are_redone(tmp_path, capsys):
    videos, out = tmp_path / 'videos', tmp_path / 'out'
    videos.mkdir()
    write_face_clip(videos / 'a.mp4', [True, False])
    write_face_clip(videos / 'b.webm', [False, True])
    # What a crash can leave: a temporary folder, and a final-named folder without the marker.
    (out / '.a.tmp-partial').mkdir(parents=True)
    (out / '.a.tmp-partial' / '00001.jpg').write_bytes(b'half')
    (out / 'b').mkdir()
    (out / 'b' / '00007.jpg').write_bytes(b'stale')

    code, err = run_cli([videos, out], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == ['a', 'b']
    assert jpgs(out / 'a') == ['00001.jpg'] and jpgs(out / 'b') == ['00002.jpg']


def test_killed_run_leaves_nothing_finished_and_resumes(tmp_path, capsys):
    videos, out = tmp_path / 'videos', tmp_path / 'out'
    videos.mkdir()
    frames = 20
    write_face_clip(videos / 'long.mp4', [True] * frames)
    cmd = [sys.executable, '-m', 'preprocess', str(videos), str(out), '-workers', '0', '-detect_batch', '1']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    partial = out / '.long.tmp-partial'
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if partial.is_dir() and jpgs(partial):
                break
            time.sleep(0.05)
        assert proc.poll() is None, 'the run finished before it could be interrupted'
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / 'long').exists()
    assert all(is_temporary(name) for name in os.listdir(out))
    assert 0 < len(jpgs(partial)) < frames

    # The face flags' old spellings still work; -batch_size warns that it means the training batch elsewhere.
    code, err = run_cli([videos, out, '--batch_size', '1', '--mode', 'align', '--image_size', '224'], capsys)
    assert code == 0, err
    assert 'warning: -batch_size is the old name of -detect_batch' in err
    assert sorted(os.listdir(out)) == ['long']
    assert jpgs(out / 'long') == [f'{i:05d}.jpg' for i in range(1, frames + 1)]
    assert json.loads((out / 'long' / DONE_MARKER).read_text())['faces'] == frames


# ---- bad command lines -----------------------------------------------------------------------

def test_bad_folders_give_one_line_errors(tmp_path, capsys):
    videos = tmp_path / 'videos'
    videos.mkdir()
    write_video(videos / 'v.mp4', [np.zeros((32, 32, 3), np.uint8)])
    not_a_dir = tmp_path / 'file'
    not_a_dir.write_text('x')
    cases = [
        ([tmp_path / 'missing', tmp_path / 'out'], 'VIDEO_DIR'),
        ([videos, videos / 'out'], 'inside VIDEO_DIR'),
        ([videos, videos], 'inside VIDEO_DIR'),
        ([videos, not_a_dir / 'out'], 'OUT_DIR'),
        ([videos, tmp_path / 'out', '--anno_folder', tmp_path / 'noanno'], '-anno_folder'),
        ([videos, tmp_path / 'out', '-device', 'tpu'], '-device tpu: choose cpu or gpu'),
    ]
    for args, expected in cases:
        assert cli.main([str(arg) for arg in args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and expected in err[0], err
    assert sorted(os.listdir(videos)) == ['v.mp4']


@pytest.mark.parametrize('raised, code, shown', [
    (VideoDecodeError('v.mp4: ffmpeg cannot read this video'), 1, 'failed: v: v.mp4: ffmpeg cannot read'),
    (UsageError('-face_size 3: too small'), 2, 'error: -face_size 3: too small'),
])
def test_errors_inside_the_video_loop_keep_their_meaning(tmp_path, capsys, monkeypatch, raised, code, shown):
    # A bad video is named and counted (exit 1); a usage error stops the run (exit 2).
    videos = tmp_path / 'videos'
    videos.mkdir()
    write_video(videos / 'v.mp4', [np.zeros((32, 32, 3), np.uint8)])

    def fail(*args, **kwargs):
        raise raised
    monkeypatch.setattr(cli.pipeline, 'process_video', fail)
    got, err = run_cli([videos, tmp_path / 'out'], capsys)
    assert got == code and shown in err, err
    assert 'Traceback' not in err


def test_a_bug_inside_the_video_loop_shows_its_traceback(tmp_path, monkeypatch):
    videos = tmp_path / 'videos'
    videos.mkdir()
    write_video(videos / 'v.mp4', [np.zeros((32, 32, 3), np.uint8)])

    def bug(*args, **kwargs):
        return {}['missing']
    monkeypatch.setattr(cli.pipeline, 'process_video', bug)
    with pytest.raises(KeyError):
        cli.main([str(videos), str(tmp_path / 'out'), '-workers', '0'])


def test_gpu_without_a_usable_gpu_is_one_usage_error(tmp_path, capsys):
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    videos = tmp_path / 'videos'
    videos.mkdir()
    write_video(videos / 'v.mp4', [np.zeros((32, 32, 3), np.uint8)])
    for device in ('gpu', 'cuda', 'cuda:1'):
        assert cli.main([str(videos), str(tmp_path / 'out'), '-device', device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f'error: -device {device}: torch sees no usable GPU'), err
    assert not (tmp_path / 'out').exists()


def test_worker_pool_matches_in_process(tmp_path):
    frames = face_frames([True, False, True])
    with Detector(FaceSettings(), 'cpu', workers=1) as pool:
        results = list(pool.map([('a', frames[:2]), ('b', frames[2:])]))
    assert [key for key, _ in results] == ['a', 'b']
    pooled = [faces for _, batch in results for faces in batch]
    local = FaceAligner('cpu').detect_batch(frames)
    assert [len(faces) for faces in pooled] == [len(faces) for faces in local] == [1, 0, 1]
    np.testing.assert_allclose(pooled[0][0].box, local[0][0].box, atol=1e-3)


# ---- people, whole datasets, shards ----------------------------------------------------------

def chosen_rows(folder):
    return [row for row in read_csv(folder / 'detections.csv') if row['chosen'] == '1']


def test_left_right_follow_each_person_when_they_swap_sides(tmp_path, capsys):
    # Two people walk past each other (the upper one left to right); the lower, blue one is gone
    # for 5 frames; a third face shows for 10 frames. Each side keeps one person all along.
    videos, anno, out = tmp_path / 'videos', tmp_path / 'anno', tmp_path / 'out'
    videos.mkdir()
    anno.mkdir()
    write_crossing_clip(videos / 'cross.mp4')
    for side in ('left', 'right'):
        (anno / f'cross_{side}.txt').write_text(HEADER + '0\n' * 36)
    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code == 0, err
    upper, lower = chosen_rows(out / 'cross_left'), chosen_rows(out / 'cross_right')
    assert len(upper) == 36 and 29 <= len(lower) <= 31
    assert {row['track'] for row in upper} == {'1'} and {row['track'] for row in lower} == {'2'}
    for rows, band, step in ((upper, (0, 80), 1), (lower, (80, 176), -1)):
        centres = np.array([[(float(r['x1']) + float(r['x2'])) / 2, (float(r['y1']) + float(r['y2'])) / 2]
                            for r in rows])
        frames = np.array([int(r['frame']) for r in rows])
        assert np.all((band[0] < centres[:, 1]) & (centres[:, 1] < band[1]))
        # Smooth, one-way motion: about 5.8 px per frame, never a jump to the other person.
        speed = np.diff(centres[:, 0]) / np.diff(frames) * step
        assert speed.min() > 2 and speed.max() < 10, speed
    gone = [int(r['frame']) for r in lower]
    assert min(gone) < 25 and max(gone) > 29 and not set(range(25, 30)) & set(gone)
    # The lower person's faces are the blue-tinted ones, in every frame.
    for folder, bluer in ((out / 'cross_left', False), (out / 'cross_right', True)):
        for name in jpgs(folder):
            image = cv2.imread(str(folder / name))
            assert (image[..., 0].mean() > image[..., 2].mean() + 20) == bluer, (folder, name)
    # Every detection carries its track: the third person is track 3 in exactly 10 frames.
    rows = read_csv(out / 'cross_left' / 'detections.csv')
    assert sum(row['track'] == '3' for row in rows) == 10


def test_whole_dataset_counts_unannotated_lists_mismatches_and_fails_on_broken(tmp_path, capsys):
    videos, anno, out = tmp_path / 'videos', tmp_path / 'anno', tmp_path / 'out'
    videos.mkdir()
    (anno / 'Validation_Set').mkdir(parents=True)
    write_face_clip(videos / 'labelled.mp4', [True, True, False])
    write_face_clip(videos / 'test_video.mp4', [True, False])
    write_two_face_clip(videos / 'pair.mp4', 2)
    (videos / 'broken.mp4').write_bytes(b'\x00' * 3000)
    (anno / 'Validation_Set' / 'labelled.txt').write_text(HEADER + '1\n2\n3\n4\n')  # one line too many

    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code == 1 and 'broken.mp4' in err and 'Traceback' not in err
    assert sorted(n for n in os.listdir(out)) == ['labelled', 'pair', 'test_video']
    assert '3 output(s) have no annotation' in err  # test_video, pair, and the broken one
    assert 'labelled: video 3 frames, annotation 4 lines' in err
    assert jpgs(out / 'labelled') == ['00001.jpg', '00002.jpg']  # nothing shifted
    # A rerun lists the mismatch again from the finished output's manifest, and fails again.
    code, err = run_cli([videos, out, '-anno_folder', anno], capsys)
    assert code == 1 and '3 already finished' in err and 'annotation 4 lines' in err

    listed = tmp_path / 'test_set.txt'
    listed.write_text('pair_left\npair_right\ntest_video\nbroken\nghost_right\n')
    code, err = run_cli([videos, tmp_path / 'listed', '-video_list', listed], capsys)
    assert code == 1 and 'broken.mp4' in err and 'ghost_right' in err
    assert sorted(os.listdir(tmp_path / 'listed')) == ['pair_left', 'pair_right', 'test_video']
    for side, bluer in (('left', False), ('right', True)):
        image = cv2.imread(str(tmp_path / 'listed' / f'pair_{side}' / '00001.jpg'))
        assert (image[..., 0].mean() > image[..., 2].mean() + 20) == bluer


def tree(folder):
    """Every file of every finished output (manifests aside: they hold timings), as bytes."""
    return {(name, image): (folder / name / image).read_bytes()
            for name in sorted(os.listdir(folder)) if not name.startswith('.')
            for image in sorted(os.listdir(folder / name)) if image != DONE_MARKER}


@pytest.fixture(scope='module')
def three_clips(tmp_path_factory):
    """Three small clips and their output from one unsharded process."""
    root = tmp_path_factory.mktemp('shards')
    videos = root / 'videos'
    videos.mkdir()
    small = dict(width=192, height=144)
    write_face_clip(videos / 'a.mp4', [True, True, False, True], **small)
    write_face_clip(videos / 'b.mp4', [True, False, True], **small)
    write_face_clip(videos / 'c.mp4', [False, True, True, True, True], **small)
    assert cli.main([str(videos), str(root / 'one'), '--workers', '0']) == 0
    reference = tree(root / 'one')
    assert {name for name, _ in reference} == {'a', 'b', 'c'}
    return videos, reference


def test_shards_equal_one_process(three_clips, tmp_path, capsys):
    videos, reference = three_clips
    for index in (0, 1):
        code, err = run_cli([videos, tmp_path / 'sharded', '--shard', f'{index}/2'], capsys)
        assert code == 0 and f'shard {index}/2' in err, err
    assert tree(tmp_path / 'sharded') == reference
    code, err = run_cli([videos, tmp_path / 'sharded'], capsys)
    assert code == 0 and '0 output(s) written, 3 already finished' in err


@pytest.mark.slow
@pytest.mark.parametrize('machines', [1, 2])
def test_launcher_ranks_equal_one_process(three_clips, tmp_path, capsys, machines):
    # Two processes started by Paddle's launcher (both on one machine, or one on each of two
    # "machines" on 127.0.0.1) share the work by their rank and world size; each runs a detection
    # worker, which must not rerun the script it was started from.
    videos, reference = three_clips
    launched = tmp_path / 'launched'
    launch = [sys.executable, '-m', 'paddle.distributed.launch']
    script = [os.path.join('preprocess', '__main__.py'), str(videos), str(launched), '--workers', '1']
    if machines == 1:
        results = [subprocess.run(launch + ['--nproc_per_node', '2', '--log_dir', str(tmp_path / 'logs')] + script,
                                  cwd=ROOT, capture_output=True, text=True, timeout=600)]
    else:
        results = run_on_two_nodes(
            lambda node, master: launch + ['--nnodes', '2', '--master', master, '--rank', str(node),
                                           '--nproc_per_node', '1', '--log_dir', str(tmp_path / 'logs' / f'node{node}')]
            + script, cwd=ROOT, timeout=600)
    logs = ''.join(path.read_text() for path in sorted((tmp_path / 'logs').rglob('workerlog*')))
    assert [result.returncode for result in results] == [0] * machines, logs[-3000:]
    assert 'shard 0/2' in logs and 'shard 1/2' in logs and 'all 2 shards: done: 3 output(s)' in logs
    assert tree(launched) == reference
    # Without sharding, everything is found done.
    code, err = run_cli([videos, launched], capsys)
    assert code == 0 and '0 output(s) written, 3 already finished' in err


def test_rerun_with_other_face_settings_is_refused_until_overwrite(tmp_path, capsys):
    videos, out = tmp_path / 'videos', tmp_path / 'out'
    videos.mkdir()
    write_face_clip(videos / 'clip.mp4', [True, True, False])
    assert run_cli([videos, out], capsys)[0] == 0
    marker = os.stat(out / 'clip' / '.done').st_mtime_ns
    # The same settings (and a speed-only one changed): finished, skipped.
    code, err = run_cli([videos, out, '-detect_batch', '2'], capsys)
    assert code == 0 and '1 already finished' in err
    code, err = run_cli([videos, out, '-face_mode', 'crop'], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: '), err
    assert "-face_mode 'align' -> 'crop'" in lines[0] and '-overwrite' in lines[0]
    assert os.stat(out / 'clip' / '.done').st_mtime_ns == marker
    code, err = run_cli([videos, out, '--face_mode', 'crop', '--overwrite'], capsys)
    assert code == 0, err
    assert json.loads((out / 'clip' / '.done').read_text())['settings']['mode'] == 'crop'
