"""ABAW sample discovery, annotation quirks and errors, cached lists, transforms, corrupt images."""
import os
import random

import numpy as np
import pytest
from PIL import Image

import datasets
import labels
import transforms
from helpers import HEADER, write_annotation


def expected_train(abaw, class_type):
    out = []
    for video, frame_labels in sorted(abaw['train'].items()):
        for number, label in enumerate(frame_labels, start=1):
            mapped = labels.map_label(label, class_type)
            if mapped >= 0 and number not in abaw['missing'].get(video, ()):
                out.append((f"{video}/{number:05d}.jpg", mapped))
    return out


@pytest.mark.parametrize('class_type', ['all', 'coarse', 'negative'])
def test_training_samples_follow_annotations_and_class_maps(abaw_small, class_type):
    samples = datasets.collect_samples(abaw_small['data_folder'], abaw_small['anno_folder'], 'Train_Set',
                                       class_type, 'train')
    assert samples == expected_train(abaw_small, class_type)
    # missing faces (vid_a 2 and 9) and -1 labels (vid_c 1, 2) are not in the data
    paths = {p for p, _ in samples}
    assert 'vid_a/00002.jpg' not in paths and 'vid_c/00001.jpg' not in paths
    assert any(p.startswith('vid_b_left/') for p in paths)


def test_evaluation_samples_cover_every_face_image(abaw_small):
    samples = datasets.collect_samples(abaw_small['data_folder'], abaw_small['anno_folder'], 'Validation_Set',
                                       'negative', 'eval')
    on_disk = sorted(f"{v}/{n}" for v in abaw_small['val'] for n in os.listdir(os.path.join(abaw_small['data_folder'], v)))
    assert [p for p, _ in samples] == on_disk
    by_path = dict(samples)
    # val_x frame 2 has ABAW label 2 (Disgust) -> negative class 1; frame 1 (Anger) -> 0;
    # frame 4 (Happiness) is outside the negative model's classes -> -1; val_y_right's last frame is -1.
    assert by_path['val_x/00001.jpg'] == 0 and by_path['val_x/00002.jpg'] == 1
    assert by_path['val_x/00004.jpg'] == -1
    assert by_path['val_y_right/00012.jpg'] == -1
    assert 'val_x/00005.jpg' not in by_path


def test_crlf_and_trailing_blank_annotation_accepted(tmp_path):
    path = tmp_path / 'Train_Set' / 'v.txt'
    write_annotation(str(path), [0, 4, -1, 7], crlf=True, trailing_blank=True)
    assert labels.read_annotation(str(path)) == [0, 4, -1, 7]


@pytest.mark.parametrize('content, line', [
    ('Neutral,Anger\n0\n', 1),
    (HEADER + '\n0\n9\n', 3),
    (HEADER + '\n0\nhappy\n', 3),
    ('', 1),
])
def test_malformed_annotation_names_file_and_line(tmp_path, abaw_small, content, line):
    anno = tmp_path / 'annotations' / 'Train_Set'
    anno.mkdir(parents=True)
    bad = anno / 'vid_a.txt'
    bad.write_text(content)
    with pytest.raises(labels.AnnotationError, match=f"vid_a.txt:{line}:"):
        datasets.collect_samples(abaw_small['data_folder'], str(tmp_path / 'annotations'), 'Train_Set',
                                 'coarse', 'train')


def test_missing_folders_and_empty_data_are_clear_errors(tmp_path, abaw_small):
    with pytest.raises(datasets.DataError, match='-data_folder .*does not exist'):
        datasets.collect_samples(str(tmp_path / 'nope'), abaw_small['anno_folder'], 'Train_Set', 'all', 'train')
    with pytest.raises(datasets.DataError, match='-anno_folder .*does not exist'):
        datasets.collect_samples(abaw_small['data_folder'], str(tmp_path / 'nope'), 'Train_Set', 'all', 'train')
    with pytest.raises(datasets.DataError, match="no 'Test_Set' sub-folder"):
        datasets.collect_samples(abaw_small['data_folder'], abaw_small['anno_folder'], 'Test_Set', 'all', 'train')
    empty = tmp_path / 'empty_faces'
    empty.mkdir()
    with pytest.raises(datasets.DataError, match='no usable frame'):
        datasets.collect_samples(str(empty), abaw_small['anno_folder'], 'Train_Set', 'all', 'train')
    with pytest.raises(ValueError, match="unknown class_type 'fine'"):
        datasets.collect_samples(abaw_small['data_folder'], abaw_small['anno_folder'], 'Train_Set', 'fine', 'train')


def test_data_list_in_the_release_format_is_written_once_then_read(tmp_path, abaw_small):
    list_path = tmp_path / 'train_list_negative.txt'
    first = datasets.collect_samples(abaw_small['data_folder'], abaw_small['anno_folder'], 'Train_Set',
                                     'negative', 'train', data_list=str(list_path))
    assert first == expected_train(abaw_small, 'negative')
    # The release's format: one 'video/00001.jpg label' line per frame of the class type, the label
    # already mapped (negative: 0 Anger .. 3 Sadness); Anger frames are kept as 0, not dropped.
    lines = list_path.read_text().splitlines()
    assert lines == [f"{rel} {label}" for rel, label in first]
    assert any(line.endswith(' 0') for line in lines)
    # Read back (the annotations are no longer needed), labels as written.
    again = datasets.collect_samples(abaw_small['data_folder'], str(tmp_path / 'gone'), 'Train_Set',
                                     'negative', 'train', data_list=str(list_path))
    assert again == first


