"""plots.py: timelines, confusion matrices and training curves draw their data at their size and
are written atomically."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import labels  # noqa: E402


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
