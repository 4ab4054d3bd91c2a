"""main_test_multi_gpu.py: the release's test script (flags, SAVE/test-<time>, pred_<rank>.txt)."""
import os
import re

import numpy as np

import engine
import frame_predictions


def _argv(tiny_cfg_file, abaw_small, *extra):
    return ['-cfg', tiny_cfg_file, '-data_folder', abaw_small['data_folder'], '-anno_folder',
            abaw_small['anno_folder'], '-device', 'cpu', '-class_type', 'coarse', *extra]


def test_pred_file_has_every_validation_frame_and_its_label(tmp_path, tiny_cfg_file, abaw_small, monkeypatch):
    train = tmp_path / 'train'
    assert engine.main(_argv(tiny_cfg_file, abaw_small, '-output', str(train), '-opts', 'TRAIN.NUM_EPOCHS', '1')) == 0
    weights = str(train / 'last.pdparams')
    evaluated = tmp_path / 'eval'
    assert engine.main(_argv(tiny_cfg_file, abaw_small, '-output', str(evaluated), '-eval', '-pretrained', weights)) == 0
    npz = np.load(evaluated / 'predictions.npz')
    expected = {p: int(l) for p, l, y in zip(npz['paths'], npz['logits'].argmax(1), npz['labels']) if y >= 0}

    # Without -output: SAVE/test-<time>, as the release.
    monkeypatch.chdir(tmp_path)
    assert frame_predictions.main(_argv(tiny_cfg_file, abaw_small, '-pretrained', weights, '-batch_size', '8'),
                                  distributed=False) == 0
    (folder,) = (tmp_path / 'output').iterdir()
    assert re.fullmatch(r'test-\d{8}-\d\d-\d\d', folder.name)
    lines = (folder / 'pred_0.txt').read_text().splitlines()
    # The release's line: f'{img_p} {pred_label}', the frames of the validation list in its order.
    rows = [re.fullmatch(r'(\S+/\d{5}\.jpg) (\d)', line).groups() for line in lines]
    assert {p: int(l) for p, l in rows} == expected and len(rows) == len(expected)
    assert [p for p, _ in rows] == sorted(p for p, _ in rows)
    assert {'log.txt', 'log_0.txt', 'log_all.txt'} <= set(os.listdir(folder))


def test_no_weights_is_a_usage_error(tmp_path, tiny_cfg_file, abaw_small, capsys):
    out = tmp_path / 'out'
    assert frame_predictions.main(_argv(tiny_cfg_file, abaw_small, '-output', str(out)), distributed=False) == 2
    assert capsys.readouterr().err.strip() == \
        'error: main_test_multi_gpu.py needs -pretrained CHECKPOINT.pdparams (the model to test)'


def _release_split(n, batch, rank, ranks):
    """Paddle 2.2's DistributedBatchSampler without shuffle, written out: pad with the first
    indices to a multiple of ranks, then whole batches round-robin, the remainder split evenly."""
    per_rank = -(-n // ranks)
    indices = list(range(n)) + list(range(per_rank * ranks - n))
    tail = (per_rank * ranks) % (batch * ranks)
    mine = []
    for start in range(rank * batch, len(indices) - tail, batch * ranks):
        mine += indices[start:start + batch]
    rest = indices[len(indices) - tail:]
    return mine + rest[rank * tail // ranks:(rank + 1) * tail // ranks]


def test_each_process_writes_the_frames_the_release_gave_it():
    for n, batch, ranks in ((23, 4, 2), (24, 8, 3), (5, 16, 4), (100, 7, 1)):
        split = [frame_predictions.release_rank_indices(n, batch, r, ranks) for r in range(ranks)]
        assert split == [_release_split(n, batch, r, ranks) for r in range(ranks)]
        assert set().union(*split) == set(range(n))
