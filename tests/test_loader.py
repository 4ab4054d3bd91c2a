"""The training loader with worker processes (DATA.NUM_WORKERS 2, as in production): seeded
augmentation that repeats on a rerun and after a resume, shared memory on or off giving the same
batches, and a corrupt image inside a worker named (or skipped with DATA.SKIP_BAD_IMAGES)."""
import json
import shutil

import numpy as np
import pytest

import datasets
import engine
import loader
from helpers import configured

pytestmark = pytest.mark.slow  # multi-process runs (make test-fast skips them)


def epoch_batches(config, epochs):
    """{epoch: [(images, labels, indices), ...]} from a fresh training loader, as a run builds it."""
    dataset = datasets.build_dataset(config, 'train')
    train_loader, sampler = loader.build_loader(dataset, config, True, 0, 1)
    out = {}
    for epoch in epochs:
        loader.seed_epoch(config.SEED, epoch)
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        out[epoch] = [(images.numpy(), labels.numpy(), index.numpy()) for images, labels, index, _ in train_loader]
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for (images_a, labels_a, index_a), (images_b, labels_b, index_b) in zip(a, b):
        np.testing.assert_array_equal(index_a, index_b)
        np.testing.assert_array_equal(labels_a, labels_b)
        np.testing.assert_array_equal(images_a, images_b)


@pytest.fixture()
def workers_config(tiny_config, tmp_path):
    return configured(tiny_config, tmp_path, **{'DATA.NUM_WORKERS': 2})


def test_worker_augmentation_repeats_on_rerun_and_after_resume(workers_config):
    first = epoch_batches(workers_config, [1, 2])
    assert_same(first[2], epoch_batches(workers_config, [1, 2])[2])  # a rerun
    assert_same(first[2], epoch_batches(workers_config, [2])[2])  # resumed at epoch 2
    # ... and the epochs really differ (the check above is not comparing constants).
    assert not np.array_equal(first[1][0][0], first[2][0][0])


def test_shared_memory_on_and_off_give_the_same_batches(workers_config):
    shared = epoch_batches(configured(workers_config, '/tmp', **{'DATA.USE_SHARED_MEMORY': True}), [1])
    piped = epoch_batches(configured(workers_config, '/tmp', **{'DATA.USE_SHARED_MEMORY': False}), [1])
    assert_same(shared[1], piped[1])


def test_corrupt_image_in_a_worker_is_named_or_skipped(tmp_path, workers_config, abaw_small):
    data = tmp_path / 'aligned'
    shutil.copytree(abaw_small['data_folder'], data)
    bad = data / 'vid_b_left' / '00004.jpg'
    bad.write_bytes(bad.read_bytes()[:150])
    # 52 coarse training frames in batches of 4: no partial batch is dropped, every frame is read.
    cfg = configured(workers_config, tmp_path / 'strict', **{'DATA.DATA_FOLDER': str(data), 'TRAIN.NUM_EPOCHS': 1,
                                                             'DATA.BATCH_SIZE': 4})
    with pytest.raises(datasets.BadImageError, match='vid_b_left/00004.jpg'):
        engine.run(cfg)
    engine.run(configured(cfg, tmp_path / 'lenient', **{'DATA.SKIP_BAD_IMAGES': True}))
    history = json.load(open(tmp_path / 'lenient' / 'history.json'))
    assert history[0]['skipped_bad_images'] == 1
