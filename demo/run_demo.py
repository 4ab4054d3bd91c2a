"""`make demo`: the whole CFC-SP pipeline on generated data, with the project's real tools.

    data (demo/make_demo_data.py) -> python -m preprocess -> 2-process training of the coarse and
    negative models (paddle.distributed.launch main_multi_gpu.py) -> -eval of both ->
    smooth_predict.py -search -> table, plots and ABAW submission files in demo_output/

Each step is skipped when its output is already complete, so running it twice reuses the work
(an interrupted training resumes from its newest checkpoint). The data are synthetic: they show
that the machinery works, not how well the method does on Aff-Wild2.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import console  # noqa: E402  (both spellings of every flag, errors as one line)

import cpu_env  # noqa: E402,F401  (threads and MKL before paddle loads)

from config import get_config  # noqa: E402
from demo.check_swin import swin_small_and_release_checkpoint  # noqa: E402
from demo.make_demo_data import make_demo_data  # noqa: E402
from instruments import CURVES_NAME  # noqa: E402

DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo_tiny.yaml')
MODELS = ('coarse', 'negative')


def step(title):
    """Print a step banner; returns its start time."""
    print(f"\n{'=' * 8} {title}", flush=True)
    return time.perf_counter()


def run(command, log_path=None):
    """Run a project tool, streaming its output; stop the demo with its exit code if it fails."""
    print('$ ' + ' '.join(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c
                          for c in command), flush=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run(command, cwd=ROOT, env=env)
    if result.returncode != 0:
        if log_path and os.path.exists(log_path):
            print(f"--- last lines of {log_path}:")
            with open(log_path, encoding='utf-8', errors='replace') as f:
                print(''.join(f.readlines()[-30:]))
        sys.exit(f"demo: step failed (exit {result.returncode}): {' '.join(command)}")


def config_fingerprint():
    """A hash of the demo config, so a changed config retrains instead of reusing old models."""
    with open(DEMO_CONFIG, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def reset_if_config_changed(train_dir):
    """A run trained with another demo config cannot be resumed: start that model over."""
    stamp = os.path.join(train_dir, 'demo_config.sha256')
    if os.path.isdir(train_dir):
        previous = open(stamp, encoding='utf-8').read().strip() if os.path.isfile(stamp) else None
        if previous != config_fingerprint():
            print(f"{os.path.relpath(train_dir, ROOT)} was trained with another demo config: starting over")
            shutil.rmtree(train_dir)
    os.makedirs(train_dir, exist_ok=True)
    with open(stamp, 'w', encoding='utf-8') as f:
        f.write(config_fingerprint() + '\n')


def training_finished(train_dir, num_epochs):
    """Whether `train_dir` holds a best checkpoint and a history that reached epoch `num_epochs`."""
    history = os.path.join(train_dir, 'history.json')
    if not (os.path.isfile(history) and os.path.isfile(os.path.join(train_dir, 'best.pdparams'))):
        return False
    with open(history, encoding='utf-8') as f:
        records = json.load(f)
    return bool(records) and records[-1].get('epoch') == num_epochs


def main(argv=None):
    parser = console.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', default=os.path.join(ROOT, 'demo_work'), help='intermediate files')
    parser.add_argument('--output', default=os.path.join(ROOT, 'demo_output'), help='results')
    parser.add_argument('--nproc', type=int, default=2, help='training processes (as the release: several)')
    args = parser.parse_args(argv)
    work, out = os.path.abspath(args.work), os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    python = sys.executable
    started = time.perf_counter()

    num_epochs = get_config(DEMO_CONFIG).TRAIN.NUM_EPOCHS

    step('0/6 Swin-S as released: parameters, forward time, the release checkpoint\'s logits')
    if not swin_small_and_release_checkpoint():
        sys.exit('demo: the release checkpoint did not reproduce its logits')

    t = step('1/6 generate the synthetic Aff-Wild2-shaped videos and annotations')
    data = os.path.join(work, 'data')
    summary = make_demo_data(data)
    videos = summary.get('videos', [])
    reused = ' (reused)' if summary.get('reused') else ''
    print(f"{len(videos)} videos, {sum(v.get('frames', 0) for v in videos)} frames in "
          f"{os.path.relpath(data, ROOT)}{reused} ({time.perf_counter() - t:.0f} s)")
    annotations = os.path.join(data, 'annotations')

    t = step('2/6 preprocess: FFmpeg frames, MTCNN detection, 5-point alignment to 224x224')
    aligned = os.path.join(work, 'aligned')
    run([python, '-m', 'preprocess', os.path.join(data, 'videos'), aligned, '-anno_folder', annotations])
    print(f"({time.perf_counter() - t:.0f} s)")

    for i, class_type in enumerate(MODELS):
        t = step(f"{3 + i}/6 train the {class_type} model ({args.nproc} processes, paddle.distributed.launch)")
        train_dir = os.path.join(work, f'train_{class_type}')
        reset_if_config_changed(train_dir)
        if training_finished(train_dir, num_epochs):
            print(f"already trained: {os.path.relpath(train_dir, ROOT)}")
            continue
        log_dir = os.path.join(work, 'logs', f'train_{class_type}')
        run([python, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(args.nproc), '--log_dir', log_dir,
             'main_multi_gpu.py', '-cfg', DEMO_CONFIG, '-class_type', class_type, '-data_folder', aligned,
             '-anno_folder', annotations, '-output', train_dir, '-resume', 'auto'],
            log_path=os.path.join(log_dir, 'workerlog.0'))
        print(f"({time.perf_counter() - t:.0f} s)")

    t = step('5/6 evaluate both models on the validation videos (-eval -> predictions.npz)')
    for class_type in MODELS:
        eval_dir = os.path.join(work, f'eval_{class_type}')
        weights = os.path.join(work, f'train_{class_type}', 'best.pdparams')
        done = os.path.join(eval_dir, 'predictions.npz')
        if os.path.isfile(done) and os.path.getmtime(done) >= os.path.getmtime(weights):
            print(f"already evaluated: {os.path.relpath(done, ROOT)}")
            continue
        # -overwrite: these predictions are older than the weights (or incomplete).
        run([python, 'main_single_gpu.py', '-cfg', DEMO_CONFIG, '-class_type', class_type, '-eval',
             '-pretrained', weights, '-data_folder', aligned, '-anno_folder', annotations, '-output', eval_dir,
             '-overwrite'])
    print(f"({time.perf_counter() - t:.0f} s)")

    t = step('6/6 Smooth Predicting and coarse-to-fine fusion, both modes searched on the validation videos')
    submission = os.path.join(out, 'submission')
    run([python, 'smooth_predict.py', '-coarse', os.path.join(work, 'eval_coarse', 'predictions.npz'),
         '-negative', os.path.join(work, 'eval_negative', 'predictions.npz'),
         '-anno_folder', annotations, '-output', submission,
         '-search', '-plot', '2'])
    print(f"({time.perf_counter() - t:.0f} s)")

    report(work, out, submission)

    t = step('report page of one validation video: predict_video.py -annotate -report')
    page = report_page(python, work, out, videos, annotations)
    print(f"open {os.path.relpath(page, ROOT)} in a browser ({time.perf_counter() - t:.0f} s)")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; results in {os.path.relpath(out, ROOT)}/")


def report_page(python, work, out, videos, annotations):
    """Run predict_video.py with the demo's models on the first one-person validation video, with
    its ground truth; returns the path of the report page (a finished run is reused)."""
    name = next(v['video'] for v in videos
                if v['split'] == 'Validation_Set' and v['annotations'] == [v['video']])
    folder = os.path.join(out, 'report')
    command = [python, 'predict_video.py', os.path.join(work, 'data', 'videos', name + '.mp4'), '-output', folder,
               '-annotate', '-report', '-anno_folder', annotations]
    for class_type in MODELS:
        command += [f'-{class_type}_cfg', DEMO_CONFIG,
                    f'-{class_type}_weights', os.path.join(work, f'train_{class_type}', 'best.pdparams')]
    run(command)
    return os.path.join(folder, name + '_report.html')


def report(work, out, submission):
    """Print the demo's results table and copy its pictures to the output folder."""

    rows = {}
    for class_type in MODELS:
        with open(os.path.join(work, f'eval_{class_type}', 'metrics.json'), encoding='utf-8') as f:
            scores = json.load(f)['scores']
        rows[class_type] = scores
        shutil.copyfile(os.path.join(work, f'train_{class_type}', CURVES_NAME),
                        os.path.join(out, f'training_curves_{class_type}.png'))
    with open(os.path.join(submission, 'metrics.json'), encoding='utf-8') as f:
        fused = json.load(f)
    for name in os.listdir(submission):
        if name.endswith('.png'):
            shutil.copyfile(os.path.join(submission, name), os.path.join(out, name))

    raw, figure, best = fused['raw'], fused['figure'], fused['smoothed']
    best_setting = (f"{best['mode']}, K={best['window']}"
                    + (f", A={best['alpha']:g}" if best['alpha'] is not None else ''))
    lines = [
        '| model / step | frames | Acc | macro F1 |',
        '|---|---|---|---|',
        f"| coarse (5 classes) | {rows['coarse'].get('count', '')} | {rows['coarse']['accuracy']:.4f} | {rows['coarse']['macro_f1']:.4f} |",
        f"| negative (4 classes) | {rows['negative'].get('count', '')} | {rows['negative']['accuracy']:.4f} | {rows['negative']['macro_f1']:.4f} |",
        f"| fused, 8 classes, no smoothing | {raw['count']} | {raw['accuracy']:.4f} | {raw['macro_f1']:.4f} |",
        f"| Smooth Predicting as drawn (logits, K={figure['window']}) | {figure['count']} "
        f"| {figure['accuracy']:.4f} | {figure['macro_f1']:.4f} |",
        f"| best of the search ({best_setting}) | {best['count']} | {best['accuracy']:.4f} "
        f"| {best['macro_f1']:.4f} |",
    ]
    table = '\n'.join(lines)
    print('\n' + table)
    print(f"({raw['fusion']} fusion; chance macro F1 for 8 classes: 0.125; synthetic data: this shows "
          "the machinery works)")
    with open(os.path.join(out, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')


if __name__ == '__main__':
    sys.exit(console.run_command(main))
