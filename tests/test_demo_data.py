"""The demo's synthetic data set: deterministic, every class in both splits, Aff-Wild2-shaped, detectable.

Rendering runs on a small set (3 videos of 40 frames); the class balance is checked on the plan of
the full default set, which needs no pixels.
"""
import collections
import os

import numpy as np
import pytest

from demo.make_demo_data import SUMMARY_NAME, make_demo_data, plan_demo_data
from labels import ABAW_CLASSES, NEGATIVE_CLASSES, read_annotation
from preprocess.video import iter_frames, probe_frame_count

SMALL = dict(seed=0, num_train=2, num_val=1, frames=40)


@pytest.fixture(scope='module')
def small_sets(tmp_path_factory):
    """The small set generated twice, into two folders."""
    root = tmp_path_factory.mktemp('demo_data')
    first = make_demo_data(str(root / 'a'), **SMALL)
    second = make_demo_data(str(root / 'b'), **SMALL)
    return (str(root / 'a'), first), (str(root / 'b'), second)


def _annotation_path(folder, video, name):
    return os.path.join(folder, 'annotations', video['split'], name + '.txt')


def _first_frame(path):
    return next(iter(iter_frames(path)))


def test_default_plan_covers_every_class_in_both_splits():
    plans = plan_demo_data()
    assert len(plans) == 12
    counts = {'Train_Set': collections.Counter(), 'Validation_Set': collections.Counter()}
    invalid = no_face = total = 0
    for plan in plans:
        for labels in plan.labels.values():
            visible = labels[~plan.no_face]
            counts[plan.split].update(int(v) for v in visible if v >= 0)
            invalid += int((labels < 0).sum())
        no_face += int(plan.no_face.sum())
        total += len(plan.no_face)
    for split, counter in counts.items():
        missing = [name for i, name in enumerate(ABAW_CLASSES) if counter[i] == 0]
        assert not missing, f"{split} lacks {missing}"
    for name in NEGATIVE_CLASSES:
        assert counts['Train_Set'][ABAW_CLASSES.index(name)] >= 60, name
    assert invalid > 0
    assert 0.02 <= no_face / total <= 0.05
    splits = [plan.split for plan in plans]
    assert splits.count('Train_Set') == 8 and splits.count('Validation_Set') == 4
    assert plans[-1].annotations == ['astro-12_left', 'astro-12_right']


def test_labels_are_held_for_runs():
    plan = plan_demo_data(**SMALL)[0]
    classes = plan.faces[0].classes
    starts = np.flatnonzero(np.diff(classes)) + 1
    runs = np.diff(np.concatenate([[0], starts, [len(classes)]]))
    assert (runs[:-1] >= 10).all() and (runs <= 40).all()


def test_two_runs_give_identical_files_and_frames(small_sets):
    (folder_a, summary_a), (folder_b, summary_b) = small_sets
    assert summary_a['videos'] == summary_b['videos']
    for video in summary_a['videos']:
        for name in video['annotations']:
            with open(_annotation_path(folder_a, video, name), 'rb') as fa, \
                    open(_annotation_path(folder_b, video, name), 'rb') as fb:
                assert fa.read() == fb.read(), name
        first_a = _first_frame(os.path.join(folder_a, 'videos', video['video'] + '.mp4'))
        first_b = _first_frame(os.path.join(folder_b, 'videos', video['video'] + '.mp4'))
        assert np.array_equal(first_a, first_b), video['video']


def test_files_match_the_plan_and_the_abaw_layout(small_sets):
    (folder, summary), _ = small_sets
    plans = plan_demo_data(**SMALL)
    assert [v['video'] for v in summary['videos']] == [p.name for p in plans]
    for video, plan in zip(summary['videos'], plans):
        for name, labels in plan.labels.items():
            assert read_annotation(_annotation_path(folder, video, name)) == labels.tolist()
        assert video['no_face_frames'] == [int(i) + 1 for i in np.flatnonzero(plan.no_face)]
    with open(os.path.join(folder, 'README.txt'), encoding='utf-8') as f:
        assert 'SYNTHETIC' in f.read()
    assert os.path.isfile(os.path.join(folder, SUMMARY_NAME))


