"""predict_video.py: one row and one label per frame, and the same results as running
`python -m preprocess`, `main_single_gpu.py -eval` (both models) and `smooth_predict.py` one
after the other on the same clip.

The clip is skimage's astronaut (a real face, so MTCNN finds it) with grey faceless frames; the
models are tiny random-weight Swins saved as .pdparams, nothing is trained.
"""
import csv
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from demo.synthetic_video import write_crossing_clip, write_face_clip  # noqa: E402
from helpers import save_random_classifier  # noqa: E402

import engine  # noqa: E402
import predict_video  # noqa: E402
import fusion  # noqa: E402
import smooth_predict  # noqa: E402
import video_table  # noqa: E402
from config import get_config, update_config  # noqa: E402
from labels import ABAW_CLASSES, read_annotation  # noqa: E402
from preprocess import cli  # noqa: E402
from preprocess.video import extract_frames, probe_frame_count  # noqa: E402

HAS_FACE = [1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0]
# Fused-mode flags; without flags both tools smooth on the logits with K = 2.
FUSED = ['-smooth_on', 'fused', '-window', '2', '-alpha', '0.5']


@pytest.fixture(scope='module')
def clip(tmp_path_factory, tiny_cfg_file):
    root = tmp_path_factory.mktemp('predict_video')
    videos = root / 'videos'
    videos.mkdir()
    video = videos / 'clip.mp4'
    write_face_clip(video, HAS_FACE)
    weights = {kind: save_random_classifier(tiny_cfg_file, kind, str(root / f'{kind}.pdparams'), seed)
               for seed, kind in enumerate(('coarse', 'negative'), start=1)}
    return {'root': root, 'videos': videos, 'video': video, 'cfg': tiny_cfg_file, 'weights': weights}


def _model_flags(clip):
    return ['-coarse_cfg', clip['cfg'], '-coarse_weights', clip['weights']['coarse'],
            '-negative_cfg', clip['cfg'], '-negative_weights', clip['weights']['negative']]


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def predicted(clip):
    out = clip['root'] / 'predicted'
    code = predict_video.main([str(clip['video']), '-output', str(out), '-workers', '0',
                               '-annotate'] + _model_flags(clip))
    assert code == 0
    return out


def test_one_row_and_one_label_per_frame(clip, predicted):
    frames = probe_frame_count(clip['video'])
    assert frames == len(HAS_FACE)
    rows = _read_csv(predicted / 'clip.csv')
    labels = read_annotation(predicted / 'clip.txt')
    assert len(rows) == len(labels) == frames
    assert [int(row['frame']) for row in rows] == list(range(1, frames + 1))
    assert [int(row['face']) for row in rows] == HAS_FACE
    assert float(rows[1]['time']) == pytest.approx(1 / 25, abs=1e-3)
    for row, label in zip(rows, labels):
        assert row['label'] == ABAW_CLASSES[label] and int(row['label_id']) == label
        probs = [row[name] for name in ABAW_CLASSES]
        if row['face'] == '1':
            x1, y1, x2, y2 = (float(row[k]) for k in ('x1', 'y1', 'x2', 'y2'))
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
            assert sum(map(float, probs)) == pytest.approx(1.0, abs=1e-5)
        else:
            assert probs == [''] * len(ABAW_CLASSES) and row['x1'] == ''
    assert os.path.getsize(predicted / 'clip_timeline.png') > 0
    assert probe_frame_count(predicted / 'clip_annotated.mp4') == frames
    assert not [n for n in os.listdir(predicted) if n.startswith('.')]  # no temporary left


@pytest.fixture(scope='module')
def separate_steps(clip):
    """`python -m preprocess`, then -eval of both models on its faces, as a user would run them."""
    root = clip['root']
    faces = root / 'aligned'
    assert cli.main([str(clip['videos']), str(faces), '--workers', '0']) == 0
    video_list = root / 'videos.txt'
    video_list.write_text('clip\n')
    for kind in ('coarse', 'negative'):
        assert engine.main(['-cfg', clip['cfg'], '-class_type', kind, '-eval', '-device', 'cpu',
                            '-pretrained', clip['weights'][kind], '-data_folder', str(faces),
                            '-video_list', str(video_list), '-output', str(root / f'eval_{kind}')]) == 0
    # Every decoded frame, so smooth_predict knows the clip's length (faces alone end earlier).
    all_frames = root / 'frames'
    extract_frames(clip['video'], all_frames / 'clip')
    npz = {kind: str(root / f'eval_{kind}' / 'predictions.npz') for kind in ('coarse', 'negative')}
    return {'faces': faces, 'all_frames': all_frames, 'npz': npz}


