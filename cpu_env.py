"""CPU threading and math-library settings, applied by every entry point before Paddle is imported.

Paddle pins OMP_NUM_THREADS to 1 at import unless it is set, which leaves all but one core idle;
on AMD CPUs MKL also picks a slow code path unless MKL_DEBUG_CPU_TYPE=5 (about 3x on matmul
there), while on Intel CPUs with AVX-512 that same setting halves Paddle's matmul, so it is set
on AMD only.

Every value depends only on the machine (vendor, usable cores) and the launch (how many processes
paddle.distributed.launch started here), never on the process that started this one: this module
records what it set in CFCSP_CPU_ENV, so a child process (the demo's launched training workers)
recomputes those values for its own launch instead of taking them for the user's. Values the
user has set are kept. `describe()` is the one line every run logs at its start.
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

# Names=values this module set in an ancestor process, so a child can tell them from the user's.
MARK = 'CFCSP_CPU_ENV'
AMD = 'AuthenticAMD'
# The instruction sets that decide which int8 / bf16 kernels a CPU can run (benchmarks name them).
RELEVANT_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16', 'amx_int8')
# How each setting of this process came about: 'cpu_env' or 'user' (filled by apply()).
SOURCES = {}


def cpu_info(path='/proc/cpuinfo'):
    """{'vendor', 'model', 'flags'} of this machine's first CPU, from /proc/cpuinfo (Linux).

    The vendor is '' where /proc/cpuinfo is missing, which applies no vendor-specific setting.
    """
    info = {'vendor': '', 'model': '', 'flags': frozenset()}
    keys = {'vendor_id': 'vendor', 'model name': 'model', 'flags': 'flags'}
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                name, _, value = line.partition(':')
                key = keys.get(name.strip())
                if key and not info[key]:
                    info[key] = frozenset(value.split()) if key == 'flags' else value.strip()
                if not line.strip() and info['vendor']:  # the first processor's block is enough
                    break
    except OSError:
        pass
    if not info['model']:
        import platform
        info['model'] = platform.processor() or 'unknown CPU'
    return info


def has_bf16(info=None):
    """Whether the CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    flags = (info or cpu_info())['flags']
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_process():
    """The cores this process may use: the available cores shared out between the local processes."""
    return max(1, _available_cores() // processes_on_this_machine())


def thread_variables(processes):
    """OMP_NUM_THREADS and MKL_NUM_THREADS that give each of `processes` processes its share of this
    machine's cores, as one launch of that many would: for launches that share a machine without
    knowing it (two "machines" simulated on one), where cpu_env would give each every core."""
    threads = str(max(1, _available_cores() // processes))
    return {'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads}


def settings_for(vendor, threads):
    """The environment variables this module sets on a CPU of `vendor`, `threads` threads per process."""
    settings = {'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    if vendor == AMD:
        # MKL (Paddle's mklml) runs its SSE path on AMD unless told to take the AVX2 one; on an
        # Intel CPU the same value would take AVX-512 away from it (issue 27: 253 -> 128 GFLOP/s).
        settings['MKL_DEBUG_CPU_TYPE'] = '5'
    # How long (ms) Intel OpenMP threads spin after a parallel region before sleeping. Intel's
    # default, 200, keeps idle threads on the cores that data-loader workers and other jobs need;
    # 0 wakes them from sleep for every op, which measured slower; 1 ms spans the gaps between the
    # ops of a forward pass and frees the cores right after it (benchmarks/RESULTS.md).
    settings['KMP_BLOCKTIME'] = '1'
    # Paddle 3's stride kernels make transpose a view and defer the copy to a generic strided
    # copy, much slower on CPU than the dedicated transpose kernel (benchmarks/RESULTS.md).
    settings['FLAGS_use_stride_kernel'] = '0'
    return settings


def _parse_mark(text):
    pairs = (item.partition('=') for item in (text or '').split(';') if item)
    return {name: value for name, _, value in pairs}


def _launcher_environment(environ):
    """The environment paddle.distributed.launch was started with, when it started this process.

    Importing Paddle in the launcher sets OMP_NUM_THREADS=1 there, and its workers inherit it; the
    launcher's starting environment (Linux /proc) tells that value from one the user typed.
    None when this process was not started by the launcher or /proc cannot say.
    """
    if not any(name in environ for name in ('PADDLE_LOCAL_SIZE', 'PADDLE_TRAINERS_NUM')):
        return None
    parent = os.getppid()
    try:
        with open(f'/proc/{parent}/cmdline', 'rb') as f:
            if b'paddle.distributed.launch' not in f.read():
                return None
        with open(f'/proc/{parent}/environ', 'rb') as f:
            entries = f.read().split(b'\0')
    except OSError:
        return None
    return dict(entry.decode('utf-8', 'replace').partition('=')[::2] for entry in entries if b'=' in entry)


def apply(environ=None, info=None, launcher_environ=False):
    """Set the thread, MKL and Paddle flag variables the user has not set; returns their sources.

    A variable counts as the user's when it is set and neither an ancestor's cpu_env (CFCSP_CPU_ENV)
    nor Paddle's launcher set it to that value. launcher_environ: the launcher's starting environment
    (default: read from /proc when this process is a launched worker).
    """
    environ = os.environ if environ is None else environ
    info = info or cpu_info()
    if launcher_environ is False:
        launcher_environ = _launcher_environment(environ)
    inherited = _parse_mark(environ.get(MARK))
    sources, ours = {}, {}
    for name, value in settings_for(info['vendor'], threads_per_process()).items():
        current = environ.get(name)
        set_by_us = current is not None and inherited.get(name) == current
        set_by_launcher = (current is not None and launcher_environ is not None and name not in launcher_environ
                           and inherited.get(name) is None)
        if current is None or set_by_us or set_by_launcher:
            environ[name] = value
            ours[name] = value
            sources[name] = 'cpu_env'
        else:
            sources[name] = 'user'
    if ours:
        environ[MARK] = ';'.join(f'{name}={value}' for name, value in ours.items())
    else:
        environ.pop(MARK, None)
    return sources


def describe():
    """One line for the top of a run's log: the CPU, the launch, and the settings in force."""
    info = cpu_info()
    flags = ' '.join(flag for flag in RELEVANT_FLAGS if flag in info['flags']) or 'none of ' + '/'.join(RELEVANT_FLAGS)
    settings = ' '.join(f"{name}={os.environ.get(name)}{'' if SOURCES.get(name) == 'cpu_env' else ' (user)'}"
                        for name in SOURCES)
    return (f"CPU {info['model']} ({info['vendor'] or 'vendor unknown'}; {flags}); {_available_cores()} usable "
            f"core(s), {processes_on_this_machine()} process(es) on this machine -> {threads_per_process()} "
            f"thread(s) each; {settings}")


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


SOURCES.update(apply())
_keep_freed_memory_in_process()
# Paddle's import-time noise (quiet.py says what and why) is filtered from here on.
import quiet  # noqa: E402,F401
