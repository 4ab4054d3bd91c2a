"""smooth_predict.py, the command: flags, outputs and errors, end to end."""
import json
import subprocess
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fusion  # noqa: E402
import smooth_predict as sp  # noqa: E402
import smoothing_search  # noqa: E402
from labels import write_annotation  # noqa: E402
from sp_cases import (HAND_COARSE, HAND_FRAMES, HAND_LABELS, HAND_NEGATIVE,  # noqa: E402
                      make_inputs, table_of, write_npz)


# ----------------------------------------------------------------------------- command line

def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'smooth_predict.py'), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    videos, anno = {}, {}
    for v, length in enumerate((40, 25, 30)):
        truth = np.repeat(rng.integers(0, 8, 5), -(-length // 5))[:length]
        faces = np.flatnonzero(rng.random(length) > 0.2) + 1
        noisy = np.where(rng.random(faces.size) < 0.3, rng.integers(0, 8, faces.size),
                         truth[faces - 1])
        videos[f"vid{v}"] = (faces, noisy)
        anno[f"vid{v}"] = truth
    coarse, negative, anno_folder = make_inputs(tmp_path, videos, anno=anno)
    out = tmp_path / 'out'
    done = run_cli('-coarse', coarse, '-negative', negative, '-output', str(out),
                   '-anno_folder', anno_folder, '-search', '-format', 'csv', '-plot', '1')
    assert done.returncode == 0, done.stderr
    assert 'best: soft fusion, SP on ' in done.stderr and "the release's figure" in done.stderr
    assert 'macro F1' in done.stdout and 'logits K=2 (figure)' in done.stdout
    assert sorted(os.listdir(out)) == ['confusion.png', 'metrics.json', 'predictions.csv',
                                       'search.csv', 'timeline_vid0.png']
    metrics = json.loads((out / 'metrics.json').read_text())
    search_rows = [line.split(',') for line in (out / 'search.csv').read_text().splitlines()]
    assert search_rows[0] == ['mode', 'window', 'alpha', 'macro_f1', 'accuracy']
    assert len(search_rows) == 1 + 9 + 45
    assert [row[0] for row in search_rows[1:]] == ['logits'] * 9 + ['fused'] * 45
    assert {row[2] for row in search_rows[1:10]} == {''}
    best = max(search_rows[1:], key=lambda row: float(row[3]))
    smoothed = metrics['smoothed']
    assert smoothed['macro_f1'] == pytest.approx(float(best[3]), abs=1e-6)
    assert (smoothed['mode'], smoothed['window']) == (best[0], int(best[1]))
    assert smoothed['alpha'] == (None if best[0] == 'logits' else float(best[2]))
    assert smoothed['fusion'] == 'soft' and metrics['raw']['window'] == 0
    assert smoothed['count'] == 95
    figure_row = next(row for row in search_rows[1:] if row[:2] == ['logits', '2'])
    assert metrics['figure']['mode'] == 'logits' and metrics['figure']['window'] == 2
    assert metrics['figure']['macro_f1'] == pytest.approx(float(figure_row[3]), abs=1e-6)
    # The same numbers from the library functions.
    table = table_of(coarse, negative, anno_folder)
    setting = fusion.Smoothing(smoothed['mode'], 'soft', smoothed['window'], smoothed['alpha'])
    labels = table.all_frame_labels(np.argmax(setting.apply(
        table.coarse_logits, table.negative_logits, table.frames, table.video_ids), axis=1))
    csv_lines = (out / 'predictions.csv').read_text().splitlines()
    assert len(csv_lines) == 1 + 95
    assert [int(line.split(',')[1]) for line in csv_lines[1:]] == labels.tolist()
    assert metrics['raw']['macro_f1'] == smoothing_search.score(table, np.argmax(table.probs, axis=1))['macro_f1']


def hand_inputs(tmp_path):
    """The hand-made video 'v' (7 frames) and a video 'w' (3 frames, one face, on frame 2), both
    files' rows shuffled differently; truth = the soft K=2 labels."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = [f"v/{frame:05d}.jpg" for frame in HAND_FRAMES] + ['w/00002.jpg']
    coarse = np.array(HAND_COARSE + [[0, 0, 1, 0, 0]], float)     # w: Surprise
    negative = np.array(HAND_NEGATIVE + [[0, 0, 0, 1]], float)
    rng = np.random.default_rng(3)
    c_order, n_order = rng.permutation(len(paths)), rng.permutation(len(paths))
    c = write_npz(tmp_path / 'c.npz', [paths[i] for i in c_order], coarse[c_order], 'coarse')
    n = write_npz(tmp_path / 'n.npz', [paths[i] for i in n_order], negative[n_order], 'negative')
    anno = tmp_path / 'anno'
    anno.mkdir()
    write_annotation(anno / 'v.txt', HAND_LABELS[('soft', 2)])
    write_annotation(anno / 'w.txt', [6, 6, 6])
    return ['-coarse', c, '-negative', n, '-anno_folder', str(anno), '-plot', '0']


@pytest.mark.parametrize('flags, fusion, window', [
    ([], 'soft', 2),                      # no smoothing flags: the release's figure
    (['-fusion', 'hard'], 'hard', 2),
    (['-window', '0'], 'soft', 0),
    (['-fusion', 'hard', '-smooth_on', 'logits', '-window', '0'], 'hard', 0),
])
def test_cli_logits_mode_hand_computed(tmp_path, flags, fusion, window):
    out = tmp_path / 'out'
    assert sp.main(hand_inputs(tmp_path) + ['-output', str(out)] + flags) == 0
    assert (out / 'v.txt').read_text().splitlines()[1:] == list(map(str, HAND_LABELS[(fusion, window)]))
    assert (out / 'w.txt').read_text().splitlines()[1:] == ['6', '6', '6']
    written = json.loads((out / 'metrics.json').read_text())
    assert {k: written['smoothed'][k] for k in ('mode', 'fusion', 'window', 'alpha')} == \
        {'mode': 'logits', 'fusion': fusion, 'window': window, 'alpha': None}
    from metrics import macro_f1
    truth = HAND_LABELS[('soft', 2)] + [6, 6, 6]
    assert written['smoothed']['macro_f1'] == pytest.approx(
        macro_f1(truth, HAND_LABELS[(fusion, window)] + [6, 6, 6], 8), abs=1e-12)
    assert written['raw']['macro_f1'] == pytest.approx(
        macro_f1(truth, HAND_LABELS[(fusion, 0)] + [6, 6, 6], 8), abs=1e-12)
    assert written['figure']['macro_f1'] == pytest.approx(
        macro_f1(truth, HAND_LABELS[(fusion, 2)] + [6, 6, 6], 8), abs=1e-12)


def test_cli_fused_mode_keeps_its_rule(tmp_path):
    out = tmp_path / 'out'
    sp.main(hand_inputs(tmp_path) + ['-output', str(out), '-smooth_on', 'fused', '-window', '2',
                                     '-alpha', '1'])
    written = json.loads((out / 'metrics.json').read_text())
    assert {k: written['smoothed'][k] for k in ('mode', 'fusion', 'window', 'alpha')} == \
        {'mode': 'fused', 'fusion': 'soft', 'window': 2, 'alpha': 1.0}
    # A = 1: the label is the argmax of the window mean of the fused probabilities.
    probs = fusion.fuse(np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float), 'soft')
    windows = [[0, 1, 2], [0, 1, 2], [0, 1, 2, 3], [2, 3, 4], [3, 4]]  # rows of frames 1,2,3,5,6
    rows = [int(np.argmax(probs[w].mean(axis=0))) for w in windows]
    assert (out / 'v.txt').read_text().splitlines()[1:] == \
        list(map(str, fusion.fill_missing(HAND_FRAMES, rows, 7)))
    out2 = tmp_path / 'out2'
    sp.main(hand_inputs(tmp_path / 'again') + ['-output', str(out2), '-smooth_on', 'fused'])
    assert json.loads((out2 / 'metrics.json').read_text())['smoothed']['alpha'] == 0.5


def test_cli_errors_are_one_line(tmp_path, capsys):
    coarse, negative, anno_folder = make_inputs(tmp_path, {'a': ([1], [0])}, anno={'a': [0]})
    done = run_cli('-coarse', negative, '-negative', coarse, '-output', str(tmp_path / 'o'))
    assert done.returncode != 0
    assert done.stderr.strip().count('\n') == 0 and 'Traceback' not in done.stderr
    assert done.stderr.startswith('error: ') and 'negative.npz' in done.stderr
    # Flag errors, in-process to keep the suite fast.
    for args, message in (
            (['-output', anno_folder, '-anno_folder', anno_folder], 'inputs are never written'),
            (['-output', str(tmp_path / 'o'), '-search'], '-search needs -anno_folder'),
            (['-output', str(tmp_path / 'o'), '-smooth_on', 'fused', '-alpha', '2'],
             '-alpha must be in [0, 1]'),
            (['-output', str(tmp_path / 'o'), '-alpha', '0.5'],
             '-alpha applies only to -smooth_on fused'),
            (['-output', str(tmp_path / 'o'), '-window', '-1'], '-window must be >= 0')):
        assert sp.main(['-coarse', coarse, '-negative', negative, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
    assert sorted(os.listdir(anno_folder)) == ['a.txt']
    assert not os.path.exists(tmp_path / 'o')


def test_listed_test_video_without_any_face_is_written_all_neutral(tmp_path):
    coarse, negative, _ = make_inputs(tmp_path, {'seen': ([1, 3], [4, 6])})
    frames = tmp_path / 'frames'
    for name, count in (('seen', 3), ('faceless', 2)):
        (frames / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (frames / name / f"{i:05d}.jpg").write_bytes(b'')
    video_list = tmp_path / 'test_set.txt'
    video_list.write_text('seen\nfaceless\n')
    out = tmp_path / 'out'
    done = run_cli('-coarse', coarse, '-negative', negative, '-output', str(out),
                   '-frames_folder', str(frames), '-video_list', str(video_list), '-plot', '0')
    assert done.returncode == 0, done.stderr
    assert (out / 'seen.txt').read_text().splitlines()[1:] == ['4', '4', '6']
    assert (out / 'faceless.txt').read_text().splitlines()[1:] == ['0', '0']
    assert "'faceless' has no predicted frame" in done.stderr
    # Without frames for a listed video its length is unknown: an error, not a guess.
    video_list.write_text('seen\nmissing\n')
    done = run_cli('-coarse', coarse, '-negative', negative, '-output', str(tmp_path / 'o2'),
                   '-frames_folder', str(frames), '-video_list', str(video_list), '-plot', '0')
    assert done.returncode != 0 and "'missing'" in done.stderr and 'Traceback' not in done.stderr


def test_anno_folder_is_the_root_as_in_training(tmp_path, capsys):
    # The root holding Validation_Set/ scores the same as the split folder itself, which is read
    # as it is with one line saying so; both flag spellings are accepted.
    coarse, negative, split_folder = make_inputs(tmp_path, {'a': ([1, 2, 4], [4, 0, 6]), 'b': ([2], [7])},
                                                 anno={'a': [4, 0, 0, 6], 'b': [7, 3]})
    root = tmp_path / 'annotations'
    (root / 'Validation_Set').mkdir(parents=True)
    (root / 'Train_Set').mkdir()
    for name in os.listdir(split_folder):
        (root / 'Validation_Set' / name).write_bytes((tmp_path / 'anno' / name).read_bytes())
    (root / 'Train_Set' / 'a.txt').write_text('not read: Validation_Set is the default -split\n')
    common = ['-coarse', coarse, '-negative', negative, '-plot', '0']
    assert sp.main(common + ['-output', str(tmp_path / 'split'), '-anno_folder', split_folder]) == 0
    assert "has no Validation_Set/ sub-folder: read its .txt files" in capsys.readouterr().err
    assert sp.main(common + ['--output', str(tmp_path / 'root'), '--anno_folder', str(root)]) == 0
    assert 'sub-folder' not in capsys.readouterr().err
    by_split, by_root = (json.loads((tmp_path / out / 'metrics.json').read_text()) for out in ('split', 'root'))
    assert by_root == by_split and by_root['annotated']
    assert (tmp_path / 'root' / 'a.txt').read_text() == (tmp_path / 'split' / 'a.txt').read_text()
    # -split picks the other sub-folder: its unreadable file is named.
    assert sp.main(common + ['-output', str(tmp_path / 'train'), '-anno_folder', str(root),
                             '-split', 'Train_Set']) == 2
    assert 'Train_Set/a.txt:1' in capsys.readouterr().err


def test_settings_from_applies_the_searched_setting_and_reproduces_its_score(tmp_path):
    rng = np.random.default_rng(3)
    videos, anno = {}, {}
    for v, length in enumerate((40, 30)):
        truth = np.repeat(rng.integers(0, 8, 4), -(-length // 4))[:length]
        faces = np.flatnonzero(rng.random(length) > 0.2) + 1
        noisy = np.where(rng.random(faces.size) < 0.35, rng.integers(0, 8, faces.size), truth[faces - 1])
        videos[f"vid{v}"], anno[f"vid{v}"] = (faces, noisy), truth
    coarse, negative, anno_folder = make_inputs(tmp_path, videos, anno=anno)
    common = ['-coarse', coarse, '-negative', negative, '-anno_folder', anno_folder, '-plot', '0']
    searched = run_cli(*common, '-output', str(tmp_path / 'search'), '-search')
    assert searched.returncode == 0, searched.stderr
    chosen = json.loads((tmp_path / 'search' / 'metrics.json').read_text())['smoothed']
    applied = run_cli(*common, '-output', str(tmp_path / 'applied'),
                      '-settings_from', str(tmp_path / 'search' / 'metrics.json'))
    assert applied.returncode == 0, applied.stderr
    again = json.loads((tmp_path / 'applied' / 'metrics.json').read_text())['smoothed']
    assert again == chosen and not (tmp_path / 'applied' / 'search.csv').exists()
    for name in os.listdir(tmp_path / 'search'):
        if name.endswith('.txt'):
            assert (tmp_path / 'applied' / name).read_text() == (tmp_path / 'search' / name).read_text()
    # The setting comes from one place: the smoothing flags beside it are a usage error.
    for extra, flag in ((['-window', '8'], '-window'), (['-search'], '-search')):
        clash = run_cli(*common, '-output', str(tmp_path / 'clash'), *extra,
                        '-settings_from', str(tmp_path / 'search' / 'metrics.json'))
        lines = clash.stderr.strip().splitlines()
        assert clash.returncode == 2 and len(lines) == 1 and flag in lines[0], clash.stderr
    not_metrics = run_cli(*common, '-output', str(tmp_path / 'x'), '-settings_from', coarse)
    assert not_metrics.returncode == 2 and 'not a smooth_predict.py metrics.json' in not_metrics.stderr
