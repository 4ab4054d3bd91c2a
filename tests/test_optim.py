"""optim.py: the release's warm-up + cosine schedule, the weight-decay exemptions and the linear
learning-rate scaling."""
import pytest

import optim
import swin_transformer
from helpers import configured


def test_schedule_and_weight_decay_groups(tiny_config):
    sched = optim.WarmupCosine(1.0, 0.1, 0.0, warmup_epochs=2, total_epochs=6)
    lrs = []
    for update in range(25):  # 4 updates per epoch, stepped with the fractional epoch as training does
        sched.step(update / 4)
        lrs.append(sched.get_lr())
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.55)    # epoch 1.0: halfway through warm-up
    assert lrs[8] == pytest.approx(1.0)     # end of warm-up
    assert lrs[16] == pytest.approx(0.5)    # epoch 4: halfway through the cosine
    assert lrs[24] == pytest.approx(0.0, abs=1e-12)
    model = swin_transformer.build_swin(tiny_config)
    no_decay = [n for n, p in model.named_parameters() if optim._no_weight_decay(n, p)]
    assert any('relative_position_bias_table' in n for n in no_decay)
    assert any(n.endswith('.bias') for n in no_decay) and any('norm' in n for n in no_decay)
    assert not any(n.endswith('qkv.weight') for n in no_decay)
    scaled = optim.scaled_learning_rates(configured(tiny_config, '/tmp', **{'TRAIN.LINEAR_SCALED_LR': 512,
                                                                          'TRAIN.ACCUM_ITER': 2}), 4)
    assert scaled[0] == pytest.approx(tiny_config.TRAIN.BASE_LR * 8 * 2 * 4 / 512)
