"""The exported predictor computes what the eager model computes, and refuses what it cannot run."""
import os

import numpy as np
import paddle
import pytest

from config import get_config
from predictor import Predictor, PredictorError, export_model, exported_files, load_classifier
from swin_transformer import build_swin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(num_classes=5, image_size=56):
    # Shifted windows in stage 0 (14x14 tokens, window 7) and a single-window last stage, so the
    # mask, the roll and the window-size clamp are all inside the exported graph.
    c = get_config(os.path.join(ROOT, 'configs', 'swin_debug.yaml'))
    c.defrost()
    c.DATA.IMAGE_SIZE = image_size
    c.MODEL.NUM_CLASSES = num_classes
    c.MODEL.STAGE_DEPTHS = [2, 2]
    c.MODEL.NUM_HEADS = [1, 2]
    c.MODEL.DROPPATH = 0.0
    c.freeze()
    return c


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    paddle.seed(0)
    config = _config()
    model = build_swin(config)
    # Random init gives near-zero logits for any input; a much wider head makes 1e-4 meaningful.
    model.fc.weight.set_value(np.random.RandomState(0).randn(*model.fc.weight.shape).astype('float32') * 20)
    model.eval()
    prefix = str(tmp_path_factory.mktemp('export') / 'tiny')
    export_model(model, config, prefix)
    return config, model, prefix


def _eager(model, images):
    with paddle.no_grad():
        return model(paddle.to_tensor(images)).numpy()


def test_predictor_matches_eager_for_any_batch_size(exported):
    config, model, prefix = exported
    assert exported_files(prefix) is not None
    predictor = Predictor(prefix, threads=1)
    for batch in (1, 3):
        images = np.random.RandomState(batch).randn(batch, 3, 56, 56).astype('float32')
        expected = _eager(model, images)
        assert np.abs(expected).max() > 0.5
        logits = predictor(images)
        assert logits.shape == (batch, 5)
        assert np.abs(logits - expected).max() < 1e-4
    assert model.training is False and not hasattr(model.forward, 'concrete_program')


def test_load_classifier_gives_the_same_logits_from_checkpoint_and_export(exported, tmp_path):
    config, model, prefix = exported
    checkpoint = str(tmp_path / 'weights.pdparams')
    paddle.save(model.state_dict(), checkpoint)
    images = np.random.RandomState(7).randn(2, 3, 56, 56).astype('float32')
    from_checkpoint = load_classifier(config, checkpoint, device='cpu')(images)
    from_export = load_classifier(config, prefix + '.pdiparams', device='cpu')(paddle.to_tensor(images))
    assert np.abs(from_checkpoint - _eager(model, images)).max() < 1e-5
    assert np.abs(from_export - from_checkpoint).max() < 1e-4


def test_mismatches_are_named(exported, tmp_path):
    config, model, prefix = exported
    with pytest.raises(PredictorError, match='exported model has 5 classes but the config has 4'):
        load_classifier(_config(num_classes=4), prefix)
    with pytest.raises(PredictorError, match='exported for 56px'):
        load_classifier(_config(image_size=112), prefix)
    with pytest.raises(PredictorError, match='no exported model'):
        Predictor(str(tmp_path / 'absent'))
    with pytest.raises(PredictorError, match='neither a .pdparams checkpoint, an exported model prefix'):
        load_classifier(config, str(tmp_path / 'absent'))
    with pytest.raises(PredictorError, match=r'images must be \[N, 3, 56, 56\]'):
        Predictor(prefix)(np.zeros((1, 3, 64, 64), dtype='float32'))


