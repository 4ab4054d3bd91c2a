"""ONNX export and ONNX Runtime inference: the same logits as the eager model (float32), a really
quantized int8 variant, and .onnx files accepted by load_classifier, -eval and predict_video.py."""
import argparse
import os

import numpy as np
import onnx
import paddle
import pytest
from PIL import Image

import engine
import predict_video
from config import get_config, update_config
from predictor import (OnnxPredictor, PredictorError, export_model, export_onnx, load_classifier)
from swin_transformer import build_swin


def _tiny_config(cfg_file, class_type='coarse'):
    return update_config(get_config(cfg_file), argparse.Namespace(class_type=class_type))


@pytest.fixture(scope='module')
def onnx_models(tmp_path_factory, tiny_cfg_file):
    paddle.seed(0)
    config = _tiny_config(tiny_cfg_file)
    model = build_swin(config)
    # Random init gives near-zero logits for any input; a much wider head makes 1e-4 meaningful.
    model.fc.weight.set_value(np.random.RandomState(0).randn(*model.fc.weight.shape).astype('float32') * 20)
    model.eval()
    folder = tmp_path_factory.mktemp('onnx')
    checkpoint = str(folder / 'coarse.pdparams')
    paddle.save(model.state_dict(), checkpoint)
    program = export_model(model, config, str(folder / 'program' / 'coarse'))
    float32, int8 = export_onnx(program, str(folder / 'coarse.onnx'), int8_file=str(folder / 'coarse.int8.onnx'))
    return {'config': config, 'model': model, 'checkpoint': checkpoint, 'float32': float32, 'int8': int8,
            'cfg_file': tiny_cfg_file, 'folder': folder}


def _images(batch, seed, size):
    return np.random.RandomState(seed).randn(batch, 3, size, size).astype('float32')


def _eager(model, images):
    with paddle.no_grad():
        return model(paddle.to_tensor(images)).numpy()


def test_onnx_matches_eager_for_any_batch_size(onnx_models):
    predictor = OnnxPredictor(onnx_models['float32'], threads=1)
    size = int(onnx_models['config'].DATA.IMAGE_SIZE)
    assert predictor.meta['num_classes'] == 5 and predictor.meta['image_size'] == size
    assert predictor.backend.startswith('ONNX Runtime') and 'float32' in predictor.backend
    for batch in (1, 3):
        images = _images(batch, batch, size)
        expected = _eager(onnx_models['model'], images)
        assert np.abs(expected).max() > 0.5
        logits = predictor(images)
        assert logits.shape == (batch, 5)
        assert np.abs(logits - expected).max() < 1e-4
    with pytest.raises(PredictorError, match=rf'images must be \[N, 3, {size}, {size}\]'):
        predictor(np.zeros((1, 3, size + 8, size + 8), np.float32))


def test_int8_model_quantizes_every_matmul_and_stays_close(onnx_models):
    graph = onnx.load(onnx_models['int8']).graph
    weights = {init.name for init in graph.initializer}
    ops = [node.op_type for node in graph.node]
    assert 'MatMulInteger' in ops and 'DynamicQuantizeLinear' in ops
    # No float matrix product with a stored weight is left: all of them run in int8.
    assert not [n.name for n in graph.node if n.op_type in ('MatMul', 'Gemm') and set(n.input) & weights]
    predictor = OnnxPredictor(onnx_models['int8'])
    assert 'int8' in predictor.backend and predictor.meta['num_classes'] == 5
    images = _images(16, 5, int(onnx_models['config'].DATA.IMAGE_SIZE))
    quantized, expected = predictor(images), _eager(onnx_models['model'], images)
    assert np.corrcoef(quantized.ravel(), expected.ravel())[0, 1] > 0.99
    assert 0 < np.abs(quantized - expected).max() < 0.1 * np.abs(expected).max()


