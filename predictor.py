"""Fast inference: export a Swin to a static graph and run it through `paddle.inference` or
ONNX Runtime.

    export_model(model, config, 'output/coarse')      # writes coarse.json|.pdmodel + .pdiparams
    predict = Predictor('output/coarse')               # CPU, oneDNN, all cores of this process
    logits = predict(images_nchw_float32)               # numpy [B, num_classes]

    export_onnx('output/coarse', 'output/coarse.onnx', int8_file='output/coarse.int8.onnx')
    predict = OnnxPredictor('output/coarse.onnx')      # same call interface

    classify = load_classifier(config, 'best.pdparams' or 'output/coarse' or 'x.onnx', device='cpu')

On CPU the exported graph is much faster than eager Paddle (op fusion, oneDNN kernels, no
per-op dispatch); outputs agree with eager within 1e-4 (tests/test_predictor.py).
Paddle 3.x writes the program as `<prefix>.json`, Paddle 2.6 as `<prefix>.pdmodel`; both load.
ONNX files are converted from that program by paddle2onnx; the int8 variant runs every MatMul /
Gemm in int8 (quantize.py: dynamic, or static with calibration images); an export marked bfloat16
runs oneDNN's bf16 kernels on CPUs that have them. Speeds in benchmarks/RESULTS.md.
"""
import inspect
import json
import logging
import os
import shutil
import tempfile

import cpu_env  # noqa: F401  (threading / MKL settings before paddle is imported)
import numpy as np
import paddle

from checkpoints import load_pretrained
from errors import UsageError
from fileio import atomic_path
import quiet
from swin_transformer import build_swin

PARAMS_SUFFIX = '.pdiparams'
PROGRAM_SUFFIXES = ('.json', '.pdmodel')  # Paddle 3.x (PIR), Paddle 2.x
META_SUFFIX = '.meta.json'
ONNX_SUFFIX = '.onnx'
INT8_ONNX_SUFFIX = '.int8.onnx'
BF16 = 'bfloat16'
PRECISIONS = ('float32', BF16)
# The newest opset paddle2onnx 1.3 and 2.1 both write; it has LayerNormalization as one op.
ONNX_OPSET = 17


# The config keys an export records about how it is fed (transforms.val_transform) and what its
# outputs mean; meta field -> config key.
EXPORT_SETTINGS = {'num_classes': 'MODEL.NUM_CLASSES', 'class_type': 'DATA.CLASS_TYPE',
                   'image_size': 'DATA.IMAGE_SIZE', 'crop_pct': 'DATA.CROP_PCT',
                   'mean': 'DATA.IMAGENET_MEAN', 'std': 'DATA.IMAGENET_STD'}
# Of those, what says which model it is: never taken from the export, only checked against it.
IDENTITY_SETTINGS = ('class_type', 'num_classes')


class PredictorError(UsageError):
    pass


def config_value(config, dotted):
    node = config
    for part in dotted.split('.'):
        node = node[part]
    return node


