"""Which videos `python -m preprocess` turns into which output folders.

Every video of VIDEO_DIR is processed. An output is named after the video, or after an annotation
file / a -video_list line: `<name>_left` / `<name>_right` are the two people of video `<name>`
(unless a video is itself called that). Videos that no annotation names are processed as
single-subject videos (person 1), because a test set has faces to find but no labels.
"""
import collections
import logging
import os

from errors import UsageError
from labels import AnnotationError, annotation_files, read_annotation, split_person
from preprocess.video import is_video_file

log = logging.getLogger('preprocess')

Plan = collections.namedtuple('Plan', ['jobs', 'problems', 'label_counts', 'unannotated'])
Plan.__doc__ = """jobs: [(video path, {output name: side})], one per raw video, sorted by video name;
problems: messages for names that cannot be produced; label_counts: {output: annotation lines};
unannotated: outputs without an annotation file (only counted when annotations were given)."""


class PlanError(UsageError):
    """A folder or list that makes the whole run impossible; the message names it."""


def find_videos(video_dir):
    """{stem: path} of every video under video_dir; two videos with one stem are an error."""
    videos = {}
    for root, dirs, files in os.walk(video_dir):
        dirs.sort()
        for name in sorted(files):
            if not is_video_file(name) or name.startswith('.'):
                continue
            stem = os.path.splitext(name)[0]
            path = os.path.join(root, name)
            if stem in videos:
                raise PlanError(f"VIDEO_DIR has two videos named '{stem}': {videos[stem]} and {path}")
            videos[stem] = path
    return videos


def resolve_output(name, videos):
    """(raw video stem, side) that output `name` comes from, or None if VIDEO_DIR has no such video."""
    if name in videos:
        return name, None
    raw, side = split_person(name)
    if side and raw in videos:
        return raw, side
    return None


def plan_jobs(videos, anno_folder=None, names=None):
    """The Plan for {stem: path} videos, optional annotation folder and optional list of output names."""
    problems, label_counts = [], {}
    annotations = {}
    if anno_folder is not None:
        annotations = annotation_files(anno_folder, log=log)
    wanted = names if names is not None else list(annotations)
    outputs = collections.defaultdict(dict)
    for name in wanted:
        source = resolve_output(name, videos)
        if source is None:
            where = f" for annotation {annotations[name]}" if name in annotations else ''
            problems.append(f"{name}: no video '{split_person(name)[0]}.*' in VIDEO_DIR{where}")
            continue
        if name in annotations:
            try:
                label_counts[name] = len(read_annotation(annotations[name]))
            except AnnotationError as err:
                problems.append(str(err))
                continue
        outputs[source[0]][name] = source[1]
    if names is None:
        # Every video no annotation names is a single-subject video (e.g. the test set).
        annotated = {source[0] for source in (resolve_output(name, videos) for name in annotations)
                     if source is not None}
        for stem in videos:
            if stem not in annotated:
                outputs[stem][stem] = None
    jobs = [(videos[stem], outputs[stem]) for stem in sorted(outputs)]
    unannotated = ([name for _, named in jobs for name in named if name not in annotations]
                   if anno_folder is not None else [])
    return Plan(jobs, problems, label_counts, unannotated)
