"""Shared fixtures: a tiny Swin config and generated Aff-Wild2-style data (builders in helpers.py)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from helpers import TINY_YAML, balanced_labels, make_abaw_tree  # noqa: E402

@pytest.fixture(scope='session')
def abaw_small(tmp_path_factory):
    """Small tree: 3 train videos (one `_left`), 2 val videos; some -1 labels and missing faces."""
    root = str(tmp_path_factory.mktemp('abaw_small'))
    train = {'vid_a': balanced_labels(24), 'vid_b_left': balanced_labels(16, 3),
             'vid_c': [-1, -1] + balanced_labels(14, 5)}
    val = {'val_x': balanced_labels(13, 1), 'val_y_right': balanced_labels(11, 2) + [-1]}
    missing = {'vid_a': (2, 9), 'val_x': (5,)}
    data_folder, anno_folder = make_abaw_tree(root, train, val, missing)
    return {'root': root, 'data_folder': data_folder, 'anno_folder': anno_folder,
            'train': train, 'val': val, 'missing': missing}


@pytest.fixture(scope='session')
def tiny_cfg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('cfg') / 'tiny.yaml'
    path.write_text(TINY_YAML)
    return str(path)


@pytest.fixture()
def tiny_config(tiny_cfg_file, abaw_small):
    """A tiny coarse config pointing at abaw_small; tests clone and adjust it."""
    import config as config_module
    cfg = config_module.get_config(tiny_cfg_file)
    cfg.defrost()
    cfg.DATA.DATA_FOLDER = abaw_small['data_folder']
    cfg.DATA.ANNO_FOLDER = abaw_small['anno_folder']
    cfg.DATA.CLASS_TYPE = 'coarse'
    cfg.MODEL.NUM_CLASSES = 5
    cfg.DEVICE = 'cpu'
    cfg.freeze()
    return cfg