def test_equals_preprocess_eval_and_smooth_predict_run_separately(clip, predicted, separate_steps):
    root = clip['root']
    faces, all_frames, npz = (separate_steps[k] for k in ('faces', 'all_frames', 'npz'))
    separate = root / 'separate'
    npz = {kind: str(root / f'eval_{kind}' / 'predictions.npz') for kind in ('coarse', 'negative')}
    smooth_predict.main(['-coarse', npz['coarse'], '-negative', npz['negative'], '-output', str(separate),
                         '-frames_folder', str(all_frames), '-plot', '0'])

    assert (predicted / 'clip.txt').read_bytes() == (separate / 'clip.txt').read_bytes()
    labels = read_annotation(separate / 'clip.txt')
    assert len(set(labels)) > 1  # the comparison would be weak if every frame had one label

    table = video_table.build_video_table(video_table.load_predictions(npz['coarse'], 'coarse'),
                                             video_table.load_predictions(npz['negative'], 'negative'),
                                             'soft', frames_folder=str(all_frames))
    smoothed = table.smoothed(fusion.Smoothing('logits', 'soft', 2))
    rows = _read_csv(predicted / 'clip.csv')
    face_rows = [row for row in rows if row['face'] == '1']
    assert [int(row['frame']) for row in face_rows] == table.frames.tolist()
    ours = np.array([[float(row[name]) for name in ABAW_CLASSES] for row in face_rows])
    np.testing.assert_allclose(ours, smoothed, atol=1e-4, rtol=0)

    # Face crops byte-identical to the files python -m preprocess wrote: same alignment, same JPEG.
    from preprocess.faces import FaceAligner, encode_face, select_face
    from preprocess.video import iter_frames
    aligner = FaceAligner('cpu')
    frame = next(iter_frames(clip['video']))
    face = select_face(aligner.detect_batch([frame])[0], min_prob=aligner.min_prob)
    assert encode_face(aligner.align(frame, face)) == (faces / 'clip' / '00001.jpg').read_bytes()


def test_hard_fusion_equals_smooth_predict(clip, separate_steps):
    # The labels must be those of smooth_predict's hard fusion over both models' full -eval
    # outputs (which model runs where is tested on controlled logits below).
    root = clip['root']
    npz = separate_steps['npz']
    ours = root / 'predicted_hard'
    assert predict_video.main([str(clip['video']), '-output', str(ours), '-workers', '0',
                               '-fusion', 'hard'] + _model_flags(clip)) == 0
    separate = root / 'separate_hard'
    smooth_predict.main(['-coarse', npz['coarse'], '-negative', npz['negative'], '-output', str(separate),
                         '-frames_folder', str(separate_steps['all_frames']), '-fusion', 'hard',
                         '-plot', '0'])
    assert (ours / 'clip.txt').read_bytes() == (separate / 'clip.txt').read_bytes()


