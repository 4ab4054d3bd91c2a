"""The mistakes a newcomer makes on the first day each end as one `error:` line with the
documented exit code (2: fix the command or the input), never a traceback or another tool's
advice: a main run without -cfg, a missing backbone, a Paddle file given to the PyTorch converter,
a checkpoint given to smooth_predict.py, predict_video.py -device gpu without a GPU; and a tiny GIF
or a folder with other files in it is handled and reported, not crashed on or silently skipped."""
import os
import sys

import numpy as np
import paddle
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import engine  # noqa: E402
import predict_video  # noqa: E402
import smooth_predict  # noqa: E402
from demo.synthetic_video import write_face_clip  # noqa: E402
from tools import convert_torch_swin  # noqa: E402

from helpers import save_random_classifier  # noqa: E402


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'Traceback' not in err[0], err
    return err[0]


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory, tiny_cfg_file):
    root = tmp_path_factory.mktemp('error_lines')
    weights = {kind: save_random_classifier(tiny_cfg_file, kind, str(root / f'{kind}.pdparams'), seed)
               for seed, kind in enumerate(('coarse', 'negative'), start=1)}
    return ['-coarse_cfg', tiny_cfg_file, '-coarse_weights', weights['coarse'],
            '-negative_cfg', tiny_cfg_file, '-negative_weights', weights['negative']], weights


def test_main_without_cfg_names_the_keys_and_the_config(tmp_path, abaw_small, capsys):
    code = engine.main(['-class_type', 'coarse', '-data_folder', abaw_small['data_folder'], '-anno_folder',
                        abaw_small['anno_folder'], '-output', str(tmp_path / 'o'), '-device', 'cpu'])
    line = one_error_line(capsys)
    assert code == 2 and 'MODEL.PATCH_SIZE 16' in line and 'DATA.IMAGE_SIZE 224' in line
    assert '-cfg configs/swin_small_patch4_window7_224.yaml' in line


def test_missing_backbone_points_to_the_weights_page(tmp_path, tiny_cfg_file, abaw_small, capsys):
    code = engine.main(['-cfg', tiny_cfg_file, '-class_type', 'coarse', '-data_folder', abaw_small['data_folder'],
                        '-anno_folder', abaw_small['anno_folder'], '-output', str(tmp_path / 'o'), '-device', 'cpu',
                        '-pretrained', str(tmp_path / 'swin_small_patch4_window7_224_ms1m.pdparams')])
    line = one_error_line(capsys)
    assert code == 2 and 'ms1m.pdparams' in line and 'docs/weights.md' in line


def test_converter_given_a_paddle_file_says_so(tmp_path, tiny_models, capsys):
    _, weights = tiny_models
    assert convert_torch_swin.main([weights['coarse'], str(tmp_path / 'out.pdparams')]) == 2
    line = one_error_line(capsys)
    assert 'already a Paddle checkpoint' in line and 'weights_only' not in line
    (tmp_path / 'junk.pth').write_bytes(b'\x80\x04K\x01.' * 3)
    assert convert_torch_swin.main([str(tmp_path / 'junk.pth'), str(tmp_path / 'out.pdparams')]) == 2
    assert 'weights_only=False' not in one_error_line(capsys)
    assert not (tmp_path / 'out.pdparams').exists()


def test_smooth_predict_given_a_checkpoint(tmp_path, tiny_models, capsys):
    _, weights = tiny_models
    code = smooth_predict.main(['-coarse', weights['coarse'], '-negative', weights['negative'],
                                '-output', str(tmp_path / 'o')])
    line = one_error_line(capsys)
    assert code == 2 and 'coarse.pdparams' in line and 'predictions.npz' in line
    assert 'allow_pickle' not in line


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason='a CUDA build may have a GPU')
def test_predict_video_device_gpu_on_a_cpu_build(tmp_path, tiny_models, capsys):
    flags, _ = tiny_models
    video = tmp_path / 'clip.mp4'
    write_face_clip(video, [1, 0])
    assert predict_video.main([str(video), '-output', str(tmp_path / 'o'), '-device', 'gpu'] + flags) == 2
    line = one_error_line(capsys)
    assert '-device gpu' in line and 'Paddle (a CPU build)' in line and '-device cpu' in line
    assert not (tmp_path / 'o').exists()


def test_tiny_gif_and_a_folder_with_other_files(tmp_path, tiny_models, capsys):
    flags, _ = tiny_models
    folder = tmp_path / 'in'
    folder.mkdir()
    frames = [Image.fromarray(np.full((9, 12, 3), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(folder / 'tiny.gif', save_all=True, append_images=frames[1:], duration=40, loop=0)
    (folder / 'notes.txt').write_text('not a video')
    out = tmp_path / 'out'
    assert predict_video.main([str(folder), '-output', str(out), '-workers', '0'] + flags) == 0
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert 'skipped 1 file(s) that are not videos' in err and 'notes.txt' in err
    assert 'tiny: no face found in any frame' in err
    assert (out / 'tiny.txt').read_text().splitlines()[1:] == ['0', '0', '0']
