"""Shared benchmark helpers: machine description, RESULTS.md sections, JSON output, timing."""
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import cpu_env  # noqa: E402  (names the CPU; its settings precede paddle and torch anyway)
RESULTS_MD = os.path.join(ROOT, 'benchmarks', 'RESULTS.md')


def cpu_kind(info):
    """'amd_avx2', 'intel_amx', ...: the vendor and the best of the instruction sets that pick the
    int8 / bf16 / float32 kernels, which is what makes benchmark figures of two CPUs comparable."""
    vendor = {'AuthenticAMD': 'amd', 'GenuineIntel': 'intel'}.get(info.get('cpu_vendor'), 'cpu')
    flags = set(info.get('cpu_flags') or ())
    for isa, needs in (('amx', 'amx_int8'), ('avx512_bf16', 'avx512_bf16'), ('avx512_vnni', 'avx512_vnni'),
                       ('avx512', 'avx512f'), ('avx2', 'avx2')):
        if needs in flags:
            return f"{vendor}_{isa}"
    return f"{vendor}_baseline"


def load_average():
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def machine_info():
    """What a reader needs to judge the numbers: CPU, cores, versions, date, load, env settings."""
    cpu = cpu_env.cpu_info()
    info = {
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'cpu': cpu['model'],
        'cpu_vendor': cpu['vendor'],
        'cpu_flags': [flag for flag in cpu_env.RELEVANT_FLAGS if flag in cpu['flags']],
        'cores_usable': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'load_average_at_start': load_average(),
        'env': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'MKL_DEBUG_CPU_TYPE',
                                             'KMP_BLOCKTIME', 'FLAGS_use_stride_kernel')},
    }
    from importlib import metadata
    # Read from package metadata: importing both frameworks here would load both OpenMP runtimes.
    for module, distribution in (('paddle', 'paddlepaddle'), ('torch', 'torch'), ('timm', 'timm'), ('numpy', 'numpy')):
        try:
            info[module] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            info[module] = None
    return info


def machine_markdown(info):
    load = info.get('load_average_at_start')
    load_text = ', '.join(f"{v:.1f}" for v in load) if load else 'n/a'
    versions = ', '.join(f"{m} {info[m]}" for m in ('paddle', 'torch', 'timm', 'numpy') if info.get(m))
    env = ' '.join(f"{k}={v}" for k, v in info['env'].items() if v is not None)
    return (f"- Date: {info['date']}\n"
            f"- Machine: {info['cpu']}, {info['cores_usable']} usable core(s); {info['platform']}\n"
            + (f"- CPU: {info['cpu_vendor'] or 'vendor unknown'}; {' '.join(info['cpu_flags']) or 'no AVX2'} "
               f"(of {', '.join(cpu_env.RELEVANT_FLAGS)})\n" if 'cpu_flags' in info else '') +
            f"- Load average (1/5/15 min) at start: {load_text} (other jobs share the cores)\n"
            f"- Python {info['python']}; {versions}\n"
            f"- Environment (set by cpu_env.py unless the user set it): {env}\n")


def atomic_write(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, data):
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + '\n')


def update_results_section(name, body, path=RESULTS_MD):
    """Replace (or append) the section between this script's markers in RESULTS.md.

    Each benchmark script owns one section, so running one never erases another's numbers, and
    hand-written notes outside the markers are kept.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip('\n')
        text = before + block + ('\n' + after if after else '')
    else:
        text = text.rstrip('\n') + '\n\n' + block
    atomic_write(path, text)


def median(values):
    return statistics.median(values)


def peak_rss_mb():
    """Peak resident set size of this process so far (Linux reports KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except OSError:
        return float('nan')


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
