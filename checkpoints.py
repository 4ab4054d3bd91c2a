"""Loading weights into the Swin model: one loader for every script.

Accepts every layout the original release produced: a plain state dict, or a training
checkpoint `{'model': ..., 'model_ema': ..., 'optimizer': ..., 'epoch': ..., ...}` (the release
took `model_ema` when present). Buffers the model recomputes are dropped; a classifier of another
shape is dropped with one log line (e.g. the MS1M face backbone into a 5-class model) unless the
caller needs the head (evaluation), and anything else that does not fit is an error that lists it.
"""
import logging
import os

import numpy as np
import paddle

logger = logging.getLogger(__name__)

# Recomputed from the config when the model is built; the release's files still carry them.
BUFFER_SUFFIXES = ('relative_position_index', 'attn_mask')
HEAD_PREFIX = 'fc.'


class CheckpointError(ValueError):
    """A weights file that cannot be used for this model; the message names the file and keys."""


def read_checkpoint(path):
    """paddle.load with a clear error for a missing, unreadable or non-dict file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        content = paddle.load(path, return_numpy=True)
    except Exception as err:  # paddle raises assorted types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable Paddle checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a state dict or a dict with 'model', got {type(content).__name__}")
    return content


def extract_state_dict(content, path='checkpoint'):
    """The model weights inside a loaded checkpoint, whatever its layout."""
    if 'model' in content and isinstance(content['model'], dict):
        ema = content.get('model_ema')
        if isinstance(ema, dict) and ema:
            logger.info("%s: using the 'model_ema' weights (the release preferred them)", path)
            return ema
        return content['model']
    if any(isinstance(v, dict) for v in content.values()):
        raise CheckpointError(f"{path}: a dict of dicts without a 'model' entry "
                              f"(keys: {', '.join(sorted(content)[:8])})")
    return content


def _shape(value):
    return list(value.shape) if hasattr(value, 'shape') else None


def checkpoint_num_classes(state_dict):
    """Number of classes of the classifier in a state dict (None if it has none)."""
    bias = state_dict.get(HEAD_PREFIX + 'bias')
    return int(_shape(bias)[0]) if bias is not None else None


def load_pretrained(model, path, keep_head=False):
    """Load `path` into `model`; returns the loaded checkpoint dict (for epoch etc.).

    keep_head=False: a classifier whose shape differs from the model's is dropped and the model's
    freshly initialised one kept (fine-tuning). keep_head=True (evaluation, resuming): that is an
    error, since the predictions would come from random weights.
    """
    content = read_checkpoint(path)
    state = extract_state_dict(content, path)
    state = {k: v for k, v in state.items() if not k.endswith(BUFFER_SUFFIXES)}
    expected = {k: list(v.shape) for k, v in model.state_dict().items()
                if not k.endswith(BUFFER_SUFFIXES)}

    head_mismatch = [k for k in state if k.startswith(HEAD_PREFIX) and k in expected
                     and _shape(state[k]) != expected[k]]
    if head_mismatch:
        found = checkpoint_num_classes(state)
        wanted = expected.get(HEAD_PREFIX + 'bias', [None])[0]
        if keep_head:
            raise CheckpointError(
                f"{path}: classifier has {found} classes but the model has {wanted} "
                f"(check -class_type / MODEL.NUM_CLASSES)")
        logger.info("%s: classifier has %s classes, the model %s: starting a new classifier",
                    path, found, wanted)
        current = model.state_dict()
        for k in head_mismatch:
            state[k] = current[k].numpy()  # keep the model's own new classifier

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k}: file {_shape(state[k])} vs model {expected[k]}" for k in state
                   if k in expected and _shape(state[k]) != expected[k]]
    if missing or unexpected or wrong_shape:
        parts = []
        for title, keys in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', wrong_shape)):
            if keys:
                shown = ', '.join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else '')
                parts.append(f"{title}: {shown}")
        raise CheckpointError(f"{path}: does not fit this model ({'; '.join(parts)}). "
                              f"Check the config (-cfg) matches the weights")
    model.set_state_dict({k: np.asarray(v) for k, v in state.items()})
    return content
