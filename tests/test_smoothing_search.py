"""smoothing_search.py: the search over Smooth Predicting settings and its tie-breaking."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import smoothing_search  # noqa: E402
from fusion import Smoothing  # noqa: E402
from labels import write_annotation  # noqa: E402
from sp_cases import table_of, write_npz  # noqa: E402


def search_table(tmp_path, third_frame):
    """One video of 5 frames all truly Neutral; frame 3 leans to Happiness by `third_frame`."""
    confident = [0.9, 0.1]
    probs = np.array([confident, confident, third_frame, confident, confident])
    coarse = np.full((5, 5), 1e-9)
    coarse[:, :2] = probs
    paths = [f"v/{i:05d}.jpg" for i in range(1, 6)]
    c = write_npz(tmp_path / 'c.npz', paths, np.log(coarse), 'coarse')
    n = write_npz(tmp_path / 'n.npz', paths, np.zeros((5, 4)), 'negative')
    anno = tmp_path / 'anno'
    anno.mkdir(exist_ok=True)
    write_annotation(anno / 'v.txt', [0] * 5)
    return table_of(c, n, str(anno))


def test_search_picks_smallest_window_then_smallest_alpha(tmp_path):
    # K=1: u3 = 0.7167 Neutral; A=0.25 -> 0.44 (wrong), A=0.5 -> 0.53 (right). K>=2 also right
    # from A=0.5 on, so the best macro F1 is shared and the tie must go to K=1, A=0.5.
    table = search_table(tmp_path, [0.35, 0.65])
    rows, best = smoothing_search.search(table, modes=('fused',))
    assert len(rows) == 45 and {r['mode'] for r in rows} == {'fused'}
    assert [(r['window'], r['alpha']) for r in rows[:6]] == \
        [(0, 0.0), (0, 0.25), (0, 0.5), (0, 0.75), (0, 1.0), (1, 0.0)]
    perfect = max(r['macro_f1'] for r in rows)
    assert perfect == pytest.approx(1 / 8)  # only Neutral occurs: 1 of 8 classes has F1 1
    winners = {(r['window'], r['alpha']) for r in rows if r['macro_f1'] == perfect}
    assert (1, 0.25) not in winners and (0, 0.0) not in winners
    assert {(1, 0.5), (2, 1.0), (128, 0.75)} <= winners
    assert (best['window'], best['alpha']) == (1, 0.5)
    assert best['accuracy'] == 1.0


def test_search_covers_both_modes_and_ties_go_to_logits(tmp_path):
    # Logits of frame 3: log 0.35, log 0.65 = (-1.050, -0.431); frames 2 and 4: log 0.9, log 0.1
    # = (-0.105, -2.303). K=1: u3 = (-0.420, -1.679), l'3 = (-1.470, -2.110): Neutral, right.
    table = search_table(tmp_path, [0.35, 0.65])
    rows, best = smoothing_search.search(table)
    assert len(rows) == 9 + 45
    assert [(r['mode'], r['window'], r['alpha']) for r in rows[:10]] == \
        [('logits', k, None) for k in smoothing_search.SEARCH_WINDOWS] + [('fused', 0, 0.0)]
    logits = {r['window']: r['macro_f1'] for r in rows if r['mode'] == 'logits'}
    assert logits[0] < logits[1] == logits[2] == pytest.approx(1 / 8)
    # fused K=1 A=0.5 scores the same: the tie goes to the logits mode, then the smaller K.
    assert (best['mode'], best['window'], best['alpha']) == ('logits', 1, None)
    assert smoothing_search.best_setting(best, 'soft') == Smoothing('logits', 'soft', 1)


def test_search_all_tied_picks_no_smoothing(tmp_path):
    rows, best = smoothing_search.search(search_table(tmp_path, [0.9, 0.1]))
    assert len({r['macro_f1'] for r in rows}) == 1
    assert (best['mode'], best['window'], best['alpha']) == ('logits', 0, None)
