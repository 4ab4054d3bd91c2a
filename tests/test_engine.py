"""Training/evaluation engine: resume equivalence, checkpoints, predictions, metrics, failures."""
import json
import os
import random
import shutil

import numpy as np
import paddle
import pytest

import checkpoints
import engine
import labels
from helpers import configured, make_abaw_tree
from fileio import is_temporary


def model_weights(path):
    state = paddle.load(path, return_numpy=True)
    return state['model'], state


def test_resume_equals_uninterrupted_run(tmp_path, tiny_config):
    """Kill after epoch 1 (simulated: only epoch 1's checkpoint survives), `-resume auto`: the final
    weights, optimizer, EMA and scheduler equal those of the uninterrupted run. EMA, gradient
    accumulation and mixup/cutmix are on so their state and randomness are covered too."""
    changes = {'TRAIN.NUM_EPOCHS': 3, 'TRAIN.MODEL_EMA': True, 'TRAIN.MODEL_EMA_DECAY': 0.9,
               'TRAIN.ACCUM_ITER': 2, 'TRAIN.MIXUP_PROB': 1.0, 'TRAIN.CUTMIX_ALPHA': 1.0,
               'MODEL.DROPPATH': 0.1}
    full = configured(tiny_config, tmp_path / 'full', **changes)
    engine.run(full)
    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    (epoch1,) = (tmp_path / 'full').glob('Epoch-1-Loss-*.pdparams')
    shutil.copy(epoch1, resumed_dir)
    # A half-written temporary file from the kill must be ignored.
    (resumed_dir / '.last.abc.tmp.pdparams').write_bytes(b'garbage')
    result = engine.run(configured(tiny_config, resumed_dir, **{**changes, 'MODEL.RESUME': 'auto'}))

    a, a_state = model_weights(str(tmp_path / 'full' / 'last.pdparams'))
    b, b_state = model_weights(str(resumed_dir / 'last.pdparams'))
    assert a_state['epoch'] == b_state['epoch'] == 3
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    for key in a_state['model_ema']:
        np.testing.assert_allclose(a_state['model_ema'][key], b_state['model_ema'][key], atol=1e-6)
    assert a_state['lr_scheduler'] == b_state['lr_scheduler']
    history = json.load(open(resumed_dir / 'history.json'))
    assert [h['epoch'] for h in history] == [2, 3]
    # The digest the run reports (and each rank logs) is that of the weights it saved.
    saved = engine.swin_transformer.build_swin(full)
    saved.set_state_dict(b)
    assert result['weights_sha256'] == checkpoints.weights_digest(saved)
    saved.set_state_dict(a)
    assert checkpoints.weights_digest(saved) != checkpoints.weights_digest(engine.swin_transformer.build_swin(full))


def test_checkpoint_layout_history_and_best(tmp_path, tiny_config):
    out = tmp_path / 'run'
    engine.run(configured(tiny_config, out, **{'TRAIN.NUM_EPOCHS': 2}))
    names = sorted(os.listdir(out))
    assert 'best.pdparams' in names and 'last.pdparams' in names and 'history.json' in names
    assert sum(n.startswith('Epoch-') for n in names) == 2
    assert not any(is_temporary(n) for n in names)  # no temporary files left behind
    _, state = model_weights(str(out / 'last.pdparams'))
    assert {'model', 'optimizer', 'epoch', 'lr_scheduler'} <= set(state)
    assert 'model_ema' not in state and 'amp_grad_scaler' not in state
    history = json.load(open(out / 'history.json'))
    assert [h['epoch'] for h in history] == [1, 2]
    for h in history:
        assert set(h['val_per_class_f1']) == set(labels.COARSE_CLASSES)
        assert 0 <= h['val_macro_f1'] <= 1 and h['lr'] >= 0 and h['train_loss'] > 0
    best = json.load(open(out / 'best.json'))
    assert best['macro_f1'] == max(h['val_macro_f1'] for h in history)
    _, best_state = model_weights(str(out / 'best.pdparams'))
    assert best_state['epoch'] == best['epoch']


