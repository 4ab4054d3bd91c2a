"""Time smooth_predict.py at the full Aff-Wild2 EXPR validation size (280,532 frames, 70 videos).

Generates noisy per-frame logits of both models around piecewise-constant ground truth (so
smoothing has something to fix), with ~8% of frames faceless, writes them as the two
predictions.npz files plus an annotation folder, and, for soft and for hard fusion, times:
  1. the array work alone: build_video_table, the whole search (9 logits-mode K + 45 fused-mode
     (K, A) = 54 settings; each mode also timed alone) and the final labels, and measures the
     search's peak memory with tracemalloc (it must grow with the frames, not with K);
  2. the whole command in-process: reading inputs, -search, metrics, outputs, with 2 plots
     (the default) and without plots.
The target is under 10 s for the full command with -search; the section it writes in
benchmarks/RESULTS.md (unless --no_results_md) keeps the figures.

    .venv/bin/python benchmarks/bench_smooth_predict.py [-frames 280532] [-videos 70] [-format abaw3]
"""
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import console  # noqa: E402  (both spellings of every flag, errors as one line)

import fusion as fusion_rules  # noqa: E402  ('fusion' names the soft/hard mode below)
import smoothing_search  # noqa: E402
import video_table  # noqa: E402
from benchmarks.common import (RESULTS_MD, machine_info, machine_markdown,  # noqa: E402
                               update_results_section)
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


def time_arrays(coarse, negative, anno, fusion):
    """Lines of text: the array work of one fusion, timed, and the search's peak memory."""
    start = time.perf_counter()
    table = video_table.build_video_table(coarse, negative, fusion, anno)
    built = time.perf_counter()
    rows, best = smoothing_search.search(table)
    searched = time.perf_counter()
    setting = smoothing_search.best_setting(best, fusion)
    labels = table.all_frame_labels(np.argmax(table.smoothed(setting), axis=1))
    done = time.perf_counter()
    per_mode = []
    for mode in fusion_rules.SMOOTH_MODES:
        mode_start = time.perf_counter()
        mode_rows, _ = smoothing_search.search(table, modes=(mode,))
        seconds = time.perf_counter() - mode_start
        per_mode.append(f"{mode} {len(mode_rows)} settings {seconds:.2f} s "
                        f"({seconds / len(mode_rows) * 1000:.0f} ms each)")
    figure = next(row for row in rows if row['mode'] == 'logits'
                  and row['window'] == fusion_rules.FIGURE_WINDOW)

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    smoothing_search.search(table)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    rows_bytes = table.coarse_logits.nbytes + table.negative_logits.nbytes + table.probs.nbytes
    return [
        f"{fusion} fusion, arrays: build_video_table {built - start:.2f} s, search of {len(rows)} "
        f"settings {searched - built:.2f} s ({'; '.join(per_mode)} when run alone), final labels "
        f"{done - searched:.2f} s; {labels.size} frame labels",
        f"{fusion} fusion: best {setting.short} macro F1 {best['macro_f1']:.4f}; the release's "
        f"figure (logits K={fusion_rules.FIGURE_WINDOW}) {figure['macro_f1']:.4f}; "
        f"no smoothing {rows[0]['macro_f1']:.4f}",
        f"{fusion} fusion, search memory: peak {peak / 2 ** 20:.0f} MB above the table "
        f"= {peak / table.frames.size:.0f} bytes per predicted frame (the table's logits and "
        f"probabilities: {rows_bytes / table.frames.size:.0f} bytes per frame)",
    ]


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = console.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=280532)
    parser.add_argument('--videos', type=int, default=70)
    parser.add_argument('--format', choices=('abaw3', 'csv'), default='abaw3')
    parser.add_argument('--no_results_md', action='store_true',
                        help='do not rewrite the section in benchmarks/RESULTS.md')
    args = parser.parse_args()
    info = machine_info()
    lines = []

    def say(line):
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        anno, total, predicted = generate(folder, args.frames, args.videos)
        say(f"generated {total} frames ({predicted} with a face) in {args.videos} videos "
            f"in {time.perf_counter() - start:.1f} s")
        coarse_path, negative_path = (os.path.join(folder, f"{k}.npz") for k in ('coarse', 'negative'))

        coarse = video_table.load_predictions(coarse_path, 'coarse')
        negative = video_table.load_predictions(negative_path, 'negative')
        for fusion in ('soft', 'hard'):
            for line in time_arrays(coarse, negative, anno, fusion):
                say(line)

        for fusion in ('soft', 'hard'):
            for plots in (2, 0):
                # The command as a user runs it, in its own process: start-up and imports count.
                wall, cpu = time.perf_counter(), _children_cpu()
                done = subprocess.run([sys.executable, os.path.join(ROOT, 'smooth_predict.py'),
                                       '-coarse', coarse_path, '-negative', negative_path,
                                       '-output', os.path.join(folder, f'out_{fusion}{plots}'),
                                       '-anno_folder', anno, '-search', '-fusion', fusion,
                                       '-format', args.format, '-plot', str(plots)],
                                      capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"smooth_predict.py failed (exit {done.returncode}): {done.stderr[-2000:]}")
                wall, cpu = time.perf_counter() - wall, _children_cpu() - cpu
                say(f"full command ({fusion} fusion, -search, -format {args.format}, -plot {plots}): "
                    f"{wall:.2f} s wall = {wall / 10:.2f} of the 10 s budget ({cpu:.2f} s CPU; "
                    f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

    if not args.no_results_md:
        body = ("## smooth_predict.py at full validation size (`benchmarks/bench_smooth_predict.py`)\n\n"
                + machine_markdown(info)
                + "\n`-search` scores 54 settings per fusion: Smooth Predicting on the logits (the "
                  "release's figure) for 9 K, and on the fused probabilities for 9 K x 5 A. The "
                  "search holds a fixed number of arrays of the rows' size whatever K (cumulative "
                  "sums, one window mean, one smoothed copy), hence memory per frame. The macro F1 "
                  "figures are of generated logits (independent noise around ~300-frame segments, "
                  "where long windows win); they say nothing about Aff-Wild2.\n\n```\n"
                + '\n'.join(lines) + "\n```")
        update_results_section('bench_smooth_predict', body)
        print(f"wrote {os.path.relpath(RESULTS_MD)}")


if __name__ == '__main__':
    sys.exit(console.run_command(main))
