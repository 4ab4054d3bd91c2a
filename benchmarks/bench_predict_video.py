"""Frames/s of predict_video.py on a 640x480 clip on CPU, end to end and per stage.

    python benchmarks/bench_predict_video.py [--seconds 30] [--workers 0 2]
        [--swin_s_seconds 4] [--swin_s_backends eager predictor onnx onnx_int8]
    python benchmarks/bench_predict_video.py --sampling [--sampling_seconds 10] [--agree_probs 0 0.1 ...]
    python benchmarks/bench_predict_video.py --live [--live_seconds 20]

--sampling compares -sampling all and adaptive in one run: frames/s with the two Swin-S models
(eager and int8 ONNX) on the 640x480 clip, then macro F1, agreement with `all` and the share of
frames processed on the demo's validation videos with the demo's models (needs `make demo`).
--live runs predict_video.py -live on a 640x480 file played at 25 frames/s with the demo's models:
skipped frames, latency, and the rows left after a SIGKILL.

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
import csv
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import console  # noqa: E402  (both spellings of every flag, errors as one line)

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


def save_random_model(cfg_file, class_type, path, seed, head_scale=1.0):
    import paddle

    from config import get_config, update_config
    from swin_transformer import build_swin
    paddle.seed(seed)
    config = update_config(get_config(cfg_file), argparse.Namespace(class_type=class_type))
    model = build_swin(config)
    if head_scale != 1.0:
        # A random head is unsure of every face; a wider one is as sure as a trained model on a
        # steady face, which is what adaptive sampling's decisions read.
        model.fc.weight.set_value(model.fc.weight.numpy() * head_scale)
    paddle.save(model.state_dict(), path)
    return path


SWIN_S_BACKENDS = {'eager': 'eager Paddle (.pdparams)', 'predictor': 'exported predictor (paddle.inference)',
                   'onnx': 'ONNX Runtime float32 (.onnx)', 'onnx_int8': 'ONNX Runtime int8 (.int8.onnx)'}


def swin_s_weights(tmp, backends, head_scale=1.0):
    """Random Swin-S coarse and negative weights in the format of each backend: {backend: {kind: path}}."""
    import paddle

    from config import get_config, update_config
    from predictor import export_model, export_onnx
    from swin_transformer import build_swin
    cfg = predict_video.RELEASE_CFG
    weights = {backend: {} for backend in SWIN_S_BACKENDS}
    for seed, kind in enumerate(predict_video.MODEL_KINDS):
        checkpoint = save_random_model(cfg, kind, os.path.join(tmp, f'swin_s_{kind}.pdparams'), seed, head_scale)
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


# ----------------------------------------------------------------------------- -sampling adaptive

REALTIME_BACKENDS = ('eager', 'onnx_int8')


def sampling_speed(tmp, video, backends, workers, agree_prob):
    """predict_video.py -sampling all, then adaptive, per Swin-S backend on `video` (random weights
    with a widened head): frames/s end to end and the share of frames processed."""
    results = {}
    for backend, weights in swin_s_weights(tmp, backends, head_scale=50.0).items():
        for sampling in ('all', 'adaptive'):
            out = os.path.join(tmp, f'out_sampling_{backend}_{sampling}')
            argv = [video, '-output', out, '-workers', str(workers), '-sampling', sampling,
                    '-agree_prob', str(agree_prob)]
            for kind in predict_video.MODEL_KINDS:
                argv += [f'-{kind}_cfg', predict_video.RELEASE_CFG, f'-{kind}_weights', weights[kind]]
            done = predict_video.run(predict_video.build_parser().parse_args(argv))['done'][0]
            rows = read_rows(os.path.join(out, done['name'] + '.csv'))
            result = {'frames': done['frames'], 'wall_s': done['wall'],
                      'end_to_end_fps': done['frames'] / done['wall'],
                      'processed_share': (sum(row['processed'] == '1' for row in rows) / len(rows)
                                          if sampling == 'adaptive' else 1.0)}
            print(f"Swin-S {backend}, -sampling {sampling}: {result}", flush=True)
            result['labels'] = [row['label_id'] for row in rows]
            results[(backend, sampling)] = result
    return results


def read_rows(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def demo_validation_videos():
    """{video path: {annotation name: (side or None, labels)}} of the demo's validation set."""
    from labels import read_annotation, split_person
    data = os.path.join(predict_video.DEMO_WORK, 'data')
    annotations = os.path.join(data, 'annotations', 'Validation_Set')
    if not os.path.isdir(annotations):
        raise SystemExit(f"{annotations} not found: run `make demo` first")
    videos = {}
    for name in sorted(os.listdir(annotations)):
        stem = os.path.splitext(name)[0]
        video, side = split_person(stem)
        videos.setdefault(os.path.join(data, 'videos', video + '.mp4'), {})[stem] = (
            side, np.asarray(read_annotation(os.path.join(annotations, name))))
    return videos


