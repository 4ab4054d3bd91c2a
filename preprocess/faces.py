"""Face settings, detection (facenet-pytorch MTCNN) and alignment of a detected face to a square RGB crop.

Usable on in-memory frames:

    aligner = FaceAligner('cpu', FaceSettings())
    faces_per_frame = aligner.detect_batch(frames)          # list (per frame) of lists of Face
    face = select_face(faces_per_frame[0], min_prob=aligner.min_prob)
    crop = aligner.align(frames[0], face) if face else None  # (224, 224, 3) uint8 RGB

Videos go through preprocess.faceloop, which also follows each person from frame to frame.
"""
import collections
import dataclasses

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from errors import CfcspError, UsageError

Face = collections.namedtuple('Face', ['box', 'prob', 'landmarks'])
Face.__doc__ = """One MTCNN detection: box (x1, y1, x2, y2), prob in [0, 1], landmarks (5, 2) as x, y of
left eye, right eye, nose, left mouth corner, right mouth corner (image left/right)."""

LANDMARK_NAMES = ('left_eye', 'right_eye', 'nose', 'mouth_left', 'mouth_right')

# Where the five landmarks land, as fractions of the output side. Chosen so that a frontal face is
# upright with level eyes and centred horizontally, and forehead, chin and cheeks stay inside the
# crop (expression needs brows and jaw, unlike the tight templates used for face recognition):
# the eyes are 0.32 of the side apart, the mouth 0.30 of the side below the eyes.
ALIGN_TEMPLATE = np.array([
    [0.34, 0.40],
    [0.66, 0.40],
    [0.50, 0.55],
    [0.37, 0.70],
    [0.63, 0.70],
], dtype=np.float64)

MODES = ('align', 'crop')


class FaceAlignError(CfcspError, ValueError):
    """MTCNN's landmarks of a face admit no alignment (a property of that video's frames)."""


# Each face setting's flag: the same name in every tool that offers it (python -m preprocess,
# predict_video.py).
FACE_FLAGS = {'mode': '-face_mode', 'image_size': '-face_size', 'margin': '-margin',
              'min_prob': '-min_prob', 'min_face_size': '-min_face_size',
              'jpeg_quality': '-jpeg_quality', 'detect_batch': '-detect_batch',
              'detect_size': '-detect_size', 'track_gap_s': '-track_gap_s'}

FLAG_HELP = {
    'mode': 'align: 5-point similarity alignment (default); crop: box with margin',
    'image_size': 'side of the stored (and classified) face, in pixels',
    'margin': 'box margin per side, for mode crop',
    'min_prob': 'faces below this MTCNN probability are ignored',
    'min_face_size': 'smallest face MTCNN looks for, in pixels of the frame it detects on',
    'jpeg_quality': 'quality (1-100) of the face JPEGs; predict_video.py sends every face through the '
                    'same JPEG round trip, so it classifies what python -m preprocess writes',
    'detect_batch': 'frames per MTCNN call',
    'detect_size': 'frames whose longest side is larger are detected on a copy scaled to this longest '
                   'side; faces are still cut from the full frame (0 = full resolution)',
    'track_gap_s': 'a person keeps their track through this many seconds without a detection',
}


