"""Importing paddle first, as a user's own script or notebook does, must not break the libraries
imported after it (paddlepaddle 2.6 exports its own zlib; see tools/load_zlib_first.pth)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paddle_first_then_the_projects_modules_and_their_libraries():
    code = ("import paddle\n"
            "import metrics, preprocess.faces, smooth_predict\n"
            "import scipy.ndimage, sklearn.metrics, torch\n"
            "print(metrics.macro_f1([0, 1], [0, 1], 2), float(torch.ones(2).sum()))\n")
    run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"paddle {run.stdout} {run.stderr[-3000:]}"
    assert run.stdout.split() == ['1.0', '2.0']
