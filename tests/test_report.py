"""The per-person summary (summary.py), the summary and people CSVs predict_video writes, and the
report page's self-containment (report.py). The page in a real browser: test_report_browser.py."""
import base64
import csv
import json
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import predict_video  # noqa: E402
import report  # noqa: E402
from labels import ABAW_CLASSES  # noqa: E402
from fusion import Smoothing  # noqa: E402
from summary import SUMMARY_COLUMNS, summarise  # noqa: E402

N, A, D, F, H, S, U, O = range(8)


def test_shares_dominant_and_runs_of_a_hand_made_track():
    # frames 1..12; no face in frames 5 and 6 (their labels are carried over and must not count).
    labels = [N, N, H, H, H, H, H, N, U, U, U, N]
    face_frames = [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]
    s = summarise(labels, face_frames, fps=2.0)
    assert s.face_frames == 10 and s.seconds == pytest.approx(5.0)
    expected = {N: 4 / 10, H: 3 / 10, U: 3 / 10}
    np.testing.assert_allclose(s.shares, [expected.get(c, 0.0) for c in range(8)])
    assert s.shares.sum() == pytest.approx(1.0)
    assert s.dominant == N == int(np.argmax(s.shares))
    # Happiness in 3, 4 | gap | 7: the gap ends the run, so 2 frames = 1 s, not 3 or 5 frames.
    longest = {N: 2 / 2.0, H: 2 / 2.0, U: 3 / 2.0}
    np.testing.assert_allclose(s.longest_s, [longest.get(c, 0.0) for c in range(8)])
    assert s.describe() == '40% Neutral, 30% Happiness, 30% Surprise over 5.0 s'


def test_random_tracks_shares_sum_to_one_and_dominant_is_largest():
    rng = np.random.default_rng(0)
    for _ in range(20):
        frames = int(rng.integers(1, 200))
        labels = rng.integers(0, 8, frames)
        face = np.flatnonzero(rng.random(frames) < 0.7) + 1
        s = summarise(labels, face, fps=25.0)
        if not len(face):
            assert s.dominant == -1 and s.describe() == 'no face found'
            continue
        assert s.shares.sum() == pytest.approx(1.0)
        assert s.shares[s.dominant] == s.shares.max()
        counts = np.bincount(labels[face - 1], minlength=8)
        assert np.all(s.longest_s <= counts / 25.0 + 1e-12)
        assert np.all((s.longest_s > 0) == (counts > 0))


def test_bad_frame_rate_is_refused():
    with pytest.raises(ValueError, match='frame rate'):
        summarise([0], [1], fps=0)


def _analysis(frames, face_frames, seed):
    rng = np.random.default_rng(seed)
    face_frames = np.asarray(face_frames, np.int64)
    boxes, face_prob = np.full((frames, 4), np.nan), np.full(frames, np.nan)
    boxes[face_frames - 1] = [10, 20, 60, 80]
    face_prob[face_frames - 1] = 0.99
    return {'frames': frames, 'face_frames': face_frames, 'boxes': boxes, 'face_prob': face_prob,
            'coarse_logits': rng.normal(0, 3, (len(face_frames), 5)),
            'negative_logits': rng.normal(0, 3, (len(face_frames), 4))}