def test_eval_predictions_cover_every_frame(tmp_path, tiny_config, abaw_small):
    train_dir = tmp_path / 'train'
    engine.run(configured(tiny_config, train_dir, **{'TRAIN.NUM_EPOCHS': 1}))
    ckpt = str(train_dir / 'last.pdparams')
    # The coarse checkpoint evaluated as a negative model is refused (class count).
    neg = configured(tiny_config, tmp_path / 'bad', **{'EVAL': True, 'MODEL.PRETRAINED': ckpt,
                                                       'DATA.CLASS_TYPE': 'negative', 'MODEL.NUM_CLASSES': 4})
    with pytest.raises(ValueError, match='5 classes but the model has 4'):
        engine.run(neg)

    out = tmp_path / 'eval'
    engine.run(configured(tiny_config, out, **{'EVAL': True, 'MODEL.PRETRAINED': ckpt,
                                                'DATA.BATCH_SIZE_EVAL': 5}))
    pred = np.load(out / 'predictions.npz')
    on_disk = sorted(f"{v}/{n}" for v in abaw_small['val']
                     for n in os.listdir(os.path.join(abaw_small['data_folder'], v)))
    assert list(pred['paths']) == on_disk
    assert pred['logits'].dtype == np.float32 and pred['logits'].shape == (len(on_disk), 5)
    assert list(pred['class_names']) == list(labels.COARSE_CLASSES) and str(pred['class_type']) == 'coarse'
    expected = []
    for path in on_disk:
        video, name = path.split('/')
        abaw = abaw_small['val'][video][int(name[:5]) - 1]
        expected.append(labels.map_label(abaw, 'coarse'))
    assert list(pred['labels']) == expected
    metrics = json.load(open(out / 'metrics.json'))
    assert metrics['frames'] == len(on_disk)
    assert metrics['labelled_frames'] == sum(1 for e in expected if e >= 0)
    mask = pred['labels'] >= 0
    acc = float((pred['logits'][mask].argmax(1) == pred['labels'][mask]).mean())
    assert abs(metrics['scores']['accuracy'] - acc) < 1e-9

    # The exported predictor in the eager model's place gives the same predictions file.
    from predictor import export_model
    from checkpoints import load_pretrained
    import swin_transformer
    model = swin_transformer.build_swin(tiny_config)
    load_pretrained(model, ckpt, keep_head=True)
    prefix = str(tmp_path / 'exported' / 'coarse')
    export_model(model, tiny_config, prefix)
    fast_out = tmp_path / 'eval_exported'
    engine.run(configured(tiny_config, fast_out, **{'EVAL': True, 'MODEL.PRETRAINED': prefix}))
    fast = np.load(fast_out / 'predictions.npz')
    assert list(fast['paths']) == on_disk and list(fast['labels']) == expected
    assert np.abs(fast['logits'] - pred['logits']).max() < 1e-4

    # Test-set mode: no annotations -> every face image of every video folder, labels -1.
    test_out = tmp_path / 'test_eval'
    engine.run(configured(tiny_config, test_out, **{'EVAL': True, 'MODEL.PRETRAINED': ckpt,
                                                     'DATA.ANNO_FOLDER': ''}))
    pred = np.load(test_out / 'predictions.npz')
    all_videos = list(abaw_small['train']) + list(abaw_small['val'])
    n_images = sum(len(os.listdir(os.path.join(abaw_small['data_folder'], v))) for v in all_videos)
    assert len(pred['paths']) == len(set(pred['paths'])) == n_images
    assert (pred['labels'] == -1).all()
    assert json.load(open(test_out / 'metrics.json'))['scores'] is None


