"""video_table.py: reading predictions.npz files, the per-video table (frame counts, truth,
filling) and the submission files."""
import json
import logging
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import video_table  # noqa: E402
from fileio import DONE_MARKER  # noqa: E402
from labels import ABAW_CLASSES, ANNOTATION_HEADER, COARSE_CLASSES  # noqa: E402
from smoothing_search import score  # noqa: E402
from sp_cases import make_inputs, table_of, write_npz  # noqa: E402


def test_video_without_prediction_is_neutral_with_warning(tmp_path, caplog):
    files = make_inputs(tmp_path, {'a': ([1, 2], [4, 4])},
                        anno={'a': [4, 4, 4], 'b': [1, 1]})
    with caplog.at_level(logging.WARNING, logger='smooth_predict.video_table'):
        table = table_of(*files)
    assert table.video_names == ['a', 'b']
    assert table.all_frame_labels(np.argmax(table.probs, axis=1)).tolist() == [4, 4, 4, 0, 0]
    assert any("'b' has no predicted frame" in record.message for record in caplog.records)


def test_coarse_only_frames_warned_and_uniform(tmp_path, caplog):
    files = make_inputs(tmp_path, {'a': ([1, 2], [1, 1])}, negative_drop={'a/00002.jpg'})
    with caplog.at_level(logging.WARNING, logger='smooth_predict.video_table'):
        table = table_of(*files)
    assert any('no prediction in the negative file' in r.message for r in caplog.records)
    np.testing.assert_allclose(table.probs[1, [1, 2, 3, 5]], np.full(4, table.probs[1, 1]))
    assert np.argmax(table.probs[1]) == 1  # uniform split: Anger wins the tie


def test_scores_cover_faceless_annotated_frames(tmp_path):
    # Video a: frames 1..6, faces on 1, 2, 6; video b: frames 1..3, face on 2.
    files = make_inputs(tmp_path, {'a': ([1, 2, 6], [4, 0, 6]), 'b': ([2], [7])},
                        anno={'a': [4, 0, 0, 6, -1, 6], 'b': [7, -1, 3]})
    table = table_of(*files)
    row_labels = np.argmax(table.probs, axis=1)
    # a: 4, 0, then 3 -> 0 (nearest 2), 4 -> 0 (tie 2/6: earlier), 5 -> 6, 6; b: all 7.
    assert table.all_frame_labels(row_labels).tolist() == [4, 0, 0, 0, 6, 6, 7, 7, 7]
    scores = score(table, row_labels)
    truth = [4, 0, 0, 6, 6, 7, 3]
    predicted = [4, 0, 0, 0, 6, 7, 7]
    from metrics import classification_scores
    assert scores == classification_scores(truth, predicted, ABAW_CLASSES)
    assert scores['count'] == 7
    assert scores['accuracy'] == pytest.approx(5 / 7)


# ----------------------------------------------------------------------------- outputs

def two_video_table(tmp_path):
    files = make_inputs(tmp_path, {'v1': ([1, 3], [4, 6]), 'v2': ([2], [5])},
                        anno={'v1': [4, 4, 6], 'v2': [5, 5]})
    table = table_of(*files)
    return table, table.all_frame_labels(np.argmax(table.probs, axis=1))


def test_abaw3_files_byte_exact(tmp_path):
    table, labels = two_video_table(tmp_path)
    out = tmp_path / 'out'
    video_table.write_abaw3(str(out), table, labels)
    header = ANNOTATION_HEADER.encode()
    assert ANNOTATION_HEADER == 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other'
    assert (out / 'v1.txt').read_bytes() == header + b'\n4\n4\n6\n'  # frame 2: tie -> earlier
    assert (out / 'v2.txt').read_bytes() == header + b'\n5\n5\n'
    assert sorted(os.listdir(out)) == ['v1.txt', 'v2.txt']


def test_csv_file_byte_exact(tmp_path):
    table, labels = two_video_table(tmp_path)
    path = tmp_path / 'predictions.csv'
    video_table.write_csv(str(path), table, labels)
    assert path.read_bytes() == (
        b'image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n'
        b'v1/00001.jpg,4\nv1/00002.jpg,4\nv1/00003.jpg,6\nv2/00001.jpg,5\nv2/00002.jpg,5\n')


# ----------------------------------------------------------------------------- errors

def test_wrong_class_names_named(tmp_path):
    c, n, _ = make_inputs(tmp_path, {'a': ([1], [0])})
    with pytest.raises(video_table.InputError, match=r"negative\.npz.*negative model's classes.*-coarse"):
        video_table.load_predictions(n, 'coarse')
    bad = write_npz(tmp_path / 'bad.npz', ['a/00001.jpg'], np.zeros((1, 5)), 'coarse',
                    class_names=np.asarray(['w', 'x', 'y', 'z', 'q']))
    with pytest.raises(video_table.InputError, match=r'bad\.npz.*not a known class set'):
        video_table.load_predictions(bad, 'coarse')


