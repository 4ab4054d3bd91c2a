"""Time smooth_predict.py at the full Aff-Wild2 EXPR validation size (280,532 frames, 70 videos).

Generates noisy per-frame logits around piecewise-constant ground truth (so smoothing has
something to fix), with ~8% of frames faceless, writes them as the two predictions.npz files plus
an annotation folder, and times:
  1. the array work alone: build_video_table + the full 9 x 5 search + final labels;
  2. the whole command in-process: reading inputs, -search, metrics, outputs, with 2 plots
     (the default) and without plots.
The target in issue 5 is under 10 s for the full command.

    python benchmarks/bench_smooth_predict.py [--frames 280532] [--videos 70] [--format abaw3]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import smooth_predict  # noqa: E402
from labels import (COARSE_CLASSES, COARSE_MAP, NEGATIVE_CLASSES, NEGATIVE_MAP,  # noqa: E402
                    write_annotation)


def generate(folder, total_frames, num_videos, seed=0):
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, total_frames), num_videos - 1, replace=False))
    lengths = np.diff(np.concatenate([[0], cuts, [total_frames]]))
    anno_folder = os.path.join(folder, 'anno')
    os.makedirs(anno_folder)
    paths, coarse_logits, negative_logits = [], [], []
    for v, length in enumerate(lengths):
        name = f"video{v:03d}"
        segment_starts = np.sort(rng.choice(length, size=max(1, length // 300), replace=False))
        segment_starts[0] = 0
        segment_labels = rng.integers(0, 8, segment_starts.size)
        truth = segment_labels[np.searchsorted(segment_starts, np.arange(length), 'right') - 1]
        annotated = truth.copy()
        annotated[rng.random(length) < 0.02] = -1
        write_annotation(os.path.join(anno_folder, name + '.txt'), annotated)
        face = rng.random(length) > 0.08
        frames = np.flatnonzero(face) + 1
        coarse = rng.normal(0, 1.5, (frames.size, 5))
        coarse[np.arange(frames.size), np.asarray(COARSE_MAP)[truth[face]]] += 1.5
        negative = rng.normal(0, 1.5, (frames.size, 4))
        target = np.asarray(NEGATIVE_MAP)[truth[face]]
        has = target >= 0
        negative[np.flatnonzero(has), target[has]] += 1.5
        paths.extend(f"{name}/{frame:05d}.jpg" for frame in frames)
        coarse_logits.append(coarse)
        negative_logits.append(negative)
    paths = np.asarray(paths)
    shuffle = rng.permutation(paths.size)  # -eval may write rows in any order
    for kind, logits, classes in (('coarse', coarse_logits, COARSE_CLASSES),
                                  ('negative', negative_logits, NEGATIVE_CLASSES)):
        np.savez(os.path.join(folder, f"{kind}.npz"), paths=paths[shuffle],
                 logits=np.concatenate(logits)[shuffle].astype(np.float32),
                 labels=np.full(paths.size, -1), class_names=np.asarray(classes),
                 class_type=np.asarray(kind))
    return anno_folder, int(lengths.sum()), paths.size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=280532)
    parser.add_argument('--videos', type=int, default=70)
    parser.add_argument('--format', choices=('abaw3', 'csv'), default='abaw3')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        anno, total, predicted = generate(folder, args.frames, args.videos)
        print(f"generated {total} frames ({predicted} with a face) in {args.videos} videos "
              f"in {time.perf_counter() - start:.1f} s")
        coarse_path, negative_path = (os.path.join(folder, f"{k}.npz") for k in ('coarse', 'negative'))

        coarse = smooth_predict.load_predictions(coarse_path, 'coarse')
        negative = smooth_predict.load_predictions(negative_path, 'negative')
        start = time.perf_counter()
        table = smooth_predict.build_video_table(coarse, negative, 'soft', anno)
        built = time.perf_counter()
        rows, best = smooth_predict.search(table)
        searched = time.perf_counter()
        labels = table.all_frame_labels(np.argmax(
            table.window_means(best['window']).smooth(best['window'], best['alpha']), axis=1))
        done = time.perf_counter()
        print(f"arrays: build_video_table {built - start:.2f} s, search of {len(rows)} (K, A) "
              f"{searched - built:.2f} s ({(searched - built) / len(rows) * 1000:.0f} ms each), "
              f"final labels {done - searched:.2f} s; best K={best['window']} A={best['alpha']:g} "
              f"macro F1 {best['macro_f1']:.4f}; {labels.size} frame labels")

        for plots in (2, 0):
            wall, cpu = time.perf_counter(), time.process_time()
            smooth_predict.main(['-coarse', coarse_path, '-negative', negative_path,
                                 '-output', os.path.join(folder, f'out{plots}'), '-anno_folder',
                                 anno, '-search', '-format', args.format, '-plot', str(plots)])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"full command (-search, -format {args.format}, -plot {plots}): {wall:.2f} s "
                  f"wall = {wall / 10:.2f} of the 10 s budget ({cpu:.2f} s CPU; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

if __name__ == '__main__':
    main()
