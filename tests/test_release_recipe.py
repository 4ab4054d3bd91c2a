"""The training recipe is the one the release executed (PaddleViT facial_expression/), bugs included,
and every fix is a switch. Each test checks the release's behaviour, worked out from its code:
its config defaults (tests/data/release_config_defaults.json, read from its config.py), its decay
set, its augmentation probabilities, its data-list format, its schedule, its loaders and losses."""
import json
import logging
import math
import os
import random
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

import checkpoints
import datasets
import engine
import labels
import loader
import optim
import swin_transformer
import transforms
from config import ConfigError, get_arguments, get_config, merge_opts, update_config
from errors import UsageError
from helpers import configured
from mixup import Mixup

DATA = os.path.join(os.path.dirname(__file__), 'data')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat(node, prefix=''):
    out = {}
    for key, value in node.items():
        if hasattr(value, 'items'):
            out.update(flat(value, prefix + key + '.'))
        else:
            out[prefix + key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


# ------------------------------------------------------------------------------ config

def test_every_release_config_key_exists_with_the_release_default():
    with open(os.path.join(DATA, 'release_config_defaults.json')) as f:
        release = json.load(f)
    ours = flat(get_config())
    assert {k: ours.get(k, '<missing>') for k in release} == release


def test_release_yaml_with_its_unused_keys_and_opts_load(tmp_path):
    release_yaml = tmp_path / 'release_style.yaml'
    release_yaml.write_text(open(os.path.join(ROOT, 'configs', 'swin_small_patch4_window7_224.yaml')).read()
                            + 'TRAIN:\n  MODEL_EMA_FORCE_CPU: True\n  COLOR_JITTER: 0.3\n  AUTO_AUGMENT: True\n'
                              '  RAND_AUGMENT: False\n  RAND_AUGMENT_LAYERS: 3\n  RAND_AUGMENT_MAGNITUDE: 5\n')
    c = get_config(str(release_yaml))
    assert c.MODEL.PATCH_SIZE == 4 and c.TRAIN.RAND_AUGMENT_LAYERS == 3 and c.TRAIN.AUTO_AUGMENT
    c = merge_opts(c, ['TRAIN.RAND_AUGMENT_MAGNITUDE', '7', 'DATA.DATA_LIST_TRAIN', 'list.txt'])
    assert c.TRAIN.RAND_AUGMENT_MAGNITUDE == 7 and c.DATA.DATA_LIST_TRAIN == 'list.txt'


def test_fixed_yaml_turns_every_fix_on_over_the_release_swin_s():
    release, fixed = get_config('swin_small_patch4_window7_224.yaml'), get_config('swin_small_patch4_window7_224_fixed.yaml')
    changed = {k: v for k, v in flat(fixed).items() if flat(release)[k] != v}
    assert changed == {'DATA.RELEASE_RANDOM_APPLY': False, 'TRAIN.NO_DECAY_NORM_BIAS': True,
                       'TRAIN.USE_CONFIG_SMOOTHING': True}
    assert list(fixed.MODEL.STAGE_DEPTHS) == [2, 2, 18, 2]


def test_flags_as_the_release_and_only_abaw(tmp_path, tiny_cfg_file, abaw_small, capsys):
    c = update_config(get_config(), get_arguments(['-batch_size', '64', '-eval', '-amp']))
    assert c.DATA.BATCH_SIZE_EVAL == 64 and not c.AMP
    code = engine.main(['-cfg', tiny_cfg_file, '-dataset', 'ImageNet', '-class_type', 'coarse', '-device', 'cpu',
                        '-data_folder', abaw_small['data_folder'], '-anno_folder', abaw_small['anno_folder'],
                        '-output', str(tmp_path / 'o')])
    assert code == 2 and 'only ABAW' in capsys.readouterr().err


# ------------------------------------------------------------------------------ optimiser

def one_zero_gradient_step(config):
    """Parameters before and after one AdamW step with zero gradients: only weight decay moves them."""
    model = swin_transformer.build_swin(config)
    optimizer = optim.build_optimizer(config, model, 0.1)
    (model(paddle.rand([2, 3, 32, 32])).sum() * 0).backward()
    # Parameters the forward pass does not use (the final norm, off in the ABAW models) get no
    # gradient, so no optimiser step at all.
    before = {n: p.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return before, {n: p.numpy() for n, p in model.named_parameters() if n in before}


def test_release_decays_every_parameter_and_the_fix_exempts_norms_biases_and_tables(tiny_config):
    # The release's exemption compared structured names ('stages.0...bias') with what Paddle passes,
    # the generated name ('linear_0.b_0'): nothing matched, so AdamW decayed every parameter.
    decay = 1 - 0.1 * tiny_config.TRAIN.WEIGHT_DECAY
    before, after = one_zero_gradient_step(tiny_config)
    for name in before:
        np.testing.assert_allclose(after[name], before[name] * decay, rtol=1e-5, atol=1e-7, err_msg=name)
    every = {n for n, _ in swin_transformer.build_swin(tiny_config).named_parameters()}
    assert set(optim.decayed_parameters(tiny_config, swin_transformer.build_swin(tiny_config))) == every

    before, after = one_zero_gradient_step(configured(tiny_config, '/tmp', **{'TRAIN.NO_DECAY_NORM_BIAS': True}))
    exempt = [n for n in before if n.endswith('.bias') or 'norm' in n or 'relative_position_bias_table' in n]
    assert any('relative_position_bias_table' in n for n in exempt)
    for name in before:
        expected = before[name] if name in exempt else before[name] * decay
        np.testing.assert_allclose(after[name], expected, rtol=1e-5, atol=1e-7, err_msg=name)


def release_learning_rate(config, fractional_epoch):
    """The release's schedule, with Paddle's own schedulers as it built them (main_multi_gpu.py)."""
    base, start, end = optim.scaled_learning_rates(config, 1)
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(
        learning_rate=base, T_max=config.TRAIN.NUM_EPOCHS - config.TRAIN.WARMUP_EPOCHS, eta_min=end)
    warmup = paddle.optimizer.lr.LinearWarmup(learning_rate=cosine, warmup_steps=config.TRAIN.WARMUP_EPOCHS,
                                              start_lr=start, end_lr=base, last_epoch=config.TRAIN.LAST_EPOCH)
    warmup.step(fractional_epoch)
    return warmup()


def record_learning_rates(monkeypatch):
    seen = []
    real_step = paddle.optimizer.AdamW.step

    def step(self):
        seen.append(self.get_lr())
        return real_step(self)
    monkeypatch.setattr(paddle.optimizer.AdamW, 'step', step)
    return seen


def test_last_epoch_and_weights_only_resume_continue_the_schedule(tmp_path, tiny_config, monkeypatch, capsys):
    changes = {'TRAIN.NUM_EPOCHS': 4, 'TRAIN.WARMUP_EPOCHS': 2, 'SAVE_FREQ': 1}
    seen = record_learning_rates(monkeypatch)
    full_config = configured(tiny_config, tmp_path / 'full', **changes)
    engine.run(full_config)
    full = list(seen)
    per_epoch = len(full) // 4
    batches = per_epoch  # ACCUM_ITER 1: one update per batch
    expected = [release_learning_rate(full_config, e - 1 + b / batches) for e in range(1, 5) for b in range(batches)]
    np.testing.assert_allclose(full, expected, rtol=1e-6)

    # The release's way to continue from weights only: a plain state dict with -resume and -last_epoch.
    (epoch2,) = (tmp_path / 'full').glob('Epoch-2-Loss-*.pdparams')
    plain = tmp_path / 'epoch2_weights.pdparams'
    paddle.save(paddle.load(str(epoch2))['model'], str(plain))
    seen.clear()
    capsys.readouterr()
    engine.run(configured(tiny_config, tmp_path / 'continued',
                          **{**changes, 'MODEL.RESUME': str(plain), 'TRAIN.LAST_EPOCH': 2}))
    log = capsys.readouterr().out
    assert 'w/o opt/epoch/scaler' in log and 'optimizer' in log
    np.testing.assert_allclose(seen, full[2 * per_epoch:], rtol=1e-9)
    history = json.load(open(tmp_path / 'continued' / 'history.json'))
    assert [h['epoch'] for h in history] == [3, 4]


def test_loss_smoothing_is_the_releases(tiny_config):
    logits = paddle.to_tensor(np.random.default_rng(0).normal(size=(6, 5)).astype('float32'))
    target = paddle.to_tensor(np.array([0, 1, 2, 3, 4, 0]))

    def release_loss(smoothing):  # its LabelSmoothingCrossEntropyLoss, written out
        log_probs = np.log(paddle.nn.functional.softmax(logits).numpy())
        nll = -log_probs[np.arange(6), target.numpy()]
        return float(np.mean((1 - smoothing) * nll + smoothing * -log_probs.mean(axis=1)))

    for smoothing, use_config, expected in ((0.3, False, 0.1), (0.3, True, 0.3), (0.0, False, 0.0)):
        cfg = configured(tiny_config, '/tmp', **{'TRAIN.SMOOTHING': smoothing, 'TRAIN.USE_CONFIG_SMOOTHING': use_config})
        ours = optim.soft_cross_entropy(logits, optim.smoothed_targets(target, 5, optim.label_smoothing(cfg)))
        assert float(ours) == pytest.approx(release_loss(expected), rel=1e-5)


# ------------------------------------------------------------------------------ data

def colourful_face():
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))


