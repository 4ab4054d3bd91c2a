"""One preprocessing run split over processes and machines that share the output folder.

A shard is `-shard I/N` (0 <= I < N, under any scheduler: SLURM arrays, several terminals) or the
rank and world size `python -m paddle.distributed.launch` gives each process it starts
(PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM, with PADDLE_LOCAL_SIZE processes on this machine and the
GPU of each in FLAGS_selected_gpus; read from the environment rather than through
distributed.world(), which needs Paddle in a process whose detection runs on torch). Every shard
computes the same split of the whole plan, so shards agree without talking, whatever is already
finished.
"""
import collections
import hashlib
import json
import os
import re
import shutil
import time

from fileio import atomic_open

Shard = collections.namedtuple('Shard', ['index', 'count', 'launcher'])
Shard.__doc__ = """index in 0..count-1; launcher: True when started by paddle.distributed.launch."""


def parse_shard(text):
    """Shard from the text of -shard I/N; ValueError naming the flag otherwise."""
    match = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', text or '')
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"-shard {text}: expected I/N with 0 <= I < N, e.g. 0/4 ... 3/4")
    return Shard(int(match.group(1)), int(match.group(2)), False)


def launcher_shard(environ=os.environ):
    """This process's Shard when paddle.distributed.launch started several, else None."""
    count = environ.get('PADDLE_TRAINERS_NUM')
    index = environ.get('PADDLE_TRAINER_ID')
    if count is None or index is None or int(count) < 2:
        return None
    return Shard(int(index), int(count), True)


def launcher_gpu(environ=os.environ):
    """The GPU (index among the visible ones) the launcher gave this process, or None."""
    selected = environ.get('FLAGS_selected_gpus', '')
    return selected if re.fullmatch(r'\d+', selected) else None


def split_by_size(jobs, count, size_of=os.path.getsize):
    """`count` lists of (video path, outputs) jobs with about equal bytes of video each.

    Largest video first, each to the shard with the fewest bytes so far (ties: the lower shard),
    so the split depends only on the job list and file sizes: every shard computes the same one.
    """
    sized = sorted(jobs, key=lambda job: (-size_of(job[0]), job[0]))
    shards = [[] for _ in range(count)]
    totals = [0] * count
    for job in sized:
        target = min(range(count), key=lambda index: (totals[index], index))
        shards[target].append(job)
        totals[target] += size_of(job[0])
    return [sorted(shard, key=lambda job: job[0]) for shard in shards]


def _run_folder(out_dir, environ):
    # The launcher picks free ports for every run, so its endpoints name this run (with fixed
    # ports, forget_report clears what an earlier run of the same name left).
    run = hashlib.sha1((environ.get('PADDLE_MASTER', '') + environ.get('PADDLE_TRAINER_ENDPOINTS', ''))
                       .encode()).hexdigest()[:12]
    return os.path.join(out_dir, f'.shards-{run}.tmp')


def remove_old_run_folders(out_dir, environ=os.environ):
    """Delete the shard reports of earlier launcher runs (the current run's are kept)."""
    current = os.path.basename(_run_folder(out_dir, environ))
    for entry in os.listdir(out_dir):
        if entry.startswith('.shards-') and entry.endswith('.tmp') and entry != current:
            shutil.rmtree(os.path.join(out_dir, entry), ignore_errors=True)


def forget_report(out_dir, shard, environ=os.environ):
    """Remove this shard's report of an earlier run with the same endpoints; call at start."""
    try:
        os.remove(os.path.join(_run_folder(out_dir, environ), f'{shard.index}.json'))
    except FileNotFoundError:
        pass


def gather_reports(out_dir, shard, report, environ=os.environ, poll_s=2.0):
    """Publish this shard's report and wait for every shard's; returns them in shard order.

    The launcher stops all processes as soon as one exits with an error, so under it no shard
    may end before the others have finished their videos: they all end here, together.
    """
    folder = _run_folder(out_dir, environ)
    os.makedirs(folder, exist_ok=True)
    with atomic_open(os.path.join(folder, f'{shard.index}.json'), 'w', encoding='utf-8') as f:
        json.dump(report, f)
    paths = [os.path.join(folder, f'{index}.json') for index in range(shard.count)]
    while not all(os.path.isfile(path) for path in paths):
        time.sleep(poll_s)
    reports = []
    for path in paths:
        with open(path, encoding='utf-8') as f:
            reports.append(json.load(f))
    return reports
