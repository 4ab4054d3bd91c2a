"""Convert PyTorch Swin weights (timm `swin_*` or the official Swin repository) to this project.

    python tools/convert_torch_swin.py INPUT(.pth|.bin|.safetensors) OUTPUT.pdparams

timm puts each PatchMerging at the start of stages 1-3 (`layers.N.downsample`) and names the
classifier `head.fc`; the official repository puts it at the end of stages 0-2 and names the
classifier `head`. Both become `stages.N.downsample` (end of stage N) and `fc`. PyTorch Linear
weights are [out, in]; Paddle's are [in, out].
"""
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cpu_env  # noqa: E402,F401  (threads / MKL settings before paddle is imported)
import paddle  # noqa: E402

import console  # noqa: E402
from errors import UsageError  # noqa: E402
from fileio import atomic_path  # noqa: E402

SKIPPED_SUFFIXES = ('relative_position_index', 'attn_mask', 'relative_coords_table', 'num_batches_tracked')


class ConversionError(UsageError):
    """Weights that are not a Swin this project can take; the message says what is wrong."""


def _is_timm_layout(keys):
    # timm: stage 0 never downsamples and the classifier is head.fc; official: the last stage never does.
    if any(k.startswith('head.fc.') for k in keys):
        return True
    if any(k.startswith('layers.0.downsample.') for k in keys):
        return False
    return any(re.match(r'layers\.\d+\.downsample\.', k) for k in keys)


def _rename(key, timm_layout):
    key = key.replace('patch_embed.proj.', 'patch_embedding.patch_embed.')
    key = key.replace('patch_embed.norm.', 'patch_embedding.norm.')
    key = key.replace('absolute_pos_embed', 'absolute_positional_embedding')
    match = re.match(r'layers\.(\d+)\.downsample\.(.*)', key)
    if match:
        stage = int(match.group(1)) - (1 if timm_layout else 0)
        return f"stages.{stage}.downsample.{match.group(2)}"
    key = re.sub(r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.', key)
    key = re.sub(r'^head\.fc\.', 'fc.', key)
    key = re.sub(r'^head\.(weight|bias)$', r'fc.\1', key)
    return key


def unwrap(checkpoint):
    """The state dict inside a checkpoint ({'model': ...}, {'state_dict': ...} or plain)."""
    for name in ('model', 'state_dict', 'model_ema'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(name), dict):
            return checkpoint[name]
    return checkpoint


def convert_state_dict(torch_state):
    """{paddle key: numpy array} for a PyTorch Swin state dict (tensors or arrays)."""
    keys = [k for k in torch_state if not k.endswith(SKIPPED_SUFFIXES)]
    if not any(k.startswith('layers.') for k in keys):
        raise ConversionError("no 'layers.N.blocks' keys: not a timm / official Swin state dict")
    timm_layout = _is_timm_layout(keys)
    converted = {}
    for key in keys:
        value = torch_state[key]
        array = value.detach().cpu().float().numpy() if hasattr(value, 'detach') else np.asarray(value, 'float32')
        name = _rename(key, timm_layout)
        if name.endswith('.weight') and array.ndim == 2:
            array = array.T
        converted[name] = np.ascontiguousarray(array, dtype='float32')
    return converted


def load_torch_file(path):
    """The state dict in a PyTorch (.pth/.pt/.bin) or safetensors file, as numpy-compatible arrays."""
    # Imported here: only one of the two readers is needed, and torch alone takes seconds to load.
    if path.endswith('.safetensors'):
        from safetensors.numpy import load_file
        return load_file(path)
    import torch
    try:
        return unwrap(torch.load(path, map_location='cpu', weights_only=True))
    except Exception as err:  # torch raises assorted types for foreign or damaged files
        if _is_paddle_file(path):
            raise ConversionError("this is already a Paddle checkpoint: no conversion needed, pass it "
                                  "to -pretrained as it is") from None
        # Only the first line of torch's message: the rest advises loading with weights_only=False,
        # which would run code from an untrusted file.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"not a PyTorch checkpoint that loads as plain tensors ({reason})") from None


def _is_paddle_file(path):
    try:
        return isinstance(paddle.load(path, return_numpy=True), dict)
    except Exception:  # any failure means: not a Paddle file
        return False


def main(argv=None):
    """Command-line entry; returns the exit code (errors: one `error:` line, see console.py)."""
    return console.run_command(convert, argv)


def convert(argv=None):
    """Read, convert and write; returns the exit code."""
    parser = console.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help='PyTorch weights (.pth/.pt/.bin/.safetensors)')
    parser.add_argument('output', help='where to write the Paddle .pdparams')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        raise UsageError(f"{args.input}: file not found")
    try:
        converted = convert_state_dict(load_torch_file(args.input))
    except ConversionError as err:
        raise ConversionError(f"{args.input}: {err}") from None
    with atomic_path(args.output) as tmp:
        paddle.save(converted, tmp)
    classes = converted['fc.bias'].shape[0] if 'fc.bias' in converted else 0
    print(f"wrote {args.output}: {len(converted)} tensors, {classes} classes "
          f"(timm/ImageNet weights apply the final norm: set MODEL.FINAL_NORM True)")


if __name__ == '__main__':
    sys.exit(main())