def shares(config, draws=400):
    """How often the training transform ran grayscale, colour jitter, rotation and blur."""
    counts = {'Grayscale': 0, 'ColorJitter': 0, 'RandomRotation': 0, 'GaussianBlur': 0}
    transform = transforms.train_transform(config)
    for step in transform.transforms:
        inner = getattr(step, 'transform', None)
        if inner is not None:
            name, call = type(inner).__name__, inner.__call__

            def counted(img, name=name, call=call):
                counts[name] += 1
                return call(img)
            step.transform = counted
    mean = np.array(config.DATA.IMAGENET_MEAN).reshape(3, 1, 1)
    std = np.array(config.DATA.IMAGENET_STD).reshape(3, 1, 1)
    grey_pixels = 0
    random.seed(0)
    np.random.seed(0)
    image = colourful_face()
    for _ in range(draws):
        pixels = transform(image) * std + mean
        grey_pixels += bool(np.abs(pixels - pixels.mean(axis=0)).max() < 1e-5)
    assert grey_pixels == counts['Grayscale']  # the output really is grey exactly when it ran
    return {name: count / draws for name, count in counts.items()}


def test_augmentation_runs_with_the_releases_probabilities(tiny_config):
    no_erase = configured(tiny_config, '/tmp', **{'TRAIN.RANDOM_ERASE_PROB': 0.0})
    # The release's RandomApply ran a transform when random() > p: grayscale (p 0.2) 80% of the
    # time and colour jitter (p 0.8) 20%; rotation and blur (p 0.5) half the time.
    release = shares(no_erase)
    for name, share in {'Grayscale': 0.8, 'ColorJitter': 0.2, 'RandomRotation': 0.5, 'GaussianBlur': 0.5}.items():
        assert abs(release[name] - share) < 0.07, (name, release)
    intended = shares(configured(no_erase, '/tmp', **{'DATA.RELEASE_RANDOM_APPLY': False}))
    assert abs(intended['Grayscale'] - 0.2) < 0.07 and abs(intended['ColorJitter'] - 0.8) < 0.07