def test_hard_fusion_runs_the_negative_model_where_the_rule_reads_it(clip):
    """Stand-in models with chosen logits per face: smoothing the coarse logits turns faces the
    coarse model alone calls Neutral into Negative, so their negative logits (and their
    neighbours') are needed although the unsmoothed coarse label is not Negative."""
    from preprocess.faceloop import Detector
    face_frames = np.flatnonzero(HAS_FACE) + 1             # 1, 2, 4, 5, 6, 9, ...
    coarse = np.zeros((face_frames.size, 5))
    coarse[:, 0], coarse[:, 4] = 1.0, 0.9                  # Neutral, just ahead of Negative
    coarse[1, 4] = 3.0                                     # frame 2: clearly Negative
    negative = np.eye(4)[(np.arange(face_frames.size) + 1) % 4] * 2.0
    index, negative_calls = {}, []

    def coarse_model(faces):
        for face in faces:
            index[id(face)] = len(index)
        return coarse[[index[id(face)] for face in faces]]

    def negative_model(faces):
        rows = [index[id(face)] for face in faces]
        negative_calls.extend(rows)
        return negative[rows]

    def labels_from_full_logits(setting, negative_logits):
        probs = setting.apply(coarse, negative_logits, frames=face_frames)
        return fusion.fill_missing(face_frames, probs.argmax(axis=1), len(HAS_FACE)).tolist()

    only_coarse_negative = np.full(negative.shape, np.nan)
    only_coarse_negative[1] = negative[1]
    logits_mode = fusion.Smoothing('logits', 'hard', 2)
    # The case is a real one: with only frame 2's negative logits the labels would differ.
    assert labels_from_full_logits(logits_mode, negative) != \
        labels_from_full_logits(logits_mode, only_coarse_negative)
    for setting, expected_calls in ((logits_mode, list(range(face_frames.size))),
                                    (fusion.Smoothing('fused', 'hard', 2, 0.5), [1])):
        index.clear()
        negative_calls.clear()
        with Detector(workers=0) as detector:
            video = predict_video.analyse_video(str(clip['video']), detector,
                                                (coarse_model, negative_model), setting, fps=25)
        [(person, analysis)] = predict_video.person_analyses(video, min_track_s=1.0, fps=25)
        assert person == 1 and analysis['face_frames'].tolist() == face_frames.tolist()
        assert negative_calls == expected_calls
        _, labels = predict_video.fuse_and_smooth(analysis, setting)
        assert labels.tolist() == labels_from_full_logits(setting, negative)


def test_fused_mode_equals_smooth_predict(clip, separate_steps):
    # -smooth_on fused through predict_video's path (fuse_and_smooth on a video's logits) gives
    # smooth_predict's probabilities and labels for the same -eval logits.
    npz = separate_steps['npz']
    separate = clip['root'] / 'separate_fused'
    smooth_predict.main(['-coarse', npz['coarse'], '-negative', npz['negative'], '-output', str(separate),
                         '-frames_folder', str(separate_steps['all_frames']), '-plot', '0'] + FUSED)
    table = video_table.build_video_table(video_table.load_predictions(npz['coarse'], 'coarse'),
                                             video_table.load_predictions(npz['negative'], 'negative'),
                                             'soft', frames_folder=str(separate_steps['all_frames']))
    analysis = {'coarse_logits': table.coarse_logits, 'negative_logits': table.negative_logits,
                'face_frames': table.frames, 'frames': int(table.num_frames[0])}
    setting = fusion.Smoothing('fused', 'soft', 2, 0.5)
    smoothed, labels = predict_video.fuse_and_smooth(analysis, setting)
    np.testing.assert_array_equal(smoothed, table.smoothed(setting))
    assert labels.tolist() == read_annotation(separate / 'clip.txt')


