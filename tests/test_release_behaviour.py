"""What the release executed, where the installed Paddle would do otherwise: the AMP scaler's
values, truncated-normal bounds, the EMA on the CPU, the position-table resize on load and the
scheduler state its -resume reads. The expected values are written out here from the release's
code (PaddleViT facial_expression/) and Paddle 2.2's sources, not taken from the code under test."""
import math

import numpy as np
import paddle
import pytest

import optim
from checkpoints import load_pretrained
from config import get_config
from helpers import configured
from swin_transformer import build_swin, truncated_normal


def _tiny(tiny_cfg_file, **model_keys):
    return configured(get_config(tiny_cfg_file), './output', **{f'MODEL.{k}': v for k, v in model_keys.items()})


def test_grad_scaler_has_the_release_era_values_unless_asked(tiny_config, tmp_path, monkeypatch):
    # A scaler built on a CPU disables itself and keeps no values: record what it is given.
    given = []
    monkeypatch.setattr(paddle.amp, 'GradScaler', lambda **kwargs: given.append(kwargs) or 'scaler')
    assert optim.build_grad_scaler(tiny_config) == 'scaler'
    assert optim.build_grad_scaler(configured(tiny_config, tmp_path, AMP_PADDLE_DEFAULTS=True)) == 'scaler'
    # Paddle 2.2/2.3 GradScaler() defaults (python/paddle/amp/grad_scaler.py), which the release's
    # bare call got; then nothing, i.e. the installed Paddle's defaults.
    assert given == [{'init_loss_scaling': 32768.0, 'incr_ratio': 2.0, 'decr_ratio': 0.5,
                      'incr_every_n_steps': 1000, 'decr_every_n_nan_or_inf': 2}, {}]


def test_truncated_normal_is_cut_at_two_std():
    paddle.seed(3)
    weight = paddle.create_parameter([400, 500], 'float32', default_initializer=truncated_normal(0.02)).numpy()
    assert np.abs(weight).max() <= 0.04 + 1e-7
    # A normal cut at +-2 sigma has std sigma * 0.8796; an uncut one would give 0.02.
    assert abs(weight.std() - 0.02 * 0.8796) < 3e-4


def test_every_initialised_weight_is_within_two_std(tiny_cfg_file, tmp_path):
    paddle.seed(5)
    model = build_swin(_tiny(tiny_cfg_file))
    bounded = [n for n, p in model.named_parameters() if len(p.shape) == 2]
    assert 'fc.weight' in bounded and any('relative_position_bias_table' in n for n in bounded)
    for name in bounded:
        assert np.abs(model.state_dict()[name].numpy()).max() <= 0.04 + 1e-7, name
    # A new classifier when fine-tuning, and what the file lacks, keep that initialisation.
    state = {k: v for k, v in build_swin(_tiny(tiny_cfg_file, NUM_CLASSES=8)).state_dict().items()
             if 'stages.1.blocks.0.attn.qkv' not in k}
    path = str(tmp_path / 'eight.pdparams')
    paddle.save(state, path)
    target = build_swin(_tiny(tiny_cfg_file))
    load_pretrained(target, path)
    for name in ('fc.weight', 'stages.1.blocks.0.attn.qkv.weight'):
        assert np.abs(target.state_dict()[name].numpy()).max() <= 0.04 + 1e-7


def test_ema_force_cpu_keeps_the_average_on_the_cpu(tiny_cfg_file):
    model = build_swin(_tiny(tiny_cfg_file))
    ema = optim.ModelEma(model, 0.9, force_cpu=True)
    ema.update(model)
    assert all(v.place.is_cpu_place() for v in ema.state_dict().values())
    ema.set_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    assert all(v.place.is_cpu_place() for v in ema.state_dict().values())


# --- position tables: the release's rule, written out with NumPy -----------------------------

def _cubic(x, a=-0.75):
    """Keys' cubic convolution kernel with a = -0.75 (Paddle's and PyTorch's bicubic)."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    if x < 2:
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return 0.0


def _bicubic_1d(n_in, n_out):
    """Matrix [n_out, n_in]: half-pixel centres (align_corners False), borders replicated."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        t = src - base
        for k, w in zip(range(-1, 3), (_cubic(t + 1), _cubic(t), _cubic(1 - t), _cubic(2 - t))):
            m[i, min(max(base + k, 0), n_in - 1)] += w
    return m


def _release_relative_table(table, side_out):
    """interpolate_position_embedding.py on [L1, heads]: per head, the sqrt(L1)-square grid resized."""
    side_in = int(round(len(table) ** 0.5))
    heads = table.shape[1]
    grid = table.T.reshape(heads, side_in, side_in)
    m = _bicubic_1d(side_in, side_out)
    resized = np.einsum('oi,hij,pj->hop', m, grid, m)
    return resized.reshape(heads, side_out * side_out).T