@dataclasses.dataclass(frozen=True)
class FaceSettings:
    """Every parameter that decides which faces are found and how they are cut out and stored.

    `python -m preprocess` and predict_video.py build their flags' defaults from FaceSettings(), so
    the faces classified by predict_video.py are the faces the models were trained and evaluated on.
    """
    mode: str = 'align'              # 'align': 5-point similarity transform; 'crop': box with margin
    image_size: int = 224            # side of the stored face
    margin: float = 0.2              # box margin per side, for mode 'crop'
    min_prob: float = 0.9            # faces below this MTCNN probability are not faces
    min_face_size: int = 20          # smallest face MTCNN looks for, in pixels of the detection copy
    thresholds: tuple = (0.6, 0.7, 0.7)  # MTCNN's three stage thresholds
    template: tuple = tuple(map(tuple, ALIGN_TEMPLATE))  # where mode 'align' puts the 5 landmarks
    jpeg_quality: int = 95           # quality of the stored face JPEG
    detect_batch: int = 8            # frames per detection call
    # Frames whose longest side is larger are detected on a copy scaled down to this longest side
    # (boxes and landmarks are mapped back, the crop is cut from the full frame); 0: never.
    detect_size: int = 720
    track_gap_s: float = 1.0         # a person's track survives this long without a detection

    def __post_init__(self):
        object.__setattr__(self, 'thresholds', tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, 'template', tuple(tuple(float(v) for v in point) for point in self.template))
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
        if np.asarray(self.template).shape != (5, 2):
            problems.append(f"template must be 5 (x, y) points, got {self.template}")
        if self.image_size < 8:
            problems.append(f"image_size must be at least 8, got {self.image_size}")
        if not 0 <= self.min_prob <= 1:
            problems.append(f"min_prob must be in [0, 1], got {self.min_prob}")
        if self.min_face_size < 1:
            problems.append(f"min_face_size must be at least 1, got {self.min_face_size}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")
        if self.detect_batch < 1:
            problems.append(f"detect_batch must be at least 1, got {self.detect_batch}")
        if self.detect_size != 0 and self.detect_size < 64:
            problems.append(f"detect_size must be 0 (full resolution) or at least 64, got {self.detect_size}")
        if self.track_gap_s < 0:
            problems.append(f"track_gap_s must be >= 0, got {self.track_gap_s}")
        if problems:
            raise ValueError('; '.join(problems))

    def as_dict(self):
        """JSON-ready copy, for the manifests that record how faces were made."""
        return _json_ready(dataclasses.asdict(self))

    @classmethod
    def add_arguments(cls, parser, fields, old_spellings=None):
        """Declare the flags (FACE_FLAGS) of `fields`, each defaulting to that field's default, so
        every tool names and defaults its face flags alike. old_spellings: {field: flag} still
        accepted (not shown in help) for a tool whose flags were renamed."""
        defaults = cls()
        for field in fields:
            default = getattr(defaults, field)
            kind = {'choices': MODES} if field == 'mode' else {'type': type(default)}
            names = [FACE_FLAGS[field]] + ([old_spellings[field]] if field in (old_spellings or {}) else [])
            parser.add_argument(*names, dest=FACE_FLAGS[field].lstrip('-'), default=default,
                                help=FLAG_HELP[field], **kind)

    @classmethod
    def from_args(cls, args, fields):
        """FaceSettings from the parsed flags of `fields` (the others keep their defaults); a bad
        value is a UsageError naming its flag."""
        values = {field: getattr(args, FACE_FLAGS[field].lstrip('-')) for field in fields}
        for field, value in values.items():
            try:
                cls(**{field: value})
            except ValueError as err:
                raise UsageError(f"{FACE_FLAGS[field]} {value}: {err}") from None
        return cls(**values)


