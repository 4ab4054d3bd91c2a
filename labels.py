"""Aff-Wild2 EXPR label sets, the coarse/negative class maps and the ABAW annotation file format.

Everything that reads or writes labels (datasets, fusion, submission files, preprocessing of
`_left`/`_right` videos) goes through this module so the class orders are defined once.
"""
from errors import UsageError
from fileio import atomic_open

ABAW_CLASSES = ('Neutral', 'Anger', 'Disgust', 'Fear', 'Happiness', 'Sadness', 'Surprise', 'Other')
COARSE_CLASSES = ('Neutral', 'Happiness', 'Surprise', 'Other', 'Negative')
NEGATIVE_CLASSES = ('Anger', 'Disgust', 'Fear', 'Sadness')

# Index = ABAW label, value = label in that model's class space (-1: not in that model's data).
COARSE_MAP = (0, 4, 4, 4, 1, 4, 2, 3)
NEGATIVE_MAP = (-1, 0, 1, 2, -1, 3, -1, -1)
IDENTITY_MAP = tuple(range(8))

CLASS_NAMES = {'all': ABAW_CLASSES, 'coarse': COARSE_CLASSES, 'negative': NEGATIVE_CLASSES}
CLASS_MAPS = {'all': IDENTITY_MAP, 'coarse': COARSE_MAP, 'negative': NEGATIVE_MAP}
NUM_CLASSES = {name: len(names) for name, names in CLASS_NAMES.items()}

ANNOTATION_HEADER = ','.join(ABAW_CLASSES)
# Where the negative model's classes sit among the 8 ABAW classes.
NEGATIVE_TO_ABAW = tuple(ABAW_CLASSES.index(name) for name in NEGATIVE_CLASSES)


class AnnotationError(UsageError):
    """An annotation file that does not follow the ABAW EXPR format; the message names file and line."""


def check_class_type(class_type):
    """Return `class_type` if it is all, coarse or negative, else raise ValueError naming the choices."""
    if class_type not in CLASS_NAMES:
        raise ValueError(f"unknown class_type '{class_type}': choose one of {', '.join(CLASS_NAMES)}")
    return class_type


def map_label(abaw_label, class_type):
    """ABAW label (-1..7) to the label in `class_type`'s space, -1 when the frame is not in it."""
    if abaw_label < 0:
        return -1
    return CLASS_MAPS[check_class_type(class_type)][abaw_label]


def read_annotation(path):
    """Labels of an ABAW EXPR file as a list: element i is the label of frame i+1 (-1 = invalid).

    Accepts CRLF line endings and trailing blank lines; anything else unexpected is an
    AnnotationError naming the file and the 1-based line.
    """
    try:
        with open(path, 'r', encoding='utf-8-sig', newline=None) as f:
            lines = f.read().split('\n')
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read annotation file ({err.strerror})") from None
    while lines and lines[-1].strip() == '':
        lines.pop()
    if not lines:
        raise AnnotationError(f"{path}:1: empty annotation file (expected header '{ANNOTATION_HEADER}')")
    header = lines[0].strip().replace(' ', '')
    if header != ANNOTATION_HEADER:
        raise AnnotationError(
            f"{path}:1: bad header '{lines[0].strip()}' (expected '{ANNOTATION_HEADER}')")
    labels = []
    for line_no, line in enumerate(lines[1:], start=2):
        text = line.strip()
        try:
            value = int(text)
        except ValueError:
            raise AnnotationError(f"{path}:{line_no}: '{text}' is not an integer label") from None
        if not -1 <= value <= 7:
            raise AnnotationError(f"{path}:{line_no}: label {value} is outside -1..7")
        labels.append(value)
    return labels


def write_annotation(path, labels):
    """Write labels in the ABAW3 submission format atomically (header, one label per frame)."""
    with atomic_open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.write(ANNOTATION_HEADER + '\n')
        f.writelines(f"{int(label)}\n" for label in labels)


def read_video_list(path, flag='-video_list'):
    """Video names, one per line (blank lines and '#' comments ignored); ValueError names the file."""
    try:
        with open(path, 'r', encoding='utf-8') as f:
            names = [line.strip() for line in f]
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot read ({err.strerror})") from None
    names = [n for n in names if n and not n.startswith('#')]
    if not names:
        raise ValueError(f"{flag} {path}: no video names in the file")
    return names


def split_person(video_name):
    """('name', 'left'|'right'|None): Aff-Wild2 names two annotated people `<name>_left`/`_right`."""
    for side in ('left', 'right'):
        if video_name.endswith('_' + side):
            return video_name[:-len(side) - 1], side
    return video_name, None
