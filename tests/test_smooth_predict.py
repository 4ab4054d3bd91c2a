"""The rules of smooth_predict.py on small hand-made arrays with known answers."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import smooth_predict as sp  # noqa: E402
from labels import (ANNOTATION_HEADER, COARSE_CLASSES, NEGATIVE_CLASSES,  # noqa: E402
                    write_annotation)


def logits_of(probs):
    """Logits whose softmax is exactly `probs` (up to rounding)."""
    return np.log(np.asarray(probs, dtype=np.float64))


def write_npz(path, paths, logits, kind, **overrides):
    names = COARSE_CLASSES if kind == 'coarse' else NEGATIVE_CLASSES
    arrays = {'paths': np.asarray(paths), 'logits': np.asarray(logits, dtype=np.float32),
              'labels': np.full(len(paths), -1), 'class_names': np.asarray(names),
              'class_type': np.asarray(kind)}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return str(path)


def coarse_for(labels_abaw):
    """Coarse logits that pick the coarse class of each ABAW label with a clear margin."""
    from labels import COARSE_MAP, NEGATIVE_MAP
    coarse = np.zeros((len(labels_abaw), 5))
    negative = np.zeros((len(labels_abaw), 4))
    for i, label in enumerate(labels_abaw):
        coarse[i, COARSE_MAP[label]] = 5.0
        if NEGATIVE_MAP[label] >= 0:
            negative[i, NEGATIVE_MAP[label]] = 5.0
    return coarse, negative


# ----------------------------------------------------------------------------- fusion

def test_soft_fusion_formula():
    c = [0.1, 0.2, 0.3, 0.15, 0.25]   # Neutral, Happiness, Surprise, Other, Negative
    n = [0.4, 0.3, 0.2, 0.1]          # Anger, Disgust, Fear, Sadness
    p = sp.fuse(logits_of([c]), logits_of([n]), 'soft')
    expected = [0.1, 0.25 * 0.4, 0.25 * 0.3, 0.25 * 0.2, 0.2, 0.25 * 0.1, 0.3, 0.15]
    np.testing.assert_allclose(p[0], expected, atol=1e-12)
    assert p.shape == (1, 8)


def test_soft_fusion_without_negative_prediction_uses_uniform():
    c = [0.1, 0.2, 0.3, 0.2, 0.2]
    p = sp.fuse(logits_of([c, c]), np.array([[np.nan] * 4, logits_of([0.7, 0.1, 0.1, 0.1])]),
                'soft')
    np.testing.assert_allclose(p[0], [0.1, 0.05, 0.05, 0.05, 0.2, 0.05, 0.3, 0.2], atol=1e-12)
    np.testing.assert_allclose(p[1][[1, 2, 3, 5]], [0.14, 0.02, 0.02, 0.02], atol=1e-12)
    np.testing.assert_allclose(sp.fuse(logits_of([c]), None, 'soft')[0], p[0], atol=1e-12)


def test_hard_fusion_cascade():
    coarse = np.array([
        [5, 0, 0, 0, 0],   # Neutral -> 0
        [0, 5, 0, 0, 0],   # Happiness -> 4
        [0, 0, 5, 0, 0],   # Surprise -> 6
        [0, 0, 0, 5, 0],   # Other -> 7
        [0, 0, 0, 0, 5],   # Negative -> Anger 1
        [0, 0, 0, 0, 5],   # Negative -> Disgust 2
        [0, 0, 0, 0, 5],   # Negative -> Fear 3
        [0, 0, 0, 0, 5],   # Negative -> Sadness 5
        [3, 0, 0, 0, 3],   # tie Neutral/Negative -> lowest index: Neutral 0
        [0, 0, 0, 0, 5],   # Negative, tie Disgust/Sadness -> Disgust 2
    ], dtype=float)
    negative = np.zeros((10, 4))
    negative[[4, 5, 6, 7], [0, 1, 2, 3]] = 4.0
    negative[0:4, 3] = 9.0  # ignored: the coarse model did not say Negative
    negative[9] = [0, 2, 0, 2]
    p = sp.fuse(coarse, negative, 'hard')
    assert p.argmax(axis=1).tolist() == [0, 4, 6, 7, 1, 2, 3, 5, 0, 2]
    np.testing.assert_array_equal(p.sum(axis=1), np.ones(10))
    assert set(np.unique(p)) == {0.0, 1.0}
    # No negative prediction for a Negative frame: the uniform split, whose argmax is Anger.
    p = sp.fuse([[0, 0, 0, 0, 5], [0, 0, 0, 0, 5]], [[np.nan] * 4, [0, 1, 0, 0]], 'hard')
    assert p.argmax(axis=1).tolist() == [1, 2]


def test_fusion_rejects_bad_shapes_and_modes():
    with pytest.raises(ValueError):
        sp.fuse(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        sp.fuse(np.zeros((2, 5)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match='fusion mode'):
        sp.fuse(np.zeros((2, 5)), np.zeros((2, 4)), 'mean')


# ----------------------------------------------------------------------------- smoothing

def reference_smooth(probs, frames, window, alpha):
    """The fused-mode definition written as a plain loop, for comparison."""
    frames = np.asarray(frames)
    out = np.empty_like(probs)
    for i, t in enumerate(frames):
        near = np.abs(frames - t) <= window
        out[i] = alpha * probs[near].mean(axis=0) + (1 - alpha) * probs[i]
    return out


def test_window_mean_at_video_edges():
    p = np.eye(3)[[0, 1, 2, 2, 1]]          # frames 1..5
    f = sp.smooth(p, window=1, alpha=1.0, frames=np.arange(1, 6))
    np.testing.assert_allclose(f[0], [0.5, 0.5, 0])          # frame 1: frames 1, 2
    np.testing.assert_allclose(f[2], [0, 1 / 3, 2 / 3])      # frame 3: frames 2, 3, 4
    np.testing.assert_allclose(f[4], [0, 0.5, 0.5])          # frame 5: frames 4, 5
    np.testing.assert_allclose(f, reference_smooth(p, np.arange(1, 6), 1, 1.0))


def test_window_counts_frame_numbers_across_gaps():
    p = np.eye(2)[[0, 0, 1, 1]]
    frames = [1, 2, 5, 6]                   # frames 3 and 4 have no face
    f2 = sp.smooth(p, window=2, alpha=1.0, frames=frames)
    np.testing.assert_allclose(f2, [[1, 0], [1, 0], [0, 1], [0, 1]])  # 2 and 5 are 3 apart
    f3 = sp.smooth(p, window=3, alpha=1.0, frames=frames)
    np.testing.assert_allclose(f3[1], [2 / 3, 1 / 3])        # frame 2 sees 1, 2, 5
    np.testing.assert_allclose(f3[2], [1 / 3, 2 / 3])        # frame 5 sees 2, 5, 6


def test_window_never_crosses_videos():
    p = np.eye(2)[[0, 0, 0, 1, 1, 1]]
    f = sp.smooth(p, window=128, alpha=1.0, frames=[1, 2, 3, 1, 2, 3], groups=[0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(f, p)


def test_alpha_blend_and_no_smoothing():
    p = np.array([[0.8, 0.2], [0.2, 0.8], [0.8, 0.2]])
    f = sp.smooth(p, window=1, alpha=0.25, frames=[1, 2, 3])
    u1 = np.array([0.5, 0.5])
    u2 = np.array([0.6, 0.4])
    np.testing.assert_allclose(f[0], 0.25 * u1 + 0.75 * p[0])
    np.testing.assert_allclose(f[1], 0.25 * u2 + 0.75 * p[1])
    for window, alpha in ((0, 0.75), (5, 0.0)):
        np.testing.assert_array_equal(sp.smooth(p, window, alpha, frames=[1, 2, 3]), p)
    with pytest.raises(ValueError):
        sp.smooth(p, window=-1, alpha=0.5)
    with pytest.raises(ValueError):
        sp.smooth(p, window=1, alpha=1.5)


def test_random_against_reference():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), 60)
    frames = np.sort(rng.choice(np.arange(1, 200), 60, replace=False))
    for window, alpha in ((1, 0.5), (4, 0.75), (16, 1.0), (128, 0.25)):
        np.testing.assert_allclose(sp.smooth(p, window, alpha, frames=frames),
                                   reference_smooth(p, frames, window, alpha), atol=1e-12)


def test_smoothed_ties_go_to_lowest_index():
    # Hard one-hot labels 2 then 1: with K=1, A=1 both frames average to a 1/2-1/2 tie.
    p = np.eye(8)[[2, 1]]
    f = sp.smooth(p, window=1, alpha=1.0, frames=[1, 2])
    assert f[0, 1] == f[0, 2]
    assert np.argmax(f, axis=1).tolist() == [1, 1]


def test_smooth_requires_sorted_unique_frames():
    with pytest.raises(ValueError, match='sorted'):
        sp.smooth(np.eye(2), window=1, alpha=1.0, frames=[2, 1])
    with pytest.raises(ValueError, match='sorted'):
        sp.smooth(np.eye(2), window=1, alpha=1.0, frames=[3, 3])


# ----------------------------------------------------------------------------- SP on logits
# One video of 7 frames with a face on 1, 2, 3, 5, 6 (4 and 7 faceless). The window means below
# are written out by hand from the frame numbers; nothing here calls the code under test.

HAND_FRAMES = [1, 2, 3, 5, 6]
HAND_COARSE = [[2, 0, 0, 0, 1.75],   # Neutral, Happiness, Surprise, Other, Negative
               [0, 0, 0, 0, 3],
               [1, 0, 0, 0, 0],
               [0, 2, 0, 0, 0],
               [0, 0, 0, 0, 2]]
HAND_NEGATIVE = [[0, 1, 0, 0],       # Anger, Disgust, Fear, Sadness
                 [1, 0, 0, 0],
                 [0, 0, 0, 3],
                 [3, 0, 0, 0],
                 [0, 0, 1, 0]]
# K=1: frame 1 sees {1, 2}; 2 sees {1, 2, 3}; 3 sees {2, 3} (4 has no face); 5 and 6 see {5, 6}.
# K=2: frames 1 and 2 see {1, 2, 3}; 3 sees {1, 2, 3, 5} across the faceless frame 4; 5 sees
#      {3, 5, 6}; 6 sees {5, 6} (the window is cut at the last face).
HAND_MEANS = {
    1: ([[1, 0, 0, 0, 4.75 / 2], [1, 0, 0, 0, 4.75 / 3], [1 / 2, 0, 0, 0, 3 / 2],
         [0, 1, 0, 0, 1], [0, 1, 0, 0, 1]],
        [[1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 0, 1], [1 / 2, 0, 0, 3 / 2],
         [3 / 2, 0, 1 / 2, 0], [3 / 2, 0, 1 / 2, 0]]),
    2: ([[1, 0, 0, 0, 4.75 / 3], [1, 0, 0, 0, 4.75 / 3], [3 / 4, 2 / 4, 0, 0, 4.75 / 4],
         [1 / 3, 2 / 3, 0, 0, 2 / 3], [0, 1, 0, 0, 1]],
        [[1 / 3, 1 / 3, 0, 1], [1 / 3, 1 / 3, 0, 1], [1, 1 / 4, 0, 3 / 4],
         [1, 0, 1 / 3, 1], [3 / 2, 0, 1 / 2, 0]]),
}
# Labels of the 7 frames, by the rule worked through by hand (frame 4 takes frame 3's label,
# the earlier of two equally near faces; frame 7 takes frame 6's).
HAND_LABELS = {
    ('soft', 0): [0, 1, 0, 0, 4, 3, 3],
    ('hard', 0): [0, 1, 0, 0, 4, 3, 3],
    # Frame 6, K=2: l' negative = (3/2, 0, 3/2, 0), an Anger/Fear tie: the lower index, Anger.
    ('soft', 2): [0, 1, 0, 0, 4, 1, 1],
    # Frame 1: coarse l' = (3, 0, 0, 0, 3.33): Negative; negative l' = (1/3, 4/3, 0, 1): Disgust.
    # Soft fusion spreads that Negative over four classes, so Neutral (0.39) stays ahead there.
    ('hard', 2): [2, 1, 0, 0, 4, 1, 1],
}


def hand_softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64))
    return e / e.sum(axis=1, keepdims=True)


def hand_fused_labels(coarse, negative, fusion):
    """The fusion rules written out again: soft (c0, c4 n0, c4 n1, c4 n2, c1, c4 n3, c2, c3),
    hard the coarse argmax refined by the negative one."""
    if fusion == 'soft':
        c, n = hand_softmax(coarse), hand_softmax(negative)
        probs = np.stack([c[:, 0], c[:, 4] * n[:, 0], c[:, 4] * n[:, 1], c[:, 4] * n[:, 2],
                          c[:, 1], c[:, 4] * n[:, 3], c[:, 2], c[:, 3]], axis=1)
        return np.argmax(probs, axis=1)
    coarse_to_abaw = np.array([0, 4, 6, 7, -1])
    negative_to_abaw = np.array([1, 2, 3, 5])
    labels = coarse_to_abaw[np.argmax(coarse, axis=1)]
    refine = labels < 0
    labels[refine] = negative_to_abaw[np.argmax(np.asarray(negative)[refine], axis=1)]
    return labels


def test_smooth_logits_hand_computed_means():
    coarse, negative = np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float)
    for window, (coarse_mean, negative_mean) in HAND_MEANS.items():
        np.testing.assert_allclose(sp.smooth_logits(coarse, window, frames=HAND_FRAMES),
                                   coarse + np.array(coarse_mean), rtol=0, atol=1e-12)
        np.testing.assert_allclose(sp.smooth_logits(negative, window, frames=HAND_FRAMES),
                                   negative + np.array(negative_mean), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sp.smooth_logits(coarse, 0, frames=HAND_FRAMES), coarse)
    # Two videos: the window never reaches into the other one.
    two = sp.smooth_logits([[1.0], [2.0], [10.0]], 5, frames=[1, 2, 1], groups=[0, 0, 1])
    np.testing.assert_allclose(two[:, 0], [1 + 1.5, 2 + 1.5, 10 + 10])


def test_smooth_logits_skips_frames_without_prediction():
    # Frame 2 has no negative prediction: it is out of its neighbours' means and stays missing.
    out = sp.smooth_logits([[1.0], [np.nan], [3.0], [5.0]], 1, frames=[1, 2, 3, 4])
    np.testing.assert_allclose(out[[0, 2, 3], 0], [1 + 1, 3 + (3 + 5) / 2, 5 + (3 + 5) / 2])
    assert np.isnan(out[1, 0])


@pytest.mark.parametrize('fusion', ['soft', 'hard'])
@pytest.mark.parametrize('window', [1, 2])
def test_logits_mode_labels_hand_computed(fusion, window):
    coarse, negative = np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float)
    coarse_mean, negative_mean = (np.array(m, float) for m in HAND_MEANS[window])
    expected = hand_fused_labels(coarse + coarse_mean, negative + negative_mean, fusion)
    probs = sp.Smoothing('logits', fusion, window).apply(coarse, negative, frames=HAND_FRAMES)
    assert np.argmax(probs, axis=1).tolist() == expected.tolist()
    labels = sp.fill_missing(HAND_FRAMES, np.argmax(probs, axis=1), 7).tolist()
    if (fusion, window) in HAND_LABELS:
        assert labels == HAND_LABELS[(fusion, window)]
    if fusion == 'soft':  # the softmax of each model's smoothed logits, then the fusion formula
        c, n = hand_softmax(coarse + coarse_mean), hand_softmax(negative + negative_mean)
        np.testing.assert_allclose(probs[:, [0, 4, 6, 7]], c[:, :4], rtol=0, atol=1e-12)
        np.testing.assert_allclose(probs[:, [1, 2, 3, 5]], c[:, 4:] * n, rtol=0, atol=1e-12)


@pytest.mark.parametrize('fusion', ['soft', 'hard'])
def test_window_zero_is_no_smoothing_in_both_modes(fusion):
    coarse, negative = np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float)
    raw = sp.fuse(coarse, negative, fusion)
    for setting in (sp.Smoothing('logits', fusion, 0), sp.Smoothing('fused', fusion, 0, 1.0)):
        np.testing.assert_array_equal(setting.apply(coarse, negative, frames=HAND_FRAMES), raw)
    assert sp.fill_missing(HAND_FRAMES, raw.argmax(axis=1), 7).tolist() == HAND_LABELS[(fusion, 0)]


def test_smoothing_settings():
    default = sp.Smoothing()
    assert (default.mode, default.fusion, default.window, default.alpha) == ('logits', 'soft', 2, None)
    assert default.is_figure and default.short == 'logits K=2'
    assert sp.Smoothing('fused').alpha == 0.5
    assert sp.Smoothing('fused', 'hard', 8, 0.25).summary == 'hard fusion, SP on fused K=8 A=0.25'
    with pytest.raises(ValueError, match='alpha A applies only to the fused mode'):
        sp.Smoothing('logits', alpha=0.5)
    with pytest.raises(ValueError, match='mode'):
        sp.Smoothing('probs')
    # Which frames read the negative model's logits (predict_video runs it only there).
    assert sp.Smoothing('logits', 'hard', 2).needs_negative_everywhere
    assert not sp.Smoothing('logits', 'hard', 0).needs_negative_everywhere
    assert not sp.Smoothing('fused', 'hard', 8).needs_negative_everywhere
    assert sp.Smoothing('fused', 'soft', 8).needs_negative_everywhere


# ----------------------------------------------------------------------------- filling

def test_fill_missing_nearest_and_earlier_on_tie():
    filled = sp.fill_missing([6, 2], [5, 3], 8)  # any order
    # frame 4 is 2 from both 2 and 6: the earlier (label 3) wins
    assert filled.tolist() == [3, 3, 3, 3, 5, 5, 5, 5]
    assert sp.fill_missing([3], [7], 5).tolist() == [7] * 5
    assert sp.fill_missing([1, 2, 3], [4, 5, 6], 3).tolist() == [4, 5, 6]
    assert sp.fill_missing([], [], 4).tolist() == [0, 0, 0, 0]


# ----------------------------------------------------------------------------- tables

def make_inputs(tmp_path, videos, anno=None, negative_drop=()):
    """videos: {name: (predicted frames, ABAW labels the logits should pick)}."""
    paths, labels = [], []
    for name, (frames, frame_labels) in videos.items():
        paths += [f"{name}/{frame:05d}.jpg" for frame in frames]
        labels += list(frame_labels)
    coarse, negative = coarse_for(labels)
    keep = [i for i, path in enumerate(paths) if path not in negative_drop]
    coarse_path = write_npz(tmp_path / 'coarse.npz', paths[::-1], coarse[::-1], 'coarse')
    negative_path = write_npz(tmp_path / 'negative.npz', [paths[i] for i in keep],
                              negative[keep], 'negative')
    anno_folder = None
    if anno is not None:
        anno_folder = tmp_path / 'anno'
        anno_folder.mkdir(exist_ok=True)
        for name, truth in anno.items():
            write_annotation(anno_folder / f"{name}.txt", truth)
        anno_folder = str(anno_folder)
    return coarse_path, negative_path, anno_folder


def table_of(coarse_path, negative_path, anno_folder=None, frames_folder=None, fusion='soft'):
    return sp.build_video_table(sp.load_predictions(coarse_path, 'coarse'),
                                sp.load_predictions(negative_path, 'negative'),
                                fusion, anno_folder, frames_folder)


def test_video_without_prediction_is_neutral_with_warning(tmp_path, caplog):
    files = make_inputs(tmp_path, {'a': ([1, 2], [4, 4])},
                        anno={'a': [4, 4, 4], 'b': [1, 1]})
    with caplog.at_level(logging.WARNING, logger='smooth_predict'):
        table = table_of(*files)
    assert table.video_names == ['a', 'b']
    assert table.all_frame_labels(np.argmax(table.probs, axis=1)).tolist() == [4, 4, 4, 0, 0]
    assert any("'b' has no predicted frame" in record.message for record in caplog.records)


def test_coarse_only_frames_warned_and_uniform(tmp_path, caplog):
    files = make_inputs(tmp_path, {'a': ([1, 2], [1, 1])}, negative_drop={'a/00002.jpg'})
    with caplog.at_level(logging.WARNING, logger='smooth_predict'):
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
    scores = sp.score(table, row_labels)
    truth = [4, 0, 0, 6, 6, 7, 3]
    predicted = [4, 0, 0, 0, 6, 7, 7]
    from metrics import classification_scores
    assert scores == classification_scores(truth, predicted, sp.ABAW_CLASSES)
    assert scores['count'] == 7
    assert scores['accuracy'] == pytest.approx(5 / 7)


def search_table(tmp_path, third_frame):
    """One video of 5 frames all truly Neutral; frame 3 leans to Happiness by `third_frame`."""
    confident = [0.9, 0.1]
    probs = np.array([confident, confident, third_frame, confident, confident])
    coarse = np.full((5, 5), 1e-9)
    coarse[:, :2] = probs
    paths = [f"v/{i:05d}.jpg" for i in range(1, 6)]
    c = write_npz(tmp_path / 'c.npz', paths, np.log(coarse), 'coarse')
    n = write_npz(tmp_path / 'n.npz', paths, np.zeros((5, 4)), 'negative')
    anno = tmp_path / 'anno'
    anno.mkdir(exist_ok=True)
    write_annotation(anno / 'v.txt', [0] * 5)
    return table_of(c, n, str(anno))


def test_search_picks_smallest_window_then_smallest_alpha(tmp_path):
    # K=1: u3 = 0.7167 Neutral; A=0.25 -> 0.44 (wrong), A=0.5 -> 0.53 (right). K>=2 also right
    # from A=0.5 on, so the best macro F1 is shared and the tie must go to K=1, A=0.5.
    table = search_table(tmp_path, [0.35, 0.65])
    rows, best = sp.search(table, modes=('fused',))
    assert len(rows) == 45 and {r['mode'] for r in rows} == {'fused'}
    assert [(r['window'], r['alpha']) for r in rows[:6]] == \
        [(0, 0.0), (0, 0.25), (0, 0.5), (0, 0.75), (0, 1.0), (1, 0.0)]
    perfect = max(r['macro_f1'] for r in rows)
    assert perfect == pytest.approx(1 / 8)  # only Neutral occurs: 1 of 8 classes has F1 1
    winners = {(r['window'], r['alpha']) for r in rows if r['macro_f1'] == perfect}
    assert (1, 0.25) not in winners and (0, 0.0) not in winners
    assert {(1, 0.5), (2, 1.0), (128, 0.75)} <= winners
    assert (best['window'], best['alpha']) == (1, 0.5)
    assert best['accuracy'] == 1.0


def test_search_covers_both_modes_and_ties_go_to_logits(tmp_path):
    # Logits of frame 3: log 0.35, log 0.65 = (-1.050, -0.431); frames 2 and 4: log 0.9, log 0.1
    # = (-0.105, -2.303). K=1: u3 = (-0.420, -1.679), l'3 = (-1.470, -2.110): Neutral, right.
    table = search_table(tmp_path, [0.35, 0.65])
    rows, best = sp.search(table)
    assert len(rows) == 9 + 45
    assert [(r['mode'], r['window'], r['alpha']) for r in rows[:10]] == \
        [('logits', k, None) for k in sp.SEARCH_WINDOWS] + [('fused', 0, 0.0)]
    logits = {r['window']: r['macro_f1'] for r in rows if r['mode'] == 'logits'}
    assert logits[0] < logits[1] == logits[2] == pytest.approx(1 / 8)
    # fused K=1 A=0.5 scores the same: the tie goes to the logits mode, then the smaller K.
    assert (best['mode'], best['window'], best['alpha']) == ('logits', 1, None)
    assert sp.best_setting(best, 'soft') == sp.Smoothing('logits', 'soft', 1)


def test_search_all_tied_picks_no_smoothing(tmp_path):
    rows, best = sp.search(search_table(tmp_path, [0.9, 0.1]))
    assert len({r['macro_f1'] for r in rows}) == 1
    assert (best['mode'], best['window'], best['alpha']) == ('logits', 0, None)


# ----------------------------------------------------------------------------- outputs

def two_video_table(tmp_path):
    files = make_inputs(tmp_path, {'v1': ([1, 3], [4, 6]), 'v2': ([2], [5])},
                        anno={'v1': [4, 4, 6], 'v2': [5, 5]})
    table = table_of(*files)
    return table, table.all_frame_labels(np.argmax(table.probs, axis=1))


def test_abaw3_files_byte_exact(tmp_path):
    table, labels = two_video_table(tmp_path)
    out = tmp_path / 'out'
    sp.write_abaw3(str(out), table, labels)
    header = ANNOTATION_HEADER.encode()
    assert ANNOTATION_HEADER == 'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other'
    assert (out / 'v1.txt').read_bytes() == header + b'\n4\n4\n6\n'  # frame 2: tie -> earlier
    assert (out / 'v2.txt').read_bytes() == header + b'\n5\n5\n'
    assert sorted(os.listdir(out)) == ['v1.txt', 'v2.txt']


def test_csv_file_byte_exact(tmp_path):
    table, labels = two_video_table(tmp_path)
    path = tmp_path / 'predictions.csv'
    sp.write_csv(str(path), table, labels)
    assert path.read_bytes() == (
        b'image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n'
        b'v1/00001.jpg,4\nv1/00002.jpg,4\nv1/00003.jpg,6\nv2/00001.jpg,5\nv2/00002.jpg,5\n')


# ----------------------------------------------------------------------------- errors

def test_wrong_class_names_named(tmp_path):
    c, n, _ = make_inputs(tmp_path, {'a': ([1], [0])})
    with pytest.raises(sp.InputError, match=r"negative\.npz.*negative model's classes.*-coarse"):
        sp.load_predictions(n, 'coarse')
    bad = write_npz(tmp_path / 'bad.npz', ['a/00001.jpg'], np.zeros((1, 5)), 'coarse',
                    class_names=np.asarray(['w', 'x', 'y', 'z', 'q']))
    with pytest.raises(sp.InputError, match=r'bad\.npz.*not a known class set'):
        sp.load_predictions(bad, 'coarse')


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
        with pytest.raises(sp.InputError, match=message) as err:
            table_of(str(path), n)
        assert 'case.npz' in str(err.value)
        return
    with pytest.raises(sp.InputError, match=message) as err:
        sp.load_predictions(str(path), 'coarse')
    assert 'case.npz' in str(err.value)


def test_paths_stored_as_bytes_and_in_any_order(tmp_path):
    path = write_npz(tmp_path / 'c.npz', np.asarray([b'v/00003.jpg', b'v/00001.jpg']),
                     np.zeros((2, 5)), 'coarse')
    loaded = sp.load_predictions(path, 'coarse')
    assert loaded['video_names'] == ['v'] and loaded['frames'].tolist() == [3, 1]


def test_path_forms(tmp_path):
    path = write_npz(tmp_path / 'c.npz', ['a/b/00002.jpg', 'c\\00010.png', 'd/7.jpg'],
                     np.zeros((3, 5)), 'coarse')
    loaded = sp.load_predictions(path, 'coarse')
    assert loaded['video_names'] == ['a/b', 'c', 'd']
    assert loaded['frames'].tolist() == [2, 10, 7]
    for bad in ('a/00001', '/00001.jpg', '00001.jpg', 'a/1e3.jpg', 'a/-1.jpg', 'a/.jpg'):
        path = write_npz(tmp_path / 'bad.npz', ['a/00001.jpg', bad], np.zeros((2, 5)), 'coarse')
        with pytest.raises(sp.InputError, match=r"bad\.npz: path '.*' \(entry 1\) is not"):
            sp.load_predictions(path, 'coarse')


def test_paths_outside_annotated_videos(tmp_path):
    files = make_inputs(tmp_path, {'a': ([1], [0]), 'zz': ([1], [0])}, anno={'a': [0, 0]})
    with pytest.raises(sp.InputError, match=r"coarse\.npz: path 'zz/00001\.jpg'.*-anno_folder"):
        table_of(*files)
    files = make_inputs(tmp_path, {'a': ([1, 5], [0, 0])}, anno={'a': [0, 0]})
    with pytest.raises(sp.InputError, match=r"'a/00005\.jpg' is frame 5 but video 'a' has 2"):
        table_of(*files)


def test_frame_counts_from_frames_folder_and_largest_prediction(tmp_path, caplog):
    files = make_inputs(tmp_path, {'a': ([2], [4])})
    frames = tmp_path / 'frames' / 'a'
    frames.mkdir(parents=True)
    for i in range(1, 5):
        (frames / f"{i:05d}.jpg").write_bytes(b'')
    (frames / 'notes.txt').write_text('not a frame')
    assert table_of(*files[:2], frames_folder=str(tmp_path / 'frames')).num_frames.tolist() == [4]
    with caplog.at_level(logging.INFO, logger='smooth_predict'):
        table = table_of(*files[:2])
    assert table.num_frames.tolist() == [2]
    assert table.frame_count_source == ['largest prediction']
    assert any('largest predicted frame' in r.message for r in caplog.records)


# ----------------------------------------------------------------------------- command line

def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'smooth_predict.py'), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    videos, anno = {}, {}
    for v, length in enumerate((40, 25, 30)):
        truth = np.repeat(rng.integers(0, 8, 5), -(-length // 5))[:length]
        faces = np.flatnonzero(rng.random(length) > 0.2) + 1
        noisy = np.where(rng.random(faces.size) < 0.3, rng.integers(0, 8, faces.size),
                         truth[faces - 1])
        videos[f"vid{v}"] = (faces, noisy)
        anno[f"vid{v}"] = truth
    coarse, negative, anno_folder = make_inputs(tmp_path, videos, anno=anno)
    out = tmp_path / 'out'
    done = run_cli('-coarse', coarse, '-negative', negative, '-output', str(out),
                   '-anno_folder', anno_folder, '-search', '-format', 'csv', '-plot', '1')
    assert done.returncode == 0, done.stderr
    assert 'best: soft fusion, SP on ' in done.stderr and "the release's figure" in done.stderr
    assert 'macro F1' in done.stdout and 'logits K=2 (figure)' in done.stdout
    assert sorted(os.listdir(out)) == ['confusion.png', 'metrics.json', 'predictions.csv',
                                       'search.csv', 'timeline_vid0.png']
    metrics = json.loads((out / 'metrics.json').read_text())
    search_rows = [line.split(',') for line in (out / 'search.csv').read_text().splitlines()]
    assert search_rows[0] == ['mode', 'window', 'alpha', 'macro_f1', 'accuracy']
    assert len(search_rows) == 1 + 9 + 45
    assert [row[0] for row in search_rows[1:]] == ['logits'] * 9 + ['fused'] * 45
    assert {row[2] for row in search_rows[1:10]} == {''}
    best = max(search_rows[1:], key=lambda row: float(row[3]))
    smoothed = metrics['smoothed']
    assert smoothed['macro_f1'] == pytest.approx(float(best[3]), abs=1e-6)
    assert (smoothed['mode'], smoothed['window']) == (best[0], int(best[1]))
    assert smoothed['alpha'] == (None if best[0] == 'logits' else float(best[2]))
    assert smoothed['fusion'] == 'soft' and metrics['raw']['window'] == 0
    assert smoothed['count'] == 95
    figure_row = next(row for row in search_rows[1:] if row[:2] == ['logits', '2'])
    assert metrics['figure']['mode'] == 'logits' and metrics['figure']['window'] == 2
    assert metrics['figure']['macro_f1'] == pytest.approx(float(figure_row[3]), abs=1e-6)
    # The same numbers from the library functions.
    table = table_of(coarse, negative, anno_folder)
    setting = sp.Smoothing(smoothed['mode'], 'soft', smoothed['window'], smoothed['alpha'])
    labels = table.all_frame_labels(np.argmax(setting.apply(
        table.coarse_logits, table.negative_logits, table.frames, table.video_ids), axis=1))
    csv_lines = (out / 'predictions.csv').read_text().splitlines()
    assert len(csv_lines) == 1 + 95
    assert [int(line.split(',')[1]) for line in csv_lines[1:]] == labels.tolist()
    assert metrics['raw']['macro_f1'] == sp.score(table, np.argmax(table.probs, axis=1))['macro_f1']


def hand_inputs(tmp_path):
    """The hand-made video 'v' (7 frames) and a video 'w' (3 frames, one face, on frame 2), both
    files' rows shuffled differently; truth = the soft K=2 labels."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = [f"v/{frame:05d}.jpg" for frame in HAND_FRAMES] + ['w/00002.jpg']
    coarse = np.array(HAND_COARSE + [[0, 0, 1, 0, 0]], float)     # w: Surprise
    negative = np.array(HAND_NEGATIVE + [[0, 0, 0, 1]], float)
    rng = np.random.default_rng(3)
    c_order, n_order = rng.permutation(len(paths)), rng.permutation(len(paths))
    c = write_npz(tmp_path / 'c.npz', [paths[i] for i in c_order], coarse[c_order], 'coarse')
    n = write_npz(tmp_path / 'n.npz', [paths[i] for i in n_order], negative[n_order], 'negative')
    anno = tmp_path / 'anno'
    anno.mkdir()
    write_annotation(anno / 'v.txt', HAND_LABELS[('soft', 2)])
    write_annotation(anno / 'w.txt', [6, 6, 6])
    return ['-coarse', c, '-negative', n, '-anno_folder', str(anno), '-plot', '0']