class NaNAfter(paddle.nn.Layer):
    """Wraps a model; its training forward returns NaN logits from the `after`-th call on."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                out = out * float('nan')
        return out


def test_nonfinite_loss_stops_naming_step_and_keeps_last_good(tmp_path, tiny_config, monkeypatch):
    import swin_transformer
    real_build = swin_transformer.build_swin
    steps_per_epoch = 6  # 52 coarse training frames in abaw_small / batch 8, the partial batch dropped
    monkeypatch.setattr(swin_transformer, 'build_swin',
                        lambda cfg: NaNAfter(real_build(cfg), after=steps_per_epoch + 3))
    out = tmp_path / 'nan'
    with pytest.raises(engine.NonFiniteLossError, match=r'epoch 2 step 3/6 \(global step 9\).*last\.pdparams'):
        engine.run(configured(tiny_config, out, **{'TRAIN.NUM_EPOCHS': 3}))
    _, state = model_weights(str(out / 'last.pdparams'))
    assert state['epoch'] == 1
    assert all(np.isfinite(v).all() for v in state['model'].values())


def test_cli_bad_inputs_give_one_clear_line(tmp_path, tiny_cfg_file, abaw_small, capsys):
    base = ['-cfg', tiny_cfg_file, '-data_folder', abaw_small['data_folder'],
            '-anno_folder', abaw_small['anno_folder'], '-device', 'cpu']
    cases = [
        (['-class_type', 'fine', '-output', str(tmp_path / 'o1')], "unknown class_type 'fine'"),
        (['-class_type', 'coarse', '-output', str(tmp_path / 'o2'), '-data_folder', str(tmp_path / 'none')],
         'does not exist'),
        (['-class_type', 'coarse', '-output', str(tmp_path / 'o3'), '-anno_folder', str(tmp_path / 'none')],
         'does not exist'),
        (['-class_type', 'coarse', '-output', str(tmp_path / 'o4'), '-resume', str(tmp_path / 'x.pdparams')],
         'x.pdparams'),
        (['-class_type', 'coarse', '-output', str(tmp_path / 'o5'), '-eval'], '-eval needs -pretrained'),
    ]
    for extra, message in cases:
        assert engine.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error') and message in err[0], err
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    assert engine.main(base + ['-class_type', 'coarse', '-output', str(blocker / 'sub')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: -output') and 'cannot write' in err[0], err
    # argparse's own complaints are reported the same way.
    assert engine.main(base + ['-class_type', 'coarse', '-no_such_flag']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: unrecognized arguments: -no_such_flag'), err


def test_corrupt_training_image_names_file_or_is_skipped(tmp_path, tiny_config, abaw_small):
    data = tmp_path / 'data'
    shutil.copytree(abaw_small['data_folder'], data / 'aligned')
    bad = data / 'aligned' / 'vid_a' / '00003.jpg'
    bad.write_bytes(bad.read_bytes()[:200])
    cfg = configured(tiny_config, tmp_path / 'strict', **{'DATA.DATA_FOLDER': str(data / 'aligned'),
                                                          'TRAIN.NUM_EPOCHS': 1})
    with pytest.raises(engine.datasets.BadImageError, match='vid_a/00003.jpg'):
        engine.run(cfg)
    lenient = configured(cfg, tmp_path / 'lenient', **{'DATA.SKIP_BAD_IMAGES': True})
    engine.run(lenient)
    history = json.load(open(tmp_path / 'lenient' / 'history.json'))
    assert history[0]['skipped_bad_images'] == 1


def test_amp_on_cpu_is_ignored_with_one_log_line(tmp_path, tiny_config, capsys):
    engine.run(configured(tiny_config, tmp_path / 'amp', **{'AMP': True, 'TRAIN.NUM_EPOCHS': 1}))
    out = capsys.readouterr().out
    assert out.count('-amp: ignored on CPU') == 1
    _, state = model_weights(str(tmp_path / 'amp' / 'last.pdparams'))
    assert 'amp_grad_scaler' not in state


@pytest.fixture(scope='module')
def learnable_data(tmp_path_factory):
    rng = random.Random(1)
    abaw_classes = [0, 4, 6, 7, 1]  # one ABAW label per coarse class
    train = {f't{i:02d}': [rng.choice(abaw_classes) for _ in range(40)] for i in range(14)}
    val = {f'v{i}': [rng.choice(abaw_classes) for _ in range(40)] for i in range(3)}
    return make_abaw_tree(str(tmp_path_factory.mktemp('learnable')), train, val)


@pytest.mark.slow
def test_tiny_model_learns_visible_class_signal(tmp_path, tiny_config, learnable_data):
    """Full training pipeline (augmentation, smoothing, AdamW, warm-up + cosine) on generated faces
    whose coarse class is a visible texture: macro F1 must exceed 0.9 (about 30 s on 2 CPU cores)."""
    data_folder, anno_folder = learnable_data
    cfg = configured(tiny_config, tmp_path / 'learn', **{
        'DATA.DATA_FOLDER': data_folder, 'DATA.ANNO_FOLDER': anno_folder, 'DATA.BATCH_SIZE': 16,
        'TRAIN.NUM_EPOCHS': 10, 'TRAIN.BASE_LR': 3e-3, 'SAVE_FREQ': 100})
    result = engine.run(cfg)
    print('learnability macro F1', result['last_scores']['macro_f1'])
    assert result['last_scores']['macro_f1'] > 0.9


def test_resume_auto_picks_newest_complete_checkpoint(tmp_path):
    import logging
    logger = logging.getLogger('test_resume_auto')
    assert checkpoints.find_resume_checkpoint(str(tmp_path), logger) is None
    for name, epoch in (('Epoch-1-Loss-1.0000.pdparams', 1), ('last.pdparams', 2), ('best.pdparams', 1)):
        checkpoints.save_checkpoint(str(tmp_path / name), {'model': {}, 'epoch': epoch})
    assert checkpoints.find_resume_checkpoint(str(tmp_path), logger).endswith('last.pdparams')
    checkpoints.save_checkpoint(str(tmp_path / 'Epoch-2-Loss-0.9000.pdparams'), {'model': {}, 'epoch': 2})
    assert checkpoints.find_resume_checkpoint(str(tmp_path), logger).endswith('last.pdparams')  # tie: last
    # A newer periodic file that was cut short (e.g. disk full) is skipped, not trusted.
    (tmp_path / 'Epoch-3-Loss-0.8000.pdparams').write_bytes(b'\x80\x04truncated')
    (tmp_path / '.last.x1.tmp.pdparams').write_bytes(b'partial')
    assert checkpoints.find_resume_checkpoint(str(tmp_path), logger).endswith('last.pdparams')
    (tmp_path / 'last.pdparams').write_bytes(b'junk')
    assert checkpoints.find_resume_checkpoint(str(tmp_path), logger).endswith('Epoch-2-Loss-0.9000.pdparams')


def test_output_folder_is_locked_and_leftover_temporaries_cleared(tmp_path):
    import subprocess
    import sys
    out = tmp_path / 'run'
    out.mkdir()
    leftover = out / '.last.abc123.tmp.pdparams'
    leftover.write_bytes(b'half a checkpoint')
    checkpoints.claim_output_dir(str(out))
    assert not leftover.exists()
    # Another process cannot claim the folder while this one holds it.
    code = ("import sys, checkpoints, errors\n"
            "try:\n    checkpoints.claim_output_dir(sys.argv[1])\nexcept errors.TrainingError as e:\n"
            "    print(e); sys.exit(3)\n")
    done = subprocess.run([sys.executable, '-c', code, str(out)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 3 and 'another run' in done.stdout and str(os.getpid()) in done.stdout


def test_keep_checkpoints_prunes_periodic_ones_never_best_or_last(tmp_path, tiny_config):
    out = tmp_path / 'run'
    engine.run(configured(tiny_config, out, **{'TRAIN.NUM_EPOCHS': 3, 'SAVE_FREQ': 1, 'TRAIN.KEEP_CHECKPOINTS': 1}))
    names = sorted(os.listdir(out))
    assert [n.split('-Loss-')[0] for n in names if n.startswith('Epoch-')] == ['Epoch-3']
    assert 'best.pdparams' in names and 'last.pdparams' in names
    best = json.load(open(out / 'best.json'))
    _, best_state = model_weights(str(out / 'best.pdparams'))
    assert best_state['epoch'] == best['epoch']  # the best epoch's weights, even when pruned from the periodic ones
