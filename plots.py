"""PNG figures for training and fusion reports (matplotlib, headless).

Every figure is saved under a temporary name that keeps the `.png` suffix and renamed into place,
so an interrupted run never leaves a truncated image that looks like a finished one.
"""
import matplotlib

matplotlib.use('Agg')  # headless servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fileio import atomic_path  # noqa: E402
from labels import ABAW_CLASSES  # noqa: E402


def _save(fig, path):
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format='png', dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_timeline(path, probs, labels, truth=None, title='', class_names=None):
    """Per-frame class probabilities (top) and predicted / true labels (bottom) of one video.

    probs: [T, C] for frames 1..T, rows of NaN where the frame has no prediction (drawn as gaps).
    labels: [T] predicted label per frame; truth: optional [T] with -1 for unannotated frames.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} disagree")
    if class_names is None:
        class_names = ABAW_CLASSES
    frames = np.arange(1, labels.shape[0] + 1)
    fig, (ax_prob, ax_label) = plt.subplots(2, 1, figsize=(12, 6), sharex=True,
                                            gridspec_kw={'height_ratios': [3, 2]})
    colors = plt.get_cmap('tab10')
    for c, name in enumerate(class_names):
        ax_prob.plot(frames, probs[:, c], lw=0.8, color=colors(c), label=name)
    ax_prob.set_ylim(-0.02, 1.02)
    ax_prob.set_ylabel('smoothed probability')
    ax_prob.legend(loc='upper right', ncol=4, fontsize=7)
    if title:
        ax_prob.set_title(title)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        known = np.where(truth >= 0, truth, np.nan)
        # Drawn over the prediction: flickering predictions would otherwise hide it.
        ax_label.step(frames, known, where='mid', lw=3, alpha=0.6, color='tab:green',
                      label='ground truth', zorder=3)
    ax_label.step(frames, labels, where='mid', lw=1, color='tab:blue', label='prediction')
    ax_label.set_yticks(range(len(class_names)))
    ax_label.set_yticklabels(class_names, fontsize=7)
    ax_label.set_ylim(-0.5, len(class_names) - 0.5)
    ax_label.set_xlabel('frame')
    ax_label.legend(loc='upper right', fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(path, confusion, class_names, title=''):
    """Confusion matrix (rows truth, columns prediction), colour = row-normalised, text = counts."""
    confusion = np.asarray(confusion, dtype=np.int64)
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    size = max(4, 0.7 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalised, cmap='Blues', vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks)
    ax.set_xticklabels(class_names, rotation=45, ha='right')
    ax.set_yticks(ticks)
    ax.set_yticklabels(class_names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(confusion[i, j]), ha='center', va='center', fontsize=7,
                    color='white' if normalised[i, j] > 0.5 else 'black')
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_training_curves(path, history, title=''):
    """A training run's curves per epoch from its history records (history.json): losses, the
    learning rate, and the validation accuracy, macro F1 and per-class F1.

    Keys used when present: epoch, train_loss, val_loss, lr, val_acc, val_macro_f1,
    val_per_class_f1 ({class: F1}); missing keys or None values (epochs without validation) are
    skipped.
    """
    if not history:
        raise ValueError("empty training history: nothing to plot")
    fig, (ax_loss, ax_lr, ax_score) = plt.subplots(1, 3, figsize=(15, 4))

    def series(value_of):
        points = [(row.get('epoch', i + 1), value_of(row)) for i, row in enumerate(history)]
        points = [(x, y) for x, y in points if y is not None]
        return zip(*points) if points else ((), ())

    for key, ax in (('train_loss', ax_loss), ('val_loss', ax_loss), ('lr', ax_lr),
                    ('val_acc', ax_score), ('val_macro_f1', ax_score)):
        x, y = series(lambda row: row.get(key))
        if x:
            ax.plot(x, y, marker='o', ms=3, lw=2 if key == 'val_macro_f1' else 1.2, label=key)
    classes = [name for row in history for name in (row.get('val_per_class_f1') or {})]
    for name in dict.fromkeys(classes):  # first-seen order, once each
        x, y = series(lambda row: (row.get('val_per_class_f1') or {}).get(name))
        if x:
            ax_score.plot(x, y, lw=0.8, ls='--', label=f'F1 {name}')
    for ax, label in ((ax_loss, 'loss'), (ax_lr, 'learning rate'), (ax_score, 'validation score')):
        ax.set_xlabel('epoch')
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