def test_load_classifier_runs_onnx_and_names_mismatches(onnx_models, tiny_cfg_file, tmp_path):
    config = onnx_models['config']
    classify = load_classifier(config, onnx_models['float32'])
    size = int(config.DATA.IMAGE_SIZE)
    images = _images(2, 9, size)
    assert isinstance(classify, OnnxPredictor)
    assert np.abs(classify(paddle.to_tensor(images)) - _eager(onnx_models['model'], images)).max() < 1e-4
    with pytest.raises(PredictorError, match='exported model has 5 classes but the config has 4'):
        load_classifier(_tiny_config(tiny_cfg_file, 'negative'), onnx_models['int8'])
    bigger = config.clone()
    bigger.defrost()
    bigger.DATA.IMAGE_SIZE = 2 * size
    with pytest.raises(PredictorError, match=f'exported for {size}px'):
        load_classifier(bigger, onnx_models['float32'])
    with pytest.raises(PredictorError, match='absent.onnx: ONNX model not found'):
        load_classifier(config, str(tmp_path / 'absent.onnx'))
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not a model')
    with pytest.raises(PredictorError, match='broken.onnx: ONNX Runtime cannot load it'):
        load_classifier(config, str(broken))
    with pytest.raises(PredictorError, match='needs onnxruntime-gpu'):
        load_classifier(config, onnx_models['float32'], device='gpu')


def test_export_tool_writes_float32_and_int8_onnx(onnx_models, tmp_path, capsys):
    from tools.export_model import main
    out = str(tmp_path / 'out' / 'tiny_infer')
    assert main(['-cfg', onnx_models['cfg_file'], '-class_type', 'coarse', '-pretrained',
                 onnx_models['checkpoint'], '-output', out, '-int8', '--check']) == 0
    lines = capsys.readouterr().out.splitlines()
    differences = {line.split(' - eager|')[0][len('max |'):]: float(line.rsplit(':', 1)[1])
                   for line in lines if line.startswith('max |')}
    assert set(differences) == {'onnx float32', 'onnx int8'}
    assert differences['onnx float32'] < 1e-4
    # Only the two ONNX files remain: the Paddle program was the converter's temporary input.
    assert sorted(os.listdir(tmp_path / 'out')) == ['tiny_infer.int8.onnx', 'tiny_infer.onnx']


def test_eval_on_onnx_writes_the_same_predictions(onnx_models, tiny_config, tmp_path):
    def evaluate(weights, output):
        cfg = tiny_config.clone()
        cfg.defrost()
        cfg.SAVE, cfg.EVAL, cfg.MODEL.PRETRAINED = str(output), True, weights
        cfg.freeze()
        engine.run(cfg)
        return np.load(output / 'predictions.npz')

    eager = evaluate(onnx_models['checkpoint'], tmp_path / 'eager')
    fast = evaluate(onnx_models['float32'], tmp_path / 'onnx')
    assert list(fast['paths']) == list(eager['paths']) and len(eager['paths']) > 0
    assert list(fast['labels']) == list(eager['labels'])
    assert np.abs(fast['logits'] - eager['logits']).max() < 1e-4


def test_predict_video_model_accepts_onnx(onnx_models, tmp_path):
    cfg = onnx_models['cfg_file']
    _, weights, _ = predict_video.resolve_model('coarse', cfg, onnx_models['float32'])
    faces = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (48, 48, 3), dtype=np.uint8))
             for i in range(3)]
    from_onnx = predict_video.Model('coarse', cfg, weights)
    from_checkpoint = predict_video.Model('coarse', cfg, onnx_models['checkpoint'])
    assert 'ONNX Runtime' in from_onnx.classify.backend and 'eager' in from_checkpoint.classify.backend
    assert np.abs(from_onnx(faces) - from_checkpoint(faces)).max() < 1e-4
    with pytest.raises(predict_video.UsageError, match='missing.onnx: file not found'):
        predict_video.resolve_model('coarse', cfg, str(tmp_path / 'missing.onnx'))


