"""Two CPU processes through paddle.distributed.launch, started by the shipped scripts, on one
machine and on two (two launches on 127.0.0.1, NNODES=2): ranks end training with identical
weights, the same on one machine or two, with the learning rate scaled by the batch of all
processes; 2-process evaluation lists every frame exactly once with the same logits as a single
process."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import cpu_env
import engine
from config import get_config
from helpers import configured, run_on_two_nodes
from optim import WarmupCosine, scaled_learning_rates

pytestmark = pytest.mark.slow  # multi-process runs (make test-fast skips them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MACHINE_ENV = ('NNODES', 'MASTER', 'NODE_RANK')
# Two "machines" on this one share its cores: each process gets the threads of one 2-process
# launch, so the weights compare.
SHARED_MACHINE_THREADS = cpu_env.thread_variables(2)


def script_env(env_changes):
    env = {k: v for k, v in os.environ.items() if k not in MACHINE_ENV}
    return {**env, 'PYTHON': sys.executable, 'NPROC': '2', **env_changes}


def run_script(name, env_changes, extra):
    proc = subprocess.run(['bash', os.path.join(ROOT, 'scripts', name)] + extra, env=script_env(env_changes),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_script_on_two_nodes(name, env_changes, extra):
    """The README's two-machine commands, typed in two terminals of this machine (one process each)."""
    results = run_on_two_nodes(
        lambda node, master: ['sh', os.path.join(ROOT, 'scripts', name)] + extra,
        lambda node, master: script_env({**env_changes, 'NPROC': '1', 'NNODES': '2', 'MASTER': master,
                                         'NODE_RANK': str(node), **SHARED_MACHINE_THREADS}))
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return results


def digests(worker_logs):
    found = []
    for path in worker_logs:
        text = open(path).read()
        match = re.search(r'final weights sha256 ([0-9a-f]{64})', text)
        assert match, text[-2000:]
        found.append(match.group(1))
    return found


def test_two_process_training_and_evaluation(tmp_path, tiny_config, tiny_cfg_file, abaw_small):
    start = tmp_path / 'start'
    engine.run(configured(tiny_config, start, **{'TRAIN.NUM_EPOCHS': 1}))
    env = {'CFG': tiny_cfg_file, 'DATA_FOLDER': abaw_small['data_folder'],
           'ANNO_FOLDER': abaw_small['anno_folder']}
    # LINEAR_SCALED_LR 16 with batch 8: learning rates x1 for 2 processes, x0.5 for one.
    train_args = ['-opts', 'TRAIN.NUM_EPOCHS', '2', 'TRAIN.LINEAR_SCALED_LR', '16', 'REPORT_FREQ', '1']
    train_env = {**env, 'PRETRAINED': str(start / 'last.pdparams'), 'BATCH_SIZE': '8'}

    train_out = tmp_path / 'train2'
    run_script('run_train_multi_coarse.sh', {**train_env, 'OUTPUT': str(train_out)}, train_args)
    ranks = digests([train_out / 'launch_logs' / f'workerlog.{rank}' for rank in (0, 1)])
    assert ranks[0] == ranks[1]
    assert (train_out / 'last.pdparams').is_file()

    nodes_out = tmp_path / 'train_nodes'
    run_script_on_two_nodes('run_train_multi_coarse.sh', {**train_env, 'OUTPUT': str(nodes_out)}, train_args)
    # Rank 0 (machine 0) and rank 1 (machine 1) end with the weights of one launch of 2 processes.
    assert digests([nodes_out / 'launch_logs' / f'node{node}' / 'workerlog.0' for node in (0, 1)]) == ranks
    history = [json.loads((out / 'history.json').read_text()) for out in (train_out, nodes_out)]
    assert history[0] == [{**h, 'train_images_per_s': r['train_images_per_s']} for h, r in zip(history[1], history[0])]
    steps = int(re.search(r'Step\[\d+/(\d+)\]', (nodes_out / 'log_0.txt').read_text()).group(1))
    config = configured(get_config(tiny_cfg_file), nodes_out, **{'DATA.BATCH_SIZE': 8, 'TRAIN.LINEAR_SCALED_LR': 16})
    schedule = WarmupCosine(*scaled_learning_rates(config, 2), config.TRAIN.WARMUP_EPOCHS, 2)
    for record in history[1]:
        assert record['lr'] == pytest.approx(schedule.lr_at(record['epoch'] - 1 + (steps - 1) / steps))

    eval_out = tmp_path / 'eval2'
    ckpt = str(train_out / 'last.pdparams')
    run_script('run_eval_multi_coarse.sh',
               {**env, 'PRETRAINED': ckpt, 'OUTPUT': str(eval_out), 'BATCH_SIZE': '5'}, [])
    pred = np.load(eval_out / 'predictions.npz')
    on_disk = sorted(f"{v}/{n}" for v in abaw_small['val']
                     for n in os.listdir(os.path.join(abaw_small['data_folder'], v)))
    # 24 frames over 2 ranks in batches of 5: the sampler pads, the gather must drop the repeats.
    assert list(pred['paths']) == on_disk

    nodes_eval = tmp_path / 'eval_nodes'
    run_script_on_two_nodes('run_eval_multi_coarse.sh',
                            {**env, 'PRETRAINED': ckpt, 'OUTPUT': str(nodes_eval), 'BATCH_SIZE': '5'}, [])
    on_nodes = np.load(nodes_eval / 'predictions.npz')
    assert list(on_nodes['paths']) == on_disk
    np.testing.assert_array_equal(on_nodes['logits'], pred['logits'])

    single_out = tmp_path / 'eval1'
    engine.run(configured(tiny_config, single_out, **{'EVAL': True, 'MODEL.PRETRAINED': ckpt}))
    single = np.load(single_out / 'predictions.npz')
    assert list(single['paths']) == on_disk
    np.testing.assert_allclose(pred['logits'], single['logits'], atol=1e-4)
    assert np.array_equal(pred['labels'], single['labels'])
