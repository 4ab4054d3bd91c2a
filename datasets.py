"""Aff-Wild2 EXPR (ABAW) frames as a Paddle dataset, with the release's train/val transforms.

A sample is `(image CHW float32, label int64, index int64, ok int64)`:
- `label` is in the model's class space (`-1`: frame's label is invalid or outside its classes),
- `index` points into `dataset.samples` (so paths never travel through the collate function and
  distributed evaluation can drop the distributed sampler's padding by index),
- `ok` is 0 when the image was corrupt and `DATA.SKIP_BAD_IMAGES` is on (the batch row is then
  masked out by the engine and counted), 1 otherwise.

Sample discovery: annotation files `ANNO_FOLDER/<split>/<video>.txt` (labels.annotation_files) give frame i's label on line
i+1; frame i's face is `DATA_FOLDER/<video>/<i:05d>.jpg`; frames without a face image are dropped.
Three kinds of sample set, as the release made them:
- 'train' and 'val' (validation during training): the frames whose label falls in the model's
  classes, labels in the class type's space;
- 'eval' (-eval): every face image of the evaluated videos, -1 where the label is unknown or
  outside the model's classes, because fusion needs both models' output on every frame.
A data list (`DATA_LIST_TRAIN/VAL`) is the release's format: `video/00001.jpg label` per line, the
label already in the class type's space (coarse 0-4, negative 0-3). A configured list that does not
exist yet is written from the annotations for 'train'/'val'; -eval reads one but never writes it.
"""
import logging
import os

import numpy as np
from PIL import Image

import labels as abaw_labels
from errors import UsageError
from fileio import atomic_open
from transforms import train_transform, val_transform

IMAGE_SUFFIX = '.jpg'
log = logging.getLogger('cfcsp.datasets')


class DataError(UsageError):
    """Unusable data/annotation input; the message names the folder, file or line at fault."""


class BadImageError(DataError):
    """A face image that cannot be decoded (corrupt or truncated)."""


# ---------------------------------------------------------------------------------------------
# Sample discovery

def _face_images(video_dir):
    try:
        return {e.name for e in os.scandir(video_dir) if e.name.endswith(IMAGE_SUFFIX)}
    except FileNotFoundError:
        return None


def _frame_number(name):
    stem = name[:-len(IMAGE_SUFFIX)]
    return int(stem) if stem.isdigit() else None


# config.py's defaults (the release's): a user who sees one of these never typed it.
_DEFAULT_FOLDERS = {'-data_folder': './data', '-anno_folder': './anno'}


def _check_folder(path, flag):
    if not path:
        raise DataError(f"{flag} is not set")
    if not os.path.isdir(path):
        if path == _DEFAULT_FOLDERS.get(flag):
            hint = (" (-eval of videos without annotations: -video_list FILE instead)"
                    if flag == '-anno_folder' else '')
            raise DataError(f"{flag} not given and its default {path} does not exist: pass {flag} DIR{hint}")
        raise DataError(f"{flag} {path}: folder does not exist")


def annotation_files(anno_folder, split, required=True, logger=None):
    """{video: annotation path} of `split` under the annotations' root (labels.annotation_files);
    `logger` gets the line saying a folder without split sub-folders was read as it is."""
    try:
        return abaw_labels.annotation_files(anno_folder, split, required=required, log=logger or log)
    except UsageError as err:
        raise DataError(str(err)) from None