def annotated_labels(video, annotations, fps, smoothing):
    """{annotation name: predicted label of each frame} (person 1, or the left / right person)."""
    from fusion import NEUTRAL
    people = dict(predict_video.person_analyses(video, 1.0, fps))
    sides = video['tracked'].left_right()
    result = {}
    for stem, (side, _) in annotations.items():
        number = sides[side] if side else 1
        if number in people:
            result[stem] = predict_video.fuse_and_smooth(people[number], smoothing)[1]
        else:
            result[stem] = np.full(video['frames'], NEUTRAL)
    return result


def replayed(video, fps, settings, agree_prob, fusion):
    """adaptive.Sampler run on the detections and logits `-sampling all` found (what processing a
    frame gives), so many -agree_prob values cost no model time. Returns the analysis dict."""
    import adaptive
    from preprocess.tracking import FaceTracker
    row_of = {key: row for row, key in enumerate(video['keys'])}

    def analyse_one(frame):
        faces = video['tracked'].faces[frame - 1]
        coarse = np.full((len(faces), 5), np.nan)
        negative = np.full((len(faces), 4), np.nan)
        for index in range(len(faces)):
            if (frame, index) in row_of:
                coarse[index] = video['coarse_logits'][row_of[(frame, index)]]
                negative[index] = video['negative_logits'][row_of[(frame, index)]]
        return adaptive.Analysis(faces, coarse, negative)

    def analyse(frames, images):
        return [analyse_one(frame) for frame in frames]

    sampler = adaptive.Sampler(analyse, FaceTracker(fps, settings.min_prob, settings.track_gap_s),
                               adaptive.DEFAULT_STRIDES, agree_prob, fusion, settings.min_prob)
    records = []
    for frame in range(1, video['frames'] + 1):
        records += sampler.feed(frame, True)
    records += sampler.finish()
    tracked = video['tracked']
    return adaptive.records_to_video(records, settings.min_prob, (tracked.width, tracked.height), {})


def demo_accuracy(agree_probs, default_prob, workers):
    """Macro F1 after smoothing, label agreement with -sampling all and share processed on the
    demo's validation videos with the demo's models: `all` and adaptive at `default_prob` run for
    real; every value of agree_probs replayed (`replayed`)."""
    import functools

    import adaptive
    from metrics import macro_f1
    from preprocess.faceloop import Detector
    from preprocess.faces import FaceSettings
    from preprocess.video import probe_frame_rate
    from fusion import Smoothing
    smoothing = Smoothing()
    settings = FaceSettings()
    models = [predict_video.Model(kind, predict_video.DEMO_CFG, predict_video.demo_weights(kind))
              for kind in predict_video.MODEL_KINDS]
    classify = functools.partial(predict_video.classify_faces, models, smoothing)
    contenders = ['all', 'adaptive (run)'] + [f'adaptive (replayed) {p:g}' for p in agree_probs]
    truth, wall = [], {}
    predicted = {c: [] for c in contenders}
    processed = {c: [0, 0] for c in contenders}
    with Detector(settings, workers=workers) as detector:
        for path, annotations in demo_validation_videos().items():
            fps = probe_frame_rate(path) or 30.0
            runs = {}
            start = time.perf_counter()
            runs['all'] = predict_video.analyse_video(path, detector, models, smoothing, fps=fps)
            wall['all'] = wall.get('all', 0.0) + time.perf_counter() - start
            start = time.perf_counter()
            runs['adaptive (run)'] = adaptive.analyse_video_adaptive(
                path, detector, classify, adaptive.DEFAULT_STRIDES, default_prob, smoothing.fusion, fps=fps)
            wall['adaptive (run)'] = wall.get('adaptive (run)', 0.0) + time.perf_counter() - start
            for p in agree_probs:
                runs[f'adaptive (replayed) {p:g}'] = replayed(runs['all'], fps, settings, p, smoothing.fusion)
            labels = {c: annotated_labels(run, annotations, fps, smoothing) for c, run in runs.items()}
            for stem, (_, truth_labels) in annotations.items():
                count = min(len(truth_labels), runs['all']['frames'])
                valid = truth_labels[:count] >= 0
                truth.append(truth_labels[:count][valid])
                for c in contenders:
                    predicted[c].append(np.asarray(labels[c][stem])[:count][valid])
            for c in contenders:
                share = runs[c].get('processed')
                processed[c][0] += runs[c]['frames'] if share is None else int(share.sum())
                processed[c][1] += runs[c]['frames']
    truth = np.concatenate(truth)
    reference = np.concatenate(predicted['all'])
    results = {}
    for c in contenders:
        labels = np.concatenate(predicted[c])
        results[c] = {'macro_f1': macro_f1(truth, labels, 8), 'agreement': float(np.mean(labels == reference)),
                      'processed_share': processed[c][0] / processed[c][1], 'frames': int(truth.size),
                      'wall_s': wall.get(c)}
        print(f"demo validation, {c}: {results[c]}", flush=True)
    return results