@pytest.mark.parametrize('flags, fusion, window', [
    ([], 'soft', 2),                      # no smoothing flags: the release's figure
    (['-fusion', 'hard'], 'hard', 2),
    (['-window', '0'], 'soft', 0),
    (['-fusion', 'hard', '-smooth_on', 'logits', '-window', '0'], 'hard', 0),
])
def test_cli_logits_mode_hand_computed(tmp_path, flags, fusion, window):
    out = tmp_path / 'out'
    assert sp.main(hand_inputs(tmp_path) + ['-output', str(out)] + flags) == 0
    assert (out / 'v.txt').read_text().splitlines()[1:] == list(map(str, HAND_LABELS[(fusion, window)]))
    assert (out / 'w.txt').read_text().splitlines()[1:] == ['6', '6', '6']
    written = json.loads((out / 'metrics.json').read_text())
    assert {k: written['smoothed'][k] for k in ('mode', 'fusion', 'window', 'alpha')} == \
        {'mode': 'logits', 'fusion': fusion, 'window': window, 'alpha': None}
    from metrics import macro_f1
    truth = HAND_LABELS[('soft', 2)] + [6, 6, 6]
    assert written['smoothed']['macro_f1'] == pytest.approx(
        macro_f1(truth, HAND_LABELS[(fusion, window)] + [6, 6, 6], 8), abs=1e-12)
    assert written['raw']['macro_f1'] == pytest.approx(
        macro_f1(truth, HAND_LABELS[(fusion, 0)] + [6, 6, 6], 8), abs=1e-12)
    assert written['figure']['macro_f1'] == pytest.approx(
        macro_f1(truth, HAND_LABELS[(fusion, 2)] + [6, 6, 6], 8), abs=1e-12)


