"""One process or several: rank and world size, the device and the collectives that training
and evaluation need (no-ops in a single process, where Paddle's would raise). A run's log files
are train_log.py's."""
import numpy as np
import paddle

from errors import UsageError


def world():
    """(rank, world_size) as set by paddle.distributed.launch (0, 1 when run directly)."""
    return paddle.distributed.get_rank(), paddle.distributed.get_world_size()


def setup_device(config, logger):
    """Select the device from DEVICE (empty: GPU when Paddle sees one, else CPU); returns 'gpu' or 'cpu'."""
    wanted = config.DEVICE or ''
    has_cuda = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if not wanted:
        wanted = 'gpu' if has_cuda else 'cpu'
    if wanted == 'gpu' and not has_cuda:
        raise UsageError("-device gpu: this Paddle has no CUDA support or no GPU is visible")
    if wanted == 'gpu':
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().device_id}")
    else:
        paddle.set_device('cpu')
    logger.info(f"device: {wanted}")
    return wanted


def all_reduce_mean(value, world_size):
    """The mean over the processes of a float, or of each float of a list in one collective
    (the value itself in one process)."""
    if world_size == 1:
        return value
    many = isinstance(value, (list, tuple))
    tensor = paddle.to_tensor(list(value) if many else [value], dtype='float64')
    paddle.distributed.all_reduce(tensor)
    means = [float(v) / world_size for v in tensor.numpy()]
    return means if many else means[0]


def all_gather_array(array, world_size):
    """Every process's array, concatenated in rank order (the array itself in one process)."""
    if world_size == 1:
        return array
    parts = []
    paddle.distributed.all_gather(parts, paddle.to_tensor(array))
    return np.concatenate([p.numpy() for p in parts])
