"""Frames/s of predict_video.py on a 640x480 clip on CPU, end to end and per stage.

    python benchmarks/bench_predict_video.py [--seconds 30] [--workers 0 2]
        [--swin_s_seconds 4] [--swin_s_backends eager predictor onnx onnx_int8]

The clip is skimage's astronaut on grey, a face in 3 of 4 frames, 30 fps. The models are random-
weight Swins of configs/demo_tiny.yaml (what `make demo` trains), so the classify stage here is the
demo model's. Then the paper's models, two Swin-S (configs/swin_small_patch4_window7_224.yaml),
run predict_video.py end to end on the first --swin_s_seconds of the clip once per backend: eager
(.pdparams), the exported paddle.inference predictor, and ONNX Runtime float32 and int8
(tools/export_model.py's files); with them classification sets the pace. Labels do not change
speed, so random weights are fine. Model loading is excluded; per-stage times are those
predict_video.py itself reports (with detection workers > 0, `detect` is the time spent waiting
for the workers, which run in parallel with the other stages). The backends run one after the
other, not alternately: on a shared machine compare them within one run and read the load
average printed with it.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cpu_env  # noqa: E402,F401
from common import machine_info, machine_markdown, update_results_section, write_json  # noqa: E402
from demo.synthetic_video import astronaut_head, face_frames  # noqa: E402


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


SWIN_S_BACKENDS = {'eager': 'eager Paddle (.pdparams)', 'predictor': 'exported predictor (paddle.inference)',
                   'onnx': 'ONNX Runtime float32 (.onnx)', 'onnx_int8': 'ONNX Runtime int8 (.int8.onnx)'}


def swin_s_weights(tmp, backends):
    """Random Swin-S coarse and negative weights in the format of each backend: {backend: {kind: path}}."""
    import paddle

    from config import get_config, update_config
    from predictor import export_model, export_onnx
    from swin_transformer import build_swin
    cfg = predict_video.RELEASE_CFG
    weights = {backend: {} for backend in SWIN_S_BACKENDS}
    for seed, kind in enumerate(predict_video.MODEL_KINDS):
        checkpoint = save_random_model(cfg, kind, os.path.join(tmp, f'swin_s_{kind}.pdparams'), seed)
        weights['eager'][kind] = checkpoint
        if set(backends) == {'eager'}:
            continue
        config = update_config(get_config(cfg), argparse.Namespace(class_type=kind))
        model = build_swin(config)
        model.set_state_dict(paddle.load(checkpoint))
        prefix = export_model(model, config, os.path.join(tmp, f'swin_s_{kind}'))
        weights['predictor'][kind] = prefix
        if {'onnx', 'onnx_int8'} & set(backends):
            onnx_file, int8_file = export_onnx(prefix, prefix + '.onnx', int8_file=prefix + '.int8.onnx')
            weights['onnx'][kind], weights['onnx_int8'][kind] = onnx_file, int8_file
    return {backend: weights[backend] for backend in backends}


def swin_s_end_to_end(tmp, video, backends, workers):
    """predict_video.py with two Swin-S models on `video`, once per backend."""
    results = {}
    for backend, weights in swin_s_weights(tmp, backends).items():
        argv = [video, '-output', os.path.join(tmp, f'out_swin_s_{backend}'), '-workers', str(workers),
                '-window', '8']
        for kind in predict_video.MODEL_KINDS:
            argv += [f'-{kind}_cfg', predict_video.RELEASE_CFG, f'-{kind}_weights', weights[kind]]
        done = predict_video.run(predict_video.build_parser().parse_args(argv))['done'][0]
        results[backend] = {'frames': done['frames'], 'faces': done['faces'], 'wall_s': done['wall'],
                            'end_to_end_fps': done['frames'] / done['wall'],
                            'classify_faces_per_s': done['faces'] / done['seconds']['classify']}
        print(f"Swin-S, {SWIN_S_BACKENDS[backend]}: {results[backend]}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--fps', type=int, default=30)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, os.cpu_count() or 1])
    parser.add_argument('--swin_s_seconds', type=float, default=4.0,
                        help='length of the clip for the Swin-S runs (0: none)')
    parser.add_argument('--swin_s_backends', nargs='+', choices=list(SWIN_S_BACKENDS), default=list(SWIN_S_BACKENDS))
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
        swin_s = {}
        if args.swin_s_seconds > 0:
            short = os.path.join(tmp, 'clip640_short.mp4')
            write_video(short, clip_frames(int(round(args.swin_s_seconds * args.fps))), fps=args.fps)
            swin_s = swin_s_end_to_end(tmp, short, args.swin_s_backends, max(args.workers))

    lines = [f"640x480, {args.seconds:g} s at {args.fps} fps ({frames} frames, a face in 3 of 4), "
             "demo_tiny models (random weights), soft fusion, K=8:", '',
             '| detection workers | end to end | decode | detect | align+JPEG | classify (demo_tiny, both models) |',
             '|---|---|---|---|---|---|']
    for workers, r in runs.items():
        fps = r['stage_fps']
        lines.append(f"| {workers} | {r['end_to_end_fps']:.1f} | {fps['decode']:.0f} | {fps['detect']:.1f} | "
                     f"{fps['align']:.0f} | {fps['classify']:.1f} frames/s ({r['classify_faces_per_s']:.1f} faces/s) |")
    lines += ['', 'All in frames/s: each stage is frames / seconds spent in it.']
    if swin_s:
        first = next(iter(swin_s.values()))
        lines += ['', f"With the paper's two Swin-S models ({args.swin_s_seconds:g} s of the same clip, "
                  f"{first['frames']} frames, {first['faces']} faces, {max(args.workers)} detection workers), "
                  "one backend after the other:", '',
                  '| Swin-S backend | end to end frames/s | classify faces/s (both models) |', '|---|---|---|']
        lines += [f"| {SWIN_S_BACKENDS[b]} | {r['end_to_end_fps']:.2f} | {r['classify_faces_per_s']:.2f} |"
                  for b, r in swin_s.items()]
    lines += ['', machine_markdown(info)]
    body = '## predict_video.py (benchmarks/bench_predict_video.py)\n\n' + '\n'.join(lines)
    print('\n' + body)
    update_results_section('bench_predict_video', body)
    if args.json:
        write_json(args.json, {'machine': info, 'runs': runs, 'swin_s_end_to_end': swin_s})


if __name__ == '__main__':
    main()
