"""Does each setting cpu_env.py applies help on this CPU? A/B of every setting, same run.

    python benchmarks/bench_cpu_env.py [--rounds N] [--batch 8] [--settings NAME ...]

For each setting, two worker processes of bench_swin.py run the same Swin-S contender (eager
inference and the eager training step; Paddle's matmul rate is measured once both are ready),
one with cpu_env's value and one with the library's default, timed alternately in rounds; the
figure is the median of the per-round ratios (cpu_env's value / default). The default is given
explicitly, because cpu_env fills in an unset variable: an empty MKL_DEBUG_CPU_TYPE lets MKL
choose its code path as if unset, KMP_BLOCKTIME=200 is Intel OpenMP's default, and
FLAGS_use_stride_kernel=1 Paddle's. Prints the figures; RESULTS.md notes are written by hand.

The allocator setting (`glibc_malloc`: cpu_env's mallopt, which keeps freed blocks in the heap)
is not an environment variable: its default worker is this script's own `--worker`, which puts
glibc's defaults back right after cpu_env has applied its values.
"""
import argparse
import ctypes
import ctypes.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import console  # noqa: E402  (both spellings of every flag, errors as one line)
import cpu_env  # noqa: E402

from benchmarks.bench_swin import CONTENDERS as SWIN_CONTENDERS, Worker, worker  # noqa: E402
from benchmarks.common import machine_info, machine_markdown, median  # noqa: E402

# setting: (cpu_env's value on this CPU, the library default written out)
SETTINGS = {'MKL_DEBUG_CPU_TYPE': ('5', ''), 'KMP_BLOCKTIME': ('1', '200'), 'FLAGS_use_stride_kernel': ('0', '1'),
            'glibc_malloc': ('cpu_env', 'default')}
CONTENDERS = ('ours_eager_infer', 'ours_eager_train')


def ab(setting, values, contender, batch, rounds):
    """images/s with each value of `setting`, alternating; returns (rates_a, rates_b, matmul_a, matmul_b)."""
    if setting == 'glibc_malloc':
        workers = [Worker(contender), Worker(contender, script=os.path.abspath(__file__))]
    else:
        workers = [Worker(contender, {setting: value}) for value in values]
    try:
        for w in workers:
            w.ask(cmd='prepare', batch_sizes=[batch], warmup=1, matmul=False)
        # Once both are idle: the first worker's start-up rate would share the cores with the second's import.
        matmul = [w.ask(cmd='matmul')['matmul_gflops'] for w in workers]
        rates = ([], [])
        for r in range(rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                seconds = workers[i].ask(cmd='time', name=contender, batch=batch, calls=1)['seconds']
                rates[i].append(batch / seconds)
    finally:
        for w in workers:
            w.close()
    return rates[0], rates[1], matmul[0], matmul[1]


def restore_glibc_malloc_defaults():
    """Undo cpu_env's mallopt: glibc's default M_MMAP_MAX (65536) and M_TRIM_THRESHOLD (128 KiB).

    Not exactly glibc's start-up state: setting either value by mallopt (cpu_env's or this) also
    fixes the mmap threshold at 128 KiB, where glibc would otherwise raise it (up to 32 MiB) to the
    size of freed mmapped blocks, so this default page-faults more large blocks than an untouched one.
    """
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 65536)
    libc.mallopt(m_trim_threshold, 128 * 1024)


def main(argv=None):
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=6)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--settings', nargs='+', choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument('--contenders', nargs='+', choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument('--worker', choices=SWIN_CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # the glibc_malloc default's worker (ab); Paddle is imported only from here on
        restore_glibc_malloc_defaults()
        return worker(args.worker)
    print(machine_markdown(machine_info()), flush=True)
    for setting in args.settings:
        ours, default = SETTINGS[setting]
        if setting == 'MKL_DEBUG_CPU_TYPE' and cpu_env.cpu_info()['vendor'] != cpu_env.AMD:
            print(f"{setting}: not set on this (non-AMD) CPU; measuring anyway")
        for contender in args.contenders:
            a, b, mm_a, mm_b = ab(setting, (ours, default), contender, args.batch, args.rounds)
            ratios = [x / y for x, y in zip(a, b)]
            print(f"{setting}={ours} vs {setting}={default!r}: {contender} batch {args.batch}: "
                  f"{median(a):.2f} vs {median(b):.2f} images/s, per-round ratio {median(ratios):.2f}x "
                  f"({min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds); "
                  f"2048-square matmul {mm_a:.0f} vs {mm_b:.0f} GFLOP/s", flush=True)


if __name__ == '__main__':
    sys.exit(console.run_command(main))
