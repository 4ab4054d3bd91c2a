"""Data-pipeline throughput: training augmentation per worker, the project's data loader,
preprocessing (video -> aligned faces) and smooth_predict.py at full validation size.

    python benchmarks/bench_pipeline.py [--quick] [--json PATH] [--images 96] [--skip_preprocess]
                                        [--skip_smooth]

1. Per worker: decode a 224x224 JPEG face + transforms.train_transform (and val_transform), in this
   process, single-threaded, i.e. what one data-loader worker does per image.
2. The loader: datasets.AbawDataset through loader.build_loader (the project's loader defaults)
   with 0, 1 and 2 workers (this machine has 2 cores), batch 32, images/s after the first batch;
   then the transport alone (samples that cost nothing, batch DATA.BATCH_SIZE float32), through
   shared memory and through pipes.
3. Preprocessing frames/s: runs benchmarks/bench_preprocess.py (a 640x480 clip; its own figures).
4. smooth_predict.py: runs benchmarks/bench_smooth_predict.py (280,532 frames, 70 videos).
The implication for a GPU (about 1,000 images/s for Swin-S with AMP) is printed: workers needed
at the measured per-worker rate, and what 16 workers would deliver.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import console  # noqa: E402  (both spellings of every flag, errors as one line)
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


def _timed_batches(loader, images):
    iterator = iter(loader)
    next(iterator)  # worker start-up and the first batch are not throughput
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        count += int(batch[0].shape[0])
        if count >= images:
            break
    return count / (time.perf_counter() - start)


def _loader(config, dataset, workers, batch_size, **data_keys):
    """The training loader exactly as loader.build_loader makes it (the project's defaults)."""
    from loader import build_loader
    config = config.clone()
    config.defrost()
    config.DATA.NUM_WORKERS = workers
    config.DATA.BATCH_SIZE = batch_size
    for key, value in data_keys.items():
        setattr(config.DATA, key, value)
    return build_loader(dataset, config, True, 0, 1)[0]


def loader_rate(config, folder, samples, transform, workers, batch_size=32, batches=6):
    from datasets import AbawDataset
    repeats = -(-(batches + 1) * batch_size // len(samples))  # the first batch is not timed
    dataset = AbawDataset(folder, samples * repeats, transform)
    return _timed_batches(_loader(config, dataset, workers, batch_size), batches * batch_size)


class _ReadySamples:
    """Samples in AbawDataset's format that cost nothing to make: what is left is the transport."""

    def __init__(self, size, count):
        import numpy as np
        self.image = np.random.default_rng(0).standard_normal((3, size, size), dtype=np.float32)
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        import numpy as np
        return self.image.copy(), np.int64(index % 5), np.int64(index), np.int64(1)


def transport_rate(config, workers, shared_memory, batch_size, batches):
    """images/s from workers to the training loop when making a sample costs nothing."""
    import paddle
    # A paddle Dataset subclass made here, since this script imports paddle only when it runs.
    dataset = type('ReadySamples', (_ReadySamples, paddle.io.Dataset), {})(
        int(config.DATA.IMAGE_SIZE), (batches + 2) * batch_size)
    loader = _loader(config, dataset, workers, batch_size, USE_SHARED_MEMORY=shared_memory)
    return _timed_batches(loader, batches * batch_size)


def implication(per_worker, transport, batch_size, config):
    from loader import shared_memory_fits
    workers = 16
    _, needed, _ = shared_memory_fits(config, batch_size, workers)
    deliver = min(workers * per_worker, transport['shared_memory'])
    return (f"a GPU training Swin-S at ~{GPU_IMAGES_PER_S:.0f} images/s needs {GPU_IMAGES_PER_S / per_worker:.1f} "
            f"workers at {per_worker:.0f} images/s each (one free core each). With {workers} workers the "
            f"augmentation could deliver ~{workers * per_worker:.0f} images/s and the shared-memory hand-over, "
            f"measured here with 2 cores shared between the workers and the training loop, carries "
            f"{transport['shared_memory']:.0f} images/s (pipes: {transport['pipes']:.0f}, too slow), so the "
            f"loader should give about {deliver:.0f} images/s, {deliver / GPU_IMAGES_PER_S:.1f}x what the GPU uses. "
            f"The defaults (DATA.USE_SHARED_MEMORY True, DATA.PREFETCH_FACTOR {config.DATA.PREFETCH_FACTOR}) keep "
            f"{config.DATA.PREFETCH_FACTOR} batches ready per worker and need {needed / 2**30:.1f} GiB of /dev/shm "
            f"at batch {batch_size} with {workers} workers; with less, the loader says so and keeps 1 batch per "
            f"worker, or uses pipes if even that does not fit.")


def run_sub_benchmark(results, name, unit, script_args, figure_pattern):
    """Run another benchmark script; keep its output and the (label, figure) pairs it printed.

    Fills results[name + '_output'] and results[name + '_' + unit], or results[name + '_error'].
    """
    out = subprocess.run([sys.executable] + script_args, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        results[f'{name}_error'] = (out.stderr or out.stdout)[-1500:]
        print(f"{name} benchmark failed:\n{results[f'{name}_error']}", file=sys.stderr)
        return
    found = re.findall(figure_pattern, out.stdout, re.M)
    results[f'{name}_{unit}'] = {label: float(value) for label, value in found}
    results[f'{name}_output'] = out.stdout.strip()
    print(results[f'{name}_output'], flush=True)


def main(argv=None):
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
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
    from transforms import train_transform, val_transform
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
            rate = loader_rate(config, folder, samples, train_tf, workers, batches=3 if args.quick else 6)
            results['loader_images_per_s'][str(workers)] = rate
            print(f"loader.build_loader (training transform, batch 32, {workers} worker(s)): {rate:.0f} images/s",
                  flush=True)
    transport_batch = int(config.DATA.BATCH_SIZE)
    results['transport_batch_size'] = transport_batch
    results['transport_images_per_s'] = {}
    for shared in (True, False):
        rate = transport_rate(config, 2, shared, transport_batch, batches=4 if args.quick else 8)
        results['transport_images_per_s']['shared_memory' if shared else 'pipes'] = rate
        print(f"transport only (samples cost nothing, 2 workers, batch {transport_batch}, float32 "
              f"{'shared memory' if shared else 'pipes'}): {rate:.0f} images/s", flush=True)

    per_worker = results['train_transform_images_per_s_per_worker']
    shared_rate = results['transport_images_per_s']['shared_memory']
    results['workers_needed_for_1000_images_per_s'] = GPU_IMAGES_PER_S / per_worker
    results['sixteen_workers_images_per_s'] = 16 * per_worker
    results['implication'] = implication(per_worker, results['transport_images_per_s'], transport_batch, config)
    print(results['implication'], flush=True)

    if not args.skip_preprocess:
        frames = 16 if args.quick else 48
        run_sub_benchmark(results, 'preprocess', 'frames_per_s',
                          ['benchmarks/bench_preprocess.py', '--frames', str(frames), '--workers', '1',
                           '--hd_frames', '0'],
                          r'^\s*((?:plain MTCNN|preprocess pipeline)[^:]*): ([0-9.]+) frames/s')
    if not args.skip_smooth:
        run_sub_benchmark(results, 'smooth_predict', 'seconds',
                          ['benchmarks/bench_smooth_predict.py', '--no_results_md'],
                          r'full command \(([^)]*)\): ([0-9.]+) s wall')
    results['load_average_at_end'] = load_average()

    if args.json:
        write_json(args.json, results)
    if not args.no_results_md:
        lines = ["## Data pipeline (`benchmarks/bench_pipeline.py`)", "", machine_markdown(info),
                 f"- Decode + training augmentation, one worker: **{per_worker:.0f} images/s**; "
                 f"decode + validation transform: {results['val_transform_images_per_s_per_worker']:.0f} images/s "
                 f"({count} distinct 224x224 JPEG faces).",
                 "- loader.build_loader (the project's loader defaults), training transform, batch 32: " + ', '.join(
                     f"{w} worker(s) {r:.0f} images/s" for w, r in results['loader_images_per_s'].items()) + '.',
                 f"- Transport alone (samples that cost nothing, 2 workers, batch {transport_batch} float32): "
                 f"shared memory {shared_rate:.0f} images/s, pipes "
                 f"{results['transport_images_per_s']['pipes']:.0f} images/s.",
                 f"- Implication: {results['implication']}"]
        if 'preprocess_output' in results:
            lines.append("- Preprocessing (`bench_preprocess.py`, 1 worker):\n\n```\n"
                         + results['preprocess_output'] + "\n```")
        if 'smooth_predict_output' in results:
            lines.append("- smooth_predict.py at full validation size (`bench_smooth_predict.py`):\n\n```\n"
                         + results['smooth_predict_output'] + "\n```")
        update_results_section('bench_pipeline', '\n'.join(lines))
    return results


if __name__ == '__main__':
    sys.exit(console.run_command(main))
