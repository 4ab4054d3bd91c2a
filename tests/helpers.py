"""Builders shared by the tests: the generated data sets of demo/pattern_data.py and config edits."""
from demo.pattern_data import (COARSE, HEADER, TINY_YAML, balanced_labels, make_abaw_tree,  # noqa: F401
                               pattern_image, write_annotation, write_video)


def configured(base, output, **changes):
    """A copy of config `base` with SAVE = output and dotted keys changed, e.g. TRAIN.NUM_EPOCHS=3."""
    cfg = base.clone()
    cfg.defrost()
    cfg.SAVE = str(output)
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split('.')
        for part in parents:
            node = node[part]
        node[leaf] = value
    cfg.freeze()
    return cfg
