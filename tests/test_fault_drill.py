"""The fault drill's short form (scripts/fault_drill.sh --quick): SIGKILLed 2-process training and
preprocessing resume to the uninterrupted results, and bad inputs get one clear error line."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # multi-process runs (make test-fast skips them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table_value(output, row):
    match = re.search(r'^\| +' + re.escape(row) + r' +\| +(\S+) \|$', output, re.MULTILINE)
    assert match, f"row '{row}' missing from the drill's table:\n{output[-4000:]}"
    return match.group(1)


def test_quick_fault_drill_survives_everything(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(['sh', os.path.join(ROOT, 'scripts', 'fault_drill.sh'), '--quick',
                           '--work', str(tmp_path / 'drill'), '--timeout', '300'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout
    assert proc.returncode == 0, output[-6000:] + proc.stderr[-3000:]
    assert table_value(output, 'result') == 'PASS'
    assert int(table_value(output, 'training kills')) == 2
    assert int(table_value(output, 'preprocess kills (mid-video)')) >= 1
    assert int(table_value(output, 'runs that resumed from a checkpoint')) >= 1
    restarts = table_value(output, 'restarts after a kill (-resume auto)')
    assert table_value(output, 'picked the newest finished checkpoint') == f"{restarts}/{restarts}"
    assert table_value(output, 'final weights equal uninterrupted') == 'yes'
    assert table_value(output, 'preprocess equal uninterrupted') == 'yes'
    assert table_value(output, 'files lost or corrupt') == '0'
    clear, total = map(int, table_value(output, 'bad inputs with a clear error').split('/'))
    assert clear == total >= 8
