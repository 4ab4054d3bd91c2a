"""The Swin model is the release's network (key for key, logit for logit) and timm's (converted)."""
import json
import os
import re

import numpy as np
import paddle
import pytest
from PIL import Image

from checkpoints import CheckpointError, load_pretrained
from config import get_config
from swin_transformer import build_swin, count_parameters

DATA = os.path.join(os.path.dirname(__file__), 'data')
COMPAT = os.path.join(DATA, 'paddlevit_compat')
BUFFERS = ('relative_position_index', 'attn_mask')


def _config(name, **model_keys):
    c = get_config(name)
    c.defrost()
    for key, value in model_keys.items():
        c.MODEL[key] = value
    c.freeze()
    return c


def _reference_images():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    images = []
    for i in range(1, 5):
        pixels = np.asarray(Image.open(os.path.join(COMPAT, 'aligned', 'clip-01', f'{i:05d}.jpg')).convert('RGB'))
        images.append(((pixels / 255.0 - mean) / std).transpose(2, 0, 1))
    return paddle.to_tensor(np.stack(images).astype('float32'))


def test_swin_small_state_dict_matches_release_manifest():
    model = build_swin(get_config('configs/swin_small_patch4_window7_224.yaml'))
    with open(os.path.join(DATA, 'paddlevit_swin_small_state_dict.json')) as f:
        manifest = {k: v for k, v in json.load(f).items() if not k.endswith(BUFFERS)}
    ours = {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith(BUFFERS)}
    assert ours == manifest
    assert round(count_parameters(model) / 1e6, 2) == 48.84


def test_release_checkpoint_reproduces_release_logits():
    model = build_swin(_config(os.path.join(COMPAT, 'swin_debug.yaml'), FINAL_NORM=False))
    content = load_pretrained(model, os.path.join(COMPAT, 'checkpoint.pdparams'), keep_head=True)
    assert content['epoch'] == 17
    model.eval()
    with paddle.no_grad():
        logits = model(_reference_images()).numpy()
    expected = np.load(os.path.join(COMPAT, 'expected_logits.npy'))
    assert np.abs(logits - expected).max() < 1e-4
    # The final norm is what tells the release's network from timm's: applying it must change the answer.
    model.final_norm = True
    with paddle.no_grad():
        assert np.abs(model(_reference_images()).numpy() - expected).max() > 1e-3


def _tiny(num_classes=5):
    return _config('swin_debug.yaml', NUM_CLASSES=num_classes)


def test_classifier_of_other_size_is_dropped_for_finetuning_but_refused_for_eval(tmp_path, caplog):
    source = build_swin(_tiny(num_classes=8))
    path = str(tmp_path / 'backbone.pdparams')
    paddle.save({'model': source.state_dict(), 'epoch': 3}, path)
    target = build_swin(_tiny(num_classes=5))
    head_before = target.fc.weight.numpy().copy()
    with caplog.at_level('INFO'):
        load_pretrained(target, path)
    assert 'starting a new classifier' in caplog.text
    np.testing.assert_array_equal(target.fc.weight.numpy(), head_before)
    np.testing.assert_array_equal(target.stages[0].blocks[0].attn.qkv.weight.numpy(),
                                  source.stages[0].blocks[0].attn.qkv.weight.numpy())
    with pytest.raises(CheckpointError, match='8 classes but the model has 5'):
        load_pretrained(build_swin(_tiny(num_classes=5)), path, keep_head=True)


def test_ema_weights_are_preferred(tmp_path):
    plain, ema = build_swin(_tiny()), build_swin(_tiny())
    path = str(tmp_path / 'ckpt.pdparams')
    paddle.save({'model': plain.state_dict(), 'model_ema': ema.state_dict(), 'epoch': 1}, path)
    target = build_swin(_tiny())
    load_pretrained(target, path)
    np.testing.assert_array_equal(target.fc.weight.numpy(), ema.fc.weight.numpy())


