"""Frames/s of preprocessing a 640x480 clip on CPU: our pipeline vs a plain per-frame MTCNN loop.

    python benchmarks/bench_preprocess.py [--frames 64] [--workers N] [--batch_size 8]

Baseline: decode with preprocess.video.iter_frames, then `MTCNN(image_size=224, margin=...)(img)`
per frame (torch's default threads), which detects and crops like the usual facenet-pytorch recipe.
Ours: preprocess.pipeline.process_video with a worker pool (single-threaded workers, batched
detection), including alignment and JPEG writing. Model loading and first-call warm-up are
excluded from both timings.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from synthetic_video import face_frames  # noqa: E402

from preprocess.pipeline import Detector, process_video  # noqa: E402
from preprocess.video import iter_frames, write_video  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=64)
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--batch_size', type=int, default=8)
    args = parser.parse_args()

    import torch
    from facenet_pytorch import MTCNN

    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, 'clip640.mp4')
        # A face in 3 of 4 frames, like real footage with occasional misses.
        write_video(video, face_frames([i % 4 != 3 for i in range(args.frames)], width=640, height=480))

        mtcnn = MTCNN(image_size=224, device='cpu')
        first = next(iter_frames(video))
        mtcnn(first)
        start = time.perf_counter()
        count = 0
        for frame in iter_frames(video):
            mtcnn(frame)
            count += 1
        plain_fps = count / (time.perf_counter() - start)
        print(f"plain MTCNN(...)(img) loop, torch threads {torch.get_num_threads()}: "
              f"{plain_fps:.2f} frames/s over {count} frames", flush=True)

        with Detector(dict(device='cpu'), workers=args.workers) as detector:
            # Warm every worker up (pool start, model load, first-call kernel setup) before timing.
            list(detector.map([[first] * args.batch_size] * max(1, args.workers)))
            out = os.path.join(tmp, 'out')
            start = time.perf_counter()
            summary = process_video(video, out, detector=detector, batch_size=args.batch_size)
            ours_fps = summary['clip640']['frames'] / (time.perf_counter() - start)
        print(f"preprocess pipeline, {args.workers} worker(s) x {detector.torch_threads} thread(s), "
              f"batch {args.batch_size}: {ours_fps:.2f} frames/s "
              f"({summary['clip640']['faces']} faces written)")
        print(f"speed-up: {ours_fps / plain_fps:.2f}x")


if __name__ == '__main__':
    main()
