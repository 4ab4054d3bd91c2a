"""Data-pipeline throughput: training augmentation per worker, the project's data loader,
preprocessing (video -> aligned faces) and smooth_predict.py at full validation size.

    python benchmarks/bench_pipeline.py [--quick] [--json PATH] [--images 96] [--skip_preprocess]
                                        [--skip_smooth]

1. Per worker: decode a 224x224 JPEG face + datasets.train_transform (and val_transform), in this
   process, single-threaded, i.e. what one data-loader worker does per image.
2. The loader: datasets.AbawDataset + paddle.io.DataLoader with 0, 1 and 2 workers (this machine
   has 2 cores), batch 32, images/s after the first batch.
3. Preprocessing frames/s: runs benchmarks/bench_preprocess.py (a 640x480 clip; its own figures).
4. smooth_predict.py: runs benchmarks/bench_smooth_predict.py (280,532 frames, 70 videos).
The implication for a GPU (about 1,000 images/s for Swin-S with AMP) is printed: workers needed
at the measured per-worker rate, and what 16 workers would deliver.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cpu_env  # noqa: E402,F401

from benchmarks.common import (ROOT, load_average, machine_info, machine_markdown,  # noqa: E402
                               update_results_section, write_json)

GPU_IMAGES_PER_S = 1000.0
FACES = os.path.join(ROOT, 'tests', 'data', 'paddlevit_compat', 'aligned', 'clip-01')


def make_faces(folder, count):
    """`count` 224x224 JPEG faces in folder/vid/: the 4 real test faces, flipped/shifted copies."""
    import numpy as np
    from PIL import Image
    video = os.path.join(folder, 'vid')
    os.makedirs(video, exist_ok=True)
    sources = [np.asarray(Image.open(os.path.join(FACES, f)).convert('RGB')) for f in sorted(os.listdir(FACES))]
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = np.roll(sources[i % len(sources)], int(rng.integers(-8, 8)), axis=1)
        if i % 2:
            pixels = pixels[:, ::-1]
        Image.fromarray(np.ascontiguousarray(pixels)).save(os.path.join(video, f"{i + 1:05d}.jpg"), quality=95)
    return [(f"vid/{i + 1:05d}.jpg", i % 5) for i in range(count)]


def per_worker_rate(folder, samples, transform, passes):
    from datasets import load_image
    for rel, _ in samples[:4]:
        transform(load_image(os.path.join(folder, rel)))
    start = time.perf_counter()
    for _ in range(passes):
        for rel, _ in samples:
            transform(load_image(os.path.join(folder, rel)))
    return passes * len(samples) / (time.perf_counter() - start)


def loader_rate(folder, samples, transform, workers, batch_size=32, batches=6):
    import paddle
    from datasets import AbawDataset
    repeats = -(-(batches + 1) * batch_size // len(samples))  # the first batch is not timed
    dataset = AbawDataset(folder, samples * repeats, transform)
    loader = paddle.io.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                  num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up and the first batch are not throughput
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        count += int(batch[0].shape[0])
        if count >= batches * batch_size:
            break
    return count / (time.perf_counter() - start)


def run_script(args):
    out = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return None, (out.stderr or out.stdout)[-1500:]
    return out.stdout, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer images and passes')
    parser.add_argument('--json', metavar='PATH')
    parser.add_argument('--images', type=int, default=None, help='distinct JPEGs (default 96, quick 48)')
    parser.add_argument('--skip_preprocess', action='store_true')
    parser.add_argument('--skip_smooth', action='store_true')
    parser.add_argument('--no_results_md', action='store_true')
    args = parser.parse_args(argv)
    count = args.images or (48 if args.quick else 96)
    passes = 1 if args.quick else 2

    from config import get_config
    from datasets import train_transform, val_transform
    config = get_config(os.path.join(ROOT, 'configs', 'swin_small_patch4_window7_224.yaml'))
    info = machine_info()
    print(machine_markdown(info), flush=True)
    results = {'machine': info, 'images': count}
    with tempfile.TemporaryDirectory(prefix='bench_pipeline_') as folder:
        samples = make_faces(folder, count)
        train_tf, val_tf = train_transform(config), val_transform(config)
        results['train_transform_images_per_s_per_worker'] = per_worker_rate(folder, samples, train_tf, passes)
        results['val_transform_images_per_s_per_worker'] = per_worker_rate(folder, samples, val_tf, passes)
        print(f"per worker: decode + training augmentation {results['train_transform_images_per_s_per_worker']:.0f} "
              f"images/s, decode + validation transform {results['val_transform_images_per_s_per_worker']:.0f} images/s",
              flush=True)
        results['loader_images_per_s'] = {}
        for workers in (0, 1, 2):
            rate = loader_rate(folder, samples, train_tf, workers, batches=3 if args.quick else 6)
            results['loader_images_per_s'][str(workers)] = rate
            print(f"DataLoader (training transform, batch 32, {workers} worker(s)): {rate:.0f} images/s", flush=True)

    per_worker = results['train_transform_images_per_s_per_worker']
    results['workers_needed_for_1000_images_per_s'] = GPU_IMAGES_PER_S / per_worker
    results['sixteen_workers_images_per_s'] = 16 * per_worker
    print(f"a GPU at {GPU_IMAGES_PER_S:.0f} images/s needs {GPU_IMAGES_PER_S / per_worker:.1f} workers at this "
          f"per-worker rate (one core each); 16 workers give about {16 * per_worker:.0f} images/s", flush=True)

    if not args.skip_preprocess:
        frames = 16 if args.quick else 48
        stdout, error = run_script(['benchmarks/bench_preprocess.py', '--frames', str(frames), '--workers', '1'])
        if stdout:
            found = re.findall(r'^\s*((?:plain MTCNN|preprocess pipeline)[^:]*): ([0-9.]+) frames/s', stdout, re.M)
            results['preprocess_frames_per_s'] = {name: float(v) for name, v in found}
            results['preprocess_output'] = stdout.strip()
            print(stdout.strip(), flush=True)
        else:
            results['preprocess_error'] = error
            print(f"preprocessing benchmark failed:\n{error}", file=sys.stderr)
    if not args.skip_smooth:
        stdout, error = run_script(['benchmarks/bench_smooth_predict.py'])
        if stdout:
            found = re.findall(r'full command \(([^)]*)\): ([0-9.]+) s wall', stdout)
            results['smooth_predict_seconds'] = {name: float(v) for name, v in found}
            results['smooth_predict_output'] = stdout.strip()
            print(stdout.strip(), flush=True)
        else:
            results['smooth_predict_error'] = error
            print(f"smooth_predict benchmark failed:\n{error}", file=sys.stderr)
    results['load_average_at_end'] = load_average()

    if args.json:
        write_json(args.json, results)
    if not args.no_results_md:
        lines = ["## Data pipeline (`benchmarks/bench_pipeline.py`)", "", machine_markdown(info),
                 f"- Decode + training augmentation, one worker: **{per_worker:.0f} images/s**; "
                 f"decode + validation transform: {results['val_transform_images_per_s_per_worker']:.0f} images/s "
                 f"({count} distinct 224x224 JPEG faces).",
                 "- paddle.io.DataLoader, training transform, batch 32: " + ', '.join(
                     f"{w} worker(s) {r:.0f} images/s" for w, r in results['loader_images_per_s'].items()) + '.',
                 f"- Implication: a GPU training Swin-S at ~{GPU_IMAGES_PER_S:.0f} images/s needs "
                 f"{GPU_IMAGES_PER_S / per_worker:.1f} such workers (one free core each); 16 workers give "
                 f"~{16 * per_worker:.0f} images/s."]
        if 'preprocess_output' in results:
            lines.append("- Preprocessing (`bench_preprocess.py`, 1 worker):\n\n```\n"
                         + results['preprocess_output'] + "\n```")
        if 'smooth_predict_output' in results:
            lines.append("- smooth_predict.py at full validation size (`bench_smooth_predict.py`):\n\n```\n"
                         + results['smooth_predict_output'] + "\n```")
        update_results_section('bench_pipeline', '\n'.join(lines))
    return results


if __name__ == '__main__':
    main()