def test_random_erasing_count_divides_the_area():
    random.seed(3)
    np.random.seed(3)
    erase = transforms.RandomErasing(1.0, 'const', max_count=3)
    fractions = [float((erase(np.ones((3, 60, 60), np.float32)) == 0).mean()) for _ in range(300)]
    # Up to 3 boxes, each of 2%-1/3 of the image divided by their number: at most 1/3 in all
    # (plus rounding), and more than one box in most draws.
    assert max(fractions) < 1 / 3 + 0.03
    assert min(fractions) > 0.0
    single = transforms.RandomErasing(1.0, 'const', max_count=1)
    assert max(float((single(np.ones((3, 60, 60), np.float32)) == 0).mean()) for _ in range(300)) > 0.25
    with pytest.raises(ConfigError, match="TRAIN.RANDOM_ERASE_MODE 'noise'"):
        transforms.RandomErasing(0.25, 'noise')


def test_validation_during_training_holds_only_the_models_classes(tiny_config, abaw_small):
    negative = configured(tiny_config, '/tmp', **{'DATA.CLASS_TYPE': 'negative', 'MODEL.NUM_CLASSES': 4})
    val = datasets.build_dataset(negative, 'val').samples
    evaluation = datasets.build_dataset(negative, 'eval').samples
    expected = [(f"{v}/{n:05d}.jpg", labels.map_label(label, 'negative'))
                for v, frame_labels in sorted(abaw_small['val'].items()) for n, label in enumerate(frame_labels, 1)
                if labels.map_label(label, 'negative') >= 0 and n not in abaw_small['missing'].get(v, ())]
    assert val == expected
    assert len(evaluation) > len(val) and {s for s in val} <= set(evaluation)


