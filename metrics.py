"""Classification scores shared by training (engine.py) and fusion (smooth_predict.py).

The ABAW EXPR metric is the unweighted (macro) F1 over all classes. scikit-learn computes it with
`labels=range(C)` so that a class missing from both truth and prediction still counts (as F1 0),
exactly as the challenge's evaluation does, instead of silently averaging over fewer classes.
"""
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def _as_label_array(values, name):
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array.astype(np.int64, copy=False)


def macro_f1(y_true, y_pred, num_classes):
    """Macro F1 over classes 0..num_classes-1 (absent classes count as 0).

    Fast path for grid searches over long label arrays: F1 depends only on the counts of each
    (truth, prediction) pair, so scikit-learn scores the C*C distinct pairs weighted by their
    counts instead of every sample; the counts are integers, so the result is the same.
    """
    y_true = _as_label_array(y_true, 'y_true')
    y_pred = _as_label_array(y_pred, 'y_pred')
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    for name, array in (('y_true', y_true), ('y_pred', y_pred)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    pairs = np.flatnonzero(counts)
    return float(f1_score(pairs // num_classes, pairs % num_classes, sample_weight=counts[pairs],
                          labels=list(range(num_classes)), average='macro', zero_division=0))


def classification_scores(y_true, y_pred, class_names):
    """Scores of integer predictions against integer truth over `len(class_names)` classes.

    Returns a JSON-ready dict: accuracy, macro_f1, per_class_f1 {name: f1}, confusion (rows =
    truth, columns = prediction, as lists), support {name: number of true frames}, count.
    Frames whose truth is outside 0..C-1 (e.g. -1 = unannotated) must be removed by the caller;
    they are rejected here so that they can never be scored by accident.
    """
    y_true = _as_label_array(y_true, 'y_true')
    y_pred = _as_label_array(y_pred, 'y_pred')
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    num_classes = len(class_names)
    if y_true.size == 0:
        raise ValueError("no labelled samples to score")
    for name, array in (('y_true', y_true), ('y_pred', y_pred)):
        if array.min() < 0 or array.max() >= num_classes:
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    labels = list(range(num_classes))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        'accuracy': float(accuracy_score(y_true, y_pred)),
        'macro_f1': float(np.mean(per_class)),
        'per_class_f1': {name: float(score) for name, score in zip(class_names, per_class)},
        'confusion': confusion.astype(int).tolist(),
        'support': {name: int(count) for name, count in zip(class_names, confusion.sum(axis=1))},
        'count': int(y_true.size),
    }


def format_table(scores, title=None):
    """Printable text table of one `classification_scores` result (or several, by column).

    `scores` is either one result dict or a dict {column title: result dict} with the same classes.
    """
    if 'per_class_f1' in scores:
        scores = {'F1': scores}
    columns = list(scores)
    names = list(next(iter(scores.values()))['per_class_f1'])
    name_width = max(len(n) for n in names + ['macro F1', 'accuracy', 'frames'])
    col_width = max(8, *(len(c) for c in columns))
    lines = []
    if title:
        lines.append(title)
    lines.append(' ' * name_width + ''.join(f"  {c:>{col_width}}" for c in columns)
                 + f"  {'support':>9}")
    first = scores[columns[0]]
    for name in names:
        cells = ''.join(f"  {scores[c]['per_class_f1'][name]:>{col_width}.4f}" for c in columns)
        lines.append(f"{name:<{name_width}}{cells}  {first['support'][name]:>9d}")
    lines.append('-' * len(lines[-1]))
    lines.append(f"{'macro F1':<{name_width}}"
                 + ''.join(f"  {scores[c]['macro_f1']:>{col_width}.4f}" for c in columns))
    lines.append(f"{'accuracy':<{name_width}}"
                 + ''.join(f"  {scores[c]['accuracy']:>{col_width}.4f}" for c in columns))
    lines.append(f"{'frames':<{name_width}}"
                 + ''.join(f"  {scores[c]['count']:>{col_width}d}" for c in columns))
    return '\n'.join(lines)
