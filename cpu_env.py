"""CPU threading and MKL settings, applied by every entry point before Paddle is imported.

Paddle pins OMP_NUM_THREADS to 1 at import unless it is set, which leaves all but one core idle;
on AMD CPUs MKL also picks a slow code path unless MKL_DEBUG_CPU_TYPE=5 (about 3x on matmul here).
Values the user has set are never overridden.
"""
import os


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _processes_on_this_machine():
    # paddle.distributed.launch starts one process per device; they share the cores.
    for name in ('PADDLE_LOCAL_SIZE', 'PADDLE_TRAINERS_NUM'):
        value = os.environ.get(name, '')
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def threads_per_process():
    return max(1, _available_cores() // _processes_on_this_machine())


def apply():
    threads = str(threads_per_process())
    os.environ.setdefault('OMP_NUM_THREADS', threads)
    os.environ.setdefault('MKL_NUM_THREADS', threads)
    os.environ.setdefault('MKL_DEBUG_CPU_TYPE', '5')
    # Spinning threads after each parallel region steal the core from the next op (and from
    # data-loader workers); a zero block time measured faster here.
    os.environ.setdefault('KMP_BLOCKTIME', '0')
    # Paddle 3's stride kernels make transpose a view and defer the copy to a generic strided
    # copy, several times slower on CPU than the dedicated transpose kernel it replaces; with
    # them off Swin-S eager inference measured ~1.4x faster here (benchmarks/RESULTS.md).
    os.environ.setdefault('FLAGS_use_stride_kernel', '0')


apply()
