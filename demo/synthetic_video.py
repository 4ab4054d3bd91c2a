"""Small videos built from a real face photo (skimage's astronaut), written with preprocess.video:
the clips of the tests, the fault drill and the benchmarks (make_demo_data.py builds the demo's)."""
import cv2
import numpy as np
from skimage import data

from preprocess.video import write_video


def astronaut_head(side):
    """Square crop of the astronaut's head and shoulders (face ~30% of the side), resized to `side`."""
    head = data.astronaut()[0:300, 100:400]
    return cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)


def face_frames(has_face, width=320, height=240, head=None):
    """One frame per entry of `has_face`: the head pasted at a drifting position, or a plain grey frame."""
    head = astronaut_head(height * 5 // 8) if head is None else head
    side = head.shape[0]
    frames = []
    for index, face in enumerate(has_face):
        frame = np.full((height, width, 3), 90, np.uint8)
        if face:
            x = (width - side) // 2 + (index % 5) * 2 - 4
            y = (height - side) // 2
            frame[y:y + side, x:x + side] = head
        frames.append(frame)
    return frames


def two_face_frames(count, width=320, height=240):
    """Two heads side by side; the right one is a blue-tinted mirror image so tests can tell them apart."""
    head = astronaut_head(min(width // 2 - 8, height * 5 // 8))
    right = head[:, ::-1].copy()
    right[..., 2] = np.clip(right[..., 2].astype(int) + 80, 0, 255)
    right[..., 0] = right[..., 0] // 2
    side = head.shape[0]
    y = (height - side) // 2
    frames = []
    for _ in range(count):
        frame = np.full((height, width, 3), 90, np.uint8)
        frame[y:y + side, 4:4 + side] = head
        frame[y:y + side, width - 4 - side:width - 4] = right
        frames.append(frame)
    return frames


def write_face_clip(path, has_face, width=320, height=240, fps=25):
    """An MP4 of `face_frames(has_face)` at `fps`."""
    return write_video(path, face_frames(has_face, width, height), fps=fps)


def write_two_face_clip(path, count, width=320, height=240, fps=25):
    """An MP4 of `two_face_frames(count)` at `fps`."""
    return write_video(path, two_face_frames(count, width, height), fps=fps)


def tinted_head(side, tint):
    """The astronaut head at `side` px, recoloured so tests can tell people apart: 'blue' (mirrored,
    as in two_face_frames), 'green' or None (as photographed)."""
    head = astronaut_head(side)
    if tint == 'blue':
        head = head[:, ::-1].copy()
        head[..., 2] = np.clip(head[..., 2].astype(int) + 80, 0, 255)
        head[..., 0] = head[..., 0] // 2
    elif tint == 'green':
        head = head.copy()
        head[..., 1] = np.clip(head[..., 1].astype(int) + 70, 0, 255)
        head[..., 2] = head[..., 2] // 2
    elif tint is not None:
        raise ValueError(f"tint must be None, 'blue' or 'green', got {tint!r}")
    return head


def scene_frames(count, actors, width, height):
    """Frames with several people: each actor is (head, (x0, y0), (x1, y1), visible frames), its
    head's top-left corner moving linearly from (x0, y0) at frame 0 to (x1, y1) at the last frame,
    drawn only in the 0-based frames of `visible` (None: all). Later actors are drawn on top."""
    frames = []
    for index in range(count):
        frame = np.full((height, width, 3), 90, np.uint8)
        t = index / max(1, count - 1)
        for head, (x0, y0), (x1, y1), visible in actors:
            if visible is not None and index not in visible:
                continue
            x, y = int(round(x0 + (x1 - x0) * t)), int(round(y0 + (y1 - y0) * t))
            side = head.shape[0]
            frame[y:y + side, x:x + side] = head
        frames.append(frame)
    return frames


def head_position(actor, index, count):
    """Top-left corner of an actor's head in frame `index` (0-based) of a scene_frames clip."""
    _, (x0, y0), (x1, y1), _ = actor
    t = index / max(1, count - 1)
    return x0 + (x1 - x0) * t, y0 + (y1 - y0) * t


def crossing_actors(count=36, width=320, side=96, gap=range(24, 29), third=range(3, 13)):
    """Two people walking past each other at different heights, their heads overlapping while they
    cross: 'upper' (as photographed) left to right, 'lower' (blue, mirrored) right to left and gone
    in the `gap` frames; 'third' (green, smaller) stands top right in the `third` frames only.
    Frames are `width` x 176; a wider frame makes them walk faster."""
    end = width - side - 10
    return {'upper': (tinted_head(side, None), (10, 10), (end, 10), None),
            'lower': (tinted_head(side, 'blue'), (end, 70), (10, 70), set(range(count)) - set(gap)),
            'third': (tinted_head(64, 'green'), (width - 70, 6), (width - 70, 6), set(third))}


def write_crossing_clip(path, count=36, width=320, fps=25, **kwargs):
    """Write a crossing_actors clip; returns the actors."""
    actors = crossing_actors(count, width, **kwargs)
    write_video(path, scene_frames(count, list(actors.values()), width, 176), fps=fps)
    return actors
