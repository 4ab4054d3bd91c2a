"""The fault drill's short form (scripts/fault_drill.sh --quick): SIGKILLed 2-process training on one
machine and on two, and preprocessing, resume to the uninterrupted results; survivors of a lost
machine or process end promptly with one error line; bad inputs get one clear error line."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # multi-process runs (make test-fast skips them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_fault_drill_survives_everything(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    summary_path = tmp_path / 'summary.json'
    proc = subprocess.run(['sh', os.path.join(ROOT, 'scripts', 'fault_drill.sh'), '--quick',
                           '--work', str(tmp_path / 'drill'), '--timeout', '300', '--summary', str(summary_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary['passed'] is True
    train, nodes = summary['training'], summary['two_machines']
    assert train['faults'] == 2 and train['resumed'] >= 1
    assert summary['preprocess']['faults'] >= 1 and summary['preprocess']['problems'] == []
    for tally in (train, nodes):
        assert tally['resume_ok'] == tally['restarts'] >= 1
        assert tally['weights_equal'] is True and tally['events'] == []
        assert tally['identical'] == tally['compared'] > 0
    assert summary['files_lost_or_corrupt'] == 0
    # A lost machine, then a lost worker: the survivors ended within the bound, each with one line
    # naming what was lost and how to go on.
    assert [k['fault'] for k in nodes['kills']] == ['node 1', 'worker of rank 0']
    for kill, (lost, prefix) in zip(nodes['kills'], [(1, 'error: '), (0, 'error (rank 1): ')]):
        assert kill['seconds'] is not None and kill['seconds'] <= nodes['survivor_bound_s'], kill
        assert kill['error_line'].startswith(prefix + f"lost rank {lost} on node {lost}"), kill
        assert '-resume auto' in kill['error_line'] and kill['problems'] == []
    bad = summary['bad_inputs']
    assert len(bad) >= 8 and all(case['clear'] for case in bad), bad
