"""Swin-S at 224, CPU: this project (eager, exported predictor, ONNX Runtime float32 and int8,
bf16, training step) vs timm (eager, bf16 autocast, and on ONNX Runtime).

    python benchmarks/bench_swin.py [--quick] [--json PATH] [--batch_sizes 1 8] [--repeats N]
                                    [--only NAME ...] [--update-results]

The run names its machine (CPU vendor, model and the instruction sets that decide the int8 and
bf16 kernels); `--update-results` writes its table into benchmarks/RESULTS.md, one table per
kind of CPU (vendor and best instruction set), so a run on one CPU never overwrites another's.
The bf16 contenders run only on CPUs with AVX512-BF16 or AMX-BF16.

One invocation runs everything alternately: after a warm-up of every contender, each round
times one sample of every contender (the order rotates between rounds, so none always runs
right after another), and the figure is the median over rounds. Other jobs on a shared machine
slow all contenders alike within a round, which is why the ratios (ours / timm's images per
second) are the numbers to read, not the absolute rates.

Every contender runs in its own worker process, driven in lock-step by this one, as a user would
run it (an evaluation does not also train, nor hold a oneDNN predictor next to an eager model):
- loaded into one process, Paddle's and PyTorch's two OpenMP runtimes (Intel's for Paddle's MKL,
  GNU's for PyTorch) slowed each other's matrix products 2-3x here;
- each `paddle.inference` run used to leave MKL / OpenMP at one thread for eager Paddle in the
  same process (training step 1.56 -> 1.06 images/s, batch 8); predictor.py now restores the
  thread count, but separate workers keep any such coupling out of the figures. The ratios in
  RESULTS.md before this change (eager training 0.51x timm) were measured with that handicap.

ONNX Runtime contenders: this project's exported model converted by paddle2onnx (predictor.export_onnx;
int8 = quantize.py, dynamic, or static calibrated on 16 random images: the speed does not depend on
what the scales are), and timm's model exported by torch.onnx.export here; both run through the same
predictor.OnnxPredictor session settings. bf16: this project's export run by paddle.inference with
oneDNN's bf16 kernels (tools/export_model.py -bf16), and timm under torch.autocast(bfloat16).

Training step = forward, cross-entropy, backward, AdamW update (drop-path 0.3 in both, as in the
project's config). Peak memory is measured afterwards in a fresh subprocess per contender
(allocator caches make in-process figures meaningless): the process's peak RSS over two steps,
and its increase over the RSS just before the first step. The compute limit is the measured
2048-square float32 matmul rate divided by the model's FLOPs (multiply-adds counted twice here).
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import console  # noqa: E402  (both spellings of every flag, errors as one line)
import cpu_env  # noqa: E402,F401  (threads / MKL settings before paddle and torch are imported)

from benchmarks.common import (ROOT, cpu_kind, current_rss_mb, load_average, machine_info,  # noqa: E402
                               machine_markdown, median, peak_rss_mb, update_results_section,
                               write_json)

CONFIG = os.path.join(ROOT, 'configs', 'swin_small_patch4_window7_224.yaml')
TIMM_NAME = 'swin_small_patch4_window7_224'
CONTENDERS = ('ours_eager_infer', 'ours_predictor_infer', 'ours_onnx_infer', 'ours_onnx_int8_infer',
              'ours_onnx_int8_static_infer', 'ours_bf16_infer', 'timm_infer', 'timm_bf16_infer', 'timm_onnx_infer',
              'ours_eager_train', 'timm_train')
BF16_CONTENDERS = ('ours_bf16_infer', 'timm_bf16_infer')
LABELS = {
    'ours_eager_infer': 'this project, eager inference',
    'ours_predictor_infer': 'this project, exported predictor (paddle.inference)',
    'ours_onnx_infer': 'this project, ONNX Runtime float32',
    'ours_onnx_int8_infer': 'this project, ONNX Runtime int8 (dynamic)',
    'ours_onnx_int8_static_infer': 'this project, ONNX Runtime int8 (static, calibrated)',
    'ours_bf16_infer': 'this project, exported predictor bf16 (paddle.inference, oneDNN)',
    'timm_infer': 'timm, eager inference',
    'timm_bf16_infer': 'timm, eager inference, bf16 autocast',
    'timm_onnx_infer': 'timm, ONNX Runtime float32 (torch.onnx.export)',
    'ours_eager_train': 'this project, eager training step',
    'timm_train': 'timm, eager training step',
}
TIMM_OF = {'ours_eager_infer': 'timm_infer', 'ours_predictor_infer': 'timm_infer',
           'ours_onnx_infer': 'timm_infer', 'ours_onnx_int8_infer': 'timm_infer',
           'ours_onnx_int8_static_infer': 'timm_infer', 'ours_bf16_infer': 'timm_infer',
           'timm_bf16_infer': 'timm_infer', 'timm_onnx_infer': 'timm_infer', 'ours_eager_train': 'timm_train'}
# JSON key ratio_<key>_b<batch> = images/s of the first contender / the second, same run.
KEY_RATIOS = {
    'predictor_vs_timm_infer': ('ours_predictor_infer', 'timm_infer'),
    'eager_vs_timm_infer': ('ours_eager_infer', 'timm_infer'),
    'eager_vs_timm_train': ('ours_eager_train', 'timm_train'),
    'onnx_vs_timm_infer': ('ours_onnx_infer', 'timm_infer'),
    'onnx_vs_timm_onnx_infer': ('ours_onnx_infer', 'timm_onnx_infer'),
    'onnx_int8_vs_timm_infer': ('ours_onnx_int8_infer', 'timm_infer'),
    'onnx_int8_static_vs_timm_infer': ('ours_onnx_int8_static_infer', 'timm_infer'),
    'bf16_vs_timm_infer': ('ours_bf16_infer', 'timm_infer'),
    'bf16_vs_timm_bf16_infer': ('ours_bf16_infer', 'timm_bf16_infer'),
}


def _config():
    from config import get_config
    return get_config(CONFIG)


def swin_flops(config):
    """Forward FLOPs of one image (2 per multiply-add) from the architecture in `config`."""
    m = config.MODEL
    size, patch, dim = config.DATA.IMAGE_SIZE, m.PATCH_SIZE, m.EMBED_DIM
    side = size // patch
    macs = side * side * config.DATA.IMAGE_CHANNELS * patch * patch * dim
    for i, depth in enumerate(m.STAGE_DEPTHS):
        tokens = side * side
        window = min(m.WINDOW_SIZE, side) ** 2
        hidden = int(dim * m.MLP_RATIO)
        per_block = tokens * (3 * dim * dim + 2 * window * dim + dim * dim + 2 * dim * hidden)
        macs += depth * per_block
        if i < len(m.STAGE_DEPTHS) - 1:
            macs += (tokens // 4) * 4 * dim * 2 * dim
            side //= 2
            dim *= 2
    macs += dim * m.NUM_CLASSES
    return 2 * macs


def matmul_gflops(framework, repeats=5, n=2048):
    """Median float32 2048-square matmul rate (GFLOP/s) of `framework` in this process."""
    import numpy as np
    a = np.random.randn(n, n).astype('float32')
    if framework == 'torch':
        import torch
        torch.set_num_threads(cpu_env.threads_per_process())
        x = torch.from_numpy(a)
        run = lambda: torch.mm(x, x)  # noqa: E731
    else:
        import paddle
        x = paddle.to_tensor(a)
        run = lambda: paddle.matmul(x, x).numpy()  # noqa: E731
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / median(times) / 1e9


class Setup:
    """Builds the models once and hands out a step function per contender and batch size."""

    def __init__(self, num_classes, export_dir):
        self.config = _config()
        self.num_classes = num_classes
        self.export_dir = export_dir
        self._ours = None
        self._ours_optimizer = None
        self._predictor = {}
        self._onnx = {}
        self._timm = None
        self._timm_onnx = None
        self._timm_optimizer = None

    # --- this project -------------------------------------------------------------------
    def ours(self):
        if self._ours is None:
            from swin_transformer import build_swin
            self._ours = build_swin(self.config)
        return self._ours

    def drop_eager_model(self):
        self._ours = None
        gc.collect()

    def predictor(self, precision='float32'):
        if precision not in self._predictor:
            from predictor import Predictor, export_model
            prefix = export_model(self.ours(), self.config, os.path.join(self.export_dir, 'swin_s_' + precision),
                                  precision=precision)
            self._predictor[precision] = Predictor(prefix)
        return self._predictor[precision]

    def onnx(self, int8):
        """ONNX Runtime on this project's model: float32 (int8 None), or int8 'dynamic' / 'static'."""
        if int8 not in self._onnx:
            import numpy as np

            from predictor import OnnxPredictor, export_model, export_onnx
            program = export_model(self.ours(), self.config, os.path.join(self.export_dir, 'swin_s'))
            base = os.path.join(self.export_dir, 'swin_s')
            calibration = np.random.RandomState(7).randn(16, 3, 224, 224).astype('float32') if int8 == 'static' else None
            files = export_onnx(program, base + '.onnx', int8_file=base + '.int8.onnx' if int8 else None,
                                int8=int8 or 'dynamic', calibration=calibration)
            self._onnx[int8] = OnnxPredictor(files[-1])
        return self._onnx[int8]

    def step(self, name, batch):
        import numpy as np
        rng = np.random.RandomState(batch)
        images = rng.randn(batch, 3, 224, 224).astype('float32')
        labels = rng.randint(0, self.num_classes, size=batch).astype('int64')
        return getattr(self, '_' + name)(images, labels)

    def _ours_eager_infer(self, images, labels):
        import paddle
        model = self.ours()
        x = paddle.to_tensor(images)

        def step():
            model.eval()
            with paddle.no_grad():
                model(x).numpy()
        return step

    def _ours_predictor_infer(self, images, labels):
        predictor = self.predictor()
        return lambda: predictor(images)

    def _ours_bf16_infer(self, images, labels):
        predictor = self.predictor('bfloat16')
        return lambda: predictor(images)

    def _ours_onnx_infer(self, images, labels):
        session = self.onnx(int8=None)
        return lambda: session(images)

    def _ours_onnx_int8_infer(self, images, labels):
        session = self.onnx(int8='dynamic')
        return lambda: session(images)

    def _ours_onnx_int8_static_infer(self, images, labels):
        session = self.onnx(int8='static')
        return lambda: session(images)

    def _ours_eager_train(self, images, labels):
        import paddle
        import paddle.nn.functional as F
        model = self.ours()
        if self._ours_optimizer is None:
            self._ours_optimizer = paddle.optimizer.AdamW(learning_rate=1e-5, parameters=model.parameters(),
                                                          weight_decay=0.05)
        optimizer = self._ours_optimizer
        x, y = paddle.to_tensor(images), paddle.to_tensor(labels)

        def step():
            model.train()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            float(loss)
        return step

    # --- timm -----------------------------------------------------------------------------
    def timm(self):
        if self._timm is None:
            import timm
            import torch
            torch.set_num_threads(cpu_env.threads_per_process())
            self._timm = timm.create_model(TIMM_NAME, pretrained=False, num_classes=self.num_classes,
                                           drop_path_rate=float(self.config.MODEL.DROPPATH))
        return self._timm

    def _timm_infer(self, images, labels):
        import torch
        model = self.timm()
        x = torch.from_numpy(images)

        def step():
            model.eval()
            with torch.inference_mode():
                model(x).numpy()
        return step

    def _timm_bf16_infer(self, images, labels):
        import torch
        model = self.timm()
        x = torch.from_numpy(images)

        def step():
            model.eval()
            with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
                model(x).float().numpy()
        return step

    def timm_onnx(self):
        """timm's model exported with torch.onnx.export (batch dimension free) on ONNX Runtime."""
        if self._timm_onnx is None:
            import warnings

            import torch

            from predictor import OnnxPredictor
            path = os.path.join(self.export_dir, 'timm_swin_s.onnx')
            model = self.timm().eval()
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
                warnings.simplefilter('ignore')
                # The TorchScript-based exporter: the dynamo one needs onnxscript, not installed.
                torch.onnx.export(model, (torch.randn(2, 3, 224, 224),), path, dynamo=False, opset_version=17,
                                  input_names=['images'], output_names=['logits'],
                                  dynamic_axes={'images': {0: 'batch'}, 'logits': {0: 'batch'}})
            self._timm_onnx = OnnxPredictor(path)
        return self._timm_onnx

    def drop_timm_model(self):
        self._timm = None
        gc.collect()

    def _timm_onnx_infer(self, images, labels):
        session = self.timm_onnx()
        return lambda: session(images)

    def _timm_train(self, images, labels):
        import torch
        model = self.timm()
        if self._timm_optimizer is None:
            self._timm_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.05)
        optimizer = self._timm_optimizer
        x, y = torch.from_numpy(images), torch.from_numpy(labels)

        def step():
            model.train()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
        return step


