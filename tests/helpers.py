"""Builders shared by the tests: the generated data sets of demo/pattern_data.py, config edits, and
two machines' launches on this one."""
import socket
import subprocess

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


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_on_two_nodes(command_of_node, env_of_node=None, timeout=300, cwd=None):
    """Start command_of_node(node, master) (environment env_of_node(node, master)) for nodes 0 and 1
    at once, as two machines' terminals would, with master 127.0.0.1:<free port>; wait for both.
    -> [CompletedProcess of node 0, of node 1]"""
    master = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(command_of_node(node, master), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, env=env_of_node(node, master) if env_of_node else None)
             for node in (0, 1)]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            for proc, (out, err) in zip(procs, outputs)]


def save_random_classifier(cfg_file, class_type, path, seed):
    """Save a random-weight Swin of `cfg_file` for `class_type` as .pdparams; returns the path."""
    import argparse

    import paddle

    from config import get_config, update_config
    from swin_transformer import build_swin
    paddle.seed(seed)
    config = update_config(get_config(cfg_file), argparse.Namespace(class_type=class_type))
    model = build_swin(config)
    # A random head gives near-identical logits for any face; a wider one makes labels differ
    # between frames.
    model.fc.weight.set_value(model.fc.weight.numpy() * 50.0)
    paddle.save(model.state_dict(), path)
    return path
