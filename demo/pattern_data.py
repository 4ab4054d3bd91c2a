"""Small generated Aff-Wild2-style data sets for the tests and the fault drill: aligned "faces"
whose class is a visible texture, ABAW EXPR annotation files, and a tiny Swin config.

The texture (stripe orientation / checkerboard / flat / cross, chosen per ABAW label through the
coarse map) lets a tiny model learn the classes, which makes a learnability test meaningful
rather than a smoke test. `make demo` uses the more realistic generator in make_demo_data.py.
"""
import os

import numpy as np
from PIL import Image

HEADER = 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other'

TINY_YAML = """\
DATA:
  IMAGE_SIZE: 32
  CROP_PCT: 1.0
  BATCH_SIZE: 8
  BATCH_SIZE_EVAL: 16
  NUM_WORKERS: 0
MODEL:
  TYPE: swin
  NAME: swin_test_tiny
  DROPPATH: 0.0
  EMBED_DIM: 16
  STAGE_DEPTHS: [1, 1]
  NUM_HEADS: [1, 2]
  WINDOW_SIZE: 4
  PATCH_SIZE: 4
TRAIN:
  NUM_EPOCHS: 2
  WARMUP_EPOCHS: 1
  BASE_LR: 1.0e-3
  WARMUP_START_LR: 1.0e-4
  LINEAR_SCALED_LR: null
SAVE_FREQ: 1
REPORT_FREQ: 0
SEED: 3
"""


def pattern_image(pattern, size=40, rng=None, period=6):
    """A grey face stand-in whose class is visible: stripes, checkerboard, flat or cross."""
    rng = rng or np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    half = period // 2
    # Random phase: the class is the orientation of the texture, not where its edges fall.
    yy, xx = yy + int(rng.integers(0, period)), xx + int(rng.integers(0, period))
    if pattern == 0:
        signal = (yy // half) % 2
    elif pattern == 1:
        signal = (xx // half) % 2
    elif pattern == 2:
        signal = ((yy // half) + (xx // half)) % 2
    elif pattern == 3:
        signal = np.zeros((size, size))
    else:
        signal = ((yy - xx) // half % 2 + (yy + xx) // half % 2) % 2
    base = 60 + 140 * signal + rng.normal(0, 12, (size, size))
    tint = rng.uniform(0.8, 1.2, 3)
    rgb = np.clip(base[..., None] * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


COARSE = (0, 4, 4, 4, 1, 4, 2, 3)


def write_video(data_folder, video, frame_labels, missing=(), size=40, seed=0):
    """Face images for frames 1..N except `missing`; pattern from the coarse class of the label."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(data_folder, video)
    os.makedirs(folder, exist_ok=True)
    for number, label in enumerate(frame_labels, start=1):
        if number in missing:
            continue
        pattern = COARSE[label] if label >= 0 else int(rng.integers(0, 5))
        pattern_image(pattern, size, rng).save(os.path.join(folder, f"{number:05d}.jpg"), quality=95)


def write_annotation(path, frame_labels, crlf=False, trailing_blank=False):
    """An ABAW EXPR annotation file (optionally with CRLF line ends and a trailing blank line)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    newline = '\r\n' if crlf else '\n'
    text = newline.join([HEADER] + [str(v) for v in frame_labels]) + newline
    if trailing_blank:
        text += newline
    with open(path, 'w', newline='') as f:
        f.write(text)


def make_abaw_tree(root, train_videos, val_videos, missing=None, size=40):
    """root/aligned/<video>/NNNNN.jpg and root/annotations/{Train_Set,Validation_Set}/<video>.txt."""
    missing = missing or {}
    data_folder = os.path.join(root, 'aligned')
    anno_folder = os.path.join(root, 'annotations')
    for seed, (split, videos) in enumerate((('Train_Set', train_videos), ('Validation_Set', val_videos))):
        for i, (video, frame_labels) in enumerate(sorted(videos.items())):
            write_video(data_folder, video, frame_labels, missing.get(video, ()), size, seed * 100 + i)
            write_annotation(os.path.join(anno_folder, split, video + '.txt'), frame_labels,
                             crlf=(i % 2 == 1), trailing_blank=(i == 0))
    return data_folder, anno_folder


def balanced_labels(n, offset=0):
    """n labels cycling over all 8 ABAW classes (so every coarse and negative class occurs)."""
    return [(offset + i) % 8 for i in range(n)]
