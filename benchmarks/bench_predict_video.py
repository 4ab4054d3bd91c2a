"""Frames/s of predict_video.py on a 640x480 clip on CPU, end to end and per stage.

    python benchmarks/bench_predict_video.py [--seconds 30] [--workers 0 2] [--swin_s_faces 64]
                                             [--export]

The clip is skimage's astronaut on grey, a face in 3 of 4 frames, 30 fps. The models are random-
weight Swins of configs/demo_tiny.yaml (what `make demo` trains), so the classify stage here is the
demo model's; Swin-S (configs/swin_small_patch4_window7_224.yaml, the paper's model) classify
speed is measured separately on aligned faces through the same predict_video.Model path, eager
(.pdparams) and, with --export, through the exported paddle.inference predictor. Labels do not
change speed, so random weights are fine. Model loading is excluded; per-stage times are those
predict_video.py itself reports (with detection workers > 0, `detect` is the time spent waiting
for the workers, which run in parallel with the other stages).
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

import cpu_env  # noqa: E402,F401
from common import machine_info, machine_markdown, update_results_section, write_json  # noqa: E402
from synthetic_video import astronaut_head, face_frames  # noqa: E402


import predict_video  # noqa: E402
from preprocess.video import write_video  # noqa: E402

STAGES = ('decode', 'detect', 'align', 'classify')


def clip_frames(count, width=640, height=480, chunk=30):
    # Generated a chunk at a time: a 30 s clip held whole would take ~0.8 GB.
    head = astronaut_head(height * 5 // 8)
    for start in range(0, count, chunk):
        flags = [(i % 4) != 3 for i in range(start, min(count, start + chunk))]
        yield from face_frames(flags, width, height, head=head)


def save_random_model(cfg_file, class_type, path, seed):
    import paddle

    from config import get_config, update_config
    from swin_transformer import build_swin
    paddle.seed(seed)
    config = update_config(get_config(cfg_file), argparse.Namespace(class_type=class_type))
    paddle.save(build_swin(config).state_dict(), path)
    return path


def swin_s_classify(tmp, faces, export, rounds=2):
    """Faces/s of the Swin-S coarse model on aligned faces (transform + forward), eager and exported."""
    from PIL import Image
    cfg = predict_video.RELEASE_CFG
    weights = save_random_model(cfg, 'coarse', os.path.join(tmp, 'swin_s.pdparams'), 0)
    head = Image.fromarray(astronaut_head(224))
    batch = [head] * 32
    results = {}
    variants = [('eager .pdparams', weights)]
    if export:
        import argparse as _argparse

        import paddle

        from config import get_config, update_config
        from predictor import export_model
        from swin_transformer import build_swin
        config = update_config(get_config(cfg), _argparse.Namespace(class_type='coarse'))
        model = build_swin(config)
        model.set_state_dict(paddle.load(weights))
        variants.append(('exported predictor', export_model(model, config, os.path.join(tmp, 'swin_s'))))
    for label, path in variants:
        model = predict_video.Model('coarse', cfg, path)
        model(batch[:2])  # warm-up
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            done = 0
            while done < faces:
                done += len(model(batch[:min(32, faces - done)]))
            best = max(best, done / (time.perf_counter() - start))
        results[label] = best
        print(f"Swin-S classify ({label}): {best:.2f} faces/s", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--fps', type=int, default=30)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, os.cpu_count() or 1])
    parser.add_argument('--swin_s_faces', type=int, default=64)
    parser.add_argument('--export', action='store_true', help='also time the exported Swin-S')
    parser.add_argument('--json', default=None, help='also write the numbers to this JSON file')
    args = parser.parse_args()
    info = machine_info()
    frames = int(round(args.seconds * args.fps))

    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, 'clip640.mp4')
        write_video(video, clip_frames(frames), fps=args.fps)
        weights = {kind: save_random_model(predict_video.DEMO_CFG, kind, os.path.join(tmp, f'{kind}.pdparams'), seed)
                   for seed, kind in enumerate(('coarse', 'negative'))}
        runs = {}
        for workers in args.workers:
            out = os.path.join(tmp, f'out{workers}')
            argv = [video, '-output', out, '-workers', str(workers), '-window', '8']
            for kind in ('coarse', 'negative'):
                argv += [f'-{kind}_cfg', predict_video.DEMO_CFG, f'-{kind}_weights', weights[kind]]
            result = predict_video.run(predict_video.build_parser().parse_args(argv))
            video_result = result['done'][0]
            n = video_result['frames']
            runs[workers] = {
                'frames': n, 'faces': video_result['faces'], 'wall_s': video_result['wall'],
                'end_to_end_fps': n / video_result['wall'],
                'stage_s': video_result['seconds'],
                'stage_fps': {s: n / video_result['seconds'][s] for s in STAGES if video_result['seconds'].get(s)},
                'classify_faces_per_s': video_result['faces'] / video_result['seconds']['classify'],
            }
            print(f"workers {workers}: {runs[workers]}", flush=True)
        swin_s = swin_s_classify(tmp, args.swin_s_faces, args.export)

    lines = [f"640x480, {args.seconds:g} s at {args.fps} fps ({frames} frames, a face in 3 of 4), "
             "demo_tiny models (random weights), soft fusion, K=8:", '',
             '| detection workers | end to end | decode | detect | align+JPEG | classify (demo_tiny, both models) |',
             '|---|---|---|---|---|---|']
    for workers, r in runs.items():
        fps = r['stage_fps']
        lines.append(f"| {workers} | {r['end_to_end_fps']:.1f} | {fps['decode']:.0f} | {fps['detect']:.1f} | "
                     f"{fps['align']:.0f} | {fps['classify']:.1f} frames/s ({r['classify_faces_per_s']:.1f} faces/s) |")
    lines += ['', 'All in frames/s: each stage is frames / seconds spent in it. Swin-S classify '
              '(coarse model, transform + forward, batch 32): '
              + ', '.join(f"{label} {value:.2f} faces/s" for label, value in swin_s.items())
              + '; both models on every face need twice that time.', '', machine_markdown(info)]
    body = '## predict_video.py (benchmarks/bench_predict_video.py)\n\n' + '\n'.join(lines)
    print('\n' + body)
    update_results_section('bench_predict_video', body)
    if args.json:
        write_json(args.json, {'machine': info, 'runs': runs, 'swin_s_faces_per_s': swin_s})


if __name__ == '__main__':
    main()