def test_missing_and_mismatched_backbone_keys_are_listed_when_evaluating(tmp_path, caplog):
    state = {k: v for k, v in build_swin(_tiny()).state_dict().items()}
    del state['stages.1.blocks.0.attn.qkv.weight']
    path = str(tmp_path / 'broken.pdparams')
    paddle.save(state, path)
    with pytest.raises(CheckpointError, match=r'missing: stages\.1\.blocks\.0\.attn\.qkv\.weight'):
        load_pretrained(build_swin(_tiny()), path, keep_head=True)
    # Fine-tuning skips it, as the release's loader did, and says so.
    with caplog.at_level('WARNING'):
        load_pretrained(build_swin(_tiny()), path)
    assert 'stages.1.blocks.0.attn.qkv.weight' in caplog.text
    wider = build_swin(_config('swin_debug.yaml', EMBED_DIM=24))
    path = str(tmp_path / 'wider.pdparams')
    paddle.save(wider.state_dict(), path)
    with pytest.raises(CheckpointError, match='shape mismatch: patch_embedding'):
        load_pretrained(build_swin(_tiny()), path, keep_head=True)
    # Fine-tuning keeps the few that fit (the relative position tables: same heads) and lists the rest.
    caplog.clear()
    with caplog.at_level('WARNING'):
        load_pretrained(build_swin(_tiny()), path)
    assert 'other shape' in caplog.text and 'patch_embedding.patch_embed.weight' in caplog.text
    with pytest.raises(CheckpointError, match='not found'):
        load_pretrained(build_swin(_tiny()), str(tmp_path / 'absent.pdparams'))
    garbage = tmp_path / 'garbage.pdparams'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='garbage.pdparams'):
        load_pretrained(build_swin(_tiny()), str(garbage))


def _official_layout(timm_state):
    """The official Swin repository's names for a timm state dict (downsample at stage end, `head`)."""
    renamed = {}
    for key, value in timm_state.items():
        match = re.match(r'layers\.(\d+)\.downsample\.(.*)', key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        renamed[key.replace('head.fc.', 'head.')] = value
    return {'model': renamed}


def test_timm_swin_small_parity_after_conversion(tmp_path):
    torch = pytest.importorskip('torch')
    timm = pytest.importorskip('timm')
    from tools.convert_torch_swin import convert_state_dict, unwrap

    torch.manual_seed(0)
    reference = timm.create_model('swin_small_patch4_window7_224', pretrained=False, num_classes=5).eval()
    # Random init gives near-zero logits; widen the head so a wrong network cannot hide in 1e-4.
    with torch.no_grad():
        reference.head.fc.weight.mul_(50.0)
    images = np.random.RandomState(0).randn(2, 3, 224, 224).astype('float32')
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).numpy()
    assert np.abs(expected).max() > 1.0

    model = build_swin(_config('configs/swin_small_patch4_window7_224.yaml', FINAL_NORM=True))
    model.eval()
    for layout in (reference.state_dict(), unwrap(_official_layout(reference.state_dict()))):
        path = str(tmp_path / 'converted.pdparams')
        paddle.save(convert_state_dict(layout), path)
        load_pretrained(model, path, keep_head=True)
        with paddle.no_grad():
            logits = model(paddle.to_tensor(images)).numpy()
        assert np.abs(logits - expected).max() < 1e-4


def test_droppath_and_dropout_only_act_in_training():
    model = build_swin(_config('swin_debug.yaml', DROPPATH=0.5))
    images = paddle.randn([2, 3, 224, 224])
    model.eval()
    with paddle.no_grad():
        first, second = model(images).numpy(), model(images).numpy()
    np.testing.assert_array_equal(first, second)
    model.train()
    with paddle.no_grad():
        assert np.abs(model(images).numpy() - first).max() > 0


def test_linear_backward_equals_paddle_linear():
    """The custom backward (bias gradient by GEMM) gives F.linear's gradients for x, weight and bias."""
    from swin_transformer import Linear
    rng = np.random.default_rng(0)
    layer = Linear(6, 5)
    layer.weight.set_value(rng.normal(size=(6, 5)).astype('float32'))
    layer.bias.set_value(rng.normal(size=(5,)).astype('float32'))
    x_value = rng.normal(size=(3, 4, 6)).astype('float32')
    upstream = paddle.to_tensor(rng.normal(size=(3, 4, 5)).astype('float32'))

    def gradients(forward):
        x = paddle.to_tensor(x_value, stop_gradient=False)
        layer.clear_gradients()
        (forward(x) * upstream).sum().backward()
        return x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()

    ours = gradients(layer)
    reference = gradients(lambda x: paddle.nn.functional.linear(x, layer.weight, layer.bias))
    for name, a, b in zip(('x', 'weight', 'bias'), ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    # The bias gradient is the upstream gradient summed over every position.
    np.testing.assert_allclose(ours[2], upstream.numpy().sum(axis=(0, 1)), rtol=1e-5)
