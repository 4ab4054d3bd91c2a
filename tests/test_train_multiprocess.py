"""Two CPU processes through paddle.distributed.launch, started by the shipped scripts:
ranks end training with identical weights, and 2-process evaluation lists every frame exactly once
with the same logits as a single process."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import engine
from helpers import configured

pytestmark = pytest.mark.slow  # multi-process runs (make test-fast skips them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, env_changes, extra):
    env = dict(os.environ, PYTHON=sys.executable, NPROC='2', **env_changes)
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', name)] + extra, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def digests(log_dir):
    found = {}
    for rank in (0, 1):
        text = open(os.path.join(log_dir, f'workerlog.{rank}')).read()
        match = re.search(r'final weights sha256 ([0-9a-f]{64})', text)
        assert match, text[-2000:]
        found[rank] = match.group(1)
    return found


def test_two_process_training_and_evaluation(tmp_path, tiny_config, tiny_cfg_file, abaw_small):
    start = tmp_path / 'start'
    engine.run(configured(tiny_config, start, **{'TRAIN.NUM_EPOCHS': 1}))
    env = {'CFG': tiny_cfg_file, 'DATA_FOLDER': abaw_small['data_folder'],
           'ANNO_FOLDER': abaw_small['anno_folder']}

    train_out = tmp_path / 'train2'
    run_script('run_train_multi_coarse.sh',
               {**env, 'PRETRAINED': str(start / 'last.pdparams'), 'OUTPUT': str(train_out), 'BATCH_SIZE': '8'},
               ['-opts', 'TRAIN.NUM_EPOCHS', '2'])
    ranks = digests(train_out / 'launch_logs')
    assert ranks[0] == ranks[1]
    assert (train_out / 'last.pdparams').is_file()

    eval_out = tmp_path / 'eval2'
    ckpt = str(train_out / 'last.pdparams')
    run_script('run_eval_multi_coarse.sh',
               {**env, 'PRETRAINED': ckpt, 'OUTPUT': str(eval_out), 'BATCH_SIZE': '5'}, [])
    pred = np.load(eval_out / 'predictions.npz')
    on_disk = sorted(f"{v}/{n}" for v in abaw_small['val']
                     for n in os.listdir(os.path.join(abaw_small['data_folder'], v)))
    # 24 frames over 2 ranks in batches of 5: the sampler pads, the gather must drop the repeats.
    assert list(pred['paths']) == on_disk

    single_out = tmp_path / 'eval1'
    engine.run(configured(tiny_config, single_out, **{'EVAL': True, 'MODEL.PRETRAINED': ckpt}))
    single = np.load(single_out / 'predictions.npz')
    assert list(single['paths']) == on_disk
    np.testing.assert_allclose(pred['logits'], single['logits'], atol=1e-4)
    assert np.array_equal(pred['labels'], single['labels'])
