"""Accuracy of the int8 ONNX models against float32, on the `make demo` models and validation set.

    python benchmarks/bench_onnx_accuracy.py [--demo_work demo_work] [--keep DIR]

Needs the models and aligned faces of `make demo` (demo_work/). Each step is one of the project's
own commands: tools/export_model.py -format onnx -int8 exports both demo models, `-eval` runs the
validation set through the float32 and the int8 ONNX model (predictions.npz each), and
smooth_predict.py fuses each pair. Reported: per model, the share of validation frames whose
label is the same with int8 as with float32 and the largest logit difference; the fused macro F1
(8 classes, without smoothing and with the K and A that -search picks on the same frames) with
int8 and with float32 models; and, as a check of the float32 export, the largest logit
difference of the float32 ONNX model to the demo's own -eval of the .pdparams checkpoint.
The section `bench_onnx_accuracy` of benchmarks/RESULTS.md is rewritten.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import cpu_env  # noqa: E402,F401
import numpy as np  # noqa: E402

from common import machine_info, machine_markdown, update_results_section, write_json  # noqa: E402

DEMO_CONFIG = os.path.join(ROOT, 'configs', 'demo_tiny.yaml')
MODELS = ('coarse', 'negative')
PRECISIONS = {'float32': '.onnx', 'int8': '.int8.onnx'}


def run(command):
    print('$ ' + ' '.join(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c
                          for c in command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def measure(demo_work, work):
    python = sys.executable
    aligned = os.path.join(demo_work, 'aligned')
    annotations = os.path.join(demo_work, 'data', 'annotations')
    for needed in [aligned, annotations] + [os.path.join(demo_work, f'train_{m}', 'best.pdparams') for m in MODELS]:
        if not os.path.exists(needed):
            sys.exit(f"error: {needed} missing: run `make demo` (or demo/run_demo.py) first")
    models, predictions = {}, {}
    for kind in MODELS:
        prefix = os.path.join(work, kind)
        run([python, 'tools/export_model.py', '-cfg', DEMO_CONFIG, '-class_type', kind, '-pretrained',
             os.path.join(demo_work, f'train_{kind}', 'best.pdparams'), '-output', prefix, '-int8'])
        for precision, suffix in PRECISIONS.items():
            out = os.path.join(work, f'eval_{kind}_{precision}')
            run([python, 'main_single_gpu.py', '-cfg', DEMO_CONFIG, '-class_type', kind, '-eval',
                 '-pretrained', prefix + suffix, '-data_folder', aligned, '-anno_folder', annotations,
                 '-output', out])
            predictions[(kind, precision)] = os.path.join(out, 'predictions.npz')
        f32, i8 = (np.load(predictions[(kind, p)]) for p in PRECISIONS)
        assert list(f32['paths']) == list(i8['paths'])
        agree = f32['logits'].argmax(1) == i8['logits'].argmax(1)
        labelled = f32['labels'] >= 0
        models[kind] = {'frames': int(agree.size), 'label_agreement': float(agree.mean()),
                        'label_agreement_labelled': float(agree[labelled].mean()),
                        'max_abs_logit_diff_int8': float(np.abs(f32['logits'] - i8['logits']).max()),
                        'onnx_mb': os.path.getsize(prefix + '.onnx') / 2 ** 20,
                        'int8_onnx_mb': os.path.getsize(prefix + '.int8.onnx') / 2 ** 20}
        demo_eval = os.path.join(demo_work, f'eval_{kind}', 'predictions.npz')
        if os.path.isfile(demo_eval):
            eager = np.load(demo_eval)
            if list(eager['paths']) == list(f32['paths']):
                models[kind]['max_abs_logit_diff_float32_vs_pdparams_eval'] = float(
                    np.abs(eager['logits'] - f32['logits']).max())
    fused = {}
    for precision in PRECISIONS:
        out = os.path.join(work, f'fused_{precision}')
        run([python, 'smooth_predict.py', '-coarse', predictions[('coarse', precision)],
             '-negative', predictions[('negative', precision)],
             '-anno_folder', annotations, '-output', out, '-search', '-plot', '0'])
        with open(os.path.join(out, 'metrics.json')) as f:
            metrics = json.load(f)
        fused[precision] = {'raw_macro_f1': metrics['raw']['macro_f1'],
                            'smoothed_macro_f1': metrics['smoothed']['macro_f1'],
                            'mode': metrics['smoothed']['mode'], 'window': metrics['smoothed']['window'],
                            'alpha': metrics['smoothed']['alpha'],
                            'frames': metrics['raw']['count']}
    return models, fused


def report(models, fused, info):
    lines = ['## int8 vs float32 ONNX on the `make demo` models (`benchmarks/bench_onnx_accuracy.py`)', '',
             machine_markdown(info),
             'Validation frames of the demo data through `-eval -pretrained X.onnx` / `X.int8.onnx` '
             '(tools/export_model.py -format onnx -int8), then smooth_predict.py -search on each pair.', '',
             '| model | frames | same label int8 vs float32 | (labelled frames) | max logit diff | '
             'float32 ONNX vs .pdparams -eval | size float32 / int8 MB |', '|---|---|---|---|---|---|---|']
    for kind, m in models.items():
        check = m.get('max_abs_logit_diff_float32_vs_pdparams_eval')
        lines.append(f"| {kind} | {m['frames']} | {100 * m['label_agreement']:.2f}% | "
                     f"{100 * m['label_agreement_labelled']:.2f}% | {m['max_abs_logit_diff_int8']:.3f} | "
                     f"{'%.1e' % check if check is not None else 'n/a'} | "
                     f"{m['onnx_mb']:.1f} / {m['int8_onnx_mb']:.1f} |")
    lines += ['', '| fused (8 classes) | annotated frames | macro F1, no smoothing | macro F1, setting -search picked |',
              '|---|---|---|---|']
    for precision, f in fused.items():
        setting = f"{f['mode']} K={f['window']}" + (f", A={f['alpha']:g}" if f['alpha'] is not None else '')
        lines.append(f"| {precision} models | {f['frames']} | {f['raw_macro_f1']:.4f} | "
                     f"{f['smoothed_macro_f1']:.4f} ({setting}) |")
    delta_raw = fused['int8']['raw_macro_f1'] - fused['float32']['raw_macro_f1']
    delta_smooth = fused['int8']['smoothed_macro_f1'] - fused['float32']['smoothed_macro_f1']
    lines += ['', f"Fused macro F1, int8 minus float32: {delta_raw:+.4f} without smoothing, "
              f"{delta_smooth:+.4f} smoothed. Target: label agreement >= 99% per model and fused macro F1 "
              f"within 0.01 -> " + ('met' if all(m['label_agreement'] >= 0.99 for m in models.values())
                                     and abs(delta_raw) <= 0.01 and abs(delta_smooth) <= 0.01 else 'NOT met') + '.']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo_work', default=os.path.join(ROOT, 'demo_work'), help='what `make demo` wrote')
    parser.add_argument('--keep', metavar='DIR', help='keep the exports and predictions here (default: temporary)')
    parser.add_argument('--json', metavar='PATH', help='also write the figures as JSON here')
    parser.add_argument('--no_results_md', action='store_true', help='do not rewrite benchmarks/RESULTS.md')
    args = parser.parse_args(argv)
    info = machine_info()
    work = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix='bench_onnx_accuracy_')
    os.makedirs(work, exist_ok=True)
    try:
        models, fused = measure(os.path.abspath(args.demo_work), work)
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
    main()
