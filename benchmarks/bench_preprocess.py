"""Frames/s of preprocessing on CPU: our pipeline vs a plain per-frame MTCNN loop (640x480), and
detection on a downscaled copy vs full resolution (1920x1080).

    python benchmarks/bench_preprocess.py [-frames 64] [-workers N] [-detect_batch 8] [-rounds 2]
        [-hd_frames 16]

640x480 baseline: decode with preprocess.video.iter_frames, then `MTCNN(image_size=224, margin=...)(img)`
per frame (torch's default threads, and 1 thread for reference), which detects and crops like the
usual facenet-pytorch recipe. Ours: preprocess.pipeline.process_video with a worker pool
(single-threaded workers), including tracking, alignment and JPEG writing.

1920x1080: a clip with three people of different sizes (faces about 110, 60 and 40 px wide),
through process_video with -detect_size 0 (full-resolution detection, as before detection on a
downscaled copy existed) and with the default -detect_size 720; same workers, same everything
else. Besides frames/s it reports faces written and the largest landmark difference between the
two, so a faster run that loses or moves faces would show.

Model loading and first-call warm-up are excluded from all timings. Rounds alternate the methods
and keep each one's best, because the cores are shared and background load drifts during a run.
"""
import csv
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from demo.synthetic_video import face_frames, scene_frames, tinted_head  # noqa: E402

import console  # noqa: E402
from preprocess.faceloop import Detector  # noqa: E402
from preprocess.faces import FaceSettings  # noqa: E402
from preprocess.pipeline import process_video  # noqa: E402
from preprocess.video import iter_frames, write_video  # noqa: E402


def hd_clip(path, count):
    """1920x1080 frames with three people walking slowly, heads 360, 200 and 130 px."""
    actors = [(tinted_head(360, None), (200, 300), (420, 300), None),
              (tinted_head(200, 'blue'), (1300, 150), (1150, 170), None),
              (tinted_head(130, 'green'), (900, 800), (980, 780), None)]
    write_video(path, scene_frames(count, actors, 1920, 1080), fps=25)


def chosen_landmarks(folder):
    """{frame: landmarks (5, 2)} of the faces written, from detections.csv."""
    with open(os.path.join(folder, 'detections.csv'), newline='') as f:
        rows = [row for row in csv.DictReader(f) if row['chosen'] == '1']
    names = [key for key in rows[0] if key.endswith('_x') or key.endswith('_y')] if rows else []
    return {int(row['frame']): np.array([float(row[key]) for key in names]) for row in rows}


def parse_args(argv=None):
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-frames', type=int, default=64)
    parser.add_argument('-workers', type=int, default=os.cpu_count() or 1)
    parser.add_argument('-detect_batch', '-batch_size', type=int, default=FaceSettings.detect_batch,
                        help='frames per MTCNN call (as python -m preprocess -detect_batch)')
    parser.add_argument('-rounds', type=int, default=2)
    parser.add_argument('-hd_frames', type=int, default=16, help='frames of the 1920x1080 clip (0 = skip it)')
    return parser.parse_args(argv)


def timed_pipeline(detector, path, out):
    """(summary, frames/s) of process_video on one video with a warm detector."""
    start = time.perf_counter()
    summary = next(iter(process_video(path, out, detector=detector).values()))
    return summary, summary['frames'] / (time.perf_counter() - start)


def warm_up(detector, frame, args):
    """Start every worker (pool start, model load, first-call kernel setup) before timing."""
    list(detector.map([(None, [frame] * args.detect_batch)] * max(1, args.workers)))


def measure_640(args, settings, tmp):
    """Best frames/s of the plain MTCNN loop (torch's default threads and 1) and of our pipeline
    on a 640x480 clip: {'ours': fps, threads: fps, ...}, torch's default threads, ours' threads."""
    import torch
    from facenet_pytorch import MTCNN
    video = os.path.join(tmp, 'clip640.mp4')
    # A face in 3 of 4 frames, like real footage with occasional misses.
    write_video(video, face_frames([i % 4 != 3 for i in range(args.frames)], width=640, height=480))
    mtcnn = MTCNN(image_size=224, device='cpu')
    first = next(iter_frames(video))
    default_threads = torch.get_num_threads()

    def plain_loop(threads):
        torch.set_num_threads(threads)
        mtcnn(first)
        start = time.perf_counter()
        count = 0
        for frame in iter_frames(video):
            mtcnn(frame)
            count += 1
        torch.set_num_threads(default_threads)
        return count / (time.perf_counter() - start)

    best = {}
    with Detector(settings, workers=args.workers) as detector:
        warm_up(detector, first, args)
        for round_index in range(args.rounds):
            for threads in sorted({default_threads, 1}, reverse=True):
                fps = plain_loop(threads)
                best[threads] = max(best.get(threads, 0), fps)
                print(f"round {round_index + 1}: plain loop, {threads} thread(s): {fps:.2f} frames/s", flush=True)
            summary, fps = timed_pipeline(detector, video, os.path.join(tmp, f'out{round_index}'))
            best['ours'] = max(best.get('ours', 0), fps)
            print(f"round {round_index + 1}: pipeline: {fps:.2f} frames/s "
                  f"({summary['faces']}/{summary['frames']} frames with a face)", flush=True)
    return best, default_threads, detector.torch_threads


