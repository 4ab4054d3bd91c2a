"""What a training run shows about itself while it runs: OUTPUT/training_curves.png, redrawn from
history.json after every epoch (losses, learning rate, validation accuracy, macro F1 and per-class
F1), and with `VISUALDL True` the same numbers as VisualDL scalars in OUTPUT/visualdl
(`visualdl --logdir OUTPUT/visualdl`)."""
import os

from checkpoints import read_history
from errors import UsageError
from plots import plot_training_curves

CURVES_NAME = 'training_curves.png'
VISUALDL_DIR = 'visualdl'

_writers = {}


def _visualdl_writer(output_dir):
    if output_dir not in _writers:
        try:
            from visualdl import LogWriter
        except ImportError as err:
            raise UsageError(f"VISUALDL True needs the visualdl package ({err}); install it with "
                             "`.venv/bin/pip install -r requirements.txt`") from None
        _writers[output_dir] = LogWriter(logdir=os.path.join(output_dir, VISUALDL_DIR))
    return _writers[output_dir]


def _scalars(record):
    """(tag, value) pairs of one epoch's history record."""
    for key, tag in (('train_loss', 'train/loss'), ('lr', 'train/lr'),
                     ('train_images_per_s', 'train/images_per_s'), ('val_loss', 'val/loss'),
                     ('val_acc', 'val/acc'), ('val_macro_f1', 'val/macro_f1')):
        if record.get(key) is not None:
            yield tag, float(record[key])
    for name, value in (record.get('val_per_class_f1') or {}).items():
        yield f'val/f1_{name}', float(value)


def epoch_finished(output_dir, record, visualdl=False):
    """After history.json got `record`: redraw the curves and, if asked, log VisualDL scalars."""
    history = read_history(output_dir)
    plot_training_curves(os.path.join(output_dir, CURVES_NAME), history,
                         title=os.path.basename(os.path.abspath(output_dir)))
    if visualdl:
        writer = _visualdl_writer(output_dir)
        for tag, value in _scalars(record):
            writer.add_scalar(tag, value, int(record['epoch']))
        writer.flush()
