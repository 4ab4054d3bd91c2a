"""adaptive.Sampler on hand-made tracks (a fake detector and classifier, the real ByteTrack), and
causal smoothing written out by hand."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import adaptive  # noqa: E402
from causal import CausalSmoother, causal_apply  # noqa: E402
from labels import COARSE_CLASSES  # noqa: E402
from preprocess.faces import Face  # noqa: E402
from preprocess.tracking import FaceTracker  # noqa: E402
from fusion import Smoothing, fuse  # noqa: E402

MIN_PROB = 0.9
LEFT, RIGHT = np.array([20., 20., 80., 90.]), np.array([400., 20., 460., 90.])


def coarse_logits(label, confident=True):
    logits = np.zeros(len(COARSE_CLASSES))
    logits[COARSE_CLASSES.index(label)] = 6.0 if confident else 0.3
    return logits


def person(label='Neutral', box=LEFT, confident=True):
    return {'box': np.asarray(box, float), 'coarse': coarse_logits(label, confident)}


def run_sampler(scene, strides=(8, 2, 1), agree_prob=0.6, missing=(), lookahead=1):
    """scene: per frame, a list of faces (person(...)); missing: frames fed without an image.
    Returns (records, frames the fake analyser saw)."""
    analysed = []

    def analyse_one(frame):
        analysed.append(frame)
        faces = [Face(f['box'], 0.99, np.tile(f['box'][:2], (5, 1))) for f in scene[frame - 1]]
        coarse = np.array([f['coarse'] for f in scene[frame - 1]]).reshape(-1, 5)
        negative = np.zeros((len(faces), 4))
        return adaptive.Analysis(faces, coarse, negative)

    def analyse(frames, images):
        assert all(image is not None for image in images)
        return [analyse_one(frame) for frame in frames]

    sampler = adaptive.Sampler(analyse, FaceTracker(30, MIN_PROB, 1.0), strides, agree_prob, 'soft', MIN_PROB,
                               lookahead)
    records = []
    for frame in range(1, len(scene) + 1):
        records += sampler.feed(frame, None if frame in missing else object())
    records += sampler.finish()
    assert [r.frame for r in records] == list(range(1, len(scene) + 1))
    assert len(analysed) == len(set(analysed)), 'a frame was analysed twice'
    return records, sorted(analysed)


def processed(records):
    return [r.frame for r in records if r.processed]


def test_agreeing_ends_are_filled_with_interpolated_boxes_and_logits():
    # The face moves right by 2 px a frame; the label never changes.
    scene = [[person('Happiness', LEFT + [2 * t, 0, 2 * t, 0])] for t in range(17)]
    records, analysed = run_sampler(scene)
    assert processed(records) == analysed == [1, 9, 17]
    for record in records:
        assert len(record.faces) == 1 and record.ids == records[0].ids
        np.testing.assert_allclose(record.faces[0].box, scene[record.frame - 1][0]['box'])
        np.testing.assert_allclose(record.coarse[0], coarse_logits('Happiness'))


@pytest.mark.parametrize('lookahead', [1, 3])
def test_disagreeing_ends_are_processed_at_the_next_strides(lookahead):
    # Neutral up to frame 5, Happiness from frame 6; the lookahead changes batching, not choices.
    scene = [[person('Neutral' if t <= 5 else 'Happiness')] for t in range(1, 18)]
    records, analysed = run_sampler(scene, lookahead=lookahead)
    assert processed(records) == [1, 3, 5, 6, 7, 9, 17]
    labels = [np.argmax(fuse(r.coarse, r.negative)[0]) for r in records]
    truth = [np.argmax(fuse(scene[t][0]['coarse'][None], np.zeros((1, 4)))[0]) for t in range(17)]
    assert labels == truth


def test_uncertain_ends_are_not_filled():
    scene = [[person('Neutral', confident=False)] for _ in range(9)]
    assert processed(run_sampler(scene, agree_prob=0.6)[0]) == list(range(1, 10))
    assert processed(run_sampler(scene, agree_prob=0.2)[0]) == [1, 9]


def test_never_filled_across_a_faceless_stretch():
    scene = [[person()] if t <= 8 or t >= 13 else [] for t in range(1, 18)]
    records, _ = run_sampler(scene)
    for record in records:
        assert bool(record.faces) == bool(scene[record.frame - 1])
    # Every faceless frame was looked at; filled frames sit between two frames with the face.
    assert set(range(9, 13)) <= set(processed(records))
    assert processed(records) == [1, 3, 5, 7, 8, 9, 10, 11, 12, 13, 15, 17]


def test_never_filled_across_a_track_boundary():
    # Person A on the left until frame 6, then person B on the right: the same label, two tracks.
    scene = [[person(box=LEFT)] if t <= 6 else [person(box=RIGHT)] for t in range(1, 18)]
    records, _ = run_sampler(scene)
    assert {6, 7} <= set(processed(records))
    for record in records:
        expected = LEFT if record.frame <= 6 else RIGHT
        np.testing.assert_allclose(record.faces[0].box, expected)
    assert records[5].ids != records[6].ids


def test_two_people_filled_only_when_both_agree():
    # The person on the right changes label at frame 5; the one on the left never does.
    scene = [[person(box=LEFT), person('Surprise' if t >= 5 else 'Neutral', box=RIGHT)] for t in range(1, 10)]
    records, _ = run_sampler(scene)
    assert processed(records) == [1, 3, 4, 5, 7, 9]
    assert all(len(r.faces) == 2 for r in records)


def test_frames_without_an_image_are_filled_along_the_tracks():
    # A live source skipped frames 4-6; the label changes inside them, so they cannot be judged.
    scene = [[person('Neutral' if t <= 5 else 'Happiness')] for t in range(1, 10)]
    records, analysed = run_sampler(scene, strides=(1,), missing={4, 5, 6})
    assert analysed == [1, 2, 3, 7, 8, 9]
    assert [len(r.faces) for r in records] == [1] * 9
    np.testing.assert_allclose(records[4].coarse[0], (coarse_logits('Neutral') + coarse_logits('Happiness')) / 2)


def test_strides_flag_checks():
    assert adaptive.parse_strides('8,2,1') == (8, 2, 1)
    assert adaptive.parse_strides((4, 1)) == (4, 1)
    for bad in ('8,2', '2,8,1', '8,x,1', '0,1', '8,8,1'):
        with pytest.raises(ValueError):
            adaptive.parse_strides(bad)


# ----------------------------------------------------------------------------- causal smoothing

def test_causal_logits_smoothing_by_hand():
    rng = np.random.default_rng(0)
    coarse, negative = rng.normal(size=(7, 5)), rng.normal(size=(7, 4))
    frames = np.array([1, 2, 3, 5, 6, 9, 10])
    smoothing = Smoothing('logits', 'soft', 1)  # window of 2K+1 = 3 frames: t-2..t
    got = causal_apply(smoothing, coarse, negative, frames)
    for row, t in enumerate(frames):
        past = [r for r, s in enumerate(frames) if t - 2 <= s <= t]
        c = coarse[row] + coarse[past].mean(axis=0)
        n = negative[row] + negative[past].mean(axis=0)
        np.testing.assert_allclose(got[row], fuse(c[None], n[None], 'soft')[0])
    # Frame 9 is alone in its window (7 and 8 have no face): l + l.
    np.testing.assert_allclose(got[5], fuse(2 * coarse[5][None], 2 * negative[5][None])[0])


def test_causal_fused_smoothing_by_hand_and_per_person():
    rng = np.random.default_rng(1)
    coarse, negative = rng.normal(size=(4, 5)), rng.normal(size=(4, 4))
    smoother = CausalSmoother(Smoothing('fused', 'soft', 2, 0.5))
    p = fuse(coarse, negative)
    np.testing.assert_allclose(smoother.push(1, 1, coarse[0], negative[0]), p[0])
    np.testing.assert_allclose(smoother.push(2, 1, coarse[1], negative[1]), p[1])  # another person
    np.testing.assert_allclose(smoother.push(1, 3, coarse[2], negative[2]), 0.5 * (p[0] + p[2]) / 2 + 0.5 * p[2])
    # Frame 8: frames 1 and 3 are more than 2K = 4 frames back.
    np.testing.assert_allclose(smoother.push(1, 8, coarse[3], negative[3]), p[3])


def test_causal_window_zero_is_unsmoothed_and_nan_negative_is_left_out():
    coarse = np.array([[1., 0, 0, 0, 3], [0, 2, 0, 0, 1]])
    negative = np.array([[0.5, 0, 0, 0], [np.nan] * 4])
    np.testing.assert_allclose(causal_apply(Smoothing('logits', 'soft', 0), coarse, negative),
                               fuse(coarse, negative))
    got = causal_apply(Smoothing('logits', 'soft', 1), coarse, negative)
    expected_coarse = coarse[1] + coarse.mean(axis=0)
    np.testing.assert_allclose(got[1], fuse(expected_coarse[None], np.full((1, 4), np.nan))[0])