def test_export_tool_writes_a_working_predictor(exported, tmp_path, capsys):
    from tools.export_model import main
    config, model, prefix = exported
    checkpoint = str(tmp_path / 'weights.pdparams')
    paddle.save({'model': model.state_dict(), 'epoch': 1}, checkpoint)
    cfg_file = tmp_path / 'tiny.yaml'
    cfg_file.write_text("DATA:\n  IMAGE_SIZE: 56\nMODEL:\n  NUM_CLASSES: 5\n  EMBED_DIM: 12\n"
                        "  STAGE_DEPTHS: [2, 2]\n  NUM_HEADS: [1, 2]\n  WINDOW_SIZE: 7\n  PATCH_SIZE: 4\n")
    out = str(tmp_path / 'out' / 'tiny_infer')
    assert main(['-cfg', str(cfg_file), '-pretrained', checkpoint, '-output', out, '--check']) == 0
    difference = float(capsys.readouterr().out.rsplit(':', 1)[1])
    assert difference < 1e-4
    # Exactly what the running Paddle's jit.save writes (Paddle 3: .json + .pdiparams; 2.6:
    # .pdmodel + .pdiparams + .pdiparams.info), plus the meta data, and no temporary left over.
    reference = tmp_path / 'jit_save'
    paddle.jit.save(build_swin(config), str(reference / 'tiny_infer'),
                    input_spec=[paddle.static.InputSpec([None, 3, 56, 56], 'float32', name='images')])
    program_suffix = '.json' if int(paddle.__version__.split('.')[0]) >= 3 else '.pdmodel'
    assert exported_files(out)[0] == out + program_suffix
    assert sorted(os.listdir(tmp_path / 'out')) == sorted(os.listdir(reference) + ['tiny_infer.meta.json'])


def test_training_and_inference_window_paths_agree():
    # The model partitions windows with a gather in eval mode (fast forward, exportable) and with
    # roll + transpose in training (fast backward); with dropout and drop-path off, both modes
    # must compute the same function, shifted windows and patch merging included.
    paddle.seed(1)
    model = build_swin(_config())
    images = paddle.to_tensor(np.random.RandomState(3).randn(2, 3, 56, 56).astype('float32'))
    model.eval()
    with paddle.no_grad():
        evaluated = model(images).numpy()
    model.train()
    with paddle.no_grad():
        trained_path = model(images).numpy()
    np.testing.assert_allclose(trained_path, evaluated, atol=1e-5, rtol=0)


def test_predictor_run_leaves_eager_math_threads_alone(exported):
    """A predictor run used to leave MKL at 1 thread for eager Paddle in the same process."""
    import ctypes
    import cpu_env
    mkl_path = os.path.join(os.path.dirname(paddle.__file__), 'libs', 'libmklml_intel.so')
    if not os.path.exists(mkl_path) or cpu_env.threads_per_process() < 2:
        pytest.skip('needs Paddle built with MKL and 2 or more cores to see a thread count change')
    mkl = ctypes.CDLL(mkl_path)
    _config, _model, prefix = exported
    Predictor(prefix)(np.zeros((2, 3, 56, 56), np.float32))
    assert mkl.MKL_Get_Max_Threads() == cpu_env.threads_per_process()


def test_bf16_export_runs_bf16_where_the_cpu_has_it_and_float32_elsewhere(exported, tmp_path, monkeypatch, caplog):
    import cpu_env
    config, model, prefix = exported
    bf16_prefix = export_model(model, config, str(tmp_path / 'tiny_bf16'), precision='bfloat16')
    images = np.random.RandomState(4).randn(2, 3, 56, 56).astype('float32')
    expected = _eager(model, images)
    monkeypatch.setattr(cpu_env, 'has_bf16', lambda info=None: False)
    fallback = Predictor(bf16_prefix, threads=1)
    assert fallback.precision == 'float32' and 'float32' in fallback.backend
    assert 'neither AVX512-BF16 nor AMX-BF16: running float32' in caplog.text
    assert np.abs(fallback(images) - expected).max() < 1e-4
    monkeypatch.undo()
    if not cpu_env.has_bf16():  # this CPU cannot run the bf16 kernels
        pytest.skip('no AVX512-BF16 / AMX-BF16 on this CPU')
    fast = Predictor(bf16_prefix, threads=1)
    assert fast.precision == 'bfloat16'
    logits = fast(images)
    # bfloat16 keeps 8 bits of mantissa: close to float32, but not equal to it.
    assert 0 < np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()
    with pytest.raises(PredictorError, match='precision must be one of'):
        Predictor(prefix, precision='float16')