def test_folder_reports_bad_and_faceless_videos_and_goes_on(clip, tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    write_face_clip(folder / 'good.mp4', [1, 0, 1])
    write_face_clip(folder / 'empty.mp4', [0, 0, 0, 0])
    (folder / 'broken.mp4').write_bytes(b'not a video at all')
    out = tmp_path / 'out'
    args = [str(folder), '-output', str(out), '-workers', '0'] + _model_flags(clip)
    result = predict_video.run(predict_video.build_parser().parse_args(args))
    assert [f.split(':')[0] for f in result['failures']] == ['broken']
    assert 'broken.mp4' in result['failures'][0]
    assert sorted(v['name'] for v in result['done']) == ['empty', 'good']
    assert result['no_face'] == ['empty']
    assert read_annotation(out / 'empty.txt') == [0] * 4
    assert [int(r['face']) for r in _read_csv(out / 'good.csv')] == [1, 0, 1]
    assert not (out / 'broken.csv').exists()
    assert predict_video.main(args) == 1  # the broken file still fails; the others are skipped
    assert sorted(os.listdir(folder)) == ['broken.mp4', 'empty.mp4', 'good.mp4']  # input untouched


def test_resume_skips_finished_videos(clip, predicted):
    args = [str(clip['video']), '-output', str(predicted), '-workers', '0'] + _model_flags(clip)
    result = predict_video.run(predict_video.build_parser().parse_args(args))
    assert result['skipped'] == ['clip'] and result['done'] == []


def test_clear_errors_for_missing_weights_and_bad_flags(clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict_video, 'DEMO_WORK', str(tmp_path / 'no_demo'))
    cases = [
        ([str(clip['video']), '-output', str(tmp_path / 'o')], 'make demo'),
        ([str(clip['video']), '-output', str(tmp_path / 'o'), '-coarse_weights', str(tmp_path / 'missing.pdparams')],
         'missing.pdparams: file not found'),
        ([str(clip['videos']), '-output', str(clip['videos'] / 'out')] + _model_flags(clip),
         'inside the input folder'),
        ([str(clip['video']), '-output', str(tmp_path / 'o'), '-smooth_on', 'fused', '-alpha', '2'],
         '-alpha must be in [0, 1]'),
        ([str(clip['video']), '-output', str(tmp_path / 'o'), '-alpha', '0.5'],
         '-alpha applies only to -smooth_on fused'),
    ]
    for argv, message in cases:
        assert predict_video.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], (argv, err)
    assert not (tmp_path / 'o').exists()


# ---- several people ------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def crossing(clip):
    """Two people walking past each other (one gone for 5 frames) and a third seen for 10 frames."""
    root = clip['root']
    video = root / 'crossing' / 'cross.mp4'
    video.parent.mkdir()
    actors = write_crossing_clip(video)
    out = root / 'crossing_out'
    code = predict_video.main([str(video), '-output', str(out), '-workers', '0', '-annotate']
                              + _model_flags(clip))
    assert code == 0
    return {'video': video, 'out': out, 'actors': actors}


def test_each_person_gets_their_own_outputs(crossing):
    out = crossing['out']
    assert sorted(os.listdir(out)) == sorted(
        ['cross_annotated.mp4', 'cross_people.csv', 'cross_settings.json']
        + [f'cross_person{k}{suffix}' for k in (1, 2) for suffix in ('.csv', '.txt', '_timeline.png')])
    # The third face (10 frames = 0.4 s) is below -min_track_s.
    people = _read_csv(out / 'cross_people.csv')
    assert [row['person'] for row in people] == ['1', '2']
    assert people[0]['frames'] == '36' and people[0]['first_frame'] == '1' and people[0]['last_frame'] == '36'
    tracks = {}
    for row in people:
        rows = _read_csv(out / f"cross_person{row['person']}.csv")
        assert len(rows) == len(read_annotation(out / f"cross_person{row['person']}.txt")) == 36
        faces = [r for r in rows if r['face'] == '1']
        assert len(faces) == int(row['frames'])
        tracks[row['person']] = np.array([[int(r['frame']), (float(r['x1']) + float(r['x2'])) / 2,
                                           (float(r['y1']) + float(r['y2'])) / 2] for r in faces])
    upper, lower = tracks['1'], tracks['2']
    # Each track stays at its height and moves one way at about 5.8 px per frame: no swap at the crossing.
    assert np.all(upper[:, 2] < 80) and np.all(lower[:, 2] > 80)
    for track, direction in ((upper, 1), (lower, -1)):
        speed = np.diff(track[:, 1]) / np.diff(track[:, 0]) * direction
        assert speed.min() > 2 and speed.max() < 10
    # The lower person is gone in frames 25-29 and keeps their number after.
    assert not set(range(25, 30)) & set(lower[:, 0].astype(int)) and lower[-1, 0] == 36


def test_annotated_video_draws_every_person(crossing):
    from preprocess.video import iter_frames
    out = crossing['out']
    frames = list(iter_frames(out / 'cross_annotated.mp4'))
    assert len(frames) == 36

    def greenness(image, y, x1, x2):
        strip = image[y - 1:y + 2, x1 + 3:x2 - 3].astype(int)
        return (strip[..., 1] - np.maximum(strip[..., 0], strip[..., 2])).mean()
    source = next(iter_frames(crossing['video']))
    for person in ('1', '2'):
        row = _read_csv(out / f'cross_person{person}.csv')[0]
        x1, y1, x2, y2 = (int(round(float(row[k]))) for k in ('x1', 'y1', 'x2', 'y2'))
        # The box's bottom edge is drawn in green over the picture.
        assert greenness(frames[0], y2, x1, x2) > greenness(source, y2, x1, x2) + 40, person


