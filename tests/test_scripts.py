"""The scripts/run_*.sh launchers: the same command under dash (`sh`), bash and direct execution,
from the repository root and from inside scripts/; default paths and interpreter; the loader-worker
default; the release's batch sizes and AMP; one-line errors; and a real run of each of the eight
under `sh` on generated data."""
import glob
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import paddle
import pytest

from config import get_arguments, get_config, update_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = [f"run_{mode}_{layout}_{kind}.sh" for mode in ('train', 'eval')
             for layout in ('multi', 'single') for kind in ('coarse', 'negative')]
# Variables a developer's shell may have set that would change what the launchers do.
LAUNCHER_ENV = ('PYTHON', 'DATA_FOLDER', 'ANNO_FOLDER', 'PRETRAINED', 'GPUS', 'BATCH_SIZE', 'AMP',
                'OUTPUT', 'CFG', 'NPROC', 'NUM_WORKERS', 'NNODES', 'MASTER', 'NODE_RANK')


def clean_env(**changes):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    env.update(changes)
    return env


def fake_python(path, gpu):
    """An interpreter stand-in: answers the launcher's GPU probe, then prints the argv it got."""
    path.write_text('#!/bin/sh\n'
                    'if [ "$1" = -c ]; then exit %d; fi\n'
                    'printf "%%s\\n" "$@"\n' % (0 if gpu else 1))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture()
def repo_copy(tmp_path):
    """The launchers in a stand-in repository whose default data, weights and .venv exist, so the
    defaults can be seen resolving against the repository root."""
    repo = tmp_path / 'repo'
    shutil.copytree(os.path.join(ROOT, 'scripts'), repo / 'scripts')
    (repo / 'configs').mkdir()
    shutil.copy(os.path.join(ROOT, 'configs', 'swin_small_patch4_window7_224.yaml'), repo / 'configs')
    (repo / '.venv' / 'bin').mkdir(parents=True)
    fake_python(repo / '.venv' / 'bin' / 'python', gpu=False)
    for folder in ('data/cropped_aligned', 'data/annotations/EXPR_Set', 'pretrained',
                   'output/coarse', 'output/negative'):
        (repo / folder).mkdir(parents=True)
    (repo / 'pretrained' / 'swin_small_patch4_window7_224_ms1m.pdparams').write_bytes(b'')
    for kind in ('coarse', 'negative'):
        (repo / 'output' / kind / 'best.pdparams').write_bytes(b'')
    return repo


def invocations(repo, script):
    """(argv, cwd) of every way a user starts a launcher."""
    inside = repo / 'scripts'
    path = str(inside / script)
    return [(['sh', f'scripts/{script}'], repo), (['bash', f'scripts/{script}'], repo),
            ([f'./scripts/{script}'], repo), (['sh', script], inside), (['bash', script], inside),
            ([f'./{script}'], inside), (['sh', path], repo.parent), ([path], repo.parent)]