def check_predictor(setup, precision='float32'):
    """Largest |predictor - eager| logit difference on one batch (float32: should be < 1e-4).

    Leaves only the predictor loaded, as in an evaluation through an exported model.
    """
    import numpy as np
    import paddle
    images = np.random.RandomState(1).randn(2, 3, 224, 224).astype('float32')
    model = setup.ours()
    model.eval()
    with paddle.no_grad():
        eager = model(paddle.to_tensor(images)).numpy()
    predictor = setup.predictor(precision)
    setup.drop_eager_model()
    return float(np.abs(predictor(images) - eager).max())


def check_timm_bf16(setup):
    """Largest |bf16 autocast - float32| logit difference of timm's model."""
    import numpy as np
    import torch
    x = torch.from_numpy(np.random.RandomState(1).randn(2, 3, 224, 224).astype('float32'))
    model = setup.timm().eval()
    with torch.inference_mode():
        eager = model(x).numpy()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x).float().numpy()
    return float(np.abs(low - eager).max())


def check_onnx(setup, int8):
    """Largest |ONNX Runtime - eager| logit difference; leaves only the ONNX session loaded."""
    import numpy as np
    import paddle
    images = np.random.RandomState(1).randn(2, 3, 224, 224).astype('float32')
    model = setup.ours()
    model.eval()
    with paddle.no_grad():
        eager = model(paddle.to_tensor(images)).numpy()
    session = setup.onnx(int8)
    setup.drop_eager_model()
    return float(np.abs(session(images) - eager).max())