def test_two_face_video_has_left_and_right_annotations(small_sets):
    (folder, summary), _ = small_sets
    pair = summary['videos'][-1]
    assert pair['split'] == 'Validation_Set'
    assert pair['annotations'] == [pair['video'] + '_left', pair['video'] + '_right']
    assert not os.path.exists(_annotation_path(folder, pair, pair['video']))
    left, right = (read_annotation(_annotation_path(folder, pair, name)) for name in pair['annotations'])
    assert len(left) == len(right) and left != right


def test_video_frame_counts_equal_annotation_lines(small_sets):
    (folder, summary), _ = small_sets
    for video in summary['videos']:
        path = os.path.join(folder, 'videos', video['video'] + '.mp4')
        count = probe_frame_count(path)
        assert count == SMALL['frames'] == video['frames']
        for name in video['annotations']:
            assert len(read_annotation(_annotation_path(folder, video, name))) == count, name
        frame = _first_frame(path)
        assert frame.shape == (480, 640, 3)


def test_complete_output_is_reused_and_other_settings_rebuild(small_sets, tmp_path):
    (folder, summary), _ = small_sets
    video = summary['videos'][0]
    annotation = _annotation_path(folder, video, video['annotations'][0])
    before = os.stat(annotation).st_mtime_ns
    again = make_demo_data(folder, **SMALL)
    assert again['reused'] and os.stat(annotation).st_mtime_ns == before

    other = str(tmp_path / 'other')
    make_demo_data(other, **SMALL)
    rebuilt = make_demo_data(other, **dict(SMALL, seed=1, num_train=1))
    assert not rebuilt['reused']
    # The earlier set's third video (now not part of it) is gone, not left to mix in.
    assert sorted(os.listdir(os.path.join(other, 'videos'))) == ['astro-01.mp4', 'astro-02.mp4']
    assert sorted(os.listdir(os.path.join(other, 'annotations', 'Validation_Set'))) == \
        ['astro-02_left.txt', 'astro-02_right.txt']
    assert os.listdir(os.path.join(other, 'annotations', 'Train_Set')) == ['astro-01.txt']
    assert read_annotation(os.path.join(other, 'annotations', 'Train_Set', 'astro-01.txt')) != \
        read_annotation(annotation)


def test_bad_arguments_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match='--num-val'):
        make_demo_data(str(tmp_path / 'x'), num_val=0)
    with pytest.raises(ValueError, match='--frames'):
        make_demo_data(str(tmp_path / 'x'), frames=5)


def test_mtcnn_finds_faces_in_face_frames_and_none_in_blank_frames(small_sets):
    """Per video: one undisturbed frame of each class shown, plus every frame without a face."""
    from preprocess.faces import FaceAligner, select_face

    (folder, summary), _ = small_sets
    plans = plan_demo_data(**SMALL)
    aligner = FaceAligner('cpu')
    checked_classes = set()
    for video, plan in zip(summary['videos'], plans):
        frames = list(iter_frames(os.path.join(folder, 'videos', video['video'] + '.mp4')))
        wanted = {}
        for index, classes in enumerate(zip(*(face.classes for face in plan.faces))):
            if not plan.no_face[index] and not plan.noise[index] and classes not in wanted:
                wanted[classes] = index
        blank = [i - 1 for i in video['no_face_frames']]
        assert blank, video['video']
        detections = aligner.detect_batch([frames[i] for i in list(wanted.values()) + blank])
        two_faces = len(plan.faces) == 2
        for (classes, index), faces in zip(wanted.items(), detections):
            if two_faces:
                left = select_face(faces, 'left', aligner.min_prob)
                right = select_face(faces, 'right', aligner.min_prob)
                assert left is not None and right is not None and left is not right, (video['video'], index)
                assert left.box[2] < right.box[0], (video['video'], index)
            else:
                assert select_face(faces, None, aligner.min_prob) is not None, (video['video'], index, classes)
            checked_classes.update(classes)
        for index, faces in zip(blank, detections[len(wanted):]):
            assert select_face(faces, None, aligner.min_prob) is None, (video['video'], index)
    assert len(checked_classes) >= 5
