"""metrics.py (shared with the training engine) and plots.py on small hand-made inputs."""
import os
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import labels  # noqa: E402
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


def test_plots_draw_the_data_at_their_size_and_write_png_atomically(tmp_path, monkeypatch):
    import plots
    from PIL import Image
    from plots import plot_confusion, plot_timeline, plot_training_curves
    figures = {}
    real_save = plots._save

    def keep(fig, path):
        figures[os.path.basename(str(path))] = [
            {'title': ax.get_title(), 'xlabel': ax.get_xlabel(), 'ylabel': ax.get_ylabel(),
             'lines': {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()},
             'texts': [t.get_text() for t in ax.texts]} for ax in fig.axes]
        return real_save(fig, path)
    monkeypatch.setattr(plots, '_save', keep)

    probs = np.full((6, 8), 0.125)
    probs[2] = np.nan  # a frame without prediction is a gap
    probs[:, 4] = [0.1, 0.2, np.nan, 0.6, 0.7, 0.9]
    plot_timeline(tmp_path / 'timeline.png', probs, [0, 0, 1, 1, 4, 4],
                  truth=[0, -1, 1, 1, 4, 2], title='video')
    plot_confusion(tmp_path / 'confusion.png', [[2, 1], [0, 3]], ['x', 'y'], 'cm')
    plot_training_curves(tmp_path / 'curves.png', [
        {'epoch': 1, 'train_loss': 1.0, 'lr': 1e-4, 'val_loss': 1.2, 'val_acc': 0.3, 'val_macro_f1': 0.2,
         'val_per_class_f1': {'x': 0.1, 'y': 0.3}},
        {'epoch': 2, 'train_loss': 0.7, 'lr': 5e-5, 'val_loss': None}])
    names = sorted(os.listdir(tmp_path))
    assert names == ['confusion.png', 'curves.png', 'timeline.png']  # no temporary leftovers
    sizes = {name: Image.open(tmp_path / name).size for name in names}
    assert sizes == {'timeline.png': (1200, 600), 'curves.png': (1500, 400), 'confusion.png': (400, 400)}

    probabilities, timeline_labels = figures['timeline.png']
    assert probabilities['title'] == 'video' and list(probabilities['lines']) == list(labels.ABAW_CLASSES)
    happiness = probabilities['lines']['Happiness'][1]
    assert np.isnan(happiness[2]) and np.allclose(np.delete(happiness, 2), [0.1, 0.2, 0.6, 0.7, 0.9])
    assert timeline_labels['lines']['prediction'][1] == [0, 0, 1, 1, 4, 4]
    truth = timeline_labels['lines']['ground truth'][1]
    assert np.isnan(truth[1]) and list(np.delete(truth, 1)) == [0, 1, 1, 4, 2]
    (confusion,) = figures['confusion.png']
    assert confusion['texts'] == ['2', '1', '0', '3'] and confusion['title'] == 'cm'
    assert (confusion['xlabel'], confusion['ylabel']) == ('predicted', 'true')
    losses, rates, scores = figures['curves.png']
    assert losses['lines'] == {'train_loss': ([1, 2], [1.0, 0.7]), 'val_loss': ([1], [1.2])}
    assert rates['lines'] == {'lr': ([1, 2], [1e-4, 5e-5])}
    assert scores['lines'] == {'val_acc': ([1], [0.3]), 'val_macro_f1': ([1], [0.2]),
                               'F1 x': ([1], [0.1]), 'F1 y': ([1], [0.3])}
    with pytest.raises(ValueError):
        plot_training_curves(tmp_path / 'empty.png', [])
