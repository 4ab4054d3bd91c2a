"""Aff-Wild2 EXPR label sets, the coarse/negative class maps and the ABAW annotation file format.

Everything that reads or writes labels (datasets, fusion, submission files, preprocessing of
`_left`/`_right` videos) goes through this module so the class orders are defined once.
"""
import os

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


# Why a name in a video list may carry one: lists are often written from `ls VIDEO_DIR`.
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.gif')
ANNOTATION_SPLITS = ('Train_Set', 'Validation_Set')


class VideoListError(UsageError):
    """A video list that cannot be used; the message names the file (and line)."""


def read_video_list(path, flag='-video_list'):
    """Video (output) names of a video list, in file order: every tool reads lists with this.

    The rule: one name a line; '#' starts a comment that runs to the end of the line; blank lines
    and the whitespace around a name are ignored; a video extension (.mp4, .avi, ...) is dropped,
    so `ls VIDEO_DIR` output works; a name holding '/' or starting with '.' is not a video name,
    and a name listed twice is a mistake: both are a VideoListError naming the line.
    `<name>_left` / `<name>_right` are the two people of video `<name>` (split_person).
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise VideoListError(f"{flag} {path}: cannot read it ({err})") from None
    names, first_line = [], {}
    for number, line in enumerate(lines, start=1):
        name = line.split('#', 1)[0].strip()
        if not name:
            continue
        stem, extension = os.path.splitext(name)
        if extension.lower() in VIDEO_EXTENSIONS:
            name = stem
        if '/' in name or '\\' in name or name.startswith('.'):
            raise VideoListError(f"{flag} {path} line {number}: '{line.strip()}' is not a video "
                                 "name")
        if name in first_line:
            raise VideoListError(f"{flag} {path} line {number}: '{name}' is listed twice (first "
                                 f"on line {first_line[name]})")
        first_line[name] = number
        names.append(name)
    if not names:
        raise VideoListError(f"{flag} {path}: no video names in it")
    return names


def annotation_files(anno_folder, split=None, flag='-anno_folder', required=True, log=None):
    """{video name: annotation path} of the ABAW EXPR files (<video>.txt): every tool finds
    annotations with this.

    anno_folder is the root of the annotations, holding Train_Set/ and Validation_Set/ (the
    release's meaning); `split` picks one of those sub-folders, None takes both (a video in both
    keeps the Train_Set file). A folder that holds the .txt files directly (no such sub-folder)
    is read as it is, said in one line on `log`. Nothing found: a UsageError naming the folder
    when `required`, else {}.
    """
    if not os.path.isdir(anno_folder):
        if not required:
            return {}
        raise UsageError(f"{flag} {anno_folder}: no such folder")
    splits = ANNOTATION_SPLITS if split is None else (split,)
    folders = [os.path.join(anno_folder, name) for name in splits
               if os.path.isdir(os.path.join(anno_folder, name))]
    direct = _txt_files(anno_folder)
    if not folders and direct:
        if log is not None:
            log.info("%s %s has no %s sub-folder: read its .txt files as the annotations", flag,
                     anno_folder, ' or '.join(f"{name}/" for name in splits))
        folders = [anno_folder]
    found = {}
    for folder in folders:
        for name, path in _txt_files(folder).items():
            found.setdefault(name, path)
    if not found and required:
        if split is not None and not folders:
            raise UsageError(f"{flag} {anno_folder}: has no '{split}' sub-folder (and no <video>.txt "
                             "files of its own)")
        raise UsageError(f"{flag} {anno_folder}: no annotation files (<video>.txt) in "
                         f"{' or '.join(f'{name}/' for name in splits)} or in the folder itself")
    return found


def _txt_files(folder):
    # Dot-files include fileio's temporary files (a write in progress) and editors' backups.
    return {name[:-4]: os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if name.endswith('.txt') and not name.startswith('.')
            and os.path.isfile(os.path.join(folder, name))}


def split_person(video_name):
    """('name', 'left'|'right'|None): Aff-Wild2 names two annotated people `<name>_left`/`_right`."""
    for side in ('left', 'right'):
        if video_name.endswith('_' + side):
            return video_name[:-len(side) - 1], side
    return video_name, None