def measure_hd(args, settings, tmp):
    """Best run of each detect_size (0 = full resolution, and the default) on a 1920x1080 clip:
    {detect_size: {'fps', 'summary', 'out'}}."""
    hd_video = os.path.join(tmp, 'clip1080.mp4')
    hd_clip(hd_video, args.hd_frames)
    hd_first = next(iter_frames(hd_video))
    detectors = {size: Detector(FaceSettings(detect_batch=args.detect_batch, detect_size=size),
                                workers=args.workers) for size in (0, settings.detect_size)}
    hd = {}
    try:
        for detector in detectors.values():
            warm_up(detector, hd_first, args)
        for round_index in range(args.rounds):
            for size, detector in detectors.items():
                out = os.path.join(tmp, f'hd{size}_{round_index}')
                summary, fps = timed_pipeline(detector, hd_video, out)
                if fps > hd.get(size, {}).get('fps', 0):
                    hd[size] = {'fps': fps, 'summary': summary, 'out': out}
                print(f"round {round_index + 1}: 1920x1080, detect_size {size}: {fps:.2f} frames/s "
                      f"({summary['faces']} faces of person 1, {summary['people']} people)", flush=True)
    finally:
        for detector in detectors.values():
            detector.close()
    return hd


def print_640(args, best, default_threads, torch_threads):
    print(f"\n640x480, {args.frames} frames, best of {args.rounds} round(s):")
    for threads in sorted({default_threads, 1}, reverse=True):
        print(f"  plain MTCNN(...)(img) loop, torch threads {threads}: {best[threads]:.2f} frames/s")
    print(f"  preprocess pipeline, {args.workers} worker(s) x {torch_threads} thread(s), "
          f"batch {args.detect_batch}: {best['ours']:.2f} frames/s")
    print(f"  speed-up vs plain loop at torch's default {default_threads} threads: "
          f"{best['ours'] / best[default_threads]:.2f}x; vs 1 thread: {best['ours'] / best[1]:.2f}x")


def print_hd(args, settings, hd):
    full, small = hd[0], hd[settings.detect_size]
    a, b = chosen_landmarks(os.path.join(full['out'], 'clip1080')), \
        chosen_landmarks(os.path.join(small['out'], 'clip1080'))
    shared = sorted(set(a) & set(b))
    moved = max((np.abs(a[f] - b[f]).max() for f in shared), default=float('nan'))
    print(f"\n1920x1080, {args.hd_frames} frames, 3 people, best of {args.rounds} round(s), "
          f"{args.workers} worker(s):")
    print(f"  detection at full resolution (-detect_size 0): {full['fps']:.2f} frames/s")
    print(f"  detection on a copy at 720 px (-detect_size {settings.detect_size}): "
          f"{small['fps']:.2f} frames/s")
    print(f"  speed-up: {small['fps'] / full['fps']:.2f}x; people tracked {full['summary']['people']} vs "
          f"{small['summary']['people']}; faces of person 1 {full['summary']['faces']} vs "
          f"{small['summary']['faces']}; largest landmark difference {moved:.1f} px (full-frame pixels)")


def main(argv=None):
    args = parse_args(argv)
    settings = FaceSettings(detect_batch=args.detect_batch)
    with tempfile.TemporaryDirectory() as tmp:
        best, default_threads, torch_threads = measure_640(args, settings, tmp)
        hd = measure_hd(args, settings, tmp) if args.hd_frames else {}
        print_640(args, best, default_threads, torch_threads)
        if hd:
            print_hd(args, settings, hd)  # reads the runs' detections.csv, inside tmp


if __name__ == '__main__':
    sys.exit(console.run_command(main))
