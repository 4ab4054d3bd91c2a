"""Fast inference: export a Swin to a static graph and run it through `paddle.inference`.

    export_model(model, config, 'output/coarse')      # writes coarse.json|.pdmodel + .pdiparams
    predict = Predictor('output/coarse')               # CPU, oneDNN, all cores of this process
    logits = predict(images_nchw_float32)               # numpy [B, num_classes]

    classify = load_classifier(config, 'best.pdparams' or 'output/coarse', device='cpu')

On CPU the exported graph is much faster than eager Paddle (op fusion, oneDNN kernels, no
per-op dispatch); outputs agree with eager within 1e-4 (tests/test_predictor.py).
Paddle 3.x writes the program as `<prefix>.json`, Paddle 2.6 as `<prefix>.pdmodel`; both load.
"""
import json
import os
import shutil
import tempfile

import cpu_env  # noqa: F401  (threading / MKL settings before paddle is imported)
import numpy as np
import paddle

PARAMS_SUFFIX = '.pdiparams'
PROGRAM_SUFFIXES = ('.json', '.pdmodel')  # Paddle 3.x (PIR), Paddle 2.x
META_SUFFIX = '.meta.json'


class PredictorError(ValueError):
    pass


def exported_files(path_prefix):
    """(program file, params file) of an export at `path_prefix`, or None if there is none."""
    params = path_prefix + PARAMS_SUFFIX
    for suffix in PROGRAM_SUFFIXES:
        program = path_prefix + suffix
        if os.path.isfile(program) and os.path.isfile(params):
            return program, params
    return None


def export_model(model, config, out_prefix):
    """Write `model` (eval mode) as a static graph taking float32 [N, C, S, S] at `out_prefix`.

    The batch size stays free. Files appear all at once (written to a temporary folder next to
    them, then renamed), so an interrupted export never leaves a half-written predictor behind.
    `model` itself is left in eager mode.
    """
    size = int(config.DATA.IMAGE_SIZE)
    channels = int(config.DATA.IMAGE_CHANNELS)
    out_prefix = os.path.abspath(out_prefix)
    folder, name = os.path.split(out_prefix)
    os.makedirs(folder, exist_ok=True)
    was_training = model.training
    model.eval()
    spec = [paddle.static.InputSpec([None, channels, size, size], 'float32', name='images')]
    tmp = tempfile.mkdtemp(prefix='.export-', dir=folder)
    try:
        # jit.save converts a copy of forward; the eager `model` keeps running eagerly.
        paddle.jit.save(model, os.path.join(tmp, name), input_spec=spec)
        meta = {'image_size': size, 'channels': channels,
                'num_classes': int(config.MODEL.NUM_CLASSES), 'model_name': str(config.MODEL.NAME),
                'paddle_version': paddle.__version__}
        with open(os.path.join(tmp, name + META_SUFFIX), 'w') as f:
            json.dump(meta, f, indent=1)
        written = sorted(os.listdir(tmp))
        for stale in PROGRAM_SUFFIXES:  # a program from another Paddle version must not win
            if os.path.exists(out_prefix + stale) and name + stale not in written:
                os.remove(out_prefix + stale)
        for file_name in written:
            os.replace(os.path.join(tmp, file_name), os.path.join(folder, file_name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if was_training:
            model.train()
    return out_prefix


def read_meta(path_prefix):
    path = path_prefix + META_SUFFIX
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _set_onednn(config, enabled):
    # oneDNN is called MKLDNN in Paddle 2.6; 3.x has both names.
    if enabled:
        (getattr(config, 'enable_onednn', None) or config.enable_mkldnn)()
    else:
        (getattr(config, 'disable_onednn', None) or config.disable_mkldnn)()


def _restore_eager_threads():
    """Give eager Paddle in this thread its math threads back after a predictor run.

    Each CPU predictor run leaves the calling thread's MKL / OpenMP thread count at 1, so eager
    Paddle in the same process (the other model in predict_video, training after an export
    check) silently ran single-threaded: a Swin-S training step fell from 1.56 to 1.06 images/s
    here after one predictor call.
    """
    core = getattr(getattr(paddle, 'base', None), 'core', None)
    set_num_threads = getattr(core, 'set_num_threads', None)
    if set_num_threads is not None:
        set_num_threads(cpu_env.threads_per_process())


class Predictor:
    """`paddle.inference` on an exported model: `predictor(images) -> logits` (numpy float32).

    device: 'cpu', 'gpu' or 'gpu:N'. threads: math threads on CPU (default: this process's share
    of the cores, see cpu_env.py). onednn: oneDNN kernels and fusions on CPU (measured ~1.5x
    faster here than Paddle's plain CPU kernels for Swin-S).
    """

    def __init__(self, path_prefix, device='cpu', threads=None, onednn=True):
        files = exported_files(path_prefix)
        if files is None:
            raise PredictorError(
                f"{path_prefix}: no exported model (expected {path_prefix}.json or .pdmodel with "
                f"{path_prefix}{PARAMS_SUFFIX}); write one with tools/export_model.py")
        self.path_prefix = path_prefix
        self.meta = read_meta(path_prefix)
        config = paddle.inference.Config(*files)
        device = str(device).lower()
        if device.startswith('gpu'):
            device_id = int(device.split(':')[1]) if ':' in device else 0
            config.enable_use_gpu(256, device_id)
        elif device == 'cpu':
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(int(threads or cpu_env.threads_per_process()))
            _set_onednn(config, onednn)
        else:
            raise PredictorError(f"device must be cpu, gpu or gpu:N, not {device!r}")
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self._on_cpu = device == 'cpu'
        self._predictor = paddle.inference.create_predictor(config)
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])

    def __call__(self, images):
        if isinstance(images, paddle.Tensor):
            images = images.numpy()
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = self.meta.get('image_size')
        if images.ndim != 4 or (size and images.shape[2:] != (size, size)):
            wanted = f"[N, {self.meta.get('channels', 3)}, {size}, {size}]" if size else "[N, C, H, W]"
            raise PredictorError(f"{self.path_prefix}: images must be {wanted}, got {list(images.shape)}")
        self._input.reshape(list(images.shape))
        self._input.copy_from_cpu(images)
        self._predictor.run()
        if self._on_cpu:
            _restore_eager_threads()
        return self._output.copy_to_cpu()