def test_cli_fused_mode_keeps_its_rule(tmp_path):
    out = tmp_path / 'out'
    sp.main(hand_inputs(tmp_path) + ['-output', str(out), '-smooth_on', 'fused', '-window', '2',
                                     '-alpha', '1'])
    written = json.loads((out / 'metrics.json').read_text())
    assert {k: written['smoothed'][k] for k in ('mode', 'fusion', 'window', 'alpha')} == \
        {'mode': 'fused', 'fusion': 'soft', 'window': 2, 'alpha': 1.0}
    # A = 1: the label is the argmax of the window mean of the fused probabilities.
    probs = sp.fuse(np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float), 'soft')
    windows = [[0, 1, 2], [0, 1, 2], [0, 1, 2, 3], [2, 3, 4], [3, 4]]  # rows of frames 1,2,3,5,6
    rows = [int(np.argmax(probs[w].mean(axis=0))) for w in windows]
    assert (out / 'v.txt').read_text().splitlines()[1:] == \
        list(map(str, sp.fill_missing(HAND_FRAMES, rows, 7)))
    out2 = tmp_path / 'out2'
    sp.main(hand_inputs(tmp_path / 'again') + ['-output', str(out2), '-smooth_on', 'fused'])
    assert json.loads((out2 / 'metrics.json').read_text())['smoothed']['alpha'] == 0.5