def _json_ready(value):
    if isinstance(value, (tuple, list)):
        return [_json_ready(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    return value


def detection_scale(frame_shape, detect_size):
    """Factor (<= 1) by which a frame of this (H, W, ...) shape is shrunk for detection."""
    longest = max(frame_shape[0], frame_shape[1])
    if not detect_size or longest <= detect_size:
        return 1.0
    return detect_size / longest


def shrink(frame, scale):
    """The frame resized by `scale` (area averaging, as a camera of lower resolution would see it)."""
    if scale == 1.0:
        return frame
    height, width = frame.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def scale_face(face, factor):
    """The detection with box and landmarks multiplied by `factor` (back to full-frame pixels)."""
    if factor == 1.0:
        return face
    return face._replace(box=face.box * factor, landmarks=face.landmarks * factor)


def _check_rgb(frame):
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 frame of shape (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame


def encode_face(crop_rgb, quality=FaceSettings.jpeg_quality):
    """JPEG bytes of an aligned RGB face: the one encoder behind preprocess's files and predict_video."""
    ok, data = cv2.imencode('.jpg', cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cannot JPEG-encode an aligned face")
    return data.tobytes()


def select_face(faces, side=None, min_prob=FaceSettings.min_prob):
    """The face to keep among one still image's detections, or None if none reaches `min_prob`.

    side None: the most confident face. 'left' / 'right': the face whose box centre is left-most /
    right-most. Videos do not use this: preprocess.tracking follows each person through the frames.
    """
    candidates = [face for face in faces if face.prob >= min_prob]
    if not candidates:
        return None
    if side is None:
        return max(candidates, key=lambda face: face.prob)
    centre_x = lambda face: (face.box[0] + face.box[2]) / 2
    if side == 'left':
        return min(candidates, key=centre_x)
    if side == 'right':
        return max(candidates, key=centre_x)
    raise ValueError(f"side must be None, 'left' or 'right', got {side!r}")


class FaceAligner:
    """MTCNN detector plus the geometric step that turns a detection into an `image_size` crop.

    mode 'align': similarity transform (rotation, uniform scale, shift) taking MTCNN's 5 landmarks
    onto settings.template (ALIGN_TEMPLATE by default). mode 'crop': the detection box grown by
    `margin` (a fraction of its size on each side), made square around its centre, resized; no
    rotation.
    """

    def __init__(self, device='cpu', settings=None):
        self.device = device
        self.settings = settings or FaceSettings()
        self.mode = self.settings.mode
        self.image_size = self.settings.image_size
        self.margin = self.settings.margin
        self.min_prob = self.settings.min_prob
        self._mtcnn = None

    @property
    def mtcnn(self):
        # Built on first use: align()/transform() need no network, and torch import is slow.
        if self._mtcnn is None:
            from facenet_pytorch import MTCNN

            # keep_all: choosing the face (which person) is ours, so MTCNN returns all.
            self._mtcnn = MTCNN(image_size=self.image_size, min_face_size=self.settings.min_face_size,
                                thresholds=list(self.settings.thresholds), keep_all=True, post_process=False,
                                device=self.device)
        return self._mtcnn

    def detect_batch(self, frames):
        """Detections of each frame: a list (one per frame) of lists of Face, most confident first.

        On GPU frames of one size are stacked into one MTCNN call; on CPU (and for mixed sizes)
        each frame is its own call.
        """
        frames = [_check_rgb(frame) for frame in frames]
        if not frames:
            return []
        # On CPU, one MTCNN call per frame: stacking frames into one call measured slower per
        # frame than separate calls (benchmarks/RESULTS.md).
        batched = not str(self.device).startswith('cpu')
        # MTCNN's image pyramid is empty (and torch.cat fails) for a frame smaller than the
        # smallest face it looks for: such a frame has no face.
        small = [min(frame.shape[:2]) < self.settings.min_face_size for frame in frames]
        if any(small):
            results = [(None, None, None) if tiny else self.mtcnn.detect(frame, landmarks=True)
                       for frame, tiny in zip(frames, small)]
            boxes, probs, points = zip(*results)
        elif batched and len({frame.shape for frame in frames}) == 1:
            boxes, probs, points = self.mtcnn.detect(np.stack(frames), landmarks=True)
        else:
            results = [self.mtcnn.detect(frame, landmarks=True) for frame in frames]
            boxes, probs, points = zip(*results)
        detections = []
        for frame_boxes, frame_probs, frame_points in zip(boxes, probs, points):
            faces = []
            if frame_boxes is not None:
                for box, prob, landmarks in zip(frame_boxes, frame_probs, frame_points):
                    faces.append(Face(np.asarray(box, np.float64), float(prob),
                                      np.asarray(landmarks, np.float64).reshape(5, 2)))
            faces.sort(key=lambda face: -face.prob)
            detections.append(faces)
        return detections

    def transform(self, face):
        """2x3 matrix mapping frame coordinates to crop coordinates for this face."""
        size = self.image_size
        if self.mode == 'align':
            estimate = SimilarityTransform.from_estimate(face.landmarks, np.asarray(self.settings.template) * size)
            if not estimate:
                raise FaceAlignError(f"degenerate landmarks, cannot align: {face.landmarks.tolist()}")
            return estimate.params[:2]
        x1, y1, x2, y2 = face.box
        side = max(x2 - x1, y2 - y1) * (1 + 2 * self.margin)
        scale = size / side
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        return np.array([[scale, 0, size / 2 - scale * centre_x],
                         [0, scale, size / 2 - scale * centre_y]])

    def align(self, frame, face):
        """The (image_size, image_size, 3) uint8 RGB crop of `face`; outside the frame is black."""
        frame = _check_rgb(frame)
        return cv2.warpAffine(frame, self.transform(face), (self.image_size, self.image_size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