def run_launcher(argv, cwd, env, check=True):
    out = subprocess.run(argv + ['-opts', 'TRAIN.NUM_EPOCHS', '3'], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, (argv, cwd, out.stderr)
    return out


@pytest.mark.parametrize('script', LAUNCHERS)
def test_every_shell_and_folder_gives_the_same_command(repo_copy, script):
    commands = {tuple(argv) + (str(cwd),): run_launcher(argv, cwd, clean_env()).stdout
                for argv, cwd in invocations(repo_copy, script)}
    assert len(set(commands.values())) == 1, commands
    args = next(iter(commands.values())).splitlines()
    mode, layout, kind = script[len('run_'):-len('.sh')].split('_')
    value = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith('-')}
    # Defaults resolve against the repository root, whatever the current folder.
    assert value['-data_folder'] == str(repo_copy / 'data' / 'cropped_aligned')
    assert value['-anno_folder'] == str(repo_copy / 'data' / 'annotations' / 'EXPR_Set')
    assert value['-cfg'] == str(repo_copy / 'configs' / 'swin_small_patch4_window7_224.yaml')
    expected_weights = (repo_copy / 'pretrained' / 'swin_small_patch4_window7_224_ms1m.pdparams'
                        if mode == 'train' else repo_copy / 'output' / kind / 'best.pdparams')
    assert value['-pretrained'] == str(expected_weights)
    assert value['-output'] == str(repo_copy / 'output' / (kind if mode == 'train' else f'eval-{kind}'))
    assert value['-class_type'] == kind and value['-dataset'] == 'ABAW' and value['-device'] == 'cpu'
    # The release's run_*.sh: batch 128 to train, 256 to evaluate; its negative training script
    # lost -amp to a missing line continuation, so only the coarse model trained with AMP.
    assert value['-batch_size'] == ('128' if mode == 'train' else '256')
    assert ('-amp' in args) == (mode == 'train' and kind == 'coarse')
    assert ('-eval' in args) == (mode == 'eval')
    if layout == 'multi':
        assert args[:2] == ['-m', 'paddle.distributed.launch'] and '--nproc_per_node' in args
    else:
        assert args[0].endswith('main_single_gpu.py')
    # The user's own flags come last, so they win over the launcher's.
    assert args[-3:] == ['-opts', 'TRAIN.NUM_EPOCHS', '3']


def test_user_paths_are_taken_as_given_and_amp_and_python_follow_the_environment(repo_copy, tmp_path):
    (tmp_path / 'mine' / 'faces').mkdir(parents=True)
    other = fake_python(tmp_path / 'other_python', gpu=False)
    env = clean_env(DATA_FOLDER='mine/faces', AMP='1', PYTHON=str(other), PRETRAINED='')
    args = run_launcher(['sh', str(repo_copy / 'scripts' / 'run_train_single_negative.sh')], tmp_path,
                        env).stdout.splitlines()
    assert args[args.index('-data_folder') + 1] == 'mine/faces'  # relative to where the user stands
    assert '-amp' in args and '-pretrained' not in args  # AMP=1 turns it on; empty: from scratch
    env = clean_env(AMP='0')
    args = run_launcher(['sh', str(repo_copy / 'scripts' / 'run_train_multi_coarse.sh')], tmp_path,
                        env).stdout.splitlines()
    assert '-amp' not in args


@pytest.mark.parametrize('variable, value, message', [
    ('DATA_FOLDER', 'no/such/faces', 'DATA_FOLDER no/such/faces: folder does not exist'),
    ('ANNO_FOLDER', 'no/such/annotations', 'ANNO_FOLDER no/such/annotations: folder does not exist'),
    ('PRETRAINED', 'no/such.pdparams', 'PRETRAINED no/such.pdparams: file does not exist (where to get '
                                       'it: docs/weights.md; PRETRAINED= (empty) trains from scratch)'),
    ('ANNO_FOLDER', '', 'ANNO_FOLDER is empty: training needs the annotations'),
    ('AMP', 'yes', "AMP must be 1 or 0, not 'yes'"),
])
def test_bad_settings_give_the_same_one_line_error_in_every_shell(repo_copy, variable, value, message):
    errors = set()
    for argv, cwd in invocations(repo_copy, 'run_train_multi_coarse.sh')[:2]:
        out = run_launcher(argv, cwd, clean_env(**{variable: value}), check=False)
        assert out.returncode == 2 and out.stdout == ''
        errors.add(out.stderr)
    assert errors == {f"error: {message}\n"}


