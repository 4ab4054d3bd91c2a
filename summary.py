"""What each person showed, and for how long: the per-person summary of predict_video's labels.

Shares and runs count only the frames where that person's face was found and classified: a
faceless frame carries the nearest face frame's label in the per-frame CSV (fusion.fill_missing's
rule), but it says nothing about what the person showed, so it is left out here, and it ends a run.
"""
from dataclasses import dataclass

import numpy as np

from labels import ABAW_CLASSES

SHARE_COLUMNS = [f'share_{name}' for name in ABAW_CLASSES]
LONGEST_COLUMNS = [f'longest_{name}_s' for name in ABAW_CLASSES]
SUMMARY_COLUMNS = SHARE_COLUMNS + ['dominant'] + LONGEST_COLUMNS


@dataclass
class PersonSummary:
    """One person's face frames: how many, over how many seconds, the share of each label (sums
    to 1; all NaN without a face frame), the dominant label (index, -1 without a face frame) and
    the longest run of consecutive face frames with each label, in seconds."""
    face_frames: int
    seconds: float
    shares: np.ndarray
    dominant: int
    longest_s: np.ndarray

    def csv_fields(self):
        """The SUMMARY_COLUMNS values as text (empty shares and dominant without a face frame)."""
        if self.face_frames == 0:
            shares, dominant = [''] * len(ABAW_CLASSES), ''
        else:
            shares, dominant = [f"{s:.4f}" for s in self.shares], ABAW_CLASSES[self.dominant]
        return shares + [dominant] + [f"{s:.3f}" for s in self.longest_s]

    def describe(self):
        """'62% Neutral, 21% Happiness, 9% Surprise over 41.2 s': labels seen, most frequent first."""
        if self.face_frames == 0:
            return 'no face found'
        order = np.argsort(-self.shares, kind='stable')
        parts = [f"{self.shares[c] * 100:.0f}% {ABAW_CLASSES[c]}" for c in order if self.shares[c] > 0]
        return f"{', '.join(parts)} over {self.seconds:.1f} s"


def longest_runs(face_frames, face_labels, fps, classes=len(ABAW_CLASSES)):
    """[classes] longest run, in seconds, of consecutive frame numbers with the same label."""
    longest = np.zeros(classes)
    if len(face_frames) == 0:
        return longest
    frames = np.asarray(face_frames, np.int64)
    labels = np.asarray(face_labels, np.int64)
    # A run ends where the label changes or a frame is skipped (no face there).
    breaks = np.flatnonzero((np.diff(frames) != 1) | (np.diff(labels) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [len(frames)]]))
    np.maximum.at(longest, labels[starts], lengths / fps)
    return longest


def summarise(labels, face_frames, fps):
    """PersonSummary of one person from the label of every frame ([T], filled as in the per-frame
    CSV), the 1-based frame numbers with their face, and the frame rate."""
    if not fps or fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    labels = np.asarray(labels, np.int64)
    face_frames = np.asarray(face_frames, np.int64)
    face_labels = labels[face_frames - 1]
    count = len(face_frames)
    classes = len(ABAW_CLASSES)
    if count == 0:
        shares, dominant = np.full(classes, np.nan), -1
    else:
        shares = np.bincount(face_labels, minlength=classes) / count
        dominant = int(np.argmax(shares))  # ties go to the lower class index
    return PersonSummary(count, count / fps, shares, dominant, longest_runs(face_frames, face_labels, fps))