def check_timm_onnx(setup):
    """Largest |ONNX Runtime - eager| logit difference of timm's export; leaves only the session."""
    import numpy as np
    import torch
    images = np.random.RandomState(1).randn(2, 3, 224, 224).astype('float32')
    model = setup.timm().eval()
    with torch.inference_mode():
        eager = model(torch.from_numpy(images)).numpy()
    session = setup.timm_onnx()
    setup.drop_timm_model()
    return float(np.abs(session(images) - eager).max())


FRAMEWORK = {'ours_eager_infer': 'paddle', 'ours_predictor_infer': 'paddle', 'ours_eager_train': 'paddle',
             'ours_onnx_infer': 'paddle', 'ours_onnx_int8_infer': 'paddle', 'ours_onnx_int8_static_infer': 'paddle',
             'ours_bf16_infer': 'paddle', 'timm_infer': 'torch', 'timm_bf16_infer': 'torch', 'timm_train': 'torch',
             'timm_onnx_infer': 'torch'}
CHECKS = {'ours_predictor_infer': ('predictor_max_abs_diff', check_predictor),
          'ours_bf16_infer': ('bf16_max_abs_diff', lambda setup: check_predictor(setup, 'bfloat16')),
          'ours_onnx_infer': ('onnx_max_abs_diff', lambda setup: check_onnx(setup, None)),
          'ours_onnx_int8_infer': ('onnx_int8_max_abs_diff', lambda setup: check_onnx(setup, 'dynamic')),
          'ours_onnx_int8_static_infer': ('onnx_int8_static_max_abs_diff', lambda setup: check_onnx(setup, 'static')),
          'timm_bf16_infer': ('timm_bf16_max_abs_diff', check_timm_bf16),
          'timm_onnx_infer': ('timm_onnx_max_abs_diff', check_timm_onnx)}
