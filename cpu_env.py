"""CPU threading and MKL settings, applied by every entry point before Paddle is imported.

Paddle pins OMP_NUM_THREADS to 1 at import unless it is set, which leaves all but one core idle;
on AMD CPUs MKL also picks a slow code path unless MKL_DEBUG_CPU_TYPE=5 (about 3x on matmul here).
Values the user has set are never overridden.
"""
import ctypes
import ctypes.util
import os
import sys
# Before Paddle: paddlepaddle 2.6's libpaddle.so exports its own zlib, and if it is the first to
# load the system libz, later zlib users (scipy, scikit-learn, torch) crash; see
# tools/load_zlib_first.pth.
import zlib  # noqa: F401

from launch_env import processes_on_this_machine


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_process():
    """The cores this process may use: the available cores shared out between the local processes."""
    return max(1, _available_cores() // processes_on_this_machine())


def apply():
    """Set the thread, MKL and Paddle flag environment variables the user has not set."""
    threads = str(threads_per_process())
    os.environ.setdefault('OMP_NUM_THREADS', threads)
    os.environ.setdefault('MKL_NUM_THREADS', threads)
    os.environ.setdefault('MKL_DEBUG_CPU_TYPE', '5')
    # How long (ms) Intel OpenMP threads spin after a parallel region before sleeping. Intel's
    # default, 200, keeps idle threads on the cores that data-loader workers and other jobs need;
    # 0 wakes them from sleep for every op, which measured slower; 1 ms spans the gaps between the
    # ops of a forward pass and frees the cores right after it (benchmarks/RESULTS.md).
    os.environ.setdefault('KMP_BLOCKTIME', '1')
    # Paddle 3's stride kernels make transpose a view and defer the copy to a generic strided
    # copy, much slower on CPU than the dedicated transpose kernel (benchmarks/RESULTS.md).
    os.environ.setdefault('FLAGS_use_stride_kernel', '0')


def _keep_freed_memory_in_process():
    """Stop glibc handing every large freed tensor back to the kernel.

    Paddle's CPU allocator mallocs and frees each activation; glibc serves blocks above its mmap
    threshold with fresh mmaps and trims the heap on free, so every large op output page-faults
    its memory in again, which cost as much as the arithmetic on large activations
    (benchmarks/RESULTS.md). Serving all blocks from the heap and never trimming it keeps the
    pages mapped; peak memory stays the same.
    """
    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2 ** 31 - 1)


apply()
_keep_freed_memory_in_process()
# Paddle's import-time noise (quiet.py says what and why) is filtered from here on.
import quiet  # noqa: E402,F401