def sampling_section(args, info):
    """The -sampling all / adaptive comparison: speed with Swin-S, accuracy on the demo's data."""
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, 'clip640.mp4')
        write_video(video, clip_frames(int(round(args.sampling_seconds * args.fps))), fps=args.fps)
        speed = sampling_speed(tmp, video, args.sampling_backends, max(args.workers), args.agree_prob)
    accuracy = demo_accuracy(args.agree_probs, args.agree_prob, max(args.workers))
    frames = next(iter(speed.values()))['frames']
    lines = [f"Swin-S coarse and negative models (random weights, head widened x50 so that they are as sure "
             f"of the clip's steady face as a trained model), 640x480 clip of {args.sampling_seconds:g} s at "
             f"{args.fps} fps ({frames} frames, a face in 3 of 4), {max(args.workers)} detection workers, "
             f"-strides 8,2,1 -agree_prob {args.agree_prob:g}; `all` then `adaptive` per backend, in one run:", '',
             '| Swin-S backend | -sampling all frames/s | -sampling adaptive frames/s | ratio | frames processed | '
             'labels equal to all |', '|---|---|---|---|---|---|']
    for backend in args.sampling_backends:
        every, sampled = speed[(backend, 'all')], speed[(backend, 'adaptive')]
        equal = np.mean([a == b for a, b in zip(every['labels'], sampled['labels'])])
        lines.append(f"| {SWIN_S_BACKENDS[backend]} | {every['end_to_end_fps']:.2f} | "
                     f"{sampled['end_to_end_fps']:.2f} | {sampled['end_to_end_fps'] / every['end_to_end_fps']:.2f}x | "
                     f"{100 * sampled['processed_share']:.1f}% | {100 * equal:.1f}% |")
    first = accuracy['all']
    lines += ['', f"The demo's validation videos ({first['frames']} annotated frames) with the demo's models "
              "(`make demo`), release smoothing (logits, K=2), soft fusion. `all` and `adaptive (run)` "
              f"(-agree_prob {args.agree_prob:g}) are real runs; the `replayed` rows run the same sampler on the "
              "detections and logits of `all` (what processing a frame gives) for other -agree_prob values:", '',
              '| sampling | macro F1 | labels equal to all | frames processed | seconds (demo models) |',
              '|---|---|---|---|---|']
    for c, r in accuracy.items():
        seconds = f"{r['wall_s']:.1f}" if r['wall_s'] is not None else ''
        lines.append(f"| {c} | {r['macro_f1']:.4f} | {100 * r['agreement']:.1f}% | "
                     f"{100 * r['processed_share']:.1f}% | {seconds} |")
    lines += ['', machine_markdown(info)]
    body = ('## predict_video.py -sampling adaptive (benchmarks/bench_predict_video.py --sampling)\n\n'
            + '\n'.join(lines))
    print('\n' + body)
    update_results_section('bench_predict_video_sampling', body)
    return {'speed': {f'{b}/{s}': {k: v for k, v in r.items() if k != 'labels'} for (b, s), r in speed.items()},
            'demo_validation': accuracy}


# ----------------------------------------------------------------------------- -live

def live_run(video, out, flags, kill_after=None):
    """predict_video.py -live on `video` in a subprocess with the demo's models; returns its end
    summary, or with kill_after, SIGKILLs it that many seconds after the source opened and returns
    the frames the file had delivered by then (estimated from the clock) and the rows on disk."""
    import re
    import subprocess
    import threading
    out = os.path.join(out, 'live_' + '_'.join(flags).replace('-', '') + ('_kill' if kill_after else ''))
    command = [sys.executable, os.path.join(ROOT, 'predict_video.py'), video, '-live', '-output', out,
               '-overwrite'] + flags
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    opened, lines = threading.Event(), []

    def read():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith('live: ') and ' -> ' in line:
                lines.append(time.monotonic())
                opened.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill_after is None:
        proc.wait()
        reader.join()
        summary = [line for line in lines if isinstance(line, str) and 'frames seen' in line]
        if proc.returncode != 0 or not summary:
            raise SystemExit(f"predict_video.py -live failed (exit {proc.returncode}):\n"
                             + ''.join(line for line in lines if isinstance(line, str))[-3000:])
        summary = summary[-1]
        numbers = dict(re.findall(r'(seen|processed|filled|skipped) (\d+)', summary))
        latency = re.search(r'median ([\d.]+) s, 95th percentile ([\d.]+) s', summary)
        return {**{k: int(v) for k, v in numbers.items()},
                'latency_median_s': float(latency.group(1)), 'latency_p95_s': float(latency.group(2))}
    opened.wait()
    started = next(line for line in lines if isinstance(line, float))
    time.sleep(kill_after)
    proc.kill()
    killed = time.monotonic()
    proc.wait()
    fps = 25.0
    rows = read_rows(os.path.join(out, os.path.splitext(os.path.basename(video))[0] + '.csv'))
    delivered = int((killed - started) * fps)
    written = len({row['frame'] for row in rows})
    return {'delivered_by_kill': delivered, 'rows_on_disk': written, 'lost_s': (delivered - written) / fps}


