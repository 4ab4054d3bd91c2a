"""Fault drill: kill training and preprocessing with SIGKILL, feed bad inputs, check nothing is lost.

    python scripts/fault_drill.py [--quick] [--seed N] [--kills N] [--work DIR] [--keep] [--summary FILE]

1. Training on one machine: a 2-process CPU run (`paddle.distributed.launch --nproc_per_node 2
   main_multi_gpu.py`, tiny Swin, generated data, NUM_WORKERS 0, fixed seed) runs once
   uninterrupted; then the same run is SIGKILLed (whole process group) at seeded random points,
   alternately at a random moment of training and while a checkpoint is being written, and
   restarted with `-resume auto` each time. The resumed run must end with the uninterrupted run's
   weights (sha256 logged by every rank and every checkpoint file compared tensor by tensor); after
   every kill each finished checkpoint must load and none that existed before may disappear.
2. Training on two machines: two launchers on 127.0.0.1 (`--nnodes 2`, one process each). Machine 1
   (its launcher and worker) is killed at a random step, both are restarted with `-resume auto`,
   then rank 0's worker alone is killed, and both are restarted again. After each kill every
   surviving process must end within SURVIVOR_BOUND_S, the survivor's output must hold one error
   line naming the lost rank and node and `-resume auto`, and no traceback; the end must equal 1.
3. Preprocessing: `python -m preprocess` on generated astronaut clips is killed mid-video and re-run;
   the output must equal an uninterrupted run, a finished video must not be redone and a
   half-written one must never look finished.
4. Bad inputs: every case of bad_input_cases() must end with exit code != 0 and one `error:` line naming
   the file or flag at fault, with no traceback.

Prints a table (and with --summary writes the findings as JSON) and exits 0 only when every fault
was survived and every bad input rejected clearly.
"""
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import console  # noqa: E402  (both spellings of every flag, errors as one line)

import cpu_env  # noqa: E402  (thread settings before paddle is imported)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import paddle  # noqa: E402

import engine  # noqa: E402
import labels  # noqa: E402
from demo.pattern_data import TINY_YAML, balanced_labels, make_abaw_tree  # noqa: E402
from demo.synthetic_video import write_face_clip  # noqa: E402
from fileio import DONE_MARKER, atomic_open, is_temporary  # noqa: E402

PYTHON = sys.executable
SHA_RE = re.compile(r'final weights sha256 ([0-9a-f]{64})')
RESUMED_RE = re.compile(r'Resume Training: Load model from (\S+?), w/t .*?epoch = \[(\d+)\]')


def log(message):
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Processes

STARTED = []


def start(cmd, log_path, cwd=ROOT, env=None):
    """Start cmd in a session of its own (away from the drill's terminal signals)."""
    out = open(log_path, 'wb')
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env)
    out.close()
    STARTED.append(proc)
    return proc


def stop_leftovers():
    """If the drill itself fails midway, leave no job of it running."""
    for proc in STARTED:
        if proc.poll() is None:
            kill_group(proc)


