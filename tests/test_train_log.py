"""The run's log files and lines, in the release's format (PaddleViT facial_expression/utils.py and
main_multi_gpu.py), with the command line first and the fatal error last."""
import json
import re

import numpy as np

import engine
from train_log import batch_accuracy, should_log_train_step

STAMP = r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} '  # logging's default asctime (log.txt, log_<rank>.txt)
ALL_STAMP = r'\d{4} \d\d:\d\d:\d\d [AP]M '  # the release's basicConfig datefmt '%m%d %I:%M:%S %p'
NUM = r'\d+\.\d{4}'
STEP_RE = re.compile(STAMP + r'MASTER_LOG Epoch\[(\d{3})/002\], Step\[(\d{4})/(\d{4})\], Lr: (\d\.\d{6}e[-+]\d\d), '
                     rf'Loss: ({NUM}) \(({NUM})\), Avg Acc: ({NUM})$')
EPOCH_RE = re.compile(STAMP + r'MASTER_LOG ----- Epoch\[(\d{3})/002\], Lr: \d\.\d{6}e[-+]\d\d, time: \d+\.\d\d'
                      rf'Train Loss: ({NUM}), Train Acc: ({NUM})$')
VAL_STEP_RE = re.compile(STAMP + rf'MASTER_LOG Step\[(\d{{4}})/(\d{{4}})\], Avg Loss: {NUM}, Avg Acc@1: {NUM}$')
VAL_END_RE = re.compile(STAMP + rf'MASTER_LOG ----- Epoch\[(\d{{3}})/002\], Validation Loss: ({NUM}), '
                        rf'Validation Acc@1: ({NUM}), time: \d+\.\d\d$')


def _base(tiny_cfg_file, abaw_small, out):
    return ['-cfg', tiny_cfg_file, '-data_folder', abaw_small['data_folder'], '-anno_folder',
            abaw_small['anno_folder'], '-device', 'cpu', '-class_type', 'coarse', '-output', str(out)]


def test_training_writes_the_release_logs(tmp_path, tiny_cfg_file, abaw_small):
    out = tmp_path / 'run'
    argv = _base(tiny_cfg_file, abaw_small, out) + ['-opts', 'REPORT_FREQ', '4']
    assert engine.main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {'log.txt', 'log_0.txt', 'log_all.txt', 'history.json', 'config.yaml', 'best.json'} <= names
    master = (out / 'log.txt').read_text().splitlines()
    local = (out / 'log_0.txt').read_text().splitlines()
    # The command line first, then the release's config dump.
    assert re.match(STAMP + r'MASTER_LOG ----- command: \S+ .*-opts REPORT_FREQ 4$', master[0]), master[0]
    assert re.match(STAMP + r'----- command: ', local[0])
    assert re.match(STAMP + r'MASTER_LOG ----- world_size = 1, local_rank = 0 $', master[1])
    assert master[2] == '----- AMP: False'  # yacs' dump of the whole config follows
    assert any(line == 'REPORT_FREQ: 4' for line in master)

    steps = [STEP_RE.match(line).groups() for line in master if STEP_RE.match(line)]
    batches = int(steps[0][2])
    assert batches == 6  # 52 coarse training frames / batch 8, the partial batch dropped
    # REPORT_FREQ counted from step 0, and the last step of each epoch.
    assert [(int(e), int(s)) for e, s, *_ in steps] == [(1, 0), (1, 4), (1, 5), (2, 0), (2, 4), (2, 5)]
    assert steps[0][4] == steps[0][5]  # at step 0 the running mean is the step's loss
    history = json.load(open(out / 'history.json'))
    ends = [EPOCH_RE.match(line).groups() for line in master if EPOCH_RE.match(line)]
    assert [int(e) for e, *_ in ends] == [1, 2]
    for (epoch, loss, acc), record, last_step in zip(ends, history, [steps[2], steps[5]]):
        assert float(loss) == round(record['train_loss'], 4) and float(acc) == round(record['train_acc'], 4)
        assert (last_step[5], last_step[6]) == (loss, acc)  # the epoch line repeats the last step's means

    val_steps = [VAL_STEP_RE.match(line).groups() for line in master if VAL_STEP_RE.match(line)]
    assert val_steps and all(int(b) % 4 == 0 for b, _ in val_steps)
    assert sum('batches, time left' in line for line in master) == len(val_steps)
    val_ends = [VAL_END_RE.match(line).groups() for line in master if VAL_END_RE.match(line)]
    assert [int(e) for e, *_ in val_ends] == [1, 2]
    for (_, loss, acc), record in zip(val_ends, history):
        assert float(loss) == round(record['val_loss'], 4) and float(acc) == round(record['val_acc'], 4)

    # log_<rank>.txt has the process's own values (equal in one process), without MASTER_LOG;
    # log_all.txt both, stamped as the release's basicConfig did.
    assert [line.split(' ', 2)[2] for line in local if re.match(STAMP, line)] == \
        [line.split(' ', 3)[3] for line in master if re.match(STAMP, line)]
    everything = (out / 'log_all.txt').read_text().splitlines()
    stamped = [line for line in everything if re.match(ALL_STAMP, line)]
    assert len(stamped) == 2 * sum(1 for line in master if re.match(STAMP, line))
    assert not any('error' in line for line in master)


