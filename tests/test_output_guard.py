"""A run never lands on top of another: training into a finished run's folder and -eval into an
earlier -eval's folder stop before writing (exit 2) unless -resume / -overwrite say what to do."""
import json
import os

import pytest

import checkpoints
import engine


@pytest.fixture(autouse=True)
def release_locks(monkeypatch):
    """Each engine.main here stands for a separate command: it must not keep its folder's lock
    (held for the process's life) into the next one."""
    real_main = engine.main

    def main_then_release(argv):
        try:
            return real_main(argv)
        finally:
            while checkpoints._held_locks:
                checkpoints._held_locks.pop().close()
    monkeypatch.setattr(engine, 'main', main_then_release)


def _base(tiny_cfg_file, abaw_small, output):
    return ['-cfg', tiny_cfg_file, '-data_folder', abaw_small['data_folder'], '-anno_folder',
            abaw_small['anno_folder'], '-device', 'cpu', '-class_type', 'coarse', '-output', str(output)]


def _error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith('error')]


def test_training_over_a_finished_run_stops_resumes_or_starts_over(tmp_path, tiny_cfg_file, abaw_small, capsys):
    out = tmp_path / 'run'
    two_epochs = ['-opts', 'TRAIN.NUM_EPOCHS', '2', 'SAVE_FREQ', '1']
    assert engine.main(_base(tiny_cfg_file, abaw_small, out) + two_epochs) == 0
    before = {name: os.path.getmtime(out / name) for name in os.listdir(out)}
    assert 'Epoch-2-Loss' in ' '.join(before) and 'training_curves.png' in before
    capsys.readouterr()

    assert engine.main(_base(tiny_cfg_file, abaw_small, out) + ['-opts', 'TRAIN.NUM_EPOCHS', '1']) == 2
    errors = _error_lines(capsys)
    assert len(errors) == 1, errors
    assert str(out) in errors[0] and '-resume auto' in errors[0] and '-overwrite' in errors[0]
    assert {name: os.path.getmtime(out / name) for name in os.listdir(out)} == before  # untouched

    # -resume auto finds the run finished and leaves its epochs alone.
    assert engine.main(_base(tiny_cfg_file, abaw_small, out) + two_epochs + ['-resume', 'auto']) == 0
    assert len(json.load(open(out / 'history.json'))) == 2

    # -overwrite removes the old run's files first: no Epoch-2 file survives a 1-epoch run.
    assert engine.main(_base(tiny_cfg_file, abaw_small, out)
                       + ['-overwrite', '-opts', 'TRAIN.NUM_EPOCHS', '1', 'SAVE_FREQ', '1', 'VISUALDL', 'True']) == 0
    names = os.listdir(out)
    logs = os.listdir(out / 'visualdl')
    assert logs and os.path.getsize(out / 'visualdl' / logs[0]) > 0, logs
    assert not any(name.startswith('Epoch-2-') for name in names), names
    assert [row['epoch'] for row in json.load(open(out / 'history.json'))] == [1]


def test_eval_into_an_earlier_eval_stops_unless_overwrite(tmp_path, tiny_cfg_file, abaw_small, capsys):
    train = tmp_path / 'train'
    assert engine.main(_base(tiny_cfg_file, abaw_small, train) + ['-opts', 'TRAIN.NUM_EPOCHS', '1']) == 0
    evaluate = _base(tiny_cfg_file, abaw_small, tmp_path / 'eval') + ['-eval', '-pretrained',
                                                                     str(train / 'best.pdparams')]
    assert engine.main(evaluate) == 0
    capsys.readouterr()
    assert engine.main(evaluate) == 2
    errors = _error_lines(capsys)
    assert len(errors) == 1 and 'earlier -eval' in errors[0] and '-overwrite' in errors[0], errors
    assert engine.main(evaluate + ['-overwrite']) == 0
    # -eval never writes into a training run's folder, -overwrite or not.
    into_training = _base(tiny_cfg_file, abaw_small, train) + ['-eval', '-pretrained', str(train / 'best.pdparams')]
    for extra in ([], ['-overwrite']):
        capsys.readouterr()
        assert engine.main(into_training + extra) == 2
        errors = _error_lines(capsys)
        assert len(errors) == 1 and 'holds a training run' in errors[0], errors
    assert os.path.isfile(train / 'best.pdparams')