def _proc_table():
    """{pid: (parent pid, state)} of every process, read from /proc."""
    table = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(')') + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def process_tree(root):
    """root and all its live descendants."""
    table = _proc_table()
    tree, frontier = set(), {root}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (parent, state) in table.items()
                    if parent in frontier and pid not in tree and state != 'Z'}
    return tree


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_group(proc):
    """SIGKILL the whole job at one instant: the launcher and every worker.

    paddle.distributed.launch starts each worker in a session of its own (os.setsid), so killing
    the launcher's process group would leave the workers running on, orphaned. The tree is frozen
    with SIGSTOP first (so nobody forks or writes meanwhile), then killed."""
    frozen = set()
    while True:
        tree = process_tree(proc.pid) - frozen
        if not tree:
            break
        _signal(tree, signal.SIGSTOP)
        frozen |= tree
    _signal(frozen, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline:
        table = _proc_table()
        alive = [pid for pid in frozen if pid in table and table[pid][1] != 'Z']
        if not alive:
            return
        _signal(alive, signal.SIGKILL)
        time.sleep(0.05)
    raise RuntimeError(f"processes {alive} survived SIGKILL")


def wait_for(predicate, proc, timeout, poll=0.02):
    """Poll until predicate() is true (True), the process ends (False) or timeout (raises)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return bool(predicate())
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout}s waiting on {proc.args[:4]}")


def read_text(path):
    try:
        with open(path, 'r', encoding='utf-8', errors='replace') as f:
            return f.read()
    except OSError:
        return ''


# ---------------------------------------------------------------------------------------------
# Generated data

def make_training_data(root, quick):
    """Aff-Wild2-style faces and EXPR files from the generator the tests use (demo/pattern_data.py)."""
    frames = 24 if quick else 40
    train = {'vid_a': balanced_labels(frames), 'vid_b_left': balanced_labels(frames - 8, 3),
             'vid_c': [-1, -1] + balanced_labels(frames - 10, 5)}
    val = {'val_x': balanced_labels(13, 1), 'val_y_right': balanced_labels(11, 2) + [-1]}
    data_folder, anno_folder = make_abaw_tree(os.path.join(root, 'abaw'), train, val,
                                              {'vid_a': (2, 9), 'val_x': (5,)})
    cfg = os.path.join(root, 'tiny.yaml')
    with open(cfg, 'w') as f:
        f.write(TINY_YAML)
    return {'cfg': cfg, 'data_folder': data_folder, 'anno_folder': anno_folder}


def train_cmd(data, output, log_dir, epochs, extra=(), launch=None):
    """The drill's training command: 2 processes on one machine, or what `launch` says."""
    launch = launch or ['--nproc_per_node', '2', '--log_dir', log_dir]
    return [PYTHON, '-m', 'paddle.distributed.launch', *launch,
            os.path.join(ROOT, 'main_multi_gpu.py'), '-cfg', data['cfg'],
            '-data_folder', data['data_folder'], '-anno_folder', data['anno_folder'],
            '-class_type', 'coarse', '-output', output, '-device', 'cpu', '-resume', 'auto',
            '-opts', 'TRAIN.NUM_EPOCHS', str(epochs), 'DATA.NUM_WORKERS', '0', 'SEED', '7',
            'REPORT_FREQ', '1', *extra]


# ---------------------------------------------------------------------------------------------
# 1. Training

def checkpoint_files(folder):
    """{name: path} of finished checkpoints (temporaries of interrupted writes excluded)."""
    return {os.path.basename(p): p for p in glob.glob(os.path.join(folder, '*.pdparams'))
            if not is_temporary(os.path.basename(p))}


def temporaries(folder):
    return sorted(n for n in os.listdir(folder) if is_temporary(n)) if os.path.isdir(folder) else []


def load_checkpoint(path):
    try:
        state = paddle.load(path, return_numpy=True)
    except Exception as err:  # whatever a torn file makes paddle raise
        return None, f"{type(err).__name__}: {err}"
    if not isinstance(state, dict) or 'model' not in state or 'epoch' not in state:
        return None, 'not a training checkpoint dict'
    return state, None


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def rank_digests(worker_logs):
    """The final weights sha256 each worker log reports (None where missing)."""
    found = []
    for path in worker_logs:
        match = SHA_RE.search(read_text(path))
        found.append(match.group(1) if match else None)
    return found


class RankZeroLog:
    """What rank 0 logs into OUTPUT/log_0.txt from now on. Its file handler flushes every record,
    unlike the launcher's workerlog files, which lag behind (and lose their tail on SIGKILL)."""

    def __init__(self, output):
        self.path = os.path.join(output, 'log_0.txt')
        self.offset = os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def text(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self.offset)
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def has(self, marker):
        return marker in self.text()


def run_reference(data, work, epochs, timeout):
    """The uninterrupted training run whose weights every resumed run must end with."""
    output, log_dir = os.path.join(work, 'train_reference'), os.path.join(work, 'logs_reference')
    began = time.time()
    rank0 = RankZeroLog(output)
    proc = start(train_cmd(data, output, log_dir, epochs), os.path.join(work, 'train_reference.log'))
    wait_for(lambda: rank0.has('training frames'), proc, timeout, poll=0.005)
    trained_from = time.time()
    wait_for(lambda: rank0.has('final weights'), proc, timeout, poll=0.005)
    trained_until = time.time()
    code = proc.wait(timeout=timeout)
    digests = rank_digests([os.path.join(log_dir, f'workerlog.{rank}') for rank in (0, 1)])
    if code != 0 or None in digests or digests[0] != digests[1]:
        raise RuntimeError(f"uninterrupted training failed (exit {code}, digests {digests}); see {log_dir}")
    steps = int(re.search(r'Step\[\d+/(\d+)\]', rank0.text()).group(1))
    step_seconds = (trained_until - trained_from) / (epochs * steps)
    log(f"uninterrupted run: {time.time() - began:.1f}s ({steps} steps per epoch, {step_seconds:.2f}s per step), "
        f"sha256 {digests[0][:16]}")
    return {'output': output, 'sha': digests[0], 'steps': steps, 'step_seconds': step_seconds}


def kill_at_random_moment(proc, rank0, rng, first_epoch, epochs, kills_left, ref, timeout, kill=None):
    """Kill at a random step of a random epoch still to train, a random part of a step after it
    is logged (REPORT_FREQ 1); `kill` (default: the whole job) does it. -> (fault injected?, how)."""
    # Not epoch 1 (so there is something to resume) nor the last epoch (a kill during its final
    # writes could leave nothing for the next kill), when there is a choice; and within the next
    # share of the remaining epochs, so the kills spread over the whole run.
    low = max(first_epoch, min(2, epochs - 1))
    high = max(low, epochs - 1)
    share = max(1, (high - low + 1) // max(1, kills_left))
    epoch = rng.randint(low, min(high, low + share - 1))
    step = rng.randint(1, ref['steps'])
    marker = f'Epoch[{epoch:03d}/{epochs:03d}], Step[{step - 1:04d}/'  # the release's line numbers steps from 0
    if not wait_for(lambda: rank0.has(marker), proc, timeout, poll=0.005):
        return False, f'finished before epoch {epoch} step {step}'
    delay = rng.uniform(0.0, ref['step_seconds'])
    time.sleep(delay)
    if proc.poll() is not None:
        return False, f'finished within {delay:.2f}s of epoch {epoch} step {step}'
    (kill or (lambda: kill_group(proc)))()
    return True, f"{delay:.2f}s after epoch {epoch} step {step}/{ref['steps']} was logged"


def kill_during_checkpoint_write(proc, output, rank0, rng, remaining_epochs, timeout):
    """Kill the moment a checkpoint's temporary file appears (the n-th one seen, n random 1..3).
    Every epoch writes at least two (Epoch-E and last), which bounds n. -> (injected, how, torn)"""
    wanted = rng.randint(1, max(1, min(3, 2 * remaining_epochs)))
    if not wait_for(lambda: rank0.has('training frames'), proc, timeout, poll=0.005):
        return False, 'finished before training started', False
    # Known in advance, so the writer can be frozen within microseconds of the temporary appearing.
    job = process_tree(proc.pid)
    before = set(temporaries(output))
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        fresh = [n for n in temporaries(output) if n.endswith('.pdparams') and n not in before and n not in seen]
        if fresh:
            seen.extend(fresh)
            if len(seen) >= wanted:
                _signal(job, signal.SIGSTOP)
                torn = [n for n in fresh if os.path.exists(os.path.join(output, n))]
                kill_group(proc)
                return True, (f"during write of {fresh[0]}" if torn else
                              f"just after write of {fresh[0]} (rename won the race)"), bool(torn)
        time.sleep(0.0005)
    if proc.poll() is None:
        raise TimeoutError('no checkpoint write seen')
    return False, 'finished before the chosen checkpoint write', False


def check_after_kill(output, known):
    """Every finished checkpoint loads; every one seen before is still there. -> (corrupt, lost, max epoch)."""
    corrupt, epochs = [], []
    present = checkpoint_files(output)
    for name, path in sorted(present.items()):
        state, error = load_checkpoint(path)
        if state is None:
            corrupt.append(f"{name}: {error}")
        else:
            epochs.append(int(state['epoch']))
    lost = sorted(set(known) - set(present))
    known.update(present)
    return corrupt, lost, max(epochs) if epochs else 0


def new_tally():
    """The counts of a kill-and-resume drill."""
    return {'faults': 0, 'mid_write': 0, 'restarts': 0, 'resumed': 0, 'scratch': 0, 'resume_ok': 0,
            'corrupt': [], 'lost': [], 'events': []}


def inject_training_fault(proc, output, rank0, rng, tally, expected_epoch, ref, args):
    """This attempt's fault: alternately a kill at a random moment and one mid-checkpoint-write,
    until args.kills were injected. -> (injected, how, torn)"""
    if tally['faults'] >= args.kills:
        return False, 'left to finish', False
    if tally['faults'] % 2 == 0:
        injected, how = kill_at_random_moment(proc, rank0, rng, expected_epoch + 1, args.epochs,
                                              (args.kills - tally['faults'] + 1) // 2, ref, args.timeout)
        return injected, how, False
    return kill_during_checkpoint_write(proc, output, rank0, rng, args.epochs - expected_epoch, args.timeout)


def judge_resume(tally, attempt, text, expected_epoch):
    """-resume auto must pick the newest finished checkpoint (never a temporary), or start from
    scratch when the kill came before the first one."""
    tally['restarts'] += 1
    match = RESUMED_RE.search(text)
    if expected_epoch == 0:
        picked_ok = match is None and 'starting from scratch' in text
        tally['scratch'] += picked_ok
    else:
        tally['resumed'] += match is not None
        picked_ok = (match is not None and not is_temporary(os.path.basename(match.group(1)))
                     and int(match.group(2)) == expected_epoch)
    tally['resume_ok'] += picked_ok
    if not picked_ok:
        tally['events'].append(f"attempt {attempt}: expected to resume at epoch {expected_epoch}, "
                               f"log says {match.group(0) if match else 'no resume'}")


def record_kill(tally, output, known, how, torn, label='kill'):
    tally['faults'] += 1
    tally['mid_write'] += torn
    corrupt, lost, newest = check_after_kill(output, known)
    tally['corrupt'] += corrupt
    tally['lost'] += lost
    log(f"{label} {tally['faults']}: SIGKILL {how}; newest finished checkpoint epoch {newest}; "
        f"{len(temporaries(output))} temporaries left")


def compare_checkpoints(tally, ref, output):
    """Every checkpoint of the uninterrupted run exists here with the same weights and epoch."""
    ref_files, drill_files = checkpoint_files(ref['output']), checkpoint_files(output)
    tally['lost'] += [f"{n} (written by the uninterrupted run)" for n in sorted(set(ref_files) - set(drill_files))]
    extra = sorted(set(drill_files) - set(ref_files))
    if extra:
        tally['events'].append(f"checkpoints the uninterrupted run does not have: {extra}")
    identical = 0
    for name in sorted(set(ref_files) & set(drill_files)):
        a, _ = load_checkpoint(ref_files[name])
        b, error = load_checkpoint(drill_files[name])
        if b is None:
            tally['corrupt'].append(f"{name}: {error}")
        elif same_weights(a['model'], b['model']) and a['epoch'] == b['epoch']:
            identical += 1
        else:
            tally['events'].append(f"{name}: weights differ from the uninterrupted run's")
    tally['identical'], tally['compared'] = identical, len(ref_files)


def compare_with_reference(tally, ref, output, worker_logs):
    """The finished drill run against the uninterrupted one: weights (digests logged by every rank
    and last.pdparams), every checkpoint, history.json and best.json."""
    digests = rank_digests(worker_logs)
    tally['sha_equal'] = all(d == ref['sha'] for d in digests)
    compare_checkpoints(tally, ref, output)
    last = [load_checkpoint(os.path.join(folder, 'last.pdparams'))[0] for folder in (ref['output'], output)]
    tally['weights_equal'] = bool(tally['sha_equal'] and last[1] is not None
                                  and same_weights(last[0]['model'], last[1]['model']))
    history = [json.load(open(os.path.join(d, 'history.json'))) for d in (ref['output'], output)]
    fields = ('epoch', 'train_loss', 'val_macro_f1', 'best_macro_f1')
    if [[h.get(k) for k in fields] for h in history[0]] != [[h.get(k) for k in fields] for h in history[1]]:
        tally['lost'].append('history.json: epochs/losses differ from the uninterrupted run '
                             f"(epochs {[h['epoch'] for h in history[1]]})")
    if read_text(os.path.join(ref['output'], 'best.json')) != read_text(os.path.join(output, 'best.json')):
        tally['lost'].append('best.json differs from the uninterrupted run')
    tally['temporaries'] = temporaries(output)


def drill_training(data, work, args, rng, ref):
    """Kill a one-machine 2-process run (args.kills times) and resume it; the tally of what survived."""
    output = os.path.join(work, 'train_drill')
    tally, known = new_tally(), set()
    for attempt in range(1, args.kills + 11):
        log_dir = os.path.join(work, f'logs_drill_{attempt}')
        expected_epoch = check_after_kill(output, known)[2] if os.path.isdir(output) else 0
        rank0 = RankZeroLog(output)
        proc = start(train_cmd(data, output, log_dir, args.epochs), os.path.join(work, f'train_drill_{attempt}.log'))
        injected, how, torn = inject_training_fault(proc, output, rank0, rng, tally, expected_epoch, ref, args)
        code = None if injected else proc.wait(timeout=args.timeout)
        if attempt > 1:
            judge_resume(tally, attempt, rank0.text(), expected_epoch)
        if injected:
            record_kill(tally, output, known, how, torn)
            continue
        log(f"attempt {attempt}: {how}, exit {code}")
        if code != 0:
            raise RuntimeError(f"resumed training failed (exit {code}); see {log_dir}")
        compare_with_reference(tally, ref, output, [os.path.join(log_dir, f'workerlog.{r}') for r in (0, 1)])
        return tally
    raise RuntimeError('training never completed')


# ---------------------------------------------------------------------------------------------
# 2. Two machines (two launchers on 127.0.0.1, one process each)

# Rank 0 must see a lost peer within PEER_TIMEOUT (20 s) at worst and usually within a second;
# the launchers then stop within a few seconds.
SURVIVOR_BOUND_S = 40
NODE_FAULTS = ('node 1', 'worker of rank 0')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def node_launch(port, node, log_dir):
    return ['--nnodes', '2', '--master', f'127.0.0.1:{port}', '--rank', str(node), '--nproc_per_node', '1',
            '--log_dir', os.path.join(log_dir, f'node{node}')]


def start_nodes(data, output, log_dir, epochs, work, tag):
    """Both machines' launchers of one attempt."""
    port = free_port()
    return [start(train_cmd(data, output, log_dir, epochs, launch=node_launch(port, node, log_dir)),
                  os.path.join(work, f'{tag}_node{node}.log'), env=shared_machine_env())
            for node in (0, 1)]


def shared_machine_env():
    """Two "machines" on this one share its cores: each process gets the threads of one
    2-process launch, so that the weights can equal the one-machine run's."""
    return {**os.environ, **cpu_env.thread_variables(2)}


def worker_of(launcher):
    """The training process a launcher started."""
    return next(pid for pid in process_tree(launcher.pid) - {launcher.pid}
                if 'main_multi_gpu.py' in read_text(f'/proc/{pid}/cmdline'))


def wait_for_survivors(pids, timeout):
    """Seconds until every process in `pids` has ended (None: some still run after `timeout`)."""
    began = time.time()
    while time.time() - began < timeout:
        table = _proc_table()
        if not [pid for pid in pids if pid in table and table[pid][1] != 'Z']:
            return time.time() - began
        time.sleep(0.05)
    return None


def judge_survivor_log(path, lost_rank, lost_node):
    """The surviving rank's own output: one error line naming the lost rank, node and -resume auto,
    and no traceback or abort. -> problems."""
    text = read_text(path)
    errors = [line for line in text.splitlines() if line.startswith('error')]
    problems = []
    if len(errors) != 1 or f"rank {lost_rank} on node {lost_node}" not in errors[0] or '-resume auto' not in errors[0]:
        problems.append(f"{path}: expected one error line naming rank {lost_rank} on node {lost_node} and "
                        f"-resume auto, found {errors}")
    if 'Traceback' in text or 'FatalError' in text:
        problems.append(f"{path}: traceback or abort after the kill")
    return problems, errors[0] if errors else ''


def kill_one_node_part(fault, launchers, rank0, rng, expected_epoch, ref, args, log_dir):
    """SIGKILL machine 1 (launcher and worker, as a machine going down) or rank 0's worker alone, at
    a random step, and time the survivors' end. -> dict(how, seconds, problems, error line)"""
    lost, survivor = (1, 0) if fault == 'node 1' else (0, 1)
    seen = {}

    def kill():
        seen['all'] = process_tree(launchers[0].pid) | process_tree(launchers[1].pid)
        if fault == 'node 1':
            seen['victims'] = process_tree(launchers[1].pid)
            kill_group(launchers[1])
        else:
            seen['victims'] = {worker_of(launchers[0])}
            os.kill(min(seen['victims']), signal.SIGKILL)

    injected, how = kill_at_random_moment(launchers[0], rank0, rng, expected_epoch + 1, args.epochs, 1, ref,
                                          args.timeout, kill=kill)
    if not injected:
        raise RuntimeError(f"two-machine drill: {fault} could not be killed ({how})")
    seconds = wait_for_survivors(seen['all'] - seen['victims'], SURVIVOR_BOUND_S)
    for launcher in launchers:
        if launcher.poll() is None:
            kill_group(launcher)
        launcher.wait()
    problems, line = judge_survivor_log(os.path.join(log_dir, f'node{survivor}', 'workerlog.0'), lost, lost)
    if seconds is None:
        problems.append(f"{fault}: surviving processes still ran {SURVIVOR_BOUND_S}s after the kill")
    return {'fault': fault, 'how': how, 'seconds': seconds, 'problems': problems, 'error_line': line}


def drill_nodes(data, work, args, rng, ref):
    """Two machines on one: kill machine 1, resume both; kill rank 0's worker, resume both. Every
    survivor must end within SURVIVOR_BOUND_S with one error line, no checkpoint may be torn, and
    the resumed run must end with the uninterrupted run's weights (the same 2 ranks)."""
    output = os.path.join(work, 'nodes_drill')
    tally, known, kills = new_tally(), set(), []
    for attempt, fault in enumerate(NODE_FAULTS + (None,), start=1):
        log_dir = os.path.join(work, f'logs_nodes_{attempt}')
        expected_epoch = check_after_kill(output, known)[2] if os.path.isdir(output) else 0
        rank0 = RankZeroLog(output)
        launchers = start_nodes(data, output, log_dir, args.epochs, work, f'nodes_{attempt}')
        if fault is not None:
            kill = kill_one_node_part(fault, launchers, rank0, rng, expected_epoch, ref, args, log_dir)
            tally['events'] += kill['problems']
            if fault == 'node 1' and temporaries(output):  # rank 0 lived: its writes must have finished
                tally['events'].append(f"{fault}: rank 0 left temporaries {temporaries(output)}")
            kills.append(kill)
            log(f"two machines, kill {attempt}: {fault} {kill['how']}; survivors ended after "
                f"{kill['seconds'] if kill['seconds'] is None else round(kill['seconds'], 1)}s: {kill['error_line']}")
        else:
            codes = [launcher.wait(timeout=args.timeout) for launcher in launchers]
            if codes != [0, 0]:
                raise RuntimeError(f"two-machine resumed training failed (exits {codes}); see {log_dir}")
        if attempt > 1:
            judge_resume(tally, attempt, rank0.text(), expected_epoch)
        if fault is not None:
            record_kill(tally, output, known, kill['how'], False, label='two-machine kill')
    compare_with_reference(tally, ref, output, [os.path.join(log_dir, f'node{n}', 'workerlog.0') for n in (0, 1)])
    tally['kills'] = kills
    return tally


# ---------------------------------------------------------------------------------------------
# 3. Preprocessing

def jpgs(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith('.jpg'))


def make_clips(folder, quick):
    os.makedirs(folder, exist_ok=True)
    # Small frames keep MTCNN fast; the face still spans ~90 pixels.
    size = dict(width=192, height=144)
    write_face_clip(os.path.join(folder, 'clip_a.mp4'), [i % 5 != 3 for i in range(8 if quick else 12)], **size)
    if quick:
        return ['clip_a']
    write_face_clip(os.path.join(folder, 'clip_b.mp4'), [i % 4 != 1 for i in range(12)], **size)
    return ['clip_a', 'clip_b']


def preprocess_cmd(videos, out):
    return [PYTHON, '-m', 'preprocess', videos, out, '-workers', '0', '-detect_batch', '1']


def check_preprocess_outputs(out, reference):
    """-> problems: a non-temporary folder without marker, or whose files differ from the reference."""
    problems = []
    for name in sorted(os.listdir(out)):
        if is_temporary(name):
            continue
        folder = os.path.join(out, name)
        if not os.path.isfile(os.path.join(folder, DONE_MARKER)):
            problems.append(f"{name}: looks finished but has no .done marker")
            continue
        ref_folder = os.path.join(reference, name)
        if sorted(os.listdir(folder)) != sorted(os.listdir(ref_folder)):
            problems.append(f"{name}: files differ from the uninterrupted run's")
            continue
        for image in jpgs(folder):
            path = os.path.join(folder, image)
            if cv2.imread(path) is None:
                problems.append(f"{name}/{image}: unreadable")
            elif open(path, 'rb').read() != open(os.path.join(ref_folder, image), 'rb').read():
                same = np.array_equal(cv2.imread(path), cv2.imread(os.path.join(ref_folder, image)))
                if not same:
                    problems.append(f"{name}/{image}: differs from the uninterrupted run's")
        for extra in ('detections.csv',):
            if read_text(os.path.join(folder, extra)) != read_text(os.path.join(ref_folder, extra)):
                problems.append(f"{name}/{extra}: differs from the uninterrupted run's")
    return problems


def start_preprocess_reference(work, quick):
    """Generate the clips and start the uninterrupted preprocess run (it overlaps the training drill)."""
    videos = os.path.join(work, 'videos')
    names = make_clips(videos, quick)
    reference = os.path.join(work, 'faces_reference')
    proc = start(preprocess_cmd(videos, reference), os.path.join(work, 'preprocess_reference.log'))
    return {'videos': videos, 'names': names, 'reference': reference, 'proc': proc}


def drill_preprocess(work, args, rng, started):
    """Kill and resume preprocessing; returns the table rows of what survived."""
    videos, names, reference = started['videos'], started['names'], started['reference']
    if started['proc'].wait(timeout=args.timeout) != 0:
        raise RuntimeError(f"uninterrupted preprocess failed; see {work}/preprocess_reference.log")
    face_counts = {n: len(jpgs(os.path.join(reference, n))) for n in names}
    if min(face_counts.values()) < 2:
        raise RuntimeError(f"MTCNN found too few faces in the generated clips ({face_counts}) to kill mid-video")
    out = os.path.join(work, 'faces_drill')
    result = {'faults': 0, 'problems': [], 'redone_finished': False}
    # Kill mid-way through the first video, then (full drill) mid-way through the second.
    targets = names[:1] if args.quick else names
    for attempt, name in enumerate(targets, start=1):
        partial = os.path.join(out, f'.{name}.tmp-partial')
        threshold = rng.randint(1, face_counts[name] - 1)
        proc = start(preprocess_cmd(videos, out), os.path.join(work, f'preprocess_drill_{attempt}.log'))
        reached = wait_for(lambda: os.path.isdir(partial) and len(jpgs(partial)) >= threshold, proc,
                           args.timeout, poll=0.005)
        if not reached or proc.poll() is not None:
            result['problems'].append(f"{name}: finished before the kill")
            proc.wait()
            continue
        kill_group(proc)
        result['faults'] += 1
        written = len(jpgs(partial)) if os.path.isdir(partial) else 0
        log(f"preprocess kill {attempt}: SIGKILL in {name} after {written}/{face_counts[name]} face images")
        if os.path.exists(os.path.join(out, name)):
            result['problems'].append(f"{name}: killed mid-video but its output folder exists")
        result['problems'] += check_preprocess_outputs(out, reference)
    finished_marker = os.path.join(out, names[0], DONE_MARKER)
    before = os.stat(finished_marker).st_mtime_ns if os.path.exists(finished_marker) else None
    proc = start(preprocess_cmd(videos, out), os.path.join(work, 'preprocess_drill_final.log'))
    code = proc.wait(timeout=args.timeout)
    if code != 0:
        result['problems'].append(f"re-run exited {code}")
    if before is not None and os.stat(finished_marker).st_mtime_ns != before:
        result['redone_finished'] = True
        result['problems'].append(f"{names[0]}: finished before the kill but redone")
    result['problems'] += check_preprocess_outputs(out, reference)
    listing = sorted(os.listdir(out))
    if listing != sorted(names):
        result['problems'].append(f"output folder holds {listing}, expected {sorted(names)}")
    result['images'] = sum(face_counts.values())
    return result


# ---------------------------------------------------------------------------------------------
# 4. Bad inputs

def single_cmd(data, output, *extra, cfg=None, class_type='coarse'):
    cmd = [PYTHON, os.path.join(ROOT, 'main_single_gpu.py'), '-cfg', cfg or data['cfg'],
           '-data_folder', data['data_folder'], '-anno_folder', data['anno_folder'],
           '-output', output, '-device', 'cpu']
    if class_type:
        cmd += ['-class_type', class_type]
    return cmd + list(extra)


def copy_tree(data, root):
    """A private copy of the generated data that a case may damage."""
    shutil.copytree(os.path.dirname(data['data_folder']), root)
    return {**data, 'data_folder': os.path.join(root, 'aligned'), 'anno_folder': os.path.join(root, 'annotations')}


def bad_input_cases(data, work, reference_checkpoint, quick):
    """[(name, command, text the error must contain)] plus the skip-switch case, set up on disk."""
    bad = os.path.join(work, 'bad')
    os.makedirs(bad, exist_ok=True)
    one_epoch = ['-opts', 'TRAIN.NUM_EPOCHS', '1']
    cases = []

    corrupt = copy_tree(data, os.path.join(bad, 'corrupt_jpeg'))
    victim = os.path.join(corrupt['data_folder'], 'vid_a', '00004.jpg')
    with open(victim, 'rb') as f:
        head = f.read()
    with open(victim, 'wb') as f:
        f.write(head[:len(head) // 3])  # truncated mid-scan
    cases.append(('truncated JPEG in the data', single_cmd(corrupt, os.path.join(bad, 'o1'), *one_epoch),
                  'vid_a/00004.jpg'))
    cases.append(('truncated JPEG, DATA.SKIP_BAD_IMAGES True',
                  single_cmd(corrupt, os.path.join(bad, 'o2'), '-opts', 'TRAIN.NUM_EPOCHS', '1',
                             'DATA.SKIP_BAD_IMAGES', 'True'), 'SKIP'))
    cases.append(('missing data folder', single_cmd({**data, 'data_folder': os.path.join(bad, 'no_faces')},
                                                    os.path.join(bad, 'o3'), *one_epoch), 'no_faces'))
    cases.append(('missing annotation folder',
                  single_cmd({**data, 'anno_folder': os.path.join(bad, 'no_annotations')},
                             os.path.join(bad, 'o4'), *one_epoch), 'no_annotations'))
    empty = copy_tree(data, os.path.join(bad, 'empty_anno'))
    open(os.path.join(empty['anno_folder'], 'Train_Set', 'vid_c.txt'), 'w').close()
    cases.append(('empty annotation file', single_cmd(empty, os.path.join(bad, 'o5'), *one_epoch),
                  'Train_Set/vid_c.txt'))
    malformed = copy_tree(data, os.path.join(bad, 'malformed_anno'))
    path = os.path.join(malformed['anno_folder'], 'Validation_Set', 'val_x.txt')
    lines = open(path).read().splitlines()
    lines[4] = 'happy'
    open(path, 'w').write('\n'.join(lines) + '\n')
    cases.append(('malformed annotation file', single_cmd(malformed, os.path.join(bad, 'o6'), *one_epoch),
                  'Validation_Set/val_x.txt:5'))
    cases.append(('checkpoint class count != -class_type',
                  single_cmd(data, os.path.join(bad, 'o7'), '-eval', '-pretrained', reference_checkpoint,
                             class_type='negative'), reference_checkpoint))
    torn = os.path.join(bad, 'torn.pdparams')
    with open(reference_checkpoint, 'rb') as f:
        content = f.read()
    with open(torn, 'wb') as f:
        f.write(content[:len(content) // 2])
    cases.append(('truncated checkpoint file', single_cmd(data, os.path.join(bad, 'o8'), '-eval',
                                                          '-pretrained', torn), 'torn.pdparams'))
    cases.append(('config file that does not exist',
                  single_cmd(data, os.path.join(bad, 'o9'), cfg=os.path.join(bad, 'nope.yaml')), 'nope.yaml'))
    cases.append(('config key that does not exist',
                  single_cmd(data, os.path.join(bad, 'o10'), '-opts', 'TRAIN.NO_SUCH_KEY', '1'), 'NO_SUCH_KEY'))
    blocker = os.path.join(bad, 'a_file')
    open(blocker, 'w').write('not a folder\n')
    cases.append(('output folder that cannot be written',
                  single_cmd(data, os.path.join(blocker, 'out'), *one_epoch), os.path.join(blocker, 'out')))
    cases.append(('unknown -class_type', single_cmd(data, os.path.join(bad, 'o12'), class_type='fine'), 'fine'))

    videos = os.path.join(bad, 'videos')
    os.makedirs(videos)
    with open(os.path.join(videos, 'broken.mp4'), 'wb') as f:
        f.write(b'\x00\x00\x00\x18ftypmp42' + bytes(range(256)) * 8)
    cases.append(('undecodable video (preprocess)',
                  [PYTHON, '-m', 'preprocess', videos, os.path.join(bad, 'faces'), '-workers', '0'], 'broken.mp4'))

    coarse_npz, negative_npz = write_prediction_files(data, bad)
    cases.append(('predictions of the wrong model (smooth_predict)',
                  [PYTHON, os.path.join(ROOT, 'smooth_predict.py'), '-coarse', negative_npz,
                   '-negative', coarse_npz, '-output', os.path.join(bad, 'smoothed')], negative_npz))
    if quick:
        # Still one of each kind of check (data, annotation, checkpoint, config, output, video,
        # predictions); the full drill runs them all.
        keep = {'truncated JPEG in the data', 'truncated JPEG, DATA.SKIP_BAD_IMAGES True',
                'malformed annotation file', 'checkpoint class count != -class_type',
                'config key that does not exist', 'output folder that cannot be written',
                'undecodable video (preprocess)', 'predictions of the wrong model (smooth_predict)'}
        cases = [c for c in cases if c[0] in keep]
    return cases


def write_prediction_files(data, folder):
    """predictions.npz of a coarse and a negative model over the validation frames, written by the
    engine's own writer (logits random: only the files' model identity matters here)."""
    rng = np.random.default_rng(0)
    paths = sorted(f"{v}/{n}" for v in os.listdir(data['data_folder']) if v.startswith('val_')
                   for n in os.listdir(os.path.join(data['data_folder'], v)))
    written = []
    for kind in ('coarse', 'negative'):
        out = os.path.join(folder, f'pred_{kind}')
        os.makedirs(out)
        names = labels.CLASS_NAMES[kind]
        engine.write_predictions(out, {'paths': paths, 'logits': rng.normal(size=(len(paths), len(names))),
                                       'labels': np.full(len(paths), -1)}, names, kind)
        written.append(os.path.join(out, 'predictions.npz'))
    return written


def judge(name, proc, expected):
    """-> (clear?, one-line summary)."""
    err, out = proc.stderr, proc.stdout
    if 'SKIP_BAD_IMAGES' in name:
        ok = proc.returncode == 0 and 'skipped 1 corrupt images' in out and 'Traceback' not in err
        return ok, f"exit {proc.returncode}; " + (
            next((l.split('] ', 1)[-1] for l in out.splitlines() if 'corrupt images' in l), 'no skip report'))
    lines = [l for l in err.splitlines() if l.startswith(('error', 'failed:'))]
    ok = (proc.returncode != 0 and 'Traceback' not in err + out and len(lines) == 1
          and expected in lines[0])
    shown = lines[0] if len(lines) == 1 else f"{len(lines)} error lines; stderr tail: {err.strip()[-300:]}"
    return ok, f"exit {proc.returncode}; {shown}"


def drill_bad_inputs(data, work, reference_checkpoint, args):
    """Run every bad-input case; returns [(name, clear)]: clear = one `error:` line naming it."""

    def check(case):
        name, cmd, expected = case
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
        ok, summary = judge(name, proc, expected)
        log(f"bad input: {name}: {'clear' if ok else 'NOT CLEAR'}: {summary}")
        return name, ok, summary

    # Two at a time: each case is mostly interpreter and Paddle start-up.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(check, bad_input_cases(data, work, reference_checkpoint, args.quick)))


# ---------------------------------------------------------------------------------------------

def table(rows):
    width = max(len(k) for k, _ in rows)
    lines = ['+' + '-' * (width + 2) + '+' + '-' * 14 + '+']
    for key, value in rows:
        lines.append(f"| {key:<{width}} | {value:>12} |")
    lines.append(lines[0])
    return '\n'.join(lines)


def parse_args(argv):
    parser = console.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='short form for the tests: 2 kills, fewer epochs, '
                        'one bad input of each kind')
    parser.add_argument('--seed', type=int, default=0, help='seed of the kill points')
    parser.add_argument('--kills', type=int, default=None, help='one-machine training kills (default 6, --quick 2)')
    parser.add_argument('--epochs', type=int, default=None, help='training epochs (default 10, --quick 5)')
    parser.add_argument('--work', default=None, help='working folder (default: a new temporary one)')
    parser.add_argument('--keep', action='store_true', help='keep the working folder')
    parser.add_argument('--summary', default=None, help='write the results to this JSON file')
    parser.add_argument('--timeout', type=float, default=600, help='seconds any one run may take')
    args = parser.parse_args(argv)
    args.kills = args.kills if args.kills is not None else (2 if args.quick else 6)
    args.epochs = args.epochs if args.epochs is not None else (5 if args.quick else 10)
    return args


def run_drills(work, args):
    """Every part of the drill. -> (training, two machines, preprocessing, bad inputs)."""
    rng = random.Random(args.seed)
    data = make_training_data(os.path.join(work, 'data'), args.quick)
    # The preprocessing drill runs beside the training drills: all time their kills by progress
    # (log lines, files written), not by the clock, so sharing the cores changes no outcome.
    with ThreadPoolExecutor(max_workers=1) as pool:
        prep_future = pool.submit(drill_preprocess, work, args, random.Random(args.seed + 1000),
                                  start_preprocess_reference(work, args.quick))
        ref = run_reference(data, work, args.epochs, args.timeout)
        train = drill_training(data, work, args, rng, ref)
        nodes = drill_nodes(data, work, args, rng, ref)
        prep = prep_future.result()
    bad = drill_bad_inputs(data, work, os.path.join(ref['output'], 'last.pdparams'), args)
    return train, nodes, prep, bad


def verdict(train, nodes, prep, bad, args):
    """The drill's findings in one dict (the JSON summary); 'passed' only when everything held."""
    clear = sum(ok for _, ok, _ in bad)
    lost_or_corrupt = sum(len(t['corrupt']) + len(t['lost']) for t in (train, nodes)) + len(prep['problems'])
    passed = (train['faults'] >= args.kills and nodes['faults'] == len(NODE_FAULTS)
              and all(t['weights_equal'] and not t['events'] and t['resume_ok'] == t['restarts']
                      for t in (train, nodes))
              and train['resumed'] >= 1 and lost_or_corrupt == 0 and prep['faults'] >= 1 and clear == len(bad))
    keys = ('faults', 'mid_write', 'restarts', 'resumed', 'scratch', 'resume_ok', 'weights_equal',
            'identical', 'compared', 'corrupt', 'lost', 'events', 'temporaries')
    return {
        'passed': bool(passed), 'seed': args.seed, 'epochs': args.epochs,
        'training': {k: train[k] for k in keys},
        'two_machines': {**{k: nodes[k] for k in keys}, 'kills': nodes['kills'],
                         'survivor_bound_s': SURVIVOR_BOUND_S},
        'preprocess': {'faults': prep['faults'], 'problems': prep['problems']},
        'files_lost_or_corrupt': lost_or_corrupt,
        'bad_inputs': [{'name': name, 'clear': bool(ok), 'summary': summary} for name, ok, summary in bad],
    }


def report(summary):
    """Log the problems, print the table and each bad input's line."""
    train, nodes, prep = summary['training'], summary['two_machines'], summary['preprocess']
    for event in train['events'] + nodes['events'] + prep['problems']:
        log(f"problem: {event}")
    for item in train['corrupt'] + train['lost'] + nodes['corrupt'] + nodes['lost']:
        log(f"lost or corrupt: {item}")
    if train['temporaries']:
        log(f"note: {len(train['temporaries'])} temporary file(s) of killed writes left in the output "
            f"folder, ignored by -resume auto: {', '.join(train['temporaries'])}")
    clear = sum(b['clear'] for b in summary['bad_inputs'])
    ended = [k['seconds'] for k in nodes['kills'] if k['seconds'] is not None]
    rows = [
        ('faults injected (SIGKILL)', f"{train['faults'] + nodes['faults'] + prep['faults']}"),
        ('  training kills, one machine', f"{train['faults']}"),
        ('    of which mid-checkpoint-write', f"{train['mid_write']}"),
        ('  training kills, two machines', f"{nodes['faults']}"),
        ('  preprocess kills (mid-video)', f"{prep['faults']}"),
        ('restarts after a kill (-resume auto)', f"{train['restarts'] + nodes['restarts']}"),
        ('  runs that resumed from a checkpoint', f"{train['resumed'] + nodes['resumed']}"),
        ('  started over (killed before epoch 1)', f"{train['scratch'] + nodes['scratch']}"),
        ('  picked the newest finished checkpoint',
         f"{train['resume_ok'] + nodes['resume_ok']}/{train['restarts'] + nodes['restarts']}"),
        ('survivors ended, slowest (s)', f"{max(ended):.1f}" if ended else 'NO'),
        ('final weights equal uninterrupted',
         'yes' if train['weights_equal'] and nodes['weights_equal'] else 'NO'),
        ('checkpoints equal uninterrupted', f"{train['identical']}/{train['compared']}"),
        ('preprocess equal uninterrupted', 'yes' if not prep['problems'] else 'NO'),
        ('files lost or corrupt', f"{summary['files_lost_or_corrupt']}"),
        ('bad inputs with a clear error', f"{clear}/{len(summary['bad_inputs'])}"),
        ('result', 'PASS' if summary['passed'] else 'FAIL'),
    ]
    print()
    print(table(rows))
    for kill in nodes['kills']:
        print(f"  two machines, {kill['fault']} killed: survivors ended after "
              f"{'-' if kill['seconds'] is None else round(kill['seconds'], 1)}s; {kill['error_line']}")
    for bad in summary['bad_inputs']:
        print(f"  [{'ok' if bad['clear'] else 'FAIL'}] {bad['name']}: {bad['summary']}")


def main(argv=None):
    """Run the drill; exit code 0 only when every fault was survived and every bad input rejected clearly."""
    args = parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix='fault_drill.')
    os.makedirs(work, exist_ok=True)
    log(f"working folder {work}; seed {args.seed}; {args.kills} training kills over {args.epochs} epochs")
    began = time.time()
    try:
        summary = verdict(*run_drills(work, args), args)
    finally:
        stop_leftovers()
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    summary['seconds'] = round(time.time() - began, 1)
    report(summary)
    if args.summary:
        with atomic_open(args.summary, 'w', encoding='utf-8') as f:
            json.dump(summary, f, indent=1)
    print(f"drill took {summary['seconds']:.0f}s", flush=True)
    return 0 if summary['passed'] else 1


if __name__ == '__main__':
    sys.exit(console.run_command(main))
