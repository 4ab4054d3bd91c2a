"""The release's test script (main_test_multi_gpu.py): the predicted label of every frame of the
validation list (or of -video_list's videos) by -pretrained weights, written per process as
`pred_<rank>.txt` (`video/00001.jpg 3`, one frame a line, the label in the class type's space)
in SAVE/test-<time>, or in -output when given, as the mains do.

It runs through the engine (data, weights, validation lines and log files). Each process's file
holds the frames the release's sampler (Paddle's DistributedBatchSampler, no shuffle) gave that
process, in its order, so the files match the release's for any number of processes.
"""
import os

import numpy as np
import paddle

import datasets
import engine
import swin_transformer
from errors import UsageError
from fileio import atomic_open
from loader import build_loader


def release_rank_indices(num_samples, batch_size, rank, world_size):
    """The frame indices the release's test loader gave process `rank`, padding repeats included."""
    sampler = paddle.io.DistributedBatchSampler(range(num_samples), batch_size=batch_size,
                                                num_replicas=world_size, rank=rank, shuffle=False,
                                                drop_last=False)
    return [i for batch in sampler for i in batch]


def write_pred_file(path, rows):
    """rows: (image path, label) pairs, written as the release's `f'{img_p} {pred_label}'` lines."""
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.writelines(f"{image} {label}\n" for image, label in rows)


def run(config, output_given=True, distributed=False, command=None, overwrite=False):
    """Predict every frame and write this process's pred_<rank>.txt; returns its path."""
    ctx = engine.start_run(config, output_given, distributed, command, mode='test', overwrite=overwrite)
    with ctx.logger.recording_failure():
        return _predict_frames(ctx)


def _predict_frames(ctx):
    config, logger = ctx.config, ctx.logger
    if not config.MODEL.PRETRAINED:
        raise UsageError("main_test_multi_gpu.py needs -pretrained CHECKPOINT.pdparams (the model to test)")
    dataset = datasets.build_dataset(config, 'eval' if config.DATA.VIDEO_LIST else 'val')
    loader, _ = build_loader(dataset, config, False, ctx.rank, ctx.world_size, logger)
    logger.info(f"----- Total # of val batch (single gpu): {len(loader)}")
    model = swin_transformer.build_swin(config)
    engine.load_weights(model, config.MODEL.PRETRAINED, logger, strict_head=True)
    if ctx.world_size > 1:
        model = paddle.DataParallel(model)
    logger.info("----- Start Testing/Validation")
    result = engine.validate(ctx, model, loader, dataset, "----- Validation: ")
    predicted = dict(zip(result['paths'], np.asarray(result['logits']).argmax(axis=1).tolist()))
    batch_size = config.DATA.BATCH_SIZE_EVAL or config.DATA.BATCH_SIZE
    rows = []
    for index in release_rank_indices(len(dataset), batch_size, ctx.rank, ctx.world_size):
        image = dataset.samples[index][0]
        if image in predicted:  # a corrupt image skipped with DATA.SKIP_BAD_IMAGES has no label
            rows.append((image, predicted[image]))
    path = os.path.join(ctx.output_dir, f"pred_{ctx.rank}.txt")
    write_pred_file(path, rows)
    logger.info(f"----- Predictions of {len(rows)} frames: {path}")
    return path


def main(argv=None, distributed=True):
    """Command-line entry with the release's flags (engine.build_parser), errors as in the mains."""
    return engine.main(argv, distributed, 'CFC-SP Swin per-frame test (multi processes)', runner=run)