def scan_annotated(data_folder, anno_folder, split, all_frames, logger=None):
    """[(relpath, abaw_label)] for the videos annotated in `anno_folder/split`.

    all_frames=False: only frames with a face image and a label 0..7 (training).
    all_frames=True: every face image of those videos; frames past the annotation or with label -1
    get -1 (evaluation: the fusion step needs every frame).
    """
    _check_folder(data_folder, '-data_folder')
    _check_folder(anno_folder, '-anno_folder')
    samples = []
    for video, anno_path in annotation_files(anno_folder, split, logger=logger).items():
        frame_labels = abaw_labels.read_annotation(anno_path)
        images = _face_images(os.path.join(data_folder, video))
        if not images:
            continue
        if all_frames:
            for name in sorted(images):
                number = _frame_number(name)
                label = frame_labels[number - 1] if number and number <= len(frame_labels) else -1
                samples.append((f"{video}/{name}", label))
        else:
            for number, label in enumerate(frame_labels, start=1):
                name = f"{number:05d}{IMAGE_SUFFIX}"
                if label >= 0 and name in images:
                    samples.append((f"{video}/{name}", label))
    return samples


def scan_unannotated(data_folder, videos=None, anno_folder=None, split=None):
    """Every face image of `videos` (default: every sub-folder of data_folder), label -1 unless an
    annotation file for that video exists in anno_folder/split."""
    _check_folder(data_folder, '-data_folder')
    if videos is None:
        videos = sorted(e.name for e in os.scandir(data_folder) if e.is_dir())
    annotations = annotation_files(anno_folder, split, required=False) if anno_folder and split else {}
    samples = []
    for video in videos:
        images = _face_images(os.path.join(data_folder, video))
        if images is None:
            raise DataError(f"-data_folder {data_folder}: no folder for video '{video}'")
        frame_labels = []
        if video in annotations:
            frame_labels = abaw_labels.read_annotation(annotations[video])
        for name in sorted(images):
            number = _frame_number(name)
            label = frame_labels[number - 1] if number and number <= len(frame_labels) else -1
            samples.append((f"{video}/{name}", label))
    return samples