def test_cli_errors_are_one_line(tmp_path, capsys):
    coarse, negative, anno_folder = make_inputs(tmp_path, {'a': ([1], [0])}, anno={'a': [0]})
    done = run_cli('-coarse', negative, '-negative', coarse, '-output', str(tmp_path / 'o'))
    assert done.returncode != 0
    assert done.stderr.strip().count('\n') == 0 and 'Traceback' not in done.stderr
    assert done.stderr.startswith('error: ') and 'negative.npz' in done.stderr
    # Flag errors, in-process to keep the suite fast.
    for args, message in (
            (['-output', anno_folder, '-anno_folder', anno_folder], 'inputs are never written'),
            (['-output', str(tmp_path / 'o'), '-search'], '-search needs -anno_folder'),
            (['-output', str(tmp_path / 'o'), '-smooth_on', 'fused', '-alpha', '2'],
             '-alpha must be in [0, 1]'),
            (['-output', str(tmp_path / 'o'), '-alpha', '0.5'],
             '-alpha applies only to -smooth_on fused'),
            (['-output', str(tmp_path / 'o'), '-window', '-1'], '-window must be >= 0')):
        assert sp.main(['-coarse', coarse, '-negative', negative, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
    assert sorted(os.listdir(anno_folder)) == ['a.txt']
    assert not os.path.exists(tmp_path / 'o')


def test_listed_test_video_without_any_face_is_written_all_neutral(tmp_path):
    coarse, negative, _ = make_inputs(tmp_path, {'seen': ([1, 3], [4, 6])})
    frames = tmp_path / 'frames'
    for name, count in (('seen', 3), ('faceless', 2)):
        (frames / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (frames / name / f"{i:05d}.jpg").write_bytes(b'')
    video_list = tmp_path / 'test_set.txt'
    video_list.write_text('seen\nfaceless\n')
    out = tmp_path / 'out'
    done = run_cli('-coarse', coarse, '-negative', negative, '-output', str(out),
                   '-frames_folder', str(frames), '-video_list', str(video_list), '-plot', '0')
    assert done.returncode == 0, done.stderr
    assert (out / 'seen.txt').read_text().splitlines()[1:] == ['4', '4', '6']
    assert (out / 'faceless.txt').read_text().splitlines()[1:] == ['0', '0']
    assert "'faceless' has no predicted frame" in done.stderr
    # Without frames for a listed video its length is unknown: an error, not a guess.
    video_list.write_text('seen\nmissing\n')
    done = run_cli('-coarse', coarse, '-negative', negative, '-output', str(tmp_path / 'o2'),
                   '-frames_folder', str(frames), '-video_list', str(video_list), '-plot', '0')
    assert done.returncode != 0 and "'missing'" in done.stderr and 'Traceback' not in done.stderr


def test_frame_count_comes_from_the_preprocessing_manifest(tmp_path):
    coarse, negative, _ = make_inputs(tmp_path, {'clip': ([2], [4])})
    aligned = tmp_path / 'aligned' / 'clip'
    aligned.mkdir(parents=True)
    (aligned / '00002.jpg').write_bytes(b'')  # only the face frame is on disk
    (aligned / '.done').write_text(json.dumps({'frames': 5, 'faces': 1}))
    table = table_of(coarse, negative, frames_folder=str(tmp_path / 'aligned'))
    assert table.num_frames.tolist() == [5]
    (aligned / '.done').write_text('{broken')
    with pytest.raises(sp.InputError, match=r'\.done'):
        table_of(coarse, negative, frames_folder=str(tmp_path / 'aligned'))


def test_settings_from_applies_the_searched_setting_and_reproduces_its_score(tmp_path):
    rng = np.random.default_rng(3)
    videos, anno = {}, {}
    for v, length in enumerate((40, 30)):
        truth = np.repeat(rng.integers(0, 8, 4), -(-length // 4))[:length]
        faces = np.flatnonzero(rng.random(length) > 0.2) + 1
        noisy = np.where(rng.random(faces.size) < 0.35, rng.integers(0, 8, faces.size), truth[faces - 1])
        videos[f"vid{v}"], anno[f"vid{v}"] = (faces, noisy), truth
    coarse, negative, anno_folder = make_inputs(tmp_path, videos, anno=anno)
    common = ['-coarse', coarse, '-negative', negative, '-anno_folder', anno_folder, '-plot', '0']
    searched = run_cli(*common, '-output', str(tmp_path / 'search'), '-search')
    assert searched.returncode == 0, searched.stderr
    chosen = json.loads((tmp_path / 'search' / 'metrics.json').read_text())['smoothed']
    applied = run_cli(*common, '-output', str(tmp_path / 'applied'),
                      '-settings_from', str(tmp_path / 'search' / 'metrics.json'))
    assert applied.returncode == 0, applied.stderr
    again = json.loads((tmp_path / 'applied' / 'metrics.json').read_text())['smoothed']
    assert again == chosen and not (tmp_path / 'applied' / 'search.csv').exists()
    for name in os.listdir(tmp_path / 'search'):
        if name.endswith('.txt'):
            assert (tmp_path / 'applied' / name).read_text() == (tmp_path / 'search' / name).read_text()
    # The setting comes from one place: the smoothing flags beside it are a usage error.
    for extra, flag in ((['-window', '8'], '-window'), (['-search'], '-search')):
        clash = run_cli(*common, '-output', str(tmp_path / 'clash'), *extra,
                        '-settings_from', str(tmp_path / 'search' / 'metrics.json'))
        lines = clash.stderr.strip().splitlines()
        assert clash.returncode == 2 and len(lines) == 1 and flag in lines[0], clash.stderr
    not_metrics = run_cli(*common, '-output', str(tmp_path / 'x'), '-settings_from', coarse)
    assert not_metrics.returncode == 2 and 'not a smooth_predict.py metrics.json' in not_metrics.stderr
