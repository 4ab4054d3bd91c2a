"""metrics.py (shared with the training engine and smooth_predict.py) on small hand-made inputs."""
import os
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metrics import classification_scores, format_table, macro_f1  # noqa: E402

NAMES = ('a', 'b', 'c')


def test_classification_scores_known_answer():
    truth = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 0, 2]
    scores = classification_scores(truth, pred, NAMES)
    # a: tp 1, fp 1, fn 1 -> 0.5; b: tp 2, fp 1, fn 0 -> 0.8; c: tp 1, fp 0, fn 1 -> 2/3
    assert scores['per_class_f1'] == pytest.approx({'a': 0.5, 'b': 0.8, 'c': 2 / 3})
    assert scores['macro_f1'] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert scores['accuracy'] == pytest.approx(4 / 6)
    assert scores['confusion'] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert scores['support'] == {'a': 2, 'b': 2, 'c': 2}
    assert scores['count'] == 6


def test_absent_class_counts_as_zero():
    # Class c never occurs: the macro average still divides by 3, as the ABAW metric does.
    scores = classification_scores([0, 1], [0, 1], NAMES)
    assert scores['per_class_f1']['c'] == 0.0
    assert scores['macro_f1'] == pytest.approx(2 / 3)


def test_rejects_unannotated_labels_and_shape_mismatch():
    with pytest.raises(ValueError, match='outside'):
        classification_scores([0, -1], [0, 1], NAMES)
    with pytest.raises(ValueError, match='labels but'):
        classification_scores([0, 1], [0], NAMES)
    with pytest.raises(ValueError, match='no labelled'):
        classification_scores([], [], NAMES)


@pytest.mark.parametrize('seed', range(4))
def test_fast_macro_f1_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, 500)  # classes 6 and 7 absent from the truth
    pred = np.where(rng.random(500) < 0.6, truth, rng.integers(0, 8, 500))
    expected = f1_score(truth, pred, labels=range(8), average='macro', zero_division=0)
    assert macro_f1(truth, pred, 8) == pytest.approx(expected, abs=1e-12)


def test_format_table_lists_every_class_and_column():
    scores = classification_scores([0, 1, 2], [0, 1, 1], NAMES)
    text = format_table({'raw': scores, 'smoothed': scores}, title='T')
    lines = text.splitlines()
    assert lines[0] == 'T'
    assert 'raw' in lines[1] and 'smoothed' in lines[1]
    assert [line.split()[0] for line in lines[2:5]] == list(NAMES)
    assert any(line.startswith('macro F1') and f"{scores['macro_f1']:.4f}" in line for line in lines)
