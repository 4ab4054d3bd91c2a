"""Export a trained Swin for fast inference with paddle.inference (see predictor.py).

    python tools/export_model.py -cfg configs/swin_small_patch4_window7_224.yaml \
        -class_type coarse -pretrained output/coarse/best.pdparams -output output/coarse_infer

writes output/coarse_infer.json (Paddle 3; .pdmodel on Paddle 2.6), .pdiparams and .meta.json.
Pass the prefix wherever a .pdparams is accepted for evaluation (`-eval -pretrained PREFIX`,
predict_video.py). --check runs one random batch through both and prints the largest logit
difference (expected below 1e-4).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cpu_env  # noqa: E402,F401  (threads / MKL settings before paddle is imported)

from config import ConfigError, add_common_args, get_config, update_config  # noqa: E402


def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument('--check', action='store_true', help='compare predictor and eager logits on random input')
    args = parser.parse_args(argv)
    if not args.pretrained:
        parser.error('-pretrained: the .pdparams checkpoint to export is required')
    if not args.output:
        parser.error('-output: the path prefix to write (e.g. output/coarse_infer) is required')
    try:
        config = update_config(get_config(), args)
    except ConfigError as err:
        parser.error(str(err))
    output = args.output[:-len('.pdparams')] if args.output.endswith('.pdparams') else args.output

    import numpy as np
    import paddle

    from checkpoints import CheckpointError, load_pretrained
    from predictor import Predictor, export_model
    from swin_transformer import build_swin

    # Exporting is device-independent; CPU avoids taking a GPU another job may be using.
    paddle.set_device('cpu')
    model = build_swin(config)
    try:
        load_pretrained(model, args.pretrained, keep_head=True)
    except CheckpointError as err:
        sys.exit(f"error: -pretrained {err}")
    model.eval()
    prefix = export_model(model, config, output)
    print(f"exported {args.pretrained} ({config.MODEL.NUM_CLASSES} classes, "
          f"{config.DATA.IMAGE_SIZE}px) to {prefix}.*")
    if args.check:
        size = int(config.DATA.IMAGE_SIZE)
        images = np.random.RandomState(0).randn(2, int(config.DATA.IMAGE_CHANNELS), size, size).astype('float32')
        with paddle.no_grad():
            eager = model(paddle.to_tensor(images)).numpy()
        exported = Predictor(prefix)(images)
        print(f"max |predictor - eager| logit difference: {np.abs(exported - eager).max():.2e}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
