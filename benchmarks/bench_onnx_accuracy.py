"""Accuracy of the int8 and bf16 models against float32, on the `make demo` models and validation set.

    python benchmarks/bench_onnx_accuracy.py [--demo_work demo_work] [--keep DIR]

Needs the models and aligned faces of `make demo` (demo_work/). Each step is one of the project's
own commands: tools/export_model.py exports both demo models as float32 ONNX, int8 ONNX (dynamic,
and static calibrated on the training videos' faces: `-int8 static -calibration`), and, on CPUs
with bf16 instructions, a bf16 paddle.inference export (`-bf16`); `-eval` runs the validation set
through each (predictions.npz each), and smooth_predict.py fuses each pair. Reported: per model
and variant, the share of validation frames whose label is the same as with float32 and the
largest logit difference; the fused macro F1 (8 classes, without smoothing and with the K and A
that -search picks on the same frames) of each variant; and, as a check of the float32 export,
the largest logit difference of the float32 ONNX model to the demo's own -eval of the .pdparams
checkpoint. The section `bench_onnx_accuracy` of benchmarks/RESULTS.md is rewritten.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]
import console  # noqa: E402  (both spellings of every flag, errors as one line)

import cpu_env  # noqa: E402  (threads before paddle; names the CPU's bf16 support)
import numpy as np  # noqa: E402

from common import machine_info, machine_markdown, update_results_section, write_json  # noqa: E402

DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo_tiny.yaml')
MODELS = ('coarse', 'negative')
# variant: (what it is, export flags, file the evaluation loads relative to the export prefix)
VARIANTS = {'float32': ('ONNX Runtime float32', ['-int8'], '.onnx'),
            'int8': ('ONNX Runtime int8, dynamic', [], '.int8.onnx'),
            'int8_static': ('ONNX Runtime int8, static (calibrated on the training faces)',
                            ['-int8', 'static', '-calibration'], '_static.int8.onnx'),
            'bf16': ('paddle.inference bf16 (oneDNN)', ['-bf16'], '_bf16')}


def run(command):
    print('$ ' + ' '.join(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c
                          for c in command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def _exports(prefix, variant, config, kind, checkpoint, train_faces):
    """Export `variant` (float32 also writes the dynamic int8 file)."""
    _, flags, _ = VARIANTS[variant]
    if variant == 'int8':
        return  # written with float32
    output = prefix + {'float32': '', 'int8_static': '_static', 'bf16': '_bf16'}[variant]
    run([sys.executable, 'tools/export_model.py', '-cfg', config, '-class_type', kind, '-pretrained', checkpoint,
         '-output', output] + flags + (train_faces if variant == 'int8_static' else []))


def training_faces(aligned, annotations):
    """The aligned face folders of the training videos: calibration data that the validation never sees."""
    names = sorted(n[:-len('.txt')] for n in os.listdir(os.path.join(annotations, 'Train_Set')) if n.endswith('.txt'))
    return [os.path.join(aligned, n) for n in names if os.path.isdir(os.path.join(aligned, n))]


def measure(demo_work, work, variants):
    python = sys.executable
    aligned = os.path.join(demo_work, 'aligned')
    annotations = os.path.join(demo_work, 'data', 'annotations')
    for needed in [aligned, annotations] + [os.path.join(demo_work, f'train_{m}', 'best.pdparams') for m in MODELS]:
        if not os.path.exists(needed):
            sys.exit(f"error: {needed} missing: run `make demo` (or demo/run_demo.py) first")
    train_faces = training_faces(aligned, annotations)
    models, predictions = {}, {}
    for kind in MODELS:
        prefix = os.path.join(work, kind)
        checkpoint = os.path.join(demo_work, f'train_{kind}', 'best.pdparams')
        for variant in variants:
            _exports(prefix, variant, DEMO_CONFIG, kind, checkpoint, train_faces)
            out = os.path.join(work, f'eval_{kind}_{variant}')
            run([python, 'main_single_gpu.py', '-cfg', DEMO_CONFIG, '-class_type', kind, '-eval',
                 '-pretrained', prefix + VARIANTS[variant][2], '-data_folder', aligned, '-anno_folder', annotations,
                 '-output', out])
            predictions[(kind, variant)] = os.path.join(out, 'predictions.npz')
        f32 = np.load(predictions[(kind, 'float32')])
        labelled = f32['labels'] >= 0
        models[kind] = {'frames': int(labelled.size), 'onnx_mb': os.path.getsize(prefix + '.onnx') / 2 ** 20,
                        'int8_onnx_mb': os.path.getsize(prefix + '.int8.onnx') / 2 ** 20, 'variants': {}}
        for variant in variants[1:]:
            other = np.load(predictions[(kind, variant)])
            assert list(f32['paths']) == list(other['paths'])
            agree = f32['logits'].argmax(1) == other['logits'].argmax(1)
            models[kind]['variants'][variant] = {
                'label_agreement': float(agree.mean()), 'label_agreement_labelled': float(agree[labelled].mean()),
                'max_abs_logit_diff': float(np.abs(f32['logits'] - other['logits']).max())}
        demo_eval = os.path.join(demo_work, f'eval_{kind}', 'predictions.npz')
        if os.path.isfile(demo_eval):
            eager = np.load(demo_eval)
            if list(eager['paths']) == list(f32['paths']):
                models[kind]['max_abs_logit_diff_float32_vs_pdparams_eval'] = float(
                    np.abs(eager['logits'] - f32['logits']).max())
    fused = {}
    for variant in variants:
        out = os.path.join(work, f'fused_{variant}')
        run([python, 'smooth_predict.py', '-coarse', predictions[('coarse', variant)],
             '-negative', predictions[('negative', variant)],
             '-anno_folder', annotations, '-output', out, '-search', '-plot', '0'])
        with open(os.path.join(out, 'metrics.json')) as f:
            metrics = json.load(f)
        fused[variant] = {'raw_macro_f1': metrics['raw']['macro_f1'],
                          'smoothed_macro_f1': metrics['smoothed']['macro_f1'],
                          'mode': metrics['smoothed']['mode'], 'window': metrics['smoothed']['window'],
                          'alpha': metrics['smoothed']['alpha'],
                          'frames': metrics['raw']['count']}
    return models, fused


def report(models, fused, info):
    lines = ['## int8 and bf16 vs float32 on the `make demo` models (`benchmarks/bench_onnx_accuracy.py`)', '',
             machine_markdown(info),
             'Validation frames of the demo data through `-eval -pretrained` of each export (tools/export_model.py '
             '`-int8`, `-int8 static -calibration <training videos\' faces>`, `-bf16`), then smooth_predict.py '
             '-search on each pair.', '',
             '| model | variant | frames | same label as float32 | (labelled frames) | max logit diff |',
             '|---|---|---|---|---|---|']
    for kind, m in models.items():
        for variant, v in m['variants'].items():
            lines.append(f"| {kind} | {VARIANTS[variant][0]} | {m['frames']} | {100 * v['label_agreement']:.2f}% | "
                         f"{100 * v['label_agreement_labelled']:.2f}% | {v['max_abs_logit_diff']:.3f} |")
    lines.append('')
    lines.append('Float32 ONNX vs the .pdparams -eval (max logit diff): ' + ', '.join(
        f"{kind} {m['max_abs_logit_diff_float32_vs_pdparams_eval']:.1e}" for kind, m in models.items()
        if 'max_abs_logit_diff_float32_vs_pdparams_eval' in m) + '; size float32 / int8 MB: ' + ', '.join(
        f"{kind} {m['onnx_mb']:.1f} / {m['int8_onnx_mb']:.1f}" for kind, m in models.items()) + '.')
    lines += ['', '| fused (8 classes) | annotated frames | macro F1, no smoothing | macro F1, setting -search picked |',
              '|---|---|---|---|']
    for variant, f in fused.items():
        setting = f"{f['mode']} K={f['window']}" + (f", A={f['alpha']:g}" if f['alpha'] is not None else '')
        lines.append(f"| {VARIANTS[variant][0]} | {f['frames']} | {f['raw_macro_f1']:.4f} | "
                     f"{f['smoothed_macro_f1']:.4f} ({setting}) |")
    lines.append('')
    for variant in list(fused)[1:]:
        delta_raw = fused[variant]['raw_macro_f1'] - fused['float32']['raw_macro_f1']
        delta_smooth = fused[variant]['smoothed_macro_f1'] - fused['float32']['smoothed_macro_f1']
        met = (all(m['variants'][variant]['label_agreement'] >= 0.99 for m in models.values())
               and abs(delta_raw) <= 0.01 and abs(delta_smooth) <= 0.01)
        lines.append(f"- {VARIANTS[variant][0]} minus float32, fused macro F1: {delta_raw:+.4f} without smoothing, "
                     f"{delta_smooth:+.4f} smoothed. Target (label agreement >= 99% per model, fused macro F1 "
                     f"within 0.01): {'met' if met else 'NOT met'}.")
    return '\n'.join(lines)


def main(argv=None):
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo_work', default=os.path.join(ROOT, 'demo_work'), help='what `make demo` wrote')
    parser.add_argument('--keep', metavar='DIR', help='keep the exports and predictions here (default: temporary)')
    parser.add_argument('--json', metavar='PATH', help='also write the figures as JSON here')
    parser.add_argument('--no_results_md', action='store_true', help='do not rewrite benchmarks/RESULTS.md')
    args = parser.parse_args(argv)
    info = machine_info()
    work = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix='bench_onnx_accuracy_')
    os.makedirs(work, exist_ok=True)
    try:
        variants = [v for v in VARIANTS if v != 'bf16' or cpu_env.has_bf16()]
        models, fused = measure(os.path.abspath(args.demo_work), work, variants)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    body = report(models, fused, info)
    print('\n' + body)
    if args.json:
        write_json(args.json, {'machine': info, 'models': models, 'fused': fused})
    if not args.no_results_md:
        update_results_section('bench_onnx_accuracy', body)
    return models, fused


if __name__ == '__main__':
    sys.exit(console.run_command(main))