def _plain(value):
    """A config value as JSON writes it (tuples as lists, numbers as numbers)."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return value.item() if hasattr(value, 'item') else value


def _same(a, b):
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-9 for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def settings_from_export(config, weights, meta, config_given=True):
    """`config` fitted to what an export records about itself (EXPORT_SETTINGS in `meta`).

    config_given False (no -cfg / -*_cfg): the export's image size, crop and normalisation replace
    the config's, which then only supplies what the export lacks. config_given True: a config
    value that contradicts the export is a PredictorError naming both. The class type and class
    count are always checked, never taken: they say which model the export is.
    """
    adopted = {}
    for field, key in EXPORT_SETTINGS.items():
        if field not in meta:
            continue
        ours = config_value(config, key)
        if _same(ours, meta[field]):
            continue
        if config_given or field in IDENTITY_SETTINGS:
            raise PredictorError(_contradiction(weights, field, key, meta[field], ours))
        adopted[key] = meta[field]
    if not adopted:
        return config
    config = config.clone()
    config.defrost()
    config.merge_from_list([item for key, value in adopted.items() for item in (key, value)])
    config.freeze()
    return config


def _contradiction(weights, field, key, theirs, ours):
    if field == 'num_classes':
        return (f"{weights}: exported model has {theirs} classes but the config has {ours} "
                "(check -class_type / MODEL.NUM_CLASSES)")
    if field == 'class_type':
        return (f"{weights}: exported as the {theirs} model but the config is for {ours} "
                "(check -class_type)")
    if field == 'image_size':
        return (f"{weights}: exported for {theirs}px images but the config uses {key} {ours} "
                "(leave the config out to use the export's own settings)")
    return (f"{weights}: exported with {key} {theirs} but the config has {ours} "
            "(leave the config out to use the export's own settings)")


def exported_files(path_prefix):
    """(program file, params file) of an export at `path_prefix`, or None if there is none."""
    params = path_prefix + PARAMS_SUFFIX
    for suffix in PROGRAM_SUFFIXES:
        program = path_prefix + suffix
        if os.path.isfile(program) and os.path.isfile(params):
            return program, params
    return None


def export_model(model, config, out_prefix, precision='float32'):
    """Write `model` (eval mode) as a static graph taking float32 [N, C, S, S] at `out_prefix`.

    precision 'bfloat16' is recorded in the meta data: Predictor then runs the model's oneDNN
    kernels in bfloat16 where the CPU has bf16 instructions (the stored weights stay float32).

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
                'paddle_version': paddle.__version__,
                # What feeding the model takes besides the weights: the validation transform's
                # settings and the class set, so that an export needs no config (read_settings).
                **{field: _plain(config_value(config, key)) for field, key in EXPORT_SETTINGS.items()}}
        if precision != 'float32':
            meta['precision'] = check_precision(precision)
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
    """The exported model's meta data (classes, image size, ...) from PREFIX.meta.json; {} without one."""
    path = path_prefix + META_SUFFIX
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_precision(precision):
    if precision not in PRECISIONS:
        raise PredictorError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


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
    faster here than Paddle's plain CPU kernels for Swin-S). precision: 'float32' or 'bfloat16'
    (default: the export's meta data); bfloat16 runs oneDNN's bf16 kernels on CPUs with
    AVX512-BF16 or AMX-BF16, and float32 elsewhere (with a warning naming the CPU).
    """

    def __init__(self, path_prefix, device='cpu', threads=None, onednn=True, precision=None):
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
        self.precision = self._choose_precision(check_precision(precision or self.meta.get('precision', 'float32')),
                                                onednn)
        if self.precision == BF16:
            (getattr(config, 'enable_onednn_bfloat16', None) or config.enable_mkldnn_bfloat16)()
        self.backend = (f"paddle.inference {paddle.__version__} on {device}"
                        + (", oneDNN" if self._on_cpu and onednn else "") + f", {self.precision}")
        self._predictor = paddle.inference.create_predictor(config)
        self._first_run = True
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])

    def _choose_precision(self, wanted, onednn):
        if wanted != BF16:
            return wanted
        info = cpu_env.cpu_info()
        if not self._on_cpu or not onednn:
            why = 'bf16 runs through oneDNN on CPU only'
        elif not cpu_env.has_bf16(info):
            why = f"this CPU ({info['model']}) has neither AVX512-BF16 nor AMX-BF16"
        else:
            return BF16
        logging.getLogger(__name__).warning("%s: exported for bfloat16, but %s: running float32", self.path_prefix, why)
        return 'float32'

    def __call__(self, images):
        if isinstance(images, paddle.Tensor):
            images = images.numpy()
        images = np.ascontiguousarray(images, dtype=np.float32)
        _check_images(self.path_prefix, self.meta, images)
        self._input.reshape(list(images.shape))
        self._input.copy_from_cpu(images)
        if self._first_run:
            with quiet.native_lines_dropped(PADDLE_DEBUG_PRINTS):
                self._predictor.run()
            self._first_run = False
        else:
            self._predictor.run()
        if self._on_cpu:
            _restore_eager_threads()
        return self._output.copy_to_cpu()


# Printed by Paddle 3's oneDNN kernel selection at a predictor's first run, bare, on stdout.
PADDLE_DEBUG_PRINTS = ('ReduceMeanCheckIfOneDNNSupport',)


class EagerClassifier:
    """The same call interface as Predictor for a dygraph model: `classifier(images) -> logits`."""

    def __init__(self, model):
        self.model = model
        self.model.eval()
        self.backend = f"eager Paddle {paddle.__version__} on {paddle.get_device()}"

    def __call__(self, images):
        if not isinstance(images, paddle.Tensor):
            images = paddle.to_tensor(np.ascontiguousarray(images, dtype=np.float32))
        with paddle.no_grad():
            return self.model(images).numpy()


def _paddle2onnx_export(**kwargs):
    """paddle2onnx.export, with the keyword arguments this installed version does not know dropped."""
    import paddle2onnx
    known = inspect.signature(paddle2onnx.export).parameters
    return paddle2onnx.export(**{k: v for k, v in kwargs.items() if k in known})


def export_onnx(path_prefix, onnx_file, int8_file=None, opset=ONNX_OPSET, int8='dynamic', calibration=None):
    """Convert the exported model at `path_prefix` to ONNX (float32), and optionally to int8.

    The model's meta data (classes, image size) travel inside the ONNX file, so a .onnx file is
    self-contained. int8 (quantize.py): 'dynamic' quantizes activations per batch at run time and
    needs no data; 'static' fixes their scales from `calibration` (float32 model input, see
    quantize.calibration_images). Files are written atomically. Returns the paths written.
    """
    files = exported_files(path_prefix)
    if files is None:
        raise PredictorError(f"{path_prefix}: no exported model to convert to ONNX")
    # The ONNX packages are imported only where a .onnx file is made or run: they are optional on
    # Paddle 2.6 (paddle2onnx 2.x refuses it) and the other paths do not need them.
    try:
        import onnx
        import onnxoptimizer
        import paddle2onnx  # noqa: F401
    except (ImportError, ValueError) as err:  # paddle2onnx 2.x refuses Paddle 2.6 with ValueError
        raise PredictorError(f"ONNX export needs paddle2onnx and onnx (requirements.txt; "
                             f"requirements-paddle26.txt on Paddle 2.6): {err}") from None
    import onnxruntime
    # Polygraphy folds constants with ONNX Runtime, which warns about every node it cannot fuse.
    onnxruntime.set_default_logger_severity(3)
    meta = dict(read_meta(path_prefix), opset=opset)
    written = []
    with atomic_path(onnx_file) as tmp:
        # Polygraphy's constant folding halves the node count (Swin's relative-position bias
        # and masks are constants); paddle2onnx 1.x has no such option and folds less.
        try:
            _paddle2onnx_export(model_filename=files[0], params_filename=files[1], save_file=tmp,
                                opset_version=opset, auto_upgrade_opset=False, verbose=False,
                                enable_onnx_checker=True, optimize_tool='polygraphy')
        except Exception as err:  # paddle2onnx raises whatever its converter hit
            raise PredictorError(f"{files[0]}: paddle2onnx could not convert it: {err}") from None
        if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            raise PredictorError(f"{files[0]}: paddle2onnx wrote no ONNX model (its log is above)")
        # paddle2onnx 1.x (Paddle 2.6) stores the weights as Constant nodes, which the
        # quantizer does not see as weights: make every constant an initializer.
        model = onnxoptimizer.optimize(onnx.load(tmp), ['extract_constant_to_initializer',
                                                        'eliminate_unused_initializer'])
        _set_onnx_meta(model, dict(meta, precision='float32'))
        onnx.save(model, tmp)
    written.append(onnx_file)
    if int8_file:
        from quantize import quantize_onnx
        with atomic_path(int8_file) as tmp, quiet.only_warnings():
            how = quantize_onnx(onnx_file, tmp, int8, calibration)
            model = onnx.load(tmp)
            _set_onnx_meta(model, dict(meta, precision='int8', quantization=how))
            onnx.save(model, tmp)
        written.append(int8_file)
    return written


def _set_onnx_meta(model, meta):
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value) if isinstance(value, list) else str(value)


def _meta_value(text):
    """A value export_onnx stored as text: numbers and lists back as such, anything else as text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, list)) and not isinstance(value, bool) else text


