"""The rules of fusion.py (fusion, both Smooth Predicting modes, filling) on small hand-made
arrays with known answers."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fusion import Smoothing, WindowMeans, fill_missing, fuse  # noqa: E402
from sp_cases import (HAND_COARSE, HAND_FRAMES, HAND_LABELS, HAND_MEANS, HAND_NEGATIVE,  # noqa: E402
                      hand_fused_labels, hand_softmax, logits_of)


def smooth(probs, window, alpha, frames=None, groups=None):
    """The fused-mode rule on any rows: A * window mean + (1 - A) * rows."""
    return WindowMeans(probs, frames, groups, max_window=window).smooth(window, alpha)


def add_mean(logits, window, frames=None, groups=None):
    """The logits-mode rule on one model's logits: logits + window mean."""
    return WindowMeans(logits, frames, groups, max_window=window).add_mean(window)


# ----------------------------------------------------------------------------- fusion

def test_soft_fusion_formula():
    c = [0.1, 0.2, 0.3, 0.15, 0.25]   # Neutral, Happiness, Surprise, Other, Negative
    n = [0.4, 0.3, 0.2, 0.1]          # Anger, Disgust, Fear, Sadness
    p = fuse(logits_of([c]), logits_of([n]), 'soft')
    expected = [0.1, 0.25 * 0.4, 0.25 * 0.3, 0.25 * 0.2, 0.2, 0.25 * 0.1, 0.3, 0.15]
    np.testing.assert_allclose(p[0], expected, atol=1e-12)
    assert p.shape == (1, 8)


def test_soft_fusion_without_negative_prediction_uses_uniform():
    c = [0.1, 0.2, 0.3, 0.2, 0.2]
    p = fuse(logits_of([c, c]), np.array([[np.nan] * 4, logits_of([0.7, 0.1, 0.1, 0.1])]),
                'soft')
    np.testing.assert_allclose(p[0], [0.1, 0.05, 0.05, 0.05, 0.2, 0.05, 0.3, 0.2], atol=1e-12)
    np.testing.assert_allclose(p[1][[1, 2, 3, 5]], [0.14, 0.02, 0.02, 0.02], atol=1e-12)
    np.testing.assert_allclose(fuse(logits_of([c]), None, 'soft')[0], p[0], atol=1e-12)


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
    p = fuse(coarse, negative, 'hard')
    assert p.argmax(axis=1).tolist() == [0, 4, 6, 7, 1, 2, 3, 5, 0, 2]
    np.testing.assert_array_equal(p.sum(axis=1), np.ones(10))
    assert set(np.unique(p)) == {0.0, 1.0}
    # No negative prediction for a Negative frame: the uniform split, whose argmax is Anger.
    p = fuse([[0, 0, 0, 0, 5], [0, 0, 0, 0, 5]], [[np.nan] * 4, [0, 1, 0, 0]], 'hard')
    assert p.argmax(axis=1).tolist() == [1, 2]