@pytest.mark.parametrize('gpu', [False, True])
def test_several_machines_pass_nodes_master_and_rank_to_the_launcher(repo_copy, gpu):
    fake_python(repo_copy / '.venv' / 'bin' / 'python', gpu=gpu)
    script = str(repo_copy / 'scripts' / 'run_train_multi_negative.sh')
    one = run_launcher(['sh', script], repo_copy, clean_env()).stdout.splitlines()
    assert '--nnodes' not in one and '--master' not in one and '--rank' not in one  # one machine: as before
    args = run_launcher(['sh', script], repo_copy,
                        clean_env(NNODES='2', MASTER='10.0.0.1:29500', NODE_RANK='1')).stdout.splitlines()
    launch = args[:args.index(str(repo_copy / 'main_multi_gpu.py'))]
    value = {a: launch[i + 1] for i, a in enumerate(launch[:-1]) if a.startswith('--')}
    assert (value['--nnodes'], value['--master'], value['--rank']) == ('2', '10.0.0.1:29500', '1')
    assert ('--gpus' in value) == gpu and ('--nproc_per_node' in value) != gpu
    # Each machine's launcher logs apart, even in a shared output folder.
    assert value['--log_dir'] == str(repo_copy / 'output' / 'negative' / 'launch_logs' / 'node1')
    # Everything after the main is what one machine runs today.
    assert args[len(launch):] == one[one.index(str(repo_copy / 'main_multi_gpu.py')):]


@pytest.mark.parametrize('settings, message', [
    ({'NNODES': '2', 'NODE_RANK': '1'}, "MASTER '' must be IP:PORT of machine 0 (needed when NNODES > 1)"),
    ({'NNODES': '2', 'MASTER': '10.0.0.1'}, "MASTER '10.0.0.1' must be IP:PORT of machine 0 (needed when NNODES > 1)"),
    ({'NNODES': '2', 'MASTER': 'h:29x'}, "MASTER 'h:29x' must be IP:PORT of machine 0"),
    ({'NNODES': '2', 'MASTER': 'h:1', 'NODE_RANK': '2'}, "NODE_RANK must be 0 .. 1, not '2'"),
    ({'NNODES': 'two'}, "NNODES must be a number of machines (1 or more), not 'two'"),
])
def test_bad_machine_settings_give_one_line(repo_copy, settings, message):
    for argv, cwd in invocations(repo_copy, 'run_eval_multi_coarse.sh')[:2]:
        out = run_launcher(argv, cwd, clean_env(**settings), check=False)
        assert (out.returncode, out.stdout, out.stderr) == (2, '', f"error: {message}\n")
    out = run_launcher(['sh', str(repo_copy / 'scripts' / 'run_train_single_coarse.sh')], repo_copy,
                       clean_env(NNODES='2', MASTER='h:1'), check=False)
    assert out.returncode == 2 and 'several machines need the run_*_multi_*.sh launchers' in out.stderr