def test_a_failed_run_ends_its_log_with_the_error(tmp_path, tiny_cfg_file, abaw_small, capsys):
    out = tmp_path / 'failed'
    missing = tmp_path / 'absent.pdparams'
    assert engine.main(_base(tiny_cfg_file, abaw_small, out) + ['-resume', str(missing)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: -resume {missing}: checkpoint file does not exist"]
    for name, mark in (('log.txt', 'MASTER_LOG '), ('log_0.txt', '')):
        last = (out / name).read_text().splitlines()[-1]
        assert re.match(STAMP + mark + f"error: -resume {re.escape(str(missing))}: checkpoint file does not exist$",
                        last), last


def test_evaluation_logs_progress_with_time_left(tmp_path, tiny_cfg_file, abaw_small):
    train_out = tmp_path / 'train'
    assert engine.main(_base(tiny_cfg_file, abaw_small, train_out) + ['-opts', 'TRAIN.NUM_EPOCHS', '1']) == 0
    out = tmp_path / 'eval'
    argv = _base(tiny_cfg_file, abaw_small, out) + ['-eval', '-pretrained', str(train_out / 'last.pdparams'),
                                                   '-batch_size', '4', '-opts', 'REPORT_FREQ', '2']
    assert engine.main(argv) == 0
    master = (out / 'log.txt').read_text().splitlines()
    start = next(i for i, line in enumerate(master) if line.endswith('MASTER_LOG ----- Start Validation'))
    steps = [VAL_STEP_RE.match(line).groups() for line in master[start:] if VAL_STEP_RE.match(line)]
    total = int(steps[0][1])
    assert total >= 6 and [int(b) for b, _ in steps] == list(range(0, total, 2))
    left = [re.search(r'----- (\d+)/(\d+) batches, time left \d+:\d\d:\d\d$', line) for line in master[start:]]
    assert [int(m.group(1)) for m in left if m] == [b + 1 for b in range(0, total, 2)]
    assert re.match(STAMP + rf'MASTER_LOG ----- Validation: Validation Loss: {NUM}, Validation Acc@1: {NUM}, '
                    r'time: \d+\.\d\d$', next(line for line in master if '----- Validation: ' in line))


def test_step_selection_and_accuracy():
    assert [b for b in range(11) if should_log_train_step(b, 11, 4)] == [0, 4, 8, 10]
    assert [b for b in range(5) if should_log_train_step(b, 5, 0)] == [4]
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert batch_accuracy(logits, np.array([1, 1, 1, 0])) == 0.75
    assert batch_accuracy(logits[:0], np.array([], dtype=np.int64)) == 0.0
