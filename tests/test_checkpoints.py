"""checkpoints.py: TRAIN.KEEP_CHECKPOINTS pruning, the one place training deletes files."""
import os

import checkpoints


def test_pruning_keeps_exactly_the_newest_periodic_checkpoints(tmp_path):
    # Epochs sort by number, not by name (Epoch-10 is newer than Epoch-9); nothing else is touched.
    periodic = [f'Epoch-{epoch}-Loss-{1 / epoch:.4f}.pdparams' for epoch in (2, 9, 10, 4, 12)]
    others = ['best.pdparams', 'last.pdparams', 'best.json', 'history.json', 'Epoch-notes.txt',
              'Epoch-3-Loss-0.5.pdparams.tmp', '.Epoch-13-Loss-0.1.tmp.pdparams']
    for name in periodic + others:
        (tmp_path / name).write_bytes(b'x')
    checkpoints.prune_periodic(str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == sorted(others + ['Epoch-10-Loss-0.1000.pdparams',
                                                             'Epoch-12-Loss-0.0833.pdparams'])
    checkpoints.prune_periodic(str(tmp_path), 5)  # fewer than `keep`: nothing goes
    assert len(os.listdir(tmp_path)) == len(others) + 2