@pytest.mark.parametrize('case, message', [
    ('empty', 'empty predictions file'),
    ('shape', r'logits have shape \(2, 4\)'),
    ('path', r"path 'a/x\.jpg' \(entry 1\)"),
    ('zero', 'frame number 0'),
    ('duplicate', "'a/00001.jpg' is predicted more than once"),
    ('missing', 'predictions file not found'),
    ('not_npz', 'cannot read predictions file'),
    ('no_logits', 'missing key'),
])
def test_bad_prediction_files_named(tmp_path, case, message):
    path = tmp_path / 'case.npz'
    if case == 'empty':
        write_npz(path, np.zeros(0, dtype=str), np.zeros((0, 5)), 'coarse')
    elif case == 'shape':
        write_npz(path, ['a/00001.jpg', 'a/00002.jpg'], np.zeros((2, 4)), 'coarse')
    elif case == 'path':
        write_npz(path, ['a/00001.jpg', 'a/x.jpg'], np.zeros((2, 5)), 'coarse')
    elif case == 'zero':
        write_npz(path, ['a/00000.jpg'], np.zeros((1, 5)), 'coarse')
    elif case == 'not_npz':
        path.write_text('hello')
    elif case == 'no_logits':
        np.savez(path, paths=np.asarray(['a/00001.jpg']), class_names=np.asarray(COARSE_CLASSES))
    elif case == 'duplicate':
        write_npz(path, ['a/00001.jpg', 'a/00001.jpg'], np.zeros((2, 5)), 'coarse')
        n = write_npz(tmp_path / 'n.npz', ['a/00001.jpg'], np.zeros((1, 4)), 'negative')
        with pytest.raises(video_table.InputError, match=message) as err:
            table_of(str(path), n)
        assert 'case.npz' in str(err.value)
        return
    with pytest.raises(video_table.InputError, match=message) as err:
        video_table.load_predictions(str(path), 'coarse')
    assert 'case.npz' in str(err.value)


def test_paths_stored_as_bytes_and_in_any_order(tmp_path):
    path = write_npz(tmp_path / 'c.npz', np.asarray([b'v/00003.jpg', b'v/00001.jpg']),
                     np.zeros((2, 5)), 'coarse')
    loaded = video_table.load_predictions(path, 'coarse')
    assert loaded['video_names'] == ['v'] and loaded['frames'].tolist() == [3, 1]


def test_path_forms(tmp_path):
    path = write_npz(tmp_path / 'c.npz', ['a/b/00002.jpg', 'c\\00010.png', 'd/7.jpg'],
                     np.zeros((3, 5)), 'coarse')
    loaded = video_table.load_predictions(path, 'coarse')
    assert loaded['video_names'] == ['a/b', 'c', 'd']
    assert loaded['frames'].tolist() == [2, 10, 7]
    for bad in ('a/00001', '/00001.jpg', '00001.jpg', 'a/1e3.jpg', 'a/-1.jpg', 'a/.jpg'):
        path = write_npz(tmp_path / 'bad.npz', ['a/00001.jpg', bad], np.zeros((2, 5)), 'coarse')
        with pytest.raises(video_table.InputError, match=r"bad\.npz: path '.*' \(entry 1\) is not"):
            video_table.load_predictions(path, 'coarse')


def test_paths_outside_annotated_videos(tmp_path):
    files = make_inputs(tmp_path, {'a': ([1], [0]), 'zz': ([1], [0])}, anno={'a': [0, 0]})
    with pytest.raises(video_table.InputError, match=r"coarse\.npz: path 'zz/00001\.jpg'.*-anno_folder"):
        table_of(*files)
    files = make_inputs(tmp_path, {'a': ([1, 5], [0, 0])}, anno={'a': [0, 0]})
    with pytest.raises(video_table.InputError, match=r"'a/00005\.jpg' is frame 5 but video 'a' has 2"):
        table_of(*files)


def test_frame_counts_from_frames_folder_and_largest_prediction(tmp_path, caplog):
    files = make_inputs(tmp_path, {'a': ([2], [4])})
    frames = tmp_path / 'frames' / 'a'
    frames.mkdir(parents=True)
    for i in range(1, 5):
        (frames / f"{i:05d}.jpg").write_bytes(b'')
    (frames / 'notes.txt').write_text('not a frame')
    assert table_of(*files[:2], frames_folder=str(tmp_path / 'frames')).num_frames.tolist() == [4]
    with caplog.at_level(logging.INFO, logger='smooth_predict.video_table'):
        table = table_of(*files[:2])
    assert table.num_frames.tolist() == [2]
    assert table.frame_count_source == ['largest prediction']
    assert any('largest predicted frame' in r.message for r in caplog.records)


def test_frame_count_comes_from_the_preprocessing_manifest(tmp_path):
    coarse, negative, _ = make_inputs(tmp_path, {'clip': ([2], [4])})
    aligned = tmp_path / 'aligned' / 'clip'
    aligned.mkdir(parents=True)
    (aligned / '00002.jpg').write_bytes(b'')  # only the face frame is on disk
    (aligned / DONE_MARKER).write_text(json.dumps({'frames': 5, 'faces': 1}))
    table = table_of(coarse, negative, frames_folder=str(tmp_path / 'aligned'))
    assert table.num_frames.tolist() == [5]
    (aligned / DONE_MARKER).write_text('{broken')
    with pytest.raises(video_table.InputError, match=r'\.done'):
        table_of(coarse, negative, frames_folder=str(tmp_path / 'aligned'))