def onnx_meta(session):
    """The meta data export_onnx stored (numbers and lists parsed), from an ONNX Runtime session."""
    meta = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        meta[key] = _meta_value(value)
    # A foreign .onnx without our meta data: fall back to the static input and output shapes.
    shape = session.get_inputs()[0].shape
    if 'image_size' not in meta and len(shape) == 4 and isinstance(shape[2], int) and shape[2] == shape[3]:
        meta['image_size'] = shape[2]
        meta['channels'] = shape[1] if isinstance(shape[1], int) else 3
    out = session.get_outputs()[0].shape
    if 'num_classes' not in meta and len(out) == 2 and isinstance(out[1], int):
        meta['num_classes'] = out[1]
    return meta


class OnnxPredictor:
    """ONNX Runtime on a .onnx model: `predictor(images) -> logits` (numpy float32), like Predictor.

    device: 'cpu', 'gpu' or 'gpu:N' (needs the onnxruntime-gpu package). threads: math threads on
    CPU (default: this process's share of the cores, see cpu_env.py). Idle threads sleep at once
    instead of spinning, so they never keep a core from face detection or data loading running in
    the same process between two batches.
    """

    def __init__(self, onnx_file, device='cpu', threads=None):
        import onnxruntime as ort
        if not os.path.isfile(onnx_file):
            raise PredictorError(f"{onnx_file}: ONNX model not found; write one with "
                                 "tools/export_model.py -format onnx")
        self.path_prefix = onnx_file
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(threads or cpu_env.threads_per_process())
        options.inter_op_num_threads = 1
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        options.log_severity_level = 3  # warnings about nodes it could not fuse are noise here
        device = str(device).lower()
        if device.startswith('gpu'):
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise PredictorError(f"{onnx_file}: -device gpu needs onnxruntime-gpu (this ONNX "
                                     f"Runtime has {', '.join(ort.get_available_providers())})")
            device_id = int(device.split(':')[1]) if ':' in device else 0
            providers = [('CUDAExecutionProvider', {'device_id': device_id}), 'CPUExecutionProvider']
        elif device == 'cpu':
            providers = ['CPUExecutionProvider']
        else:
            raise PredictorError(f"device must be cpu, gpu or gpu:N, not {device!r}")
        try:
            self._session = ort.InferenceSession(onnx_file, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise PredictorError(f"{onnx_file}: ONNX Runtime cannot load it: {err}") from None
        self._input_name = self._session.get_inputs()[0].name
        self.meta = onnx_meta(self._session)
        self.backend = (f"ONNX Runtime {ort.__version__}, {self.meta.get('precision', 'float32')}, "
                        f"on {self._session.get_providers()[0]}")

    def __call__(self, images):
        if isinstance(images, paddle.Tensor):
            images = images.numpy()
        images = np.ascontiguousarray(images, dtype=np.float32)
        _check_images(self.path_prefix, self.meta, images)
        return self._session.run(None, {self._input_name: images})[0]


def _check_images(source, meta, images):
    size = meta.get('image_size')
    if images.ndim != 4 or (size and images.shape[2:] != (size, size)):
        wanted = f"[N, {meta.get('channels', 3)}, {size}, {size}]" if size else "[N, C, H, W]"
        raise PredictorError(f"{source}: images must be {wanted}, got {list(images.shape)}")


def load_classifier(config, weights, device='cpu', threads=None, config_given=True):
    """A callable images -> logits for a checkpoint (.pdparams, eager), an exported prefix
    (paddle.inference) or a .onnx file (ONNX Runtime); each has a `backend` description and the
    `config` to feed it with (transforms.val_transform(classifier.config)).

    An export records its image size, crop, normalisation and classes: with config_given False
    they replace the config's; otherwise a config that contradicts them is an error
    (settings_from_export). All paths check that the number of classes matches
    config.MODEL.NUM_CLASSES, so a coarse model cannot silently be evaluated as a negative one.
    """
    weights = str(weights)
    if weights.endswith('.pdparams'):
        paddle.set_device(device)
        model = build_swin(config)
        load_pretrained(model, weights, keep_head=True)
        classifier = EagerClassifier(model)
        classifier.config = config
        return classifier
    prefix = weights
    for suffix in PROGRAM_SUFFIXES + (PARAMS_SUFFIX, META_SUFFIX):
        if prefix.endswith(suffix):
            prefix = prefix[:-len(suffix)]
            break
    if weights.endswith(ONNX_SUFFIX):
        classifier = OnnxPredictor(weights, device=device, threads=threads)
    elif exported_files(prefix) is None:
        raise PredictorError(f"{weights}: neither a .pdparams checkpoint, an exported model prefix "
                             "nor a .onnx file")
    else:
        # Checked before the (slower) predictor is built.
        settings_from_export(config, weights, read_meta(prefix), config_given)
        classifier = Predictor(prefix, device=device, threads=threads)
    classifier.config = settings_from_export(config, weights, classifier.meta, config_given)
    return classifier


class ExportedModel:
    """An exported model (tools/export_model.py: a paddle.inference prefix or a .onnx file) in the
    eager model's place for -eval: the fast CPU path, giving the same logits within 1e-4."""

    def __init__(self, path, config, device, logger):
        self.classify = load_classifier(config, path, device)
        logger.info(f"-eval through {self.classify.backend}: {path}")

    def eval(self):
        return self

    def __call__(self, images):
        return self.classify(images.numpy())