def test_pretrained_position_tables_of_another_window_are_resized_as_the_release(tiny_cfg_file, tmp_path):
    source = build_swin(_tiny(tiny_cfg_file, WINDOW_SIZE=4))
    target_cfg = _tiny(tiny_cfg_file, WINDOW_SIZE=2)
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    rng = np.random.default_rng(0)
    keys = [k for k in state if k.endswith('relative_position_bias_table')]
    assert keys and state[keys[0]].shape[0] == 49
    for key in keys:
        state[key] = rng.normal(size=state[key].shape).astype('float32')
    path = str(tmp_path / 'window4.pdparams')
    paddle.save(state, path)
    target = build_swin(target_cfg)
    load_pretrained(target, path)
    for key in keys:
        loaded = target.state_dict()[key].numpy()
        assert loaded.shape == (9, state[key].shape[1])
        np.testing.assert_allclose(loaded, _release_relative_table(state[key].astype(np.float64), 3),
                                   atol=1e-5)


# --- the scheduler state the release's -resume reads -----------------------------------------

def _release_state_after_training(config, epochs, batches, world_size=1):
    """The release's LinearWarmup(CosineAnnealingDecay) stepped as its train() did, every batch."""
    base, start, end = optim.scaled_learning_rates(config, world_size)
    lr = paddle.optimizer.lr
    cosine = lr.CosineAnnealingDecay(learning_rate=base, T_max=config.TRAIN.NUM_EPOCHS - config.TRAIN.WARMUP_EPOCHS,
                                     eta_min=end, last_epoch=-1)
    release = lr.LinearWarmup(learning_rate=cosine, warmup_steps=config.TRAIN.WARMUP_EPOCHS, start_lr=start,
                              end_lr=base, last_epoch=config.TRAIN.LAST_EPOCH)
    for epoch in range(1, epochs + 1):
        for batch_id in range(batches):
            release.step(batch_id / batches + epoch - 1)
    return release


@pytest.mark.parametrize('epochs', [1, 3])
def test_scheduler_state_has_the_release_layout_and_values(tiny_config, tmp_path, epochs):
    cfg = configured(tiny_config, tmp_path, **{'TRAIN.NUM_EPOCHS': 4, 'TRAIN.WARMUP_EPOCHS': 2})
    batches = 7
    ours = optim.WarmupCosine(*optim.scaled_learning_rates(cfg, 1), cfg.TRAIN.WARMUP_EPOCHS, cfg.TRAIN.NUM_EPOCHS)
    for epoch in range(1, epochs + 1):
        for batch_id in range(batches):
            ours.step(batch_id / batches + epoch - 1)
    release = _release_state_after_training(cfg, epochs, batches)
    assert ours.state_dict() == release.state_dict()
    assert 'LinearWarmup_LR' in ours.state_dict()
    # The release's -resume: set_state_dict, then step(last_epoch + 1).
    fresh = _release_state_after_training(cfg, 0, batches)
    fresh.set_state_dict(ours.state_dict())
    fresh.step(epochs + 1)
    # And ours reads both layouts: the release's and the flat one written before.
    for state in (release.state_dict(), {'last_epoch': release.last_epoch, 'last_lr': release.last_lr}):
        again = optim.WarmupCosine(*optim.scaled_learning_rates(cfg, 1), cfg.TRAIN.WARMUP_EPOCHS, cfg.TRAIN.NUM_EPOCHS)
        again.set_state_dict(state)
        assert again.last_epoch == release.last_epoch and again() == pytest.approx(ours(), rel=1e-12)


def test_scheduler_without_warmup_has_the_cosine_layout(tiny_config, tmp_path):
    cfg = configured(tiny_config, tmp_path, **{'TRAIN.NUM_EPOCHS': 4, 'TRAIN.WARMUP_EPOCHS': 0})
    ours = optim.WarmupCosine(*optim.scaled_learning_rates(cfg, 1), 0, 4)
    ours.step(1.5)
    base, _, end = optim.scaled_learning_rates(cfg, 1)
    release = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=base, T_max=4, eta_min=end, last_epoch=0)
    release.step(1.5)
    assert ours.state_dict() == release.state_dict()


def test_the_releases_resume_reads_our_checkpoint(tiny_config, tmp_path):
    """The release's STEP 7 (-resume) on a checkpoint written here: its LinearWarmup scheduler's
    set_state_dict needs 'LinearWarmup_LR' (KeyError on the flat layout written before)."""
    import engine
    out = tmp_path / 'run'
    engine.run(configured(tiny_config, out, **{'TRAIN.NUM_EPOCHS': 2, 'TRAIN.WARMUP_EPOCHS': 1}))
    state = paddle.load(str(out / 'last.pdparams'))
    cfg = configured(tiny_config, out, **{'TRAIN.NUM_EPOCHS': 2, 'TRAIN.WARMUP_EPOCHS': 1})
    model = build_swin(cfg)
    release = _release_state_after_training(cfg, 0, 1)
    optimizer = paddle.optimizer.AdamW(parameters=model.parameters(), learning_rate=release, weight_decay=0.05)
    model.set_state_dict(state['model'])
    optimizer.set_state_dict(state['optimizer'])
    release.set_state_dict(state['lr_scheduler'])
    release.step(state['epoch'] + 1)
    assert release.last_epoch == 3
    with pytest.raises(KeyError, match='LinearWarmup_LR'):
        _release_state_after_training(cfg, 0, 1).set_state_dict(
            {k: v for k, v in state['lr_scheduler'].items() if k != 'LinearWarmup_LR'})