def test_training_batches_drop_the_last_partial_one(tiny_config):
    train, _ = loader.build_loader(list(range(13)), configured(tiny_config, '/tmp', **{'DATA.BATCH_SIZE': 4}),
                                   True, 0, 1)
    assert len(train) == 3 and [len(b) for b in train.batch_sampler] == [4, 4, 4]
    evaluation, _ = loader.build_loader(list(range(13)), configured(tiny_config, '/tmp', **{'DATA.BATCH_SIZE_EVAL': 4}),
                                        False, 0, 1)
    assert [len(b) for b in evaluation.batch_sampler] == [4, 4, 4, 1]
    with pytest.raises(UsageError, match='no full batch'):
        loader.build_loader(list(range(3)), configured(tiny_config, '/tmp', **{'DATA.BATCH_SIZE': 4}), True, 0, 1)


# ------------------------------------------------------------------------------ weights

def test_pretrained_loads_like_the_release_for_training_and_strictly_for_eval(tmp_path, tiny_config, abaw_small,
                                                                              caplog, capsys):
    source = swin_transformer.build_swin(configured(tiny_config, '/tmp', **{'MODEL.NUM_CLASSES': 8}))
    state = dict(source.state_dict())
    state['arcface.weight'] = paddle.rand([16, 100])  # a face-recognition head the model lacks
    del state['norm.bias']
    path = str(tmp_path / 'backbone.pdparams')
    paddle.save({'model': state, 'epoch': 17}, path)

    target = swin_transformer.build_swin(tiny_config)
    head_before = target.fc.weight.numpy().copy()
    with caplog.at_level(logging.INFO):
        checkpoints.load_pretrained(target, path)
    assert 'arcface.weight' in caplog.text and 'norm.bias' in caplog.text and 'new classifier' in caplog.text
    np.testing.assert_array_equal(target.fc.weight.numpy(), head_before)
    np.testing.assert_array_equal(target.patch_embedding.patch_embed.weight.numpy(),
                                  source.patch_embedding.patch_embed.weight.numpy())
    # Fine-tuning from it runs; evaluating it is refused with the reason.
    engine.run(configured(tiny_config, tmp_path / 'finetune', **{'MODEL.PRETRAINED': path, 'TRAIN.NUM_EPOCHS': 1}))
    with pytest.raises(checkpoints.CheckpointError, match='8 classes but the model has 5'):
        engine.run(configured(tiny_config, tmp_path / 'eval', **{'MODEL.PRETRAINED': path, 'EVAL': True}))
    unrelated = str(tmp_path / 'unrelated.pdparams')
    paddle.save({'encoder.weight': paddle.rand([3, 3])}, unrelated)
    with pytest.raises(checkpoints.CheckpointError, match='no weight of this file fits'):
        checkpoints.load_pretrained(swin_transformer.build_swin(tiny_config), unrelated)


def val_loss_of(tiny_config, tmp_path, weights, name):
    out = tmp_path / name
    paddle.save(weights, str(tmp_path / f'{name}.pdparams'))
    engine.run(configured(tiny_config, out, **{'EVAL': True, 'MODEL.PRETRAINED': str(tmp_path / f'{name}.pdparams')}))
    return json.load(open(out / 'metrics.json'))['scores']['loss']


def test_validation_uses_the_trained_weights_unless_asked_for_the_ema(tmp_path, tiny_config):
    ema = {'TRAIN.NUM_EPOCHS': 1, 'TRAIN.MODEL_EMA': True, 'TRAIN.MODEL_EMA_DECAY': 0.5}
    for validate_ema in (False, True):
        out = tmp_path / f'run_{validate_ema}'
        engine.run(configured(tiny_config, out, **{**ema, 'TRAIN.VALIDATE_EMA': validate_ema}))
        state = paddle.load(str(out / 'last.pdparams'))
        validated = json.load(open(out / 'history.json'))[0]['val_loss']
        trained = val_loss_of(tiny_config, tmp_path, state['model'], f'model_{validate_ema}')
        averaged = val_loss_of(tiny_config, tmp_path, state['model_ema'], f'ema_{validate_ema}')
        assert abs(trained - averaged) > 1e-4  # the two really differ, so the check means something
        assert validated == pytest.approx(averaged if validate_ema else trained, abs=1e-5)


# ------------------------------------------------------------------------------ mixup

def mixup_config(tiny_config, **changes):
    return configured(tiny_config, '/tmp', **{'TRAIN.MIXUP_PROB': 1.0, 'TRAIN.MIXUP_ALPHA': 0.0,
                                               'TRAIN.CUTMIX_ALPHA': 1.0, **changes})