def test_exports_describe_themselves_a_config_only_fills_in(onnx_models, tmp_path):
    # The release's Swin-S config says 224 px and CROP_PCT 1.0; the export says 32 px and its own
    # crop. Without -coarse_cfg the export's settings win; given explicitly, the contradiction is
    # an error; a config that agrees is fine.
    faces = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (48, 48, 3), dtype=np.uint8))
             for i in range(2)]
    tiny = predict_video.Model('coarse', onnx_models['cfg_file'], onnx_models['checkpoint'])
    cfg, weights, _ = predict_video.resolve_model('coarse', None, onnx_models['float32'])
    assert cfg == predict_video.RELEASE_CFG
    described = predict_video.Model('coarse', cfg, weights, cfg_given=False)
    for key in ('IMAGE_SIZE', 'CROP_PCT', 'IMAGENET_MEAN', 'IMAGENET_STD'):
        assert described.config.DATA[key] == tiny.config.DATA[key], key
    assert np.abs(described(faces) - tiny(faces)).max() < 1e-4
    size = int(onnx_models['config'].DATA.IMAGE_SIZE)
    with pytest.raises(PredictorError, match=f'exported for {size}px images but the config uses DATA.IMAGE_SIZE 224'):
        predict_video.Model('coarse', cfg, weights, cfg_given=True)
    with pytest.raises(PredictorError, match='exported model has 5 classes but the config has 4'):
        predict_video.Model('negative', cfg, weights, cfg_given=False)
    assert OnnxPredictor(weights).meta['mean'] == [0.485, 0.456, 0.406]


def test_static_int8_is_calibrated_on_face_images(onnx_models, tmp_path):
    from quantize import calibration_images
    from tools.export_model import main
    size = int(onnx_models['config'].DATA.IMAGE_SIZE)
    faces = tmp_path / 'aligned' / 'video1'
    faces.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (size, size, 3), dtype=np.uint8)).save(
            faces / f'{i:05d}.jpg')
    out = str(tmp_path / 'static' / 'tiny')
    assert main(['-cfg', onnx_models['cfg_file'], '-class_type', 'coarse', '-pretrained', onnx_models['checkpoint'],
                 '-output', out, '-int8', 'static', '-calibration', str(tmp_path / 'aligned')]) == 0
    graph = onnx.load(out + '.int8.onnx').graph
    weights = {init.name for init in graph.initializer}
    ops = [node.op_type for node in graph.node]
    assert 'QLinearMatMul' in ops and 'DynamicQuantizeLinear' not in ops
    assert not [n.name for n in graph.node if n.op_type in ('MatMul', 'Gemm') and set(n.input) & weights]
    predictor = OnnxPredictor(out + '.int8.onnx')
    assert predictor.meta['quantization'].startswith('static') and '6 calibration images' in predictor.meta['quantization']
    # Faces like the calibration ones (activation scales hold for the images they came from).
    images = calibration_images([str(tmp_path / 'aligned')], onnx_models['config'])
    assert images.shape == (6, 3, size, size)
    quantized, expected = predictor(images), _eager(onnx_models['model'], images)
    assert np.corrcoef(quantized.ravel(), expected.ravel())[0, 1] > 0.99


@pytest.mark.parametrize('flags, message', [
    (['-int8', 'static'], '-int8 static: give face images to calibrate on with -calibration DIR'),
    (['-int8', '-calibration', '.'], '-calibration: only used with -int8 static'),
    (['-bf16', '-format', 'onnx'], '-bf16: a paddle.inference export'),
    (['-int8', 'static', '-calibration', 'absent_dir'], '-calibration: absent_dir is not a folder')])
def test_export_tool_names_wrong_precision_flags(onnx_models, tmp_path, capsys, flags, message):
    from tools.export_model import main
    code = None
    try:
        code = main(['-cfg', onnx_models['cfg_file'], '-class_type', 'coarse', '-pretrained',
                     onnx_models['checkpoint'], '-output', str(tmp_path / 'x')] + flags)
    except SystemExit as stop:
        code = stop.code
    assert code == 2 and message in capsys.readouterr().err
