"""Demo step 0: Swin-S from the release YAML, and the release's checkpoint reproducing its logits."""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cpu_env  # noqa: E402,F401  (threads and MKL before paddle loads)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
from PIL import Image  # noqa: E402

from checkpoints import load_pretrained  # noqa: E402
from config import get_config  # noqa: E402
from swin_transformer import build_swin, count_parameters  # noqa: E402

COMPAT = os.path.join(ROOT, 'tests', 'data', 'paddlevit_compat')


def _normalised(paths, config):
    mean, std = np.array(config.DATA.IMAGENET_MEAN), np.array(config.DATA.IMAGENET_STD)
    arrays = [((np.asarray(Image.open(p).convert('RGB')) / 255.0 - mean) / std).transpose(2, 0, 1) for p in paths]
    return paddle.to_tensor(np.stack(arrays).astype('float32'))


def swin_small_and_release_checkpoint():
    """Print Swin-S's size and forward time and check the release checkpoint's logits; True when they match."""
    print('== Swin-S from the release YAML (configs/swin_small_patch4_window7_224.yaml)')
    config = get_config(os.path.join(ROOT, 'configs', 'swin_small_patch4_window7_224.yaml'))
    model = build_swin(config)
    model.eval()
    print(f"parameters: {count_parameters(model) / 1e6:.2f} M ({config.MODEL.NUM_CLASSES} classes)")
    images = paddle.randn([8, 3, 224, 224])
    with paddle.no_grad():
        model(images[:1])
        start = time.perf_counter()
        logits = model(images)
        seconds = time.perf_counter() - start
    print(f"forward, batch 8 on {paddle.device.get_device()}: {seconds:.2f} s ({8 / seconds:.2f} images/s)")
    print('logits of a random batch (random weights), first 2 rows:')
    print(np.array2string(logits.numpy()[:2], precision=4))

    print('\n== The release\'s checkpoint layout: tests/data/paddlevit_compat (swin_debug, random weights)')
    config = get_config(os.path.join(COMPAT, 'swin_debug.yaml'))
    model = build_swin(config)
    content = load_pretrained(model, os.path.join(COMPAT, 'checkpoint.pdparams'), keep_head=True)
    model.eval()
    frames = sorted(os.listdir(os.path.join(COMPAT, 'aligned', 'clip-01')))
    with paddle.no_grad():
        logits = model(_normalised([os.path.join(COMPAT, 'aligned', 'clip-01', f) for f in frames], config)).numpy()
    expected = np.load(os.path.join(COMPAT, 'expected_logits.npy'))
    print(f"checkpoint epoch {content.get('epoch')}, logits for {len(frames)} aligned faces:")
    print(np.array2string(logits, precision=4))
    error = np.abs(logits - expected).max()
    print(f"max |ours - release| = {error:.2e} ({'OK' if error < 1e-4 else 'MISMATCH'})")
    return error < 1e-4


def main():
    ok = swin_small_and_release_checkpoint()
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
