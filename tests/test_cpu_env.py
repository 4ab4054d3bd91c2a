"""cpu_env: vendor-aware settings, and thread settings that depend on the machine and the launch only."""
import json
import os
import subprocess
import sys

import pytest

import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTEL = {'vendor': 'GenuineIntel', 'model': 'Intel(R) Xeon(R) Platinum', 'flags': frozenset({'avx2', 'avx512f'})}
AMD = {'vendor': 'AuthenticAMD', 'model': 'AMD EPYC', 'flags': frozenset({'avx2'})}


def test_cpu_info_reads_vendor_model_and_flags(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                    "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_int8\n\n"
                    "processor\t: 1\nvendor_id\t: SomethingElse\n")
    info = cpu_env.cpu_info(str(path))
    assert info['vendor'] == 'GenuineIntel' and info['model'] == 'Intel(R) Xeon(R) Platinum 8481C'
    assert {'avx512_vnni', 'amx_bf16'} <= info['flags'] and cpu_env.has_bf16(info)
    assert not cpu_env.has_bf16(AMD)


@pytest.mark.parametrize('info, mkl_cpu_type', [(AMD, '5'), (INTEL, None), ({'vendor': '', 'model': '', 'flags': frozenset()}, None)])
def test_mkl_avx2_path_forced_on_amd_only(info, mkl_cpu_type):
    environ = {}
    sources = cpu_env.apply(environ, info, launcher_environ=None)
    assert environ.get('MKL_DEBUG_CPU_TYPE') == mkl_cpu_type
    assert environ['KMP_BLOCKTIME'] == '1' and environ['FLAGS_use_stride_kernel'] == '0'
    assert set(sources.values()) == {'cpu_env'}


def test_user_settings_are_kept():
    environ = {'MKL_DEBUG_CPU_TYPE': '4', 'OMP_NUM_THREADS': '3'}
    sources = cpu_env.apply(environ, AMD, launcher_environ=None)
    assert environ['MKL_DEBUG_CPU_TYPE'] == '4' and environ['OMP_NUM_THREADS'] == '3'
    assert sources['MKL_DEBUG_CPU_TYPE'] == sources['OMP_NUM_THREADS'] == 'user'
    assert 'OMP_NUM_THREADS' not in environ[cpu_env.MARK]


def test_values_a_parent_process_set_are_recomputed_for_this_launch(monkeypatch):
    parent = {}
    cpu_env.apply(parent, AMD, launcher_environ=None)  # e.g. demo/run_demo.py: one process, all cores
    monkeypatch.setenv('PADDLE_LOCAL_SIZE', '64')  # its launched worker shares the cores with 63 others
    child = dict(parent)
    sources = cpu_env.apply(child, AMD, launcher_environ=None)
    assert child['OMP_NUM_THREADS'] == child['MKL_NUM_THREADS'] == '1'
    assert sources['OMP_NUM_THREADS'] == 'cpu_env'


def test_paddle_launchers_own_thread_setting_is_not_the_users(monkeypatch):
    monkeypatch.setenv('PADDLE_LOCAL_SIZE', '1')
    threads = str(cpu_env.threads_per_process())
    # Importing paddle in the launcher set OMP_NUM_THREADS=1; the user had not.
    environ = {'OMP_NUM_THREADS': '1'}
    assert cpu_env.apply(environ, AMD, launcher_environ={})['OMP_NUM_THREADS'] == 'cpu_env'
    assert environ['OMP_NUM_THREADS'] == threads
    environ = {'OMP_NUM_THREADS': '1'}  # the user typed OMP_NUM_THREADS=1 before the launch command
    assert cpu_env.apply(environ, AMD, launcher_environ={'OMP_NUM_THREADS': '1'})['OMP_NUM_THREADS'] == 'user'


def test_describe_names_cpu_threads_and_settings():
    line = cpu_env.describe()
    assert cpu_env.cpu_info()['model'] in line and 'thread(s) each' in line
    assert f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}" in line


SHOW = ("import json, os, sys; sys.path.insert(0, {root!r}); import cpu_env; "
        "print(json.dumps({{k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}}))")


def _launch(tmp_path, env, name):
    """Thread settings seen by the 2 workers of `python -m paddle.distributed.launch` started with `env`."""
    script = tmp_path / 'show.py'
    script.write_text(SHOW.format(root=ROOT).replace('; ', '\n'))
    log_dir = tmp_path / name
    subprocess.run([sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2', '--log_dir',
                    str(log_dir), str(script)], env=env, cwd=str(tmp_path), check=True, timeout=300,
                   capture_output=True)
    seen = []
    for rank in (0, 1):
        lines = (log_dir / f'workerlog.{rank}').read_text().splitlines()
        seen.append(json.loads([line for line in lines if line.startswith('{')][-1]))
    return seen


@pytest.mark.slow
def test_launched_workers_get_the_same_threads_from_a_shell_and_from_a_tool(tmp_path):
    """The demo's launch (from a process that imported cpu_env) and the hand-typed one agree."""
    shell = {k: v for k, v in os.environ.items()
             if k not in cpu_env.SOURCES and k != cpu_env.MARK or cpu_env.SOURCES.get(k) == 'user'}
    tool = dict(os.environ)  # this test process imported cpu_env, as demo/run_demo.py does
    by_hand, from_tool = _launch(tmp_path, shell, 'shell'), _launch(tmp_path, tool, 'tool')
    assert by_hand == from_tool
    if 'OMP_NUM_THREADS' not in shell:
        expected = str(max(1, cpu_env._available_cores() // 2))
        assert by_hand[0] == {'OMP_NUM_THREADS': expected, 'MKL_NUM_THREADS': expected}


def test_benchmark_tables_are_kept_per_kind_of_cpu(tmp_path):
    from benchmarks.bench_swin import results_section
    from benchmarks.common import cpu_kind, update_results_section
    amd_avx2 = {'cpu': 'AMD EPYC', 'cpu_vendor': 'AuthenticAMD', 'cpu_flags': ['avx2']}
    xeon = {'cpu': 'Intel Xeon', 'cpu_vendor': 'GenuineIntel',
            'cpu_flags': ['avx2', 'avx512f', 'avx512_vnni', 'amx_bf16', 'amx_int8']}
    zen5 = {'cpu': 'AMD EPYC', 'cpu_vendor': 'AuthenticAMD', 'cpu_flags': ['avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16']}
    assert [cpu_kind(i) for i in (amd_avx2, xeon, zen5)] == ['amd_avx2', 'intel_amx', 'amd_avx512_bf16']
    results = tmp_path / 'RESULTS.md'
    for info, figure in ((amd_avx2, '1.16x'), (xeon, '1.35x'), (amd_avx2, '1.20x')):
        update_results_section(results_section(info), f"{info['cpu']}: {figure}", path=str(results))
    text = results.read_text()
    assert 'Intel Xeon: 1.35x' in text and 'AMD EPYC: 1.20x' in text and '1.16x' not in text