def test_people_main_keeps_person_one():
    from preprocess.faces import Face
    from preprocess.tracking import FaceTracker, TrackedVideo

    def face(x, y):
        return Face(np.array([x, y, x + 30.0, y + 40.0]), 0.99, np.zeros((5, 2)))
    frames = [[face(10 + t, 10)] + ([face(200 - t, 100)] if t < 30 else []) for t in range(40)]
    tracker = FaceTracker(25, 0.9, 1.0)
    for faces in frames:
        tracker.update(faces)
    tracked = TrackedVideo(frames, tracker.ids, 0.9, 320, 240)
    keys = [(t + 1, i) for t, faces in enumerate(frames) for i in range(len(faces))]
    video = {'frames': 40, 'tracked': tracked, 'keys': keys,
             'coarse_logits': np.arange(len(keys) * 5, dtype=float).reshape(-1, 5),
             'negative_logits': np.zeros((len(keys), 4))}
    both = predict_video.person_analyses(video, min_track_s=1.0, fps=25)
    assert [number for number, _ in both] == [1, 2]
    main_only = predict_video.person_analyses(video, min_track_s=1.0, fps=25, people='main')
    assert [number for number, _ in main_only] == [1]
    analysis = main_only[0][1]
    assert analysis['face_frames'].tolist() == list(range(1, 41))
    # Its rows are its own faces: face 0 of every frame.
    rows = [keys.index((t, 0)) for t in range(1, 41)]
    np.testing.assert_array_equal(analysis['coarse_logits'], video['coarse_logits'][rows])
    assert np.isnan(both[1][1]['boxes'][35]).all() and not np.isnan(both[1][1]['boxes'][5]).any()
    # Present 30 frames = 1.2 s: below -min_track_s 2 the second person is not reported.
    assert [number for number, _ in predict_video.person_analyses(video, 2.0, 25)] == [1]


def test_stage_report_says_when_a_stage_had_nothing_to_do():
    seconds = {'decode': 0.5, 'detect': 2.0, 'track': 0.01, 'align': 0.0, 'classify': 0.0}
    line = predict_video.stage_report(100, 0, seconds, 2.6)
    assert 'inf' not in line and 'no face, so nothing aligned or classified' in line
    assert 'decode 200.0' in line and 'align' not in line.split(';')[2].split('no face')[0]
    with_faces = predict_video.stage_report(100, 50, {**seconds, 'align': 0.5, 'classify': 1.0}, 4.0)
    assert 'align 200.0, classify 100.0 (classify 50.0 faces/s)' in with_faces


def test_rerun_with_other_settings_redoes_the_video(clip, predicted, tmp_path, capsys):
    import json
    import shutil
    out = tmp_path / 'out'
    shutil.copytree(predicted, out)
    recorded = json.loads((out / 'clip_settings.json').read_text())
    assert recorded['smoothing']['window'] == 2 and recorded['face']['mode'] == 'align'
    base = [str(clip['video']), '-output', str(out), '-workers', '0'] + _model_flags(clip)
    result = predict_video.run(predict_video.build_parser().parse_args(base + ['-window', '8']))
    assert result['skipped'] == [] and [v['name'] for v in result['done']] == ['clip']
    assert 'other settings (smoothing.window)' in capsys.readouterr().err
    assert json.loads((out / 'clip_settings.json').read_text())['smoothing']['window'] == 8
    result = predict_video.run(predict_video.build_parser().parse_args(base + ['-window', '8']))
    assert result['skipped'] == ['clip']
    # Outputs without a record (an older run, or one killed before the record) are redone.
    (out / 'clip_settings.json').unlink()
    result = predict_video.run(predict_video.build_parser().parse_args(base + ['-window', '8']))
    assert [v['name'] for v in result['done']] == ['clip']