class EagerClassifier:
    """The same call interface as Predictor for a dygraph model: `classifier(images) -> logits`."""

    def __init__(self, model):
        self.model = model
        self.model.eval()

    def __call__(self, images):
        if not isinstance(images, paddle.Tensor):
            images = paddle.to_tensor(np.ascontiguousarray(images, dtype=np.float32))
        with paddle.no_grad():
            return self.model(images).numpy()


def load_classifier(config, weights, device='cpu', threads=None):
    """A callable images -> logits for a checkpoint (.pdparams, eager) or an exported prefix.

    Both paths check that the number of classes matches config.MODEL.NUM_CLASSES, so a coarse
    model cannot silently be evaluated as a negative one.
    """
    weights = str(weights)
    wanted = int(config.MODEL.NUM_CLASSES)
    if weights.endswith('.pdparams'):
        from checkpoints import load_pretrained
        from swin_transformer import build_swin
        paddle.set_device(device)
        model = build_swin(config)
        load_pretrained(model, weights, keep_head=True)
        return EagerClassifier(model)
    prefix = weights
    for suffix in PROGRAM_SUFFIXES + (PARAMS_SUFFIX, META_SUFFIX):
        if prefix.endswith(suffix):
            prefix = prefix[:-len(suffix)]
            break
    if exported_files(prefix) is None:
        raise PredictorError(f"{weights}: neither a .pdparams checkpoint nor an exported model prefix")
    meta = read_meta(prefix)
    if meta.get('num_classes') not in (None, wanted):
        raise PredictorError(f"{weights}: exported model has {meta['num_classes']} classes but the "
                             f"config has {wanted} (check -class_type / MODEL.NUM_CLASSES)")
    if meta.get('image_size') not in (None, int(config.DATA.IMAGE_SIZE)):
        raise PredictorError(f"{weights}: exported for {meta['image_size']}px images but the config "
                             f"uses DATA.IMAGE_SIZE {config.DATA.IMAGE_SIZE}")
    return Predictor(prefix, device=device, threads=threads)
