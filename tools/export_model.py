"""Export a trained Swin for fast inference with paddle.inference or ONNX Runtime (see predictor.py).

    python tools/export_model.py -cfg configs/swin_small_patch4_window7_224.yaml \
        -class_type coarse -pretrained output/coarse/best.pdparams -output output/coarse_infer

writes output/coarse_infer.json (Paddle 3; .pdmodel on Paddle 2.6), .pdiparams and .meta.json.
With `-format onnx` it writes output/coarse_infer.onnx instead (converted by paddle2onnx; the
meta data are inside it), and with `-int8` also output/coarse_infer.int8.onnx (MatMul / Gemm
layers in int8, quantize.py): `-int8` or `-int8 dynamic` needs no data, `-int8 static -calibration
DIR` fixes the activation scales from up to 64 face images under DIR (e.g. aligned training
faces). `-bf16` marks the paddle.inference export to run its oneDNN kernels in bfloat16 on CPUs
with AVX512-BF16 or AMX-BF16 (elsewhere it says so and runs float32). Pass the prefix or the .onnx file wherever a .pdparams
is accepted for evaluation (`-eval -pretrained PREFIX`, predict_video.py). -check runs one
random batch through the eager model and every written model and prints the largest logit
difference of each (float32: expected below 1e-4).
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Paddle's static-graph conversion logs a glog warning for every export that says nothing about
# the model ("PIR not support input out tensor for now"): errors only, unless the user chose.
os.environ.setdefault('GLOG_minloglevel', '2')
import cpu_env  # noqa: E402,F401  (threads / MKL settings before paddle is imported)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import console  # noqa: E402
from checkpoints import load_pretrained  # noqa: E402
from config import add_common_args, get_config, update_config  # noqa: E402
from predictor import (BF16, INT8_ONNX_SUFFIX, ONNX_SUFFIX, OnnxPredictor, Predictor,  # noqa: E402
                       export_model, export_onnx)
from quantize import INT8_MODES, calibration_images  # noqa: E402
from swin_transformer import build_swin  # noqa: E402


def main(argv=None):
    """Command-line entry; returns the exit code (errors: one `error:` line, see console.py)."""
    return console.run_command(export, argv)


def export(argv=None):
    """Build, load, export and optionally check; returns the exit code."""
    parser = add_common_args(console.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument('-check', action='store_true', help='compare predictor and eager logits on random input')
    parser.add_argument('-format', choices=('paddle', 'onnx'), default='paddle',
                        help='paddle: PREFIX.json|.pdmodel + .pdiparams for paddle.inference (default); '
                             'onnx: PREFIX.onnx for ONNX Runtime')
    parser.add_argument('-int8', nargs='?', const='dynamic', choices=INT8_MODES,
                        help='also write PREFIX.int8.onnx, MatMul/Gemm in int8 (implies -format onnx): '
                             'dynamic (the default) or static (needs -calibration)')
    parser.add_argument('-calibration', nargs='+', metavar='DIR',
                        help='-int8 static: folder(s) of aligned face images to fix activation scales on')
    parser.add_argument('-bf16', action='store_true',
                        help='paddle.inference export that runs in bfloat16 on CPUs with bf16 instructions')
    args = parser.parse_args(argv)
    if args.int8:
        args.format = 'onnx'
    if args.calibration and args.int8 != 'static':
        parser.error('-calibration: only used with -int8 static')
    if args.int8 == 'static' and not args.calibration:
        parser.error('-int8 static: give face images to calibrate on with -calibration DIR')
    if args.bf16 and args.format != 'paddle':
        parser.error('-bf16: a paddle.inference export (-format paddle), not ONNX')
    if not args.pretrained:
        parser.error('-pretrained: the .pdparams checkpoint to export is required')
    if not args.output:
        parser.error('-output: the path prefix to write (e.g. output/coarse_infer) is required')
    config = update_config(get_config(), args)
    output = args.output
    for suffix in ('.pdparams', '.int8.onnx', '.onnx'):
        if output.endswith(suffix):
            output = output[:-len(suffix)]
            break

    # Exporting is device-independent; CPU avoids taking a GPU another job may be using.
    paddle.set_device('cpu')
    model = build_swin(config)
    load_pretrained(model, args.pretrained, keep_head=True)
    model.eval()
    if args.format == 'paddle':
        prefix = export_model(model, config, output, precision=BF16 if args.bf16 else 'float32')
        written = {'predictor': (Predictor, prefix)}
    else:
        # The Paddle program is only the converter's input: it goes to a temporary folder.
        folder = os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix='.export-onnx-', dir=folder) as tmp:
            program = export_model(model, config, os.path.join(tmp, 'model'))
            calibration = calibration_images(args.calibration, config) if args.calibration else None
            files = export_onnx(program, output + ONNX_SUFFIX,
                                int8_file=output + INT8_ONNX_SUFFIX if args.int8 else None,
                                int8=args.int8 or 'dynamic', calibration=calibration)
        written = {'onnx float32': (OnnxPredictor, files[0])}
        if args.int8:
            written['onnx int8'] = (OnnxPredictor, files[1])
    for path in [prefix + '.*'] if args.format == 'paddle' else [path for _, path in written.values()]:
        print(f"exported {args.pretrained} ({config.MODEL.NUM_CLASSES} classes, "
              f"{config.DATA.IMAGE_SIZE}px) to {path}")
    if args.check:
        size = int(config.DATA.IMAGE_SIZE)
        images = np.random.RandomState(0).randn(2, int(config.DATA.IMAGE_CHANNELS), size, size).astype('float32')
        with paddle.no_grad():
            eager = model(paddle.to_tensor(images)).numpy()
        for name, (runner, path) in written.items():
            logits = runner(path)(images)
            print(f"max |{name} - eager| logit difference: {np.abs(logits - eager).max():.2e}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