def _rows(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def _check_summary_row(row, frame_rows, fps):
    face = [r for r in frame_rows if r['face'] == '1']
    labels = [r['label'] for r in face]
    shares = [float(row[f'share_{name}']) for name in ABAW_CLASSES]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    for name, share in zip(ABAW_CLASSES, shares):
        assert share == pytest.approx(labels.count(name) / len(labels), abs=1e-4)
    assert row['dominant'] == ABAW_CLASSES[int(np.argmax(shares))]
    assert set(SUMMARY_COLUMNS) <= set(row)
    longest = {name: float(row[f'longest_{name}_s']) for name in ABAW_CLASSES}
    assert max(longest.values()) > 0 and longest[row['dominant']] >= 1 / fps


def test_one_person_gets_a_summary_csv_and_a_report(tmp_path):
    fps = 25.0
    people = [(1, _analysis(30, [f for f in range(1, 31) if f not in (8, 9, 20)], seed=1))]
    anno = tmp_path / 'anno'
    anno.mkdir()
    (anno / 'clip.txt').write_text(','.join(ABAW_CLASSES) + '\n' + '\n'.join(['4'] * 10 + ['-1'] * 25) + '\n')
    out = tmp_path / 'out'
    video = tmp_path / 'in' / 'clip.mp4'
    written = predict_video.write_outputs(str(video), 'clip', str(out), people, Smoothing(), annotate=False,
                                          fps=fps, report=True, truth_files={'clip': str(anno / 'clip.txt')})
    assert list(written) == ['clip']
    assert sorted(os.listdir(out)) == ['clip.csv', 'clip.txt', 'clip_report.html', 'clip_summary.csv',
                                       'clip_timeline.png']
    (row,) = _rows(out / 'clip_summary.csv')
    assert row['person'] == '1' and row['frames'] == '27'
    _check_summary_row(row, _rows(out / 'clip.csv'), fps)
    assert predict_video.is_finished(str(out), 'clip', False, 'all', report=True)
    assert not predict_video.is_finished(str(out), 'clip', True, 'all', report=True)

    page = (out / 'clip_report.html').read_text(encoding='utf-8')
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                                page, re.S).group(1))
    # The input video and the data files by relative path; ground truth read, padded with -1.
    assert data['video'] == '../in/clip.mp4'
    assert [link['href'] for link in data['links']] == ['clip_summary.csv', 'clip.csv']
    truth = np.frombuffer(base64.b64decode(data['people'][0]['truth']), np.uint8)
    assert truth.tolist() == [4] * 10 + [report.NO_VALUE] * 20


def test_several_people_get_summary_columns_in_the_people_csv(tmp_path):
    people = [(1, _analysis(40, range(1, 41), seed=2)), (2, _analysis(40, range(5, 31), seed=3))]
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'v_summary.csv').write_text('left by a one-person run\n')
    predict_video.write_outputs('unused.mp4', 'v', str(out), people, Smoothing(), annotate=False, fps=10.0)
    rows = _rows(out / 'v_people.csv')
    assert [r['person'] for r in rows] == ['1', '2'] and rows[1]['frames'] == '26'
    for row in rows:
        _check_summary_row(row, _rows(out / f"v_person{row['person']}.csv"), 10.0)
    assert not (out / 'v_summary.csv').exists() and not (out / 'v_report.html').exists()


def test_report_page_is_self_contained(tmp_path):
    frames = 50
    probs = np.full((frames, 8), np.nan)
    probs[10:] = np.eye(8)[np.arange(40) % 8]
    labels = np.concatenate([[0] * 10, np.arange(40) % 8])
    person = report.PersonSeries('v', 1, probs, labels, None, summarise(labels, np.arange(11, 51), 25.0), 'v.csv')
    # A title with markup must not break out of the page.
    path = report.write_report(str(tmp_path / 'v_report.html'), 'v</script><b>', str(tmp_path / 'v.mp4'),
                               [person], fps=25.0)
    page = open(path, encoding='utf-8').read()
    assert '{{' not in page and '</script><b>' not in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    assert 'http://' not in page and 'https://' not in page
    assert page.count('<script') == 2 and '<link rel="icon" href="data:,">' in page
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))
    decoded = np.frombuffer(base64.b64decode(data['people'][0]['probs']), np.uint8).reshape(frames, 8)
    assert (decoded[:10] == report.NO_VALUE).all() and decoded[10:].max() == report.PROB_SCALE


def test_video_without_a_face_gets_an_empty_summary_and_a_page(tmp_path):
    empty = {'frames': 6, 'face_frames': np.zeros(0, np.int64), 'boxes': np.full((6, 4), np.nan),
             'face_prob': np.full(6, np.nan), 'coarse_logits': np.zeros((0, 5)), 'negative_logits': np.zeros((0, 4))}
    out = tmp_path / 'out'
    written = predict_video.write_outputs('none.mp4', 'none', str(out), [(None, empty)], Smoothing(),
                                          annotate=False, fps=None, report=True)
    assert written['none'].describe() == 'no face found'
    (row,) = _rows(out / 'none_summary.csv')
    assert row['person'] == '' and row['frames'] == '0' and row['dominant'] == '' and row['share_Neutral'] == ''
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', (out / 'none_report.html').read_text(),
                                re.S).group(1))
    assert data['fps_known'] is False and data['people'][0]['number'] is None