def test_evaluating_without_annotations_needs_a_video_list(repo_copy):
    argv, cwd = invocations(repo_copy, 'run_eval_multi_coarse.sh')[0]
    out = subprocess.run(argv, cwd=cwd, env=clean_env(ANNO_FOLDER=''), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith('error: ANNO_FOLDER is empty') and \
        '-video_list' in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    listed = subprocess.run(argv + ['-video_list', 'test_set.txt'], cwd=cwd, env=clean_env(ANNO_FOLDER=''),
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and '-anno_folder' not in listed.stdout.split(), listed.stderr


def test_gpu_launch_gives_each_process_loader_workers(repo_copy):
    fake_python(repo_copy / '.venv' / 'bin' / 'python', gpu=True)
    script = str(repo_copy / 'scripts' / 'run_train_single_coarse.sh')

    def workers(**env):
        args = run_launcher(['sh', script], repo_copy, clean_env(**env)).stdout.splitlines()
        return [args[i + 2] for i, a in enumerate(args) if a == '-opts' and args[i + 1] == 'DATA.NUM_WORKERS']

    assert workers() == [str(min(16, max(1, len(os.sched_getaffinity(0)) - 1)))]
    assert workers(NUM_WORKERS='5') == ['5']
    fake_python(repo_copy / '.venv' / 'bin' / 'python', gpu=False)
    assert workers() == []  # on CPU the config's DATA.NUM_WORKERS stands
    assert workers(NUM_WORKERS='3') == ['3']


@pytest.mark.parametrize('argv, workers', [
    (['-opts', 'DATA.NUM_WORKERS', '7', '-opts', 'TRAIN.NUM_EPOCHS', '3'], 7),
    (['-opts', 'DATA.NUM_WORKERS', '7', '-opts', 'DATA.NUM_WORKERS', '4'], 4),
])
def test_repeated_opts_all_apply_the_last_winning(argv, workers):
    config = update_config(get_config(), get_arguments(['-cfg', os.path.join(ROOT, 'configs', 'swin_debug.yaml')] + argv))
    assert config.DATA.NUM_WORKERS == workers
    if 'TRAIN.NUM_EPOCHS' in argv:
        assert config.TRAIN.NUM_EPOCHS == 3


def run_real(shell, script, env, cwd, *extra):
    proc = subprocess.run([shell, os.path.join(ROOT, 'scripts', script), *extra], cwd=cwd,
                          env=clean_env(PYTHON=sys.executable, NPROC='2', **env),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def written(folder):
    """Files a run wrote, without logs and timestamps (what must agree between shells)."""
    return sorted(os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, '**', '*'), recursive=True)
                  if os.path.isfile(p) and 'launch_logs' not in p and not os.path.basename(p).startswith(('log', '.run')))


@pytest.mark.slow
def test_all_eight_launchers_run_under_sh(tmp_path, tiny_cfg_file, abaw_small):
    env = {'CFG': tiny_cfg_file, 'DATA_FOLDER': abaw_small['data_folder'],
           'ANNO_FOLDER': abaw_small['anno_folder'], 'BATCH_SIZE': '8'}
    val_frames = sorted(f"{v}/{n}" for v in abaw_small['val']
                        for n in os.listdir(os.path.join(abaw_small['data_folder'], v)))
    for layout in ('single', 'multi'):
        for kind in ('coarse', 'negative'):
            train_out = tmp_path / f'train-{layout}-{kind}'
            run_real('sh', f'run_train_{layout}_{kind}.sh',
                     {**env, 'PRETRAINED': '', 'OUTPUT': str(train_out)}, tmp_path,
                     '-opts', 'TRAIN.NUM_EPOCHS', '1')
            assert {'last.pdparams', 'best.pdparams', 'history.json'} <= set(written(train_out))
            assert glob.glob(str(train_out / 'Epoch-1-Loss-*.pdparams'))
            eval_out = tmp_path / f'eval-{layout}-{kind}'
            run_real('sh', f'run_eval_{layout}_{kind}.sh',
                     {**env, 'PRETRAINED': str(train_out / 'last.pdparams'), 'OUTPUT': str(eval_out)},
                     tmp_path)
            predictions = np.load(eval_out / 'predictions.npz')
            assert list(predictions['paths']) == val_frames
            assert predictions['logits'].shape == (len(val_frames), 5 if kind == 'coarse' else 4)


@pytest.mark.slow
def test_sh_and_bash_runs_write_the_same_files_and_weights(tmp_path, tiny_cfg_file, abaw_small):
    env = {'CFG': tiny_cfg_file, 'DATA_FOLDER': abaw_small['data_folder'],
           'ANNO_FOLDER': abaw_small['anno_folder'], 'BATCH_SIZE': '8', 'PRETRAINED': ''}
    runs = {}
    for shell in ('sh', 'bash'):
        out = tmp_path / shell
        run_real(shell, 'run_train_single_coarse.sh', {**env, 'OUTPUT': str(out)}, tmp_path,
                 '-opts', 'TRAIN.NUM_EPOCHS', '1')
        runs[shell] = (written(out), paddle.load(str(out / 'last.pdparams'))['model'])
    assert runs['sh'][0] == runs['bash'][0]
    for key, value in runs['sh'][1].items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(runs['bash'][1][key]), err_msg=key)
