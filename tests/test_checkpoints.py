"""checkpoints.py: TRAIN.KEEP_CHECKPOINTS pruning, the one place training deletes files."""
import os

import checkpoints
from helpers import configured


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


def test_checkpoint_that_does_not_fit_names_its_training_config(tmp_path, tiny_config):
    # Weights of a training run (config.yaml beside them) read with another config: one line
    # naming the config that fits, not hundreds of mismatched keys.
    import paddle
    import pytest
    from swin_transformer import build_swin
    run = tmp_path / 'run'
    run.mkdir()
    paddle.save(build_swin(tiny_config).state_dict(), str(run / 'best.pdparams'))
    wider = configured(tiny_config, tmp_path, **{'MODEL.EMBED_DIM': 24})
    with pytest.raises(checkpoints.CheckpointError, match='Check the config') as plain:
        checkpoints.load_pretrained(build_swin(wider), str(run / 'best.pdparams'), keep_head=True)
    (run / 'config.yaml').write_text(tiny_config.dump())
    with pytest.raises(checkpoints.CheckpointError) as hinted:
        checkpoints.load_pretrained(build_swin(wider), str(run / 'best.pdparams'), keep_head=True)
    message = str(hinted.value)
    assert '\n' not in message and len(message) < len(str(plain.value))
    assert message.endswith(f"it was trained with {run / 'config.yaml'}: pass -cfg {run / 'config.yaml'}")
    assert checkpoints.training_config(str(run / 'best.pdparams')) == str(run / 'config.yaml')