def test_release_list_written_by_hand_is_read_with_its_labels(tmp_path, abaw_small):
    release_list = tmp_path / 'val_list_coarse.txt'
    release_list.write_text('val_x/00001.jpg 4\nval_x/00002.jpg 4\nval_x/00004.jpg 1\n')
    assert datasets.collect_samples(abaw_small['data_folder'], '', 'Validation_Set', 'coarse', 'val',
                                    data_list=str(release_list)) == [
        ('val_x/00001.jpg', 4), ('val_x/00002.jpg', 4), ('val_x/00004.jpg', 1)]
    # 4 is a coarse label (Negative) but no negative class: the file and line are named.
    with pytest.raises(datasets.DataError, match=r'val_list_coarse.txt:1: label 4 is outside 0\.\.3'):
        datasets.read_data_list(str(release_list), 'negative')
    release_list.write_text('val_x/00001.jpg 0\nval_x/00002.jpg eight\n')
    with pytest.raises(datasets.DataError, match=r'val_list_coarse.txt:2:'):
        datasets.read_data_list(str(release_list), 'coarse')
    # -eval reads a list but never writes one: a missing list is an error naming the flag.
    with pytest.raises(datasets.DataError, match='-data_list_val .*missing.txt: file does not exist'):
        datasets.collect_samples(abaw_small['data_folder'], '', 'Validation_Set', 'coarse', 'eval',
                                 data_list=str(tmp_path / 'missing.txt'), list_flag='-data_list_val')


def test_unannotated_videos_get_label_minus_one(tmp_path, abaw_small):
    every = datasets.collect_samples(abaw_small['data_folder'], '', 'Validation_Set', 'coarse', 'eval')
    n_images = sum(len(os.listdir(os.path.join(abaw_small['data_folder'], v))) for v in
                   list(abaw_small['train']) + list(abaw_small['val']))
    assert len(every) == n_images and all(label == -1 for _, label in every)
    video_list = tmp_path / 'videos.txt'
    video_list.write_text('val_x\n\nvid_c\n')
    chosen = datasets.collect_samples(abaw_small['data_folder'], abaw_small['anno_folder'], 'Validation_Set',
                                      'coarse', 'eval', video_list=str(video_list))
    videos = {p.split('/')[0] for p, _ in chosen}
    assert videos == {'val_x', 'vid_c'}
    # val_x is annotated in Validation_Set, vid_c is not (it is a training video)
    assert all(label == -1 for p, label in chosen if p.startswith('vid_c/'))
    assert any(label >= 0 for p, label in chosen if p.startswith('val_x/'))
    video_list.write_text('no_such_video\n')
    with pytest.raises(datasets.DataError, match="no folder for video 'no_such_video'"):
        datasets.collect_samples(abaw_small['data_folder'], '', 'Validation_Set', 'coarse', 'eval',
                                 video_list=str(video_list))


def test_corrupt_image_is_flagged_and_named(tmp_path, tiny_config, abaw_small):
    folder = tmp_path / 'faces' / 'v1'
    folder.mkdir(parents=True)
    good = Image.new('RGB', (40, 40), (120, 10, 10))
    good.save(folder / '00001.jpg')
    src = os.path.join(abaw_small['data_folder'], 'vid_a', '00001.jpg')
    data = open(src, 'rb').read()
    (folder / '00002.jpg').write_bytes(data[:len(data) // 3])  # truncated JPEG
    samples = [('v1/00001.jpg', 0), ('v1/00002.jpg', 1)]
    transform = transforms.val_transform(tiny_config)
    dataset = datasets.AbawDataset(str(tmp_path / 'faces'), samples, transform)
    assert dataset[0][3] == 1
    image, label, index, ok = dataset[1]
    assert ok == 0 and index == 1 and label == 1 and image.shape == (3, 32, 32)
    with pytest.raises(datasets.BadImageError, match='v1/00002.jpg: cannot decode'):
        raise dataset.bad_image_error(1)


def test_random_apply_intended_and_release_probabilities():
    marker = lambda x: x + 1  # noqa: E731
    random.seed(0)
    intended = sum(transforms.RandomApply(marker, 0.2)(0) for _ in range(4000)) / 4000
    random.seed(0)
    release = sum(transforms.RandomApply(marker, 0.2, release_inverted=True)(0) for _ in range(4000)) / 4000
    assert abs(intended - 0.2) < 0.03
    assert abs(release - 0.8) < 0.03


def test_transforms_shapes_and_validation_determinism(tiny_config, abaw_small):
    img = Image.open(os.path.join(abaw_small['data_folder'], 'vid_a', '00001.jpg')).convert('RGB')
    train_t, val_t = transforms.train_transform(tiny_config), transforms.val_transform(tiny_config)
    out = train_t(img)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    a, b = val_t(img), val_t(img)
    assert np.array_equal(a, b) and a.shape == (3, 32, 32)
    # ImageNet normalisation: a mid-grey image maps close to (0.5 - mean) / std
    grey = val_t(Image.new('RGB', (40, 40), (128, 128, 128)))
    expected = (128 / 255 - np.array(tiny_config.DATA.IMAGENET_MEAN)) / np.array(tiny_config.DATA.IMAGENET_STD)
    assert np.allclose(grey.mean(axis=(1, 2)), expected, atol=1e-4)


def test_validation_resize_uses_crop_pct(tiny_config):
    cfg = tiny_config.clone()
    cfg.defrost()
    cfg.DATA.CROP_PCT = 0.5
    cfg.freeze()
    # A 64x64 image with a 32x32 white centre: resize to floor(32/0.5)=64 (identity), centre crop 32.
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[16:48, 16:48] = 255
    out = transforms.val_transform(cfg)(Image.fromarray(arr))
    white = (1 - np.array(cfg.DATA.IMAGENET_MEAN)) / np.array(cfg.DATA.IMAGENET_STD)
    assert np.allclose(out.mean(axis=(1, 2)), white, atol=1e-4)