def test_cutmix_minmax_places_a_whole_box_and_corrects_lambda(tiny_config):
    cfg = mixup_config(tiny_config, **{'TRAIN.CUTMIX_MINMAX': [0.25, 0.5], 'TRAIN.CUTMIX_ALPHA': 0.0,
                                       'TRAIN.SMOOTHING': 0.0})
    mixup = Mixup(cfg, 5)
    assert mixup.cutmix_alpha == 1.0  # the release's minmax implies cutmix
    images = paddle.to_tensor(np.stack([np.full((3, 32, 32), i, np.float32) for i in range(4)]))
    labels_ = paddle.to_tensor(np.array([0, 1, 2, 3]))
    for seed in range(20):
        mixup.set_epoch(seed, 1)
        mixed, targets = mixup(images, labels_)
        pasted = mixed.numpy()[0, 0] == 3  # image 0 receives image 3 (the batch reversed)
        rows, cols = np.nonzero(pasted)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert pasted.sum() == height * width  # one rectangle, wholly inside the image
        assert 8 <= height < 16 and 8 <= width < 16
        assert float(targets.numpy()[0, 0]) == pytest.approx(1 - pasted.mean(), abs=1e-6)
        assert float(targets.numpy()[0, 3]) == pytest.approx(pasted.mean(), abs=1e-6)


def test_mixup_switch_follows_the_releases_condition(tiny_config):
    # The release builds its mixup function when any of these is set, even with MIXUP_PROB 0.
    assert Mixup.enabled(configured(tiny_config, '/tmp', **{'TRAIN.CUTMIX_ALPHA': 1.0}))
    assert not Mixup.enabled(tiny_config)
    never = Mixup(configured(tiny_config, '/tmp', **{'TRAIN.CUTMIX_ALPHA': 1.0}), 5)
    assert all(never.draw() == (1.0, False) for _ in range(50))
    with pytest.raises(UsageError, match='both 0'):
        Mixup(mixup_config(tiny_config, **{'TRAIN.CUTMIX_ALPHA': 0.0}), 5)
    with pytest.raises(UsageError, match='even batch size'):
        Mixup(mixup_config(tiny_config, **{'DATA.BATCH_SIZE': 7}), 5)
    # Mixup alone: lambda from Beta(alpha, alpha), images and targets mixed by it.
    mix = Mixup(mixup_config(tiny_config, **{'TRAIN.MIXUP_ALPHA': 0.8, 'TRAIN.CUTMIX_ALPHA': 0.0,
                                             'TRAIN.SMOOTHING': 0.0}), 5)
    images = paddle.to_tensor(np.stack([np.zeros((3, 4, 4), np.float32), np.ones((3, 4, 4), np.float32)]))
    mixed, targets = mix(images, paddle.to_tensor(np.array([0, 1])))
    lam = float(targets.numpy()[0, 0])
    assert 0 < lam < 1 and np.allclose(mixed.numpy()[0], 1 - lam) and math.isclose(float(targets.numpy()[0, 1]), 1 - lam, rel_tol=1e-5)


def test_release_checkpoint_layout_resumes(tmp_path, tiny_config, capsys):
    """A checkpoint as the release wrote it (model, optimizer, epoch, lr_scheduler of its own
    LinearWarmup) resumes: weights and epoch restored, the schedule continues from the epoch."""
    first = tmp_path / 'first'
    engine.run(configured(tiny_config, first, **{'TRAIN.NUM_EPOCHS': 1}))
    ours = paddle.load(str(first / 'last.pdparams'))
    # The release's optimizer state is keyed by its own program's parameter names.
    foreign = {k.replace('_', 'X_', 1): v for k, v in ours['optimizer'].items()}
    release_style = {'model': ours['model'], 'optimizer': foreign, 'epoch': 1,
                     'lr_scheduler': {'last_epoch': 0.875, 'last_lr': 1e-3, 'LinearWarmup_LR': {'last_epoch': 0}}}
    path = tmp_path / 'Epoch-1-Loss-1.2345678.pdparams'
    paddle.save(release_style, str(path))
    out = tmp_path / 'resumed'
    capsys.readouterr()
    engine.run(configured(tiny_config, out, **{'TRAIN.NUM_EPOCHS': 2, 'MODEL.RESUME': str(path)}))
    assert 'AdamW starts afresh' in capsys.readouterr().out
    assert [h['epoch'] for h in json.load(open(out / 'history.json'))] == [2]
    shutil.rmtree(first)