def read_data_list(path, class_type):
    """[(relpath, label)] from a list in the release's format, labels in class_type's space."""
    num_classes = abaw_labels.NUM_CLASSES[abaw_labels.check_class_type(class_type)]
    samples = []
    with open(path, 'r', encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            try:
                label = int(parts[1])
            except (IndexError, ValueError):
                raise DataError(f"{path}:{line_no}: expected 'video/00001.jpg label', got '{text}'") from None
            if not 0 <= label < num_classes:
                raise DataError(f"{path}:{line_no}: label {label} is outside 0..{num_classes - 1}, the "
                                f"'{class_type}' classes (a list holds labels already mapped to its class type)")
            samples.append((parts[0], label))
    if not samples:
        raise DataError(f"{path}: data list is empty")
    return samples


def write_data_list(path, samples):
    """Write [(relpath, label)] in the release's list format, atomically."""
    with atomic_open(path, 'w', encoding='utf-8', newline='\n') as f:
        f.writelines(f"{rel} {label}\n" for rel, label in samples)


MODES = ('train', 'val', 'eval')


def collect_samples(data_folder, anno_folder, split, class_type, mode, data_list=None, video_list=None,
                    list_flag='-data_list', logger=None):
    """[(relpath, label in class_type's space)] for one split.

    mode 'train' / 'val': only frames whose label maps into class_type's classes. mode 'eval':
    every face image, -1 for frames outside those classes; without annotations (test set: no
    anno_folder, or a video list whose videos have no annotation file) every label is -1.
    """
    abaw_labels.check_class_type(class_type)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if data_list and os.path.isfile(data_list):
        return read_data_list(data_list, class_type)
    if data_list and mode == 'eval':
        raise DataError(f"{list_flag} {data_list}: file does not exist (with -eval a list names the frames "
                        "to evaluate; leave it out to evaluate every face frame)")
    if mode == 'eval' and video_list:
        abaw = scan_unannotated(data_folder, abaw_labels.read_video_list(video_list), anno_folder, split)
    elif mode == 'eval' and not anno_folder:
        abaw = scan_unannotated(data_folder)
    else:
        if not anno_folder:
            raise DataError(f"-anno_folder is required {'for training' if mode == 'train' else 'to validate'}")
        abaw = scan_annotated(data_folder, anno_folder, split, all_frames=mode == 'eval', logger=logger)
    where = video_list or (f"{anno_folder}/{split}" if anno_folder else data_folder)
    mapped = [(rel, abaw_labels.map_label(label, class_type)) for rel, label in abaw]
    if mode != 'eval':
        mapped = [(rel, label) for rel, label in mapped if label >= 0]
    if not mapped:
        raise DataError(f"-data_folder {data_folder}: no usable frame for class_type '{class_type}' "
                        f"(from {where})")
    if data_list:
        write_data_list(data_list, mapped)
    return mapped


# ---------------------------------------------------------------------------------------------
# Dataset

try:
    from paddle.io import Dataset as _PaddleDataset
except ImportError:  # keeps sample discovery usable by tools that do not import paddle
    _PaddleDataset = object


def load_image(path):
    """Decode a face image as RGB now, or raise BadImageError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now so a truncated file fails here, not inside a transform
            return img.convert('RGB')
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImageError(f"{path}: cannot decode face image ({err})") from None


class AbawDataset(_PaddleDataset):
    """Samples `(image, label, index, ok)`. A corrupt image never raises here: it comes back with
    ok=0 and a blank image, and the engine either stops naming the file (default) or drops and
    counts it (DATA.SKIP_BAD_IMAGES). Raising inside Paddle's loader thread/workers would hang or
    bury the file name in a worker traceback."""

    def __init__(self, data_folder, samples, transform, skip_bad_images=False):
        super().__init__()
        self.data_folder = data_folder
        self.samples = samples
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.epoch = 0  # read by worker_init so worker RNG streams differ per epoch but repeat on resume

    def __len__(self):
        return len(self.samples)

    def path(self, index):
        return os.path.join(self.data_folder, self.samples[index][0])

    def __getitem__(self, index):
        rel, label = self.samples[index]
        try:
            img = load_image(os.path.join(self.data_folder, rel))
        except BadImageError:
            size = self._output_size()
            return np.zeros((3, size, size), np.float32), np.int64(label), np.int64(index), np.int64(0)
        return self.transform(img), np.int64(label), np.int64(index), np.int64(1)

    def bad_image_error(self, index):
        """The BadImageError (with the decoder's reason) for a sample that came back with ok=0."""
        try:
            load_image(self.path(index))
        except BadImageError as err:
            return BadImageError(f"{err} (DATA.SKIP_BAD_IMAGES True skips such frames)")
        return BadImageError(f"{self.path(index)}: could not be decoded during loading")

    def _output_size(self):
        if not hasattr(self, '_size'):
            probe = self.transform(Image.new('RGB', (64, 64)))
            self._size = probe.shape[-1]
        return self._size


def build_dataset(config, mode, logger=None):
    """The dataset for mode 'train', 'val' (validation during training) or 'eval' (-eval); `logger`
    gets the line saying how the annotation folder was read, when it had no split sub-folders."""
    if config.DATA.DATASET != 'ABAW':
        raise DataError(f"-dataset {config.DATA.DATASET}: only ABAW is supported (as in the release)")
    train = mode == 'train'
    split = config.DATA.TRAIN_SPLIT if train else config.DATA.VAL_SPLIT
    data_list = config.DATA.DATA_LIST_TRAIN if train else config.DATA.DATA_LIST_VAL
    video_list = (config.DATA.VIDEO_LIST or None) if mode == 'eval' else None
    samples = collect_samples(config.DATA.DATA_FOLDER, config.DATA.ANNO_FOLDER, split,
                              config.DATA.CLASS_TYPE, mode, data_list or None, video_list,
                              list_flag='-data_list_train' if train else '-data_list_val', logger=logger)
    transform = train_transform(config) if train else val_transform(config)
    return AbawDataset(config.DATA.DATA_FOLDER, samples, transform,
                       bool(config.DATA.SKIP_BAD_IMAGES))