MARK = '@@bench_swin@@ '


def worker(name):
    """Serve prepare / time requests (JSON lines on stdin) for one contender."""
    reply_to = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not mix with replies
    setup, steps = None, {}
    for line in sys.stdin:
        request = json.loads(line)
        if request['cmd'] == 'prepare':
            config = _config()
            export_dir = tempfile.mkdtemp(prefix='bench_swin_')
            setup = Setup(num_classes=int(config.MODEL.NUM_CLASSES), export_dir=export_dir)
            reply = {}
            if request['matmul']:
                reply['matmul_gflops'] = matmul_gflops(FRAMEWORK[name])
            if name in CHECKS:
                key, check = CHECKS[name]
                reply[key] = check(setup)
            for b in request['batch_sizes']:
                steps[(name, b)] = setup.step(name, b)
                for _ in range(request['warmup']):
                    steps[(name, b)]()
        elif request['cmd'] == 'matmul':
            reply = {'matmul_gflops': matmul_gflops(FRAMEWORK[name])}
        elif request['cmd'] == 'time':
            step = steps[(request['name'], request['batch'])]
            start = time.perf_counter()
            for _ in range(request['calls']):
                step()
            reply = {'seconds': time.perf_counter() - start}
        else:
            break
        reply_to.write(MARK + json.dumps(reply) + '\n')
        reply_to.flush()


