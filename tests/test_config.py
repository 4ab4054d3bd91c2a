import argparse
import json
import os
import re

import pytest

import config
from config import ConfigError, get_config, get_arguments, merge_opts, update_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat_keys(node, prefix=''):
    keys = set()
    for key, value in node.items():
        keys |= flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_release_keys_plus_added_keys_are_exactly_the_configs_keys():
    with open(os.path.join(ROOT, 'tests', 'data', 'release_config_defaults.json')) as f:
        release = set(json.load(f))
    added = set(config.ADDED_KEYS)
    assert len(added) == len(config.ADDED_KEYS), 'ADDED_KEYS lists a key twice'
    assert not added & release, f"release keys listed as added: {sorted(added & release)}"
    ours = flat_keys(get_config())
    assert ours - release - added == set(), 'keys neither in the release nor in ADDED_KEYS'
    assert (release | added) - ours == set(), 'keys missing from the config'


def test_every_added_key_and_only_those_carry_the_added_tag():
    lines = open(os.path.join(ROOT, 'config.py'), encoding='utf-8').read().splitlines()
    tagged = {}
    for number, line in enumerate(lines):
        match = re.match(r'_C\.([A-Z0-9_.]+) = ', line)
        if not match:
            continue
        comments = []  # the comment block right above the key, and its own line
        above = number - 1
        while above >= 0 and lines[above].startswith('#'):
            comments.append(lines[above])
            above -= 1
        tagged[match.group(1)] = '# [added]' in line or any('# [added]' in c for c in comments)
    assert {key for key, has_tag in tagged.items() if has_tag} == set(config.ADDED_KEYS)


def test_defaults_are_the_release_values():
    c = get_config()
    assert c.DATA.BATCH_SIZE == 256 and c.DATA.BATCH_SIZE_EVAL is None
    assert c.DATA.CROP_PCT == 0.9 and c.DATA.DATASET == 'ABAW' and c.DATA.CLASS_TYPE == 'all'
    assert c.MODEL.NUM_CLASSES == 8 and c.MODEL.DROPPATH == 0.1 and c.MODEL.FINAL_NORM is False
    assert list(c.MODEL.STAGE_DEPTHS) == [2, 2, 6, 2] and list(c.MODEL.NUM_HEADS) == [3, 6, 12, 24]
    assert c.TRAIN.BASE_LR == 5e-4 and c.TRAIN.WARMUP_START_LR == 5e-5 and c.TRAIN.GRAD_CLIP == 5.0
    assert c.TRAIN.LINEAR_SCALED_LR == 512 and c.TRAIN.SMOOTHING == 0.1
    assert c.TRAIN.OPTIMIZER.NAME == 'AdamW' and tuple(c.TRAIN.OPTIMIZER.BETAS) == (0.9, 0.999)
    assert c.TRAIN.MODEL_EMA_DECAY == 0.99996 and c.TRAIN.RANDOM_ERASE_PROB == 0.25
    assert c.SAVE_FREQ == 10 and c.REPORT_FREQ == 20 and c.SEED == 0 and not c.AMP


def test_swin_small_yaml_overrides_defaults():
    c = get_config('configs/swin_small_patch4_window7_224.yaml')
    assert list(c.MODEL.STAGE_DEPTHS) == [2, 2, 18, 2]
    assert c.MODEL.NUM_CLASSES == 5 and c.MODEL.DROPPATH == 0.3 and c.DATA.CROP_PCT == 1.0
    assert c.MODEL.NAME == 'swin_small_patch4_window7_224'


def test_base_inheritance_and_bare_name(tmp_path):
    base = tmp_path / 'base.yaml'
    base.write_text('MODEL:\n  EMBED_DIM: 24\n  NUM_CLASSES: 4\n')
    child = tmp_path / 'child.yaml'
    child.write_text("BASE: ['base.yaml']\nMODEL:\n  NUM_CLASSES: 5\n")
    c = get_config(str(child))
    assert c.MODEL.EMBED_DIM == 24 and c.MODEL.NUM_CLASSES == 5
    # A bare name is looked up in configs/.
    assert get_config('swin_debug.yaml').MODEL.EMBED_DIM == 12


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('MODEL:\n  EMBED_DIMS: 24\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml.*EMBED_DIMS'):
        get_config(str(bad))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match='nope.yaml'):
        get_config(str(tmp_path / 'nope.yaml'))
    broken = tmp_path / 'broken.yaml'
    broken.write_text('MODEL: [unclosed\n')
    with pytest.raises(ConfigError, match='broken.yaml.*not valid YAML'):
        get_config(str(broken))


def test_flags_apply_and_class_type_sets_classes():
    args = get_arguments(['-cfg', 'configs/swin_small_patch4_window7_224.yaml', '-class_type', 'negative',
                          '-batch_size', '16', '-data_folder', '/d', '-anno_folder', '/a', '-eval', '-amp',
                          '-output', '/o', '-pretrained', 'w.pdparams', '-last_epoch', '3', '-accum_iter', '2'])
    c = update_config(get_config(), args)
    assert c.MODEL.NUM_CLASSES == 4 and c.DATA.CLASS_TYPE == 'negative'
    assert c.DATA.BATCH_SIZE == 16 and c.DATA.DATA_FOLDER == '/d' and c.DATA.ANNO_FOLDER == '/a'
    # As the release: -amp only applies to training, -batch_size sets the evaluation batch too.
    assert c.EVAL and not c.AMP and c.SAVE == '/o' and c.MODEL.PRETRAINED == 'w.pdparams'
    assert c.DATA.BATCH_SIZE_EVAL == 16
    assert c.TRAIN.LAST_EPOCH == 3 and c.TRAIN.ACCUM_ITER == 2
    assert list(c.MODEL.STAGE_DEPTHS) == [2, 2, 18, 2]
    assert update_config(get_config(), get_arguments(['-class_type', 'coarse'])).MODEL.NUM_CLASSES == 5
    train = update_config(get_config(), get_arguments(['-amp', '-batch_size', '8', '-batch_size_eval', '32']))
    assert train.AMP and train.DATA.BATCH_SIZE == 8 and train.DATA.BATCH_SIZE_EVAL == 32


def test_unknown_class_type_and_opts():
    with pytest.raises(ConfigError, match='-class_type'):
        update_config(get_config(), argparse.Namespace(class_type='positive'))
    c = merge_opts(get_config(), ['TRAIN.NUM_EPOCHS', '3'])
    assert c.TRAIN.NUM_EPOCHS == 3
    with pytest.raises(ConfigError, match='TRAIN.NUM_EPOCH'):
        merge_opts(get_config(), ['TRAIN.NUM_EPOCH', '3'])
