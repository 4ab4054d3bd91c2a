"""loader.py: the distributed batch sampler, the prefetch and shared-memory keys, and the training
loader with worker processes (DATA.NUM_WORKERS 2, as in production): seeded augmentation that
repeats on a rerun and after a resume, shared memory on or off giving the same batches, and a
corrupt image inside a worker named (or skipped with DATA.SKIP_BAD_IMAGES)."""
import json
import shutil

import numpy as np
import pytest

import datasets
import engine
import loader
from helpers import configured

# The tests with worker processes are marked slow (make test-fast skips them).


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


@pytest.mark.slow
def test_worker_augmentation_repeats_on_rerun_and_after_resume(workers_config):
    first = epoch_batches(workers_config, [1, 2])
    assert_same(first[2], epoch_batches(workers_config, [1, 2])[2])  # a rerun
    assert_same(first[2], epoch_batches(workers_config, [2])[2])  # resumed at epoch 2
    # ... and the epochs really differ (the check above is not comparing constants).
    assert not np.array_equal(first[1][0][0], first[2][0][0])


@pytest.mark.slow
def test_shared_memory_on_and_off_give_the_same_batches(workers_config):
    shared = epoch_batches(configured(workers_config, '/tmp', **{'DATA.USE_SHARED_MEMORY': True}), [1])
    piped = epoch_batches(configured(workers_config, '/tmp', **{'DATA.USE_SHARED_MEMORY': False}), [1])
    assert_same(shared[1], piped[1])


@pytest.mark.slow
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


def test_distributed_sampler_pads_and_splits():
    ranks = [loader.EpochBatchSampler(13, 4, r, 2, shuffle=True, seed=1) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    seen = [i for s in ranks for batch in s for i in batch]
    assert len(seen) == 14 and set(seen) == set(range(13))
    again = loader.EpochBatchSampler(13, 4, 0, 2, shuffle=True, seed=1)
    again.set_epoch(3)
    assert list(again) == list(ranks[0])
    again.set_epoch(4)
    assert list(again) != list(ranks[0])


def test_loader_takes_prefetch_and_shared_memory_keys_and_fits_shm(tiny_config, monkeypatch):
    import logging
    from collections import namedtuple
    dataset = list(range(64))
    batch = int(tiny_config.DATA.BATCH_SIZE)
    image_bytes = 3 * int(tiny_config.DATA.IMAGE_SIZE) ** 2 * 4
    warnings = []
    logger = logging.getLogger('test_loader_keys')
    monkeypatch.setattr(logger, 'warning', warnings.append)
    monkeypatch.setattr(loader.cpu_env, 'processes_on_this_machine', lambda: 1)
    usage = namedtuple('usage', 'total used free')

    def loader_with_free_shm(free_batches, **changes):
        monkeypatch.setattr(loader.shutil, 'disk_usage', lambda folder: usage(0, 0, free_batches * batch * image_bytes))
        cfg = configured(tiny_config, '/nonexistent', **{'DATA.NUM_WORKERS': 4, **changes})
        return loader.build_loader(dataset, cfg, True, 0, 1, logger)[0]

    # 4 workers x 3 batches + the 2 the training loop holds
    roomy = loader_with_free_shm(14, **{'DATA.PREFETCH_FACTOR': 3})
    assert (roomy.prefetch_factor, roomy.use_shared_memory, warnings) == (3, True, [])
    tight = loader_with_free_shm(13, **{'DATA.PREFETCH_FACTOR': 3})
    assert (tight.prefetch_factor, tight.use_shared_memory) == (1, True)
    assert 'DATA.PREFETCH_FACTOR 3' in warnings[-1] and '1 batch per worker' in warnings[-1]
    tiny = loader_with_free_shm(5)
    assert tiny.use_shared_memory is False and 'pipes' in warnings[-1] and '--shm-size' in warnings[-1]
    switched_off = loader_with_free_shm(100, **{'DATA.USE_SHARED_MEMORY': False})
    assert switched_off.use_shared_memory is False
    with pytest.raises(ValueError, match='DATA.PREFETCH_FACTOR'):
        loader_with_free_shm(100, **{'DATA.PREFETCH_FACTOR': 0})
