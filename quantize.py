"""int8 ONNX models for CPU inference: dynamic (no data needed) or static (calibrated on face images).

    quantize_onnx('coarse.onnx', 'coarse.int8.onnx')                                  # dynamic
    quantize_onnx('coarse.onnx', 'coarse.int8.onnx', 'static',
                  calibration=calibration_images(['aligned/astro-01'], config))        # static

Only the MatMul / Gemm layers are quantized (97% of Swin-S's arithmetic); everything else stays
float32. Weights are int8. The formats were measured on an AVX512-VNNI CPU (docs/speed.md):
- dynamic: activations quantized per batch at run time to uint8 (ONNX Runtime's
  DynamicQuantizeMatMul, u8s8: the operand order VNNI's VPDPBUSD and AVX2's VPMADDUBSW take),
  one weight scale per tensor; per-channel weight scales measured the same speed, so the format
  measured on the AVX2 CPU stays;
- static: activation scales fixed from the calibration images, QOperator format with uint8
  activations (QLinearMatMul, u8s8 again), weights per channel; QDQ with int8 activations (s8s8)
  measured no faster. Both static formats ran at 0.70-0.75x the speed of dynamic: ONNX Runtime
  does not fuse the bias into QLinearMatMul and adds Quantize / Dequantize nodes around it.
"""
import os

import numpy as np

from errors import UsageError

INT8_MODES = ('dynamic', 'static')
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
CALIBRATION_IMAGES = 64


def calibration_images(folders, config, limit=CALIBRATION_IMAGES):
    """Up to `limit` face images found under `folders`, evenly spaced in path order, as model input.

    Returns float32 [N, C, S, S] after the validation transform of `config`.
    """
    from datasets import load_image
    from transforms import val_transform
    paths = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise UsageError(f"-calibration: {folder} is not a folder of face images")
        for parent, _, names in os.walk(folder):
            paths += [os.path.join(parent, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if not paths:
        raise UsageError(f"-calibration: no .jpg/.png face image under {', '.join(folders)}")
    paths.sort()
    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int)]
    transform = val_transform(config)
    return np.stack([transform(load_image(p)) for p in picked]).astype(np.float32)


class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over an image array, a few images at a time."""

    def __init__(self, input_name, images, batch=4):
        self._items = iter([{input_name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # not needed for MinMax calibration, which reads the data once
        raise NotImplementedError


def quantize_onnx(float_file, int8_file, mode='dynamic', calibration=None):
    """Write the int8 model of `float_file` to `int8_file` (no meta data copied; the caller adds it).

    Returns a short description of the quantization for the model's meta data.
    """
    import logging
    # The quantizer logs one INFO line per tensor on the root logger; its advice to pre-process
    # (WARNING) is followed for static quantization, where it matters.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        return _quantize(float_file, int8_file, mode, calibration)
    finally:
        root.setLevel(level)


def _quantize(float_file, int8_file, mode, calibration):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    ops = ['MatMul', 'Gemm']
    if mode == 'dynamic':
        quantize_dynamic(float_file, int8_file, op_types_to_quantize=ops, weight_type=QuantType.QInt8)
        return 'dynamic: MatMul/Gemm in int8 (u8 activations scaled per batch, s8 weights)'
    if mode != 'static':
        raise UsageError(f"-int8: dynamic or static, not {mode!r}")
    if calibration is None or len(calibration) == 0:
        raise UsageError("-int8 static needs face images to calibrate on: -calibration DIR")
    import tempfile

    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process
    input_name = onnx.load(float_file, load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix='.quantize-', dir=os.path.dirname(os.path.abspath(int8_file))) as tmp:
        prepared = os.path.join(tmp, 'prepared.onnx')
        # Shape inference and graph clean-up first, so the quantizer knows every MatMul's shapes.
        quant_pre_process(float_file, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, int8_file, _Batches(input_name, calibration), quant_format=QuantFormat.QOperator,
                        op_types_to_quantize=ops, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    return (f'static: MatMul/Gemm in int8 (u8 activations with scales from {len(calibration)} calibration '
            'images, s8 weights per channel)')
