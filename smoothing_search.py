"""Scoring smoothed predictions against the annotations, and the search over Smooth Predicting
settings (both modes, every K, and every A of the fused mode) that `smooth_predict.py -search` runs.
"""
import numpy as np

from fileio import atomic_open
from fusion import NUM_ABAW, SMOOTH_MODES, Smoothing
from labels import ABAW_CLASSES
from metrics import classification_scores, macro_f1
from video_table import InputError

SEARCH_WINDOWS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
SEARCH_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def score(table, row_labels):
    """classification_scores over every annotated frame (faceless frames filled), or None."""
    positions, truth = table.annotated()
    if truth.size == 0:
        return None
    predicted = table.all_frame_labels(row_labels)[positions]
    return classification_scores(truth, predicted, ABAW_CLASSES)


def search(table, windows=SEARCH_WINDOWS, alphas=SEARCH_ALPHAS, modes=SMOOTH_MODES):
    """Macro F1 (and accuracy) on the annotated frames for every setting of the table's fusion:
    logits mode for each K, fused mode for each (K, A).

    Returns (rows, best): rows are dicts mode, window, alpha (None in logits mode), macro_f1,
    accuracy, the logits rows first, then the fused grid in (K, A) order; best is the row with the
    highest macro F1, ties going to the logits mode, then the smaller K, then the smaller A.
    """
    positions, truth = table.annotated()
    if truth.size == 0:
        raise InputError("-search: the annotations hold no annotated frame (all labels are -1)")
    unsmoothed = None  # K = 0 in either mode, or A = 0, gives the raw labels: score them once

    def scored(smoother, setting):
        nonlocal unsmoothed
        if setting.is_unsmoothed:
            if unsmoothed is None:
                unsmoothed = _grid_score(table, np.argmax(table.probs, axis=1), positions, truth)
            return unsmoothed
        labels = np.argmax(smoother.probs(setting), axis=1)
        return _grid_score(table, labels, positions, truth)

    rows = []
    for mode in SMOOTH_MODES:
        if mode not in modes:
            continue
        # One smoother per mode: memory stays a few arrays of the rows' size whatever the grid.
        smoother = table.smoother(mode, max_window=max(windows))
        for window in windows:
            for alpha in ((None,) if mode == 'logits' else alphas):
                setting = Smoothing(mode, table.fusion, window, alpha)  # checks K and A
                rows.append({'mode': mode, 'window': setting.window, 'alpha': setting.alpha,
                             **scored(smoother, setting)})
    best = max(rows, key=lambda row: (row['macro_f1'], -SMOOTH_MODES.index(row['mode']),
                                      -row['window'], -(row['alpha'] or 0.0)))
    return rows, best


def best_setting(best, fusion):
    """The Smoothing of a `search` row."""
    return Smoothing(best['mode'], fusion, best['window'], best['alpha'])


def _grid_score(table, row_labels, positions, truth):
    predicted = table.all_frame_labels(row_labels)[positions]
    return {'macro_f1': macro_f1(truth, predicted, NUM_ABAW),
            'accuracy': float(np.mean(predicted == truth))}


def format_search(rows):
    """Macro F1 of a `search`: one line per K; a column for the logits mode, one per fused A."""
    windows = list(dict.fromkeys(row['window'] for row in rows))
    alphas = list(dict.fromkeys(row['alpha'] for row in rows if row['mode'] == 'fused'))
    table = {(row['mode'], row['window'], row['alpha']): row['macro_f1'] for row in rows}
    columns = ([('logits', None, '  logits ')] if any(r['mode'] == 'logits' for r in rows) else [])
    columns += [('fused', alpha, f"  A={alpha:<5g}") for alpha in alphas]
    lines = ['macro F1   ' + ''.join(title for _, _, title in columns)]
    for window in windows:
        lines.append(f"K={window:<8d}" + ''.join(f"  {table[(mode, window, alpha)]:.5f}"
                                                 for mode, alpha, _ in columns))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- outputs

def write_search_csv(path, rows):
    """One line per searched setting; alpha is empty in the logits mode, which has none."""
    with atomic_open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write('mode,window,alpha,macro_f1,accuracy\n')
        for r in rows:
            alpha = '' if r['alpha'] is None else f"{r['alpha']:g}"
            f.write(f"{r['mode']},{r['window']},{alpha},{r['macro_f1']:.6f},{r['accuracy']:.6f}\n")

