"""Data loading for training and evaluation: the epoch-indexed distributed sampler, the Paddle
DataLoader built from the config, per-(epoch, rank, worker) seeding and the /dev/shm check.

Every rank gets its share of a seeded, epoch-indexed order, so epoch k draws the same data and
the same augmentation randomness whether the run started at epoch 1 or was resumed at k.
"""
import math
import random
import shutil

import cpu_env
import numpy as np
import paddle

from errors import UsageError

SHARED_MEMORY_DIR = '/dev/shm'


def seed_epoch(seed, epoch, rank=0, worker=0):
    """Seed every RNG from (seed, epoch, rank, worker) so epoch k draws the same randomness whether
    the run started at epoch 1 or was resumed at k (resume equivalence)."""
    value = (seed * 1_000_003 + epoch * 10_007 + rank * 101 + worker) % (2 ** 31)
    random.seed(value)
    np.random.seed(value)
    paddle.seed(value)


def _worker_init(seed, rank):
    def init(worker_id):
        info = paddle.io.get_worker_info()
        epoch = getattr(info.dataset, 'epoch', 0) if info is not None else 0
        seed_epoch(seed, epoch, rank, worker_id + 1)
    return init


class EpochBatchSampler(paddle.io.Sampler):
    """Batches of this rank's share of the indices; order fixed by (seed, epoch).

    Every rank gets the same number of samples: the index list is padded by repeating its start
    (as paddle's DistributedBatchSampler does); evaluation removes the repeats by sample index.
    """

    def __init__(self, num_samples, batch_size, rank, world_size, shuffle, seed, drop_last=False):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.per_rank = int(math.ceil(num_samples / world_size))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        indices = np.arange(self.num_samples)
        if self.shuffle:
            np.random.RandomState((self.seed * 7919 + self.epoch) % (2 ** 31)).shuffle(indices)
        total = self.per_rank * self.world_size
        if total > len(indices):
            indices = np.concatenate([indices, np.resize(indices, total - len(indices))])
        mine = indices[self.rank:total:self.world_size].tolist()
        for start in range(0, len(mine), self.batch_size):
            batch = mine[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self):
        if self.drop_last:
            return self.per_rank // self.batch_size
        return int(math.ceil(self.per_rank / self.batch_size))


def shared_memory_fits(config, batch_size, workers, processes=1, prefetch=None, folder=SHARED_MEMORY_DIR):
    """(fits, bytes needed, bytes free): can `folder` hold every batch the loaders keep in flight?

    Each worker keeps DATA.PREFETCH_FACTOR float32 batches ready in shared memory, in every
    training process on the machine, and the main process holds two more (the one in use and
    the one its reader thread has taken).
    """
    size, channels = int(config.DATA.IMAGE_SIZE), int(config.DATA.IMAGE_CHANNELS)
    prefetch = int(config.DATA.PREFETCH_FACTOR if prefetch is None else prefetch)
    in_flight = processes * (workers * max(1, prefetch) + 2)
    needed = in_flight * batch_size * channels * size * size * 4
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # no such folder (not Linux): Paddle then uses its own mechanism
        return True, needed, None
    return needed <= free, needed, free


def build_loader(dataset, config, train, rank, world_size, logger=None):
    """(DataLoader, sampler) for this rank; call `sampler.set_epoch(epoch)` before each epoch."""
    batch_size = config.DATA.BATCH_SIZE if train else (config.DATA.BATCH_SIZE_EVAL or config.DATA.BATCH_SIZE)
    # Training drops each rank's last partial batch, as the release's sampler did.
    sampler = EpochBatchSampler(len(dataset), batch_size, rank, world_size, shuffle=train,
                                seed=config.SEED, drop_last=train)
    if train and len(sampler) == 0:
        raise UsageError(f"-batch_size {batch_size}: the {len(dataset)} training frames give no full batch "
                         f"on each of {world_size} process(es); lower the batch size")
    workers = int(config.DATA.NUM_WORKERS)
    if workers < 0:
        raise UsageError(f"DATA.NUM_WORKERS must be 0 or more, not {workers}")
    prefetch = int(config.DATA.PREFETCH_FACTOR)
    if prefetch < 1:
        raise UsageError(f"DATA.PREFETCH_FACTOR must be 1 or more, not {config.DATA.PREFETCH_FACTOR}")
    shared = bool(config.DATA.USE_SHARED_MEMORY) and workers > 0
    if shared:
        # A docker container's default /dev/shm is 64 MB; overflowing it kills a worker with a
        # bus error that names nothing, so check up front. Pipes carry float32 batches much more
        # slowly than shared memory (benchmarks/RESULTS.md), so first try fewer batches in flight.
        processes = cpu_env.processes_on_this_machine()
        fits, needed, free = shared_memory_fits(config, batch_size, workers, processes)
        if not fits:
            config_prefetch = prefetch
            if prefetch > 1 and shared_memory_fits(config, batch_size, workers, processes, prefetch=1)[0]:
                prefetch, fallback = 1, "keeping 1 batch per worker instead"
            else:
                shared, fallback = False, "handing batches over through pipes instead (several times slower)"
            if logger is not None and rank == 0:
                logger.warning(
                    f"{SHARED_MEMORY_DIR} has {free / 2**20:.0f} MB free but the {'training' if train else 'validation'} "
                    f"loader would need {needed / 2**20:.0f} MB (DATA.NUM_WORKERS {workers} x DATA.PREFETCH_FACTOR "
                    f"{config_prefetch} batches of {batch_size}); {fallback}. Enlarge it (e.g. docker run "
                    f"--shm-size=8g) or lower DATA.PREFETCH_FACTOR / DATA.NUM_WORKERS / -batch_size.")
    # Without workers, Paddle's prefetch thread hangs the loop forever when a sample raises; load
    # in the main thread instead (the deterministic NUM_WORKERS 0 mode is for tests and resume checks).
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                  use_buffer_reader=workers > 0, prefetch_factor=prefetch,
                                  use_shared_memory=shared,
                                  worker_init_fn=_worker_init(config.SEED, rank) if workers else None)
    return loader, sampler