def test_fusion_rejects_bad_shapes_and_modes():
    with pytest.raises(ValueError):
        fuse(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        fuse(np.zeros((2, 5)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match='fusion mode'):
        fuse(np.zeros((2, 5)), np.zeros((2, 4)), 'mean')


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
    f = smooth(p, window=1, alpha=1.0, frames=np.arange(1, 6))
    np.testing.assert_allclose(f[0], [0.5, 0.5, 0])          # frame 1: frames 1, 2
    np.testing.assert_allclose(f[2], [0, 1 / 3, 2 / 3])      # frame 3: frames 2, 3, 4
    np.testing.assert_allclose(f[4], [0, 0.5, 0.5])          # frame 5: frames 4, 5
    np.testing.assert_allclose(f, reference_smooth(p, np.arange(1, 6), 1, 1.0))


def test_window_counts_frame_numbers_across_gaps():
    p = np.eye(2)[[0, 0, 1, 1]]
    frames = [1, 2, 5, 6]                   # frames 3 and 4 have no face
    f2 = smooth(p, window=2, alpha=1.0, frames=frames)
    np.testing.assert_allclose(f2, [[1, 0], [1, 0], [0, 1], [0, 1]])  # 2 and 5 are 3 apart
    f3 = smooth(p, window=3, alpha=1.0, frames=frames)
    np.testing.assert_allclose(f3[1], [2 / 3, 1 / 3])        # frame 2 sees 1, 2, 5
    np.testing.assert_allclose(f3[2], [1 / 3, 2 / 3])        # frame 5 sees 2, 5, 6


def test_window_never_crosses_videos():
    p = np.eye(2)[[0, 0, 0, 1, 1, 1]]
    f = smooth(p, window=128, alpha=1.0, frames=[1, 2, 3, 1, 2, 3], groups=[0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(f, p)


def test_alpha_blend_and_no_smoothing():
    p = np.array([[0.8, 0.2], [0.2, 0.8], [0.8, 0.2]])
    f = smooth(p, window=1, alpha=0.25, frames=[1, 2, 3])
    u1 = np.array([0.5, 0.5])
    u2 = np.array([0.6, 0.4])
    np.testing.assert_allclose(f[0], 0.25 * u1 + 0.75 * p[0])
    np.testing.assert_allclose(f[1], 0.25 * u2 + 0.75 * p[1])
    for window, alpha in ((0, 0.75), (5, 0.0)):
        np.testing.assert_array_equal(smooth(p, window, alpha, frames=[1, 2, 3]), p)
    # Settings are checked in one place, Smoothing.
    with pytest.raises(ValueError, match='window K must be >= 0'):
        Smoothing('fused', 'soft', -1, 0.5)
    with pytest.raises(ValueError, match=r'alpha A must be in \[0, 1\]'):
        Smoothing('fused', 'soft', 1, 1.5)
    with pytest.raises(ValueError, match='window K must be an integer'):
        Smoothing('logits', 'soft', 1.5)


def test_random_against_reference():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), 60)
    frames = np.sort(rng.choice(np.arange(1, 200), 60, replace=False))
    for window, alpha in ((1, 0.5), (4, 0.75), (16, 1.0), (128, 0.25)):
        np.testing.assert_allclose(smooth(p, window, alpha, frames=frames),
                                   reference_smooth(p, frames, window, alpha), atol=1e-12)


def test_smoothed_ties_go_to_lowest_index():
    # Hard one-hot labels 2 then 1: with K=1, A=1 both frames average to a 1/2-1/2 tie.
    p = np.eye(8)[[2, 1]]
    f = smooth(p, window=1, alpha=1.0, frames=[1, 2])
    assert f[0, 1] == f[0, 2]
    assert np.argmax(f, axis=1).tolist() == [1, 1]


def test_smooth_requires_sorted_unique_frames():
    with pytest.raises(ValueError, match='sorted'):
        smooth(np.eye(2), window=1, alpha=1.0, frames=[2, 1])
    with pytest.raises(ValueError, match='sorted'):
        smooth(np.eye(2), window=1, alpha=1.0, frames=[3, 3])


def test_smooth_logits_hand_computed_means():
    coarse, negative = np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float)
    for window, (coarse_mean, negative_mean) in HAND_MEANS.items():
        np.testing.assert_allclose(add_mean(coarse, window, frames=HAND_FRAMES),
                                   coarse + np.array(coarse_mean), rtol=0, atol=1e-12)
        np.testing.assert_allclose(add_mean(negative, window, frames=HAND_FRAMES),
                                   negative + np.array(negative_mean), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(add_mean(coarse, 0, frames=HAND_FRAMES), coarse)
    # Two videos: the window never reaches into the other one.
    two = add_mean([[1.0], [2.0], [10.0]], 5, frames=[1, 2, 1], groups=[0, 0, 1])
    np.testing.assert_allclose(two[:, 0], [1 + 1.5, 2 + 1.5, 10 + 10])


def test_smooth_logits_skips_frames_without_prediction():
    # Frame 2 has no negative prediction: it is out of its neighbours' means and stays missing.
    out = add_mean([[1.0], [np.nan], [3.0], [5.0]], 1, frames=[1, 2, 3, 4])
    np.testing.assert_allclose(out[[0, 2, 3], 0], [1 + 1, 3 + (3 + 5) / 2, 5 + (3 + 5) / 2])
    assert np.isnan(out[1, 0])


@pytest.mark.parametrize('fusion', ['soft', 'hard'])
@pytest.mark.parametrize('window', [1, 2])
def test_logits_mode_labels_hand_computed(fusion, window):
    coarse, negative = np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float)
    coarse_mean, negative_mean = (np.array(m, float) for m in HAND_MEANS[window])
    expected = hand_fused_labels(coarse + coarse_mean, negative + negative_mean, fusion)
    probs = Smoothing('logits', fusion, window).apply(coarse, negative, frames=HAND_FRAMES)
    assert np.argmax(probs, axis=1).tolist() == expected.tolist()
    labels = fill_missing(HAND_FRAMES, np.argmax(probs, axis=1), 7).tolist()
    if (fusion, window) in HAND_LABELS:
        assert labels == HAND_LABELS[(fusion, window)]
    if fusion == 'soft':  # the softmax of each model's smoothed logits, then the fusion formula
        c, n = hand_softmax(coarse + coarse_mean), hand_softmax(negative + negative_mean)
        np.testing.assert_allclose(probs[:, [0, 4, 6, 7]], c[:, :4], rtol=0, atol=1e-12)
        np.testing.assert_allclose(probs[:, [1, 2, 3, 5]], c[:, 4:] * n, rtol=0, atol=1e-12)


@pytest.mark.parametrize('fusion', ['soft', 'hard'])
def test_window_zero_is_no_smoothing_in_both_modes(fusion):
    coarse, negative = np.array(HAND_COARSE, float), np.array(HAND_NEGATIVE, float)
    raw = fuse(coarse, negative, fusion)
    for setting in (Smoothing('logits', fusion, 0), Smoothing('fused', fusion, 0, 1.0)):
        np.testing.assert_array_equal(setting.apply(coarse, negative, frames=HAND_FRAMES), raw)
    assert fill_missing(HAND_FRAMES, raw.argmax(axis=1), 7).tolist() == HAND_LABELS[(fusion, 0)]


def test_smoothing_settings():
    default = Smoothing()
    assert (default.mode, default.fusion, default.window, default.alpha) == ('logits', 'soft', 2, None)
    assert default.is_figure and default.short == 'logits K=2'
    assert Smoothing('fused').alpha == 0.5
    assert Smoothing('fused', 'hard', 8, 0.25).summary == 'hard fusion, SP on fused K=8 A=0.25'
    with pytest.raises(ValueError, match='alpha A applies only to the fused mode'):
        Smoothing('logits', alpha=0.5)
    with pytest.raises(ValueError, match='mode'):
        Smoothing('probs')
    # Which frames read the negative model's logits (predict_video runs it only there).
    assert Smoothing('logits', 'hard', 2).needs_negative_everywhere
    assert not Smoothing('logits', 'hard', 0).needs_negative_everywhere
    assert not Smoothing('fused', 'hard', 8).needs_negative_everywhere
    assert Smoothing('fused', 'soft', 8).needs_negative_everywhere


# ----------------------------------------------------------------------------- filling

def test_fill_missing_nearest_and_earlier_on_tie():
    filled = fill_missing([6, 2], [5, 3], 8)  # any order
    # frame 4 is 2 from both 2 and 6: the earlier (label 3) wins
    assert filled.tolist() == [3, 3, 3, 3, 5, 5, 5, 5]
    assert fill_missing([3], [7], 5).tolist() == [7] * 5
    assert fill_missing([1, 2, 3], [4, 5, 6], 3).tolist() == [4, 5, 6]
    assert fill_missing([], [], 4).tolist() == [0, 0, 0, 0]
