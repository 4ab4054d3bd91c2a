"""Small test videos built from a real face photo (skimage's astronaut), written with preprocess.video."""
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
    return write_video(path, face_frames(has_face, width, height), fps=fps)


def write_two_face_clip(path, count, width=320, height=240, fps=25):
    return write_video(path, two_face_frames(count, width, height), fps=fps)
