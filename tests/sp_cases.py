"""Hand-made per-frame predictions shared by the tests of fusion.py, video_table.py,
smoothing_search.py and smooth_predict.py."""
import numpy as np

import video_table
from labels import COARSE_CLASSES, NEGATIVE_CLASSES, write_annotation


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
    return video_table.build_video_table(video_table.load_predictions(coarse_path, 'coarse'),
                                video_table.load_predictions(negative_path, 'negative'),
                                fusion, anno_folder, frames_folder)
