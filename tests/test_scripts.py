"""scripts/run_abaw.sh: the loader-worker default it passes, and -opts given twice."""
import os
import stat
import subprocess

import pytest

from config import get_arguments, get_config, update_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(tmp_path, gpu, script='run_train_single_coarse.sh', **env):
    """Run a launcher with a stand-in interpreter that reports the arguments it was given."""
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\n'
                    'if [ "$1" = -c ]; then exit %d; fi\n'
                    'printf "%%s\\n" "$@"\n' % (0 if gpu else 1))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = subprocess.run(['bash', os.path.join(ROOT, 'scripts', script), '-opts', 'TRAIN.NUM_EPOCHS', '3'],
                         env=dict(os.environ, PYTHON=str(fake), **env), capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def num_workers_opts(args):
    return [args[i + 2] for i, a in enumerate(args) if a == '-opts' and args[i + 1] == 'DATA.NUM_WORKERS']


def test_gpu_launch_gives_each_process_loader_workers(tmp_path):
    expected = min(16, max(1, len(os.sched_getaffinity(0)) - 1))
    assert num_workers_opts(launch(tmp_path, gpu=True)) == [str(expected)]
    assert num_workers_opts(launch(tmp_path, gpu=True, NUM_WORKERS='5')) == ['5']


def test_cpu_launch_keeps_config_workers_unless_asked(tmp_path):
    assert num_workers_opts(launch(tmp_path, gpu=False)) == []
    assert num_workers_opts(launch(tmp_path, gpu=False, NUM_WORKERS='3')) == ['3']


@pytest.mark.parametrize('argv, workers', [
    (['-opts', 'DATA.NUM_WORKERS', '7', '-opts', 'TRAIN.NUM_EPOCHS', '3'], 7),
    (['-opts', 'DATA.NUM_WORKERS', '7', '-opts', 'DATA.NUM_WORKERS', '4'], 4),
])
def test_repeated_opts_all_apply_the_last_winning(argv, workers):
    config = update_config(get_config(), get_arguments(['-cfg', os.path.join(ROOT, 'configs', 'swin_debug.yaml')] + argv))
    assert config.DATA.NUM_WORKERS == workers
    if 'TRAIN.NUM_EPOCHS' in argv:
        assert config.TRAIN.NUM_EPOCHS == 3