def live_section(args, info):
    """-live with the demo's models on a 640x480 file played at 25 frames/s."""
    weights = []
    for kind in predict_video.MODEL_KINDS:
        weights += [f'-{kind}_cfg', predict_video.DEMO_CFG, f'-{kind}_weights', predict_video.demo_weights(kind)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, 'clip640_25fps.mp4')
        write_video(video, clip_frames(int(round(args.live_seconds * 25))), fps=25)
        for sampling in ('all', 'adaptive'):
            results[sampling] = live_run(video, tmp, ['-sampling', sampling] + weights)
            print(f"-live -sampling {sampling}: {results[sampling]}", flush=True)
        results['kill'] = live_run(video, tmp, ['-sampling', 'adaptive'] + weights, kill_after=args.live_seconds / 2)
        print(f"-live -sampling adaptive, SIGKILL: {results['kill']}", flush=True)
    lines = [f"`-live` on a 640x480 file of {args.live_seconds:g} s played at 25 frames/s (astronaut, a face in 3 "
             "of 4 frames), the demo's models, default flags (`-live_queue 8`, release smoothing made causal), "
             "in one run:", '',
             '| -sampling | frames seen | processed | filled | skipped | latency median | latency 95th percentile |',
             '|---|---|---|---|---|---|---|']
    for sampling in ('all', 'adaptive'):
        r = results[sampling]
        lines.append(f"| {sampling} | {r['seen']} | {r['processed']} | {r['filled']} | "
                     f"{r['skipped']} ({100 * r['skipped'] / r['seen']:.1f}%) | {r['latency_median_s']:.2f} s | "
                     f"{r['latency_p95_s']:.2f} s |")
    kill = results['kill']
    lines += ['', f"SIGKILL {args.live_seconds / 2:g} s after the source opened (-sampling adaptive): the file had "
              f"delivered about {kill['delivered_by_kill']} frames, the CSV held rows for {kill['rows_on_disk']}: "
              f"{kill['lost_s']:.2f} s of rows lost.", '', machine_markdown(info)]
    body = '## predict_video.py -live (benchmarks/bench_predict_video.py --live)\n\n' + '\n'.join(lines)
    print('\n' + body)
    update_results_section('bench_predict_video_live', body)
    return results


def main():
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=30.0)
    parser.add_argument('--fps', type=int, default=30)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, os.cpu_count() or 1])
    parser.add_argument('--swin_s_seconds', type=float, default=4.0,
                        help='length of the clip for the Swin-S runs (0: none)')
    parser.add_argument('--swin_s_backends', nargs='+', choices=list(SWIN_S_BACKENDS), default=list(SWIN_S_BACKENDS))
    parser.add_argument('--json', default=None, help='also write the numbers to this JSON file')
    parser.add_argument('--sampling', action='store_true',
                        help='only the -sampling all / adaptive comparison (needs `make demo`)')
    parser.add_argument('--sampling_seconds', type=float, default=10.0, help='clip length for --sampling')
    parser.add_argument('--sampling_backends', nargs='+', choices=list(SWIN_S_BACKENDS),
                        default=list(REALTIME_BACKENDS))
    parser.add_argument('--agree_prob', type=float, default=None,
                        help="--sampling: -agree_prob of the real adaptive runs (default: predict_video's)")
    parser.add_argument('--agree_probs', type=float, nargs='+', default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                        help='--sampling: -agree_prob values replayed on the demo validation videos')
    parser.add_argument('--live', action='store_true', help='only the -live runs (needs `make demo`)')
    parser.add_argument('--live_seconds', type=float, default=20.0, help='clip length for --live')
    args = parser.parse_args()
    info = machine_info()
    if args.live:
        result = live_section(args, info)
        if args.json:
            write_json(args.json, {'machine': info, 'live': result})
        return
    if args.sampling:
        import adaptive
        if args.agree_prob is None:
            args.agree_prob = adaptive.DEFAULT_AGREE_PROB
        result = sampling_section(args, info)
        if args.json:
            write_json(args.json, {'machine': info, **result})
        return
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
    sys.exit(console.run_command(main))