class Worker:
    def __init__(self, name, env=None, script=None):
        """script: a command-line script that serves `--worker NAME` through worker() (default: this one)."""
        self.name = name
        self.process = subprocess.Popen([sys.executable, script or os.path.abspath(__file__), '--worker', name],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, **(env or {})))

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + '\n')
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise RuntimeError(f"{self.name} benchmark worker exited (code {self.process.wait()}); "
                           f"its error is above")

    def close(self):
        try:
            self.process.stdin.write(json.dumps({'cmd': 'exit'}) + '\n')
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.process.wait()


def run_alternating(batch_sizes, rounds, warmup, contenders, torch_env=None):
    workers = {name: Worker(name, torch_env if FRAMEWORK[name] == 'torch' else None) for name in contenders}
    prepared = {}
    try:
        for name, w in workers.items():  # one after the other, so set-up does not overlap timing
            reply = w.ask(cmd='prepare', batch_sizes=batch_sizes, warmup=warmup, matmul=False)
            prepared.setdefault(FRAMEWORK[name], {}).update(reply)
        for framework in prepared:  # once every worker is idle: start-up work would share the cores
            first = next(w for name, w in workers.items() if FRAMEWORK[name] == framework)
            prepared[framework].update(first.ask(cmd='matmul'))
        keys = [(name, b) for b in batch_sizes for name in contenders]
        calls = {b: max(1, 8 // b) for b in batch_sizes}  # ~8 images per sample even at batch 1
        samples = {key: [] for key in keys}
        for r in range(rounds):
            order = keys[r % len(keys):] + keys[:r % len(keys)]
            for name, b in order:
                seconds = workers[name].ask(cmd='time', name=name, batch=b, calls=calls[b])['seconds']
                samples[(name, b)].append(calls[b] * b / seconds)
            rates = ', '.join(f"{k[0]}@{k[1]} {samples[k][-1]:.2f}" for k in keys)
            print(f"round {r + 1}/{rounds} (images/s): {rates}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    return samples, prepared


def memory_probe(name, batch):
    """Run in a fresh process: RSS before the first step and the peak over two steps (MB)."""
    setup = Setup(num_classes=5, export_dir=tempfile.mkdtemp(prefix='bench_swin_probe_'))
    step = setup.step(name, batch)
    before = current_rss_mb()
    step()
    step()
    peak = peak_rss_mb()
    print(json.dumps({'rss_before_mb': before, 'peak_rss_mb': peak, 'increase_mb': peak - before}))


def measure_memory(names, batch_sizes):
    memory = {}
    for b in batch_sizes:
        for name in names:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), '--probe', name, '--probe_batch', str(b)],
                                 capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith('{')]
            if out.returncode != 0 or not lines:
                print(f"memory probe {name}@{b} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            memory[f"{name}_b{b}"] = json.loads(lines[-1])
            print(f"memory {name}@{b}: peak RSS {memory[f'{name}_b{b}']['peak_rss_mb']:.0f} MB "
                  f"(+{memory[f'{name}_b{b}']['increase_mb']:.0f} MB over the loaded model)", flush=True)
    return memory


def report(results, info):
    """The RESULTS.md section of this run: its CPU's table."""
    lines = [f"## Swin-S 224 on {cpu_heading(info)} (`benchmarks/bench_swin.py`)", "", machine_markdown(info)]
    load = results['load_average_at_end']
    lines.append(f"Each contender in its own worker process, timed alternately: {results['rounds']} rounds "
                 f"(median reported), warm-up {results['warmup']} per contender. PyTorch worker environment: "
                 f"{results['timm_env'] or 'defaults'}. Load average at end: "
                 f"{', '.join('%.1f' % v for v in load) if load else 'n/a'}.\n")
    lines.append("| batch | contender | images/s (median) | min-max | ratio to timm | per-round ratio (median) "
                 "| peak RSS MB (+step) |")
    lines.append("|---|---|---|---|---|---|---|")
    for b in results['batch_sizes']:
        for name in results['contenders']:
            key = f"{name}_b{b}"
            if key not in results['images_per_s']:
                continue
            ratio = results['ratios'].get(f"{name}_vs_timm_b{b}")
            per_round = results['round_ratio_medians'].get(f"{name}_vs_timm_b{b}")
            mem = results['memory'].get(key)
            mem_text = f"{mem['peak_rss_mb']:.0f} (+{mem['increase_mb']:.0f})" if mem else 'n/a'
            lo, hi = results['range'][key]
            lines.append(f"| {b} | {LABELS[name]} | {results['images_per_s'][key]:.2f} | {lo:.2f}-{hi:.2f} | "
                         f"{'%.2fx' % ratio if ratio else '-'} | {'%.2fx' % per_round if per_round else '-'} | "
                         f"{mem_text} |")
    limit = results['compute_limit']
    lines += ["", f"Compute limit: {limit['forward_gflops_per_image']:.1f} GFLOPs per image forward; "
              "measured 2048-square float32 matmul "
              + ', '.join(f"{f} {r:.0f} GFLOP/s" for f, r in limit['matmul_gflops'].items()) + " -> at most "
              f"{limit['inference_images_per_s']:.1f} images/s inference, "
              f"{limit['training_images_per_s']:.1f} images/s training (3x forward).", ""]
    if results['skipped']:
        lines.append(f"Not run on this CPU: {', '.join(results['skipped'])} (no AVX512-BF16 / AMX-BF16).\n")
    lines.append("Key ratios (same run): " + ', '.join(
        f"`ratio_{k}_b{b}` = {results[f'ratio_{k}_b{b}']:.2f}" for b in results['batch_sizes'] for k in KEY_RATIOS
        if results.get(f'ratio_{k}_b{b}') is not None))
    if results.get('max_abs_logit_diff_to_eager'):
        lines.append("\nMax |logit difference| to the same model run eagerly in float32 (random input, batch 2): "
                     + ', '.join(f"{key.replace('_max_abs_diff', '')} {value:.2e}"
                                 for key, value in results['max_abs_logit_diff_to_eager'].items()))
    return '\n'.join(lines) + '\n'


def cpu_heading(info):
    return f"{info['cpu']} ({info['cpu_vendor'] or 'vendor unknown'}; {' '.join(info['cpu_flags']) or 'no AVX2'})"


def results_section(info):
    """RESULTS.md keeps one bench_swin table per kind of CPU: vendor and best instruction set."""
    return f"bench_swin_{cpu_kind(info)}"


# --- the steps of a run ------------------------------------------------------------------------

def parse_args(argv):
    parser = console.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='5 rounds, 1 warm-up (default 7 rounds, 2 warm-ups)')
    parser.add_argument('--json', metavar='PATH', help='also write the figures as JSON here')
    parser.add_argument('--batch_sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, help='alternating rounds (median taken; at least 5)')
    parser.add_argument('--only', nargs='+', choices=CONTENDERS, help='time only these contenders')
    parser.add_argument('--no_memory', action='store_true', help='skip the per-contender memory subprocesses')
    parser.add_argument('--update-results', '--update_results', dest='update_results', action='store_true',
                        help="write this run's table into benchmarks/RESULTS.md (the table of this kind of CPU)")
    parser.add_argument('--timm_wait_policy', choices=('passive', 'default'), default='default',
                        help="OMP_WAIT_POLICY for PyTorch's threads. default (the default) runs timm as "
                             "its users do, the fair peer on a quiet machine; passive makes idle threads "
                             "sleep at once, which helps timm 2-3x only when other jobs share the cores")
    parser.add_argument('--worker', choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument('--probe', choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument('--probe_batch', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.worker or args.probe):
        args.rounds = args.repeats or (5 if args.quick else 7)
        if args.rounds < 5:
            parser.error('--repeats: at least 5 rounds, so the median means something')
    return args


def plan_run(args):
    """What this run times on this machine: the bf16 contenders only where the CPU has bf16."""
    info = machine_info()
    print(machine_markdown(info), flush=True)
    wanted = list(args.only or CONTENDERS)
    bf16 = cpu_env.has_bf16()
    contenders = [name for name in wanted if bf16 or name not in BF16_CONTENDERS]
    skipped = [name for name in wanted if name not in contenders]
    if skipped:
        print(f"skipped (this CPU has neither AVX512-BF16 nor AMX-BF16): {', '.join(skipped)}", flush=True)
    torch_env = {'OMP_WAIT_POLICY': 'PASSIVE'} if args.timm_wait_policy == 'passive' else {}
    return {'info': info, 'contenders': contenders, 'skipped': skipped, 'torch_env': torch_env,
            'rounds': args.rounds, 'warmup': 1 if args.quick else 2, 'batch_sizes': args.batch_sizes}


def compute_limit(prepared):
    """The best measured matmul rate over the model's FLOPs: the most any contender could reach."""
    flops = swin_flops(_config())
    rates = {f: p['matmul_gflops'] for f, p in prepared.items()}
    best = max(rates.values())
    limit = {'forward_gflops_per_image': flops / 1e9, 'matmul_gflops': rates,
             'inference_images_per_s': best * 1e9 / flops, 'training_images_per_s': best * 1e9 / (3 * flops)}
    print(f"compute limit: {flops / 1e9:.1f} GFLOPs/image, 2048-square matmul "
          + ', '.join(f"{f} {r:.0f}" for f, r in rates.items()) + " GFLOP/s -> "
          f"{limit['inference_images_per_s']:.1f} images/s inference", flush=True)
    return limit


def summarise(plan, samples, prepared):
    """Medians, ranges, ratios to timm (of medians and per round) and the key ratios of the run."""
    differences = {key: p[key] for p in prepared.values() for key, _ in CHECKS.values() if key in p}
    results = {'machine': plan['info'], 'timm_env': plan['torch_env'], 'rounds': plan['rounds'],
               'warmup': plan['warmup'], 'batch_sizes': plan['batch_sizes'], 'contenders': plan['contenders'],
               'skipped': plan['skipped'], 'compute_limit': compute_limit(prepared),
               'predictor_max_abs_diff': differences.get('predictor_max_abs_diff'),
               'max_abs_logit_diff_to_eager': differences, 'load_average_at_end': load_average(),
               'images_per_s': {}, 'range': {}, 'samples': {}, 'ratios': {}, 'round_ratio_medians': {}}
    rates = results['images_per_s']
    for (name, b), values in samples.items():
        key = f"{name}_b{b}"
        rates[key] = median(values)
        results['range'][key] = (min(values), max(values))
        results['samples'][key] = values

    def per_round(ours, ref, b):
        # Both were timed in every round, minutes apart at most: the per-round ratios shrug off
        # a slow stretch of the machine that the medians of rates can straddle.
        return median([o / t for o, t in zip(samples[(ours, b)], samples[(ref, b)])])

    for b in plan['batch_sizes']:
        for name in plan['contenders']:
            ref = TIMM_OF.get(name)
            if ref and (ref, b) in samples:
                results['ratios'][f"{name}_vs_timm_b{b}"] = rates[f"{name}_b{b}"] / rates[f"{ref}_b{b}"]
                results['round_ratio_medians'][f"{name}_vs_timm_b{b}"] = per_round(name, ref, b)
    for short, (ours, ref) in KEY_RATIOS.items():
        for b in plan['batch_sizes']:
            have = (ours, b) in samples and (ref, b) in samples
            results[f"ratio_{short}_b{b}"] = rates[f"{ours}_b{b}"] / rates[f"{ref}_b{b}"] if have else None
            if have:
                results['round_ratio_medians'][f"{short}_b{b}"] = per_round(ours, ref, b)
    return results


def print_summary(results):
    for key, value in results['max_abs_logit_diff_to_eager'].items():
        print(f"{key}: {value:.2e}")
    print("\nimages/s (median over rounds) and ratio to timm:")
    for b in results['batch_sizes']:
        for name in results['contenders']:
            text = f"  batch {b} {LABELS[name]:<65} {results['images_per_s'][f'{name}_b{b}']:7.2f}"
            ratio = results['ratios'].get(f"{name}_vs_timm_b{b}")
            if ratio is not None:
                text += (f"   {ratio:.2f}x timm (median of per-round ratios "
                         f"{results['round_ratio_medians'][f'{name}_vs_timm_b{b}']:.2f}x)")
            print(text)
    print()
    for short in KEY_RATIOS:
        for b in results['batch_sizes']:
            key = f"ratio_{short}_b{b}"
            if results.get(key) is not None:
                print(f"{key:<40} = {results[key]:.3f} (median of per-round ratios "
                      f"{results['round_ratio_medians'][f'{short}_b{b}']:.3f})")
    sys.stdout.flush()


def save(results, args):
    if args.json:
        write_json(args.json, results)
    if args.update_results:
        section = results_section(results['machine'])
        update_results_section(section, report(results, results['machine']))
        print(f"wrote the {section} table of {os.path.relpath(os.path.join(ROOT, 'benchmarks', 'RESULTS.md'))}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.probe:
        return memory_probe(args.probe, args.probe_batch)
    plan = plan_run(args)
    samples, prepared = run_alternating(plan['batch_sizes'], plan['rounds'], plan['warmup'], plan['contenders'],
                                        plan['torch_env'])
    results = summarise(plan, samples, prepared)
    print_summary(results)
    results['memory'] = {} if args.no_memory else measure_memory(plan['contenders'], plan['batch_sizes'])
    save(results, args)
    return results


if __name__ == '__main__':
    sys.exit(console.run_command(main))
