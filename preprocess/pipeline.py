"""Per-video job of `python -m preprocess`: the face loop over one raw video, then one folder per output.

An output is the video's subject (person 1, the person present longest) or, for Aff-Wild2's
`<name>_left` / `<name>_right`, one of the two people present longest:

    OUT/<output>/00001.jpg ...   frame number = decoded frame index from 1; only frames where the
                                 output's person has a face
    OUT/<output>/detections.csv  every detection of every frame, its track (person number) and
                                 which one was kept
    OUT/<output>/.done           JSON manifest, the completion marker

Everything is written into the temporary folder OUT/.<output>.tmp-partial, the marker last, and the
folder is renamed to OUT/<output> in one step; so OUT/<output> existing means finished, and a killed
run leaves only a temporary folder (fileio.is_temporary) that the next run deletes and redoes.
While the video runs every face found is stored there as <frame>_<index>.jpg (who is who is known
only at the end); then the output's person's faces become <frame>.jpg and the others are deleted.
"""
import csv
import json
import os
import shutil
import time

from fileio import DONE_MARKER, atomic_open, is_temporary
from preprocess.faceloop import FALLBACK_FPS, Detector, FaceLoop
from preprocess.faces import LANDMARK_NAMES
from preprocess.video import probe_frame_rate

CSV_NAME = 'detections.csv'
CSV_HEADER = (['frame', 'face', 'x1', 'y1', 'x2', 'y2', 'prob']
              + [f'{name}_{axis}' for name in LANDMARK_NAMES for axis in ('x', 'y')]
              + ['track', 'chosen', 'image'])


def frame_name(index):
    """The face file of 0-based frame `index`: 00001.jpg for the first frame."""
    return f'{index:05d}.jpg'


def candidate_name(frame, index):
    """Name of a face stored before people are numbered (a .jpg, so progress is visible)."""
    return f'{frame:05d}_{index}.jpg'


def partial_dir(out_root, name):
    """The temporary folder a video is written to before it is renamed into place."""
    return os.path.join(out_root, f'.{name}.tmp-partial')


def is_done(out_root, name):
    """Whether output `name` is complete (its finished marker exists: only a whole video gets one)."""
    return os.path.isfile(os.path.join(out_root, name, DONE_MARKER))


def read_manifest(out_root, name):
    """The .done manifest of a finished output, or None."""
    try:
        with open(os.path.join(out_root, name, DONE_MARKER), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def clear_unfinished(out_root, name):
    """Remove what an interrupted run of `name` left: its temporary folder, or a folder without marker."""
    shutil.rmtree(partial_dir(out_root, name), ignore_errors=True)
    final = os.path.join(out_root, name)
    if os.path.isdir(final) and not is_done(out_root, name):
        shutil.rmtree(final)


def _csv_rows(tracked, frame, chosen_index, image):
    faces = tracked.faces[frame - 1]
    if not faces:
        return [[frame, ''] + [''] * (len(CSV_HEADER) - 5) + ['', 0, '']]
    rows = []
    for index, (face, person) in enumerate(zip(faces, tracked.person[frame - 1])):
        picked = index == chosen_index
        rows.append([frame, index]
                    + [f'{value:.2f}' for value in face.box] + [f'{face.prob:.6f}']
                    + [f'{value:.2f}' for value in face.landmarks.reshape(-1)]
                    + [person or '', int(picked), image if picked else ''])
    return rows


def _place(source, target):
    # Hard links make a second output of the same video cost nothing; copy where links fail.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def process_video(video_path, out_root, outputs=None, detector=None, settings=None, fps=None,
                  prefer_system_ffmpeg=False, progress=None, manifest_extra=None):
    """Turn one raw video into finished output folders; returns {output name: summary dict}.

    outputs: {output name: side} with side None (person 1), 'left' or 'right'; default
    {video stem: None}. detector: a Detector to share across videos; otherwise an in-process one
    is built from `settings`. fps: for tracking; probed from the video when None.
    progress: optional callable(n_frames) for progress bars.
    Raises preprocess.video.VideoDecodeError if FFmpeg fails; nothing then looks finished.
    """
    if outputs is None:
        outputs = {os.path.splitext(os.path.basename(video_path))[0]: None}
    own_detector = detector is None
    if own_detector:
        detector = Detector(settings, workers=0)
    work = {}
    try:
        for name in outputs:
            clear_unfinished(out_root, name)
            work[name] = partial_dir(out_root, name)
            os.makedirs(work[name])
        scratch = work[next(iter(outputs))]
        fps = fps or probe_frame_rate(video_path, prefer_system=prefer_system_ffmpeg)
        started = time.time()
        loop = FaceLoop(video_path, detector, fps=fps, prefer_system_ffmpeg=prefer_system_ffmpeg,
                        progress=progress)
        for crop in loop:
            with open(os.path.join(scratch, candidate_name(crop.frame, crop.index)), 'wb') as f:
                f.write(crop.jpeg)
        seconds = time.time() - started
        tracked = loop.tracked
        sides = tracked.left_right() if any(outputs.values()) else {}

        summaries = {}
        for name, side in outputs.items():
            person = sides.get(side) if side else (1 if tracked.people else None)
            faces_written = 0
            with open(os.path.join(work[name], CSV_NAME), 'w', newline='', encoding='utf-8') as f:
                writer = csv.writer(f)
                writer.writerow(CSV_HEADER)
                for frame in range(1, tracked.frames + 1):
                    index = tracked.face_index(person, frame) if person else None
                    image = ''
                    if index is not None:
                        image = frame_name(frame)
                        _place(os.path.join(scratch, candidate_name(frame, index)),
                               os.path.join(work[name], image))
                        faces_written += 1
                    writer.writerows(_csv_rows(tracked, frame, index, image))
            summaries[name] = {
                'video': os.path.abspath(video_path), 'output': name, 'side': side or 'single',
                'person': person, 'people': len(tracked.people),
                'frames': tracked.frames, 'faces': faces_written,
                'mode': detector.settings.mode, 'image_size': detector.settings.image_size,
                'fps': fps or FALLBACK_FPS, 'device': str(detector.device),
                'settings': detector.settings.as_dict(), 'seconds': round(seconds, 3),
            }
            summaries[name].update((manifest_extra or {}).get(name, {}))
        for entry in os.listdir(scratch):
            if '_' in entry and entry.endswith('.jpg'):
                os.remove(os.path.join(scratch, entry))
        for name, summary in summaries.items():
            # The marker is the last file written into the folder, and the folder's rename is the
            # commit: a crash before it leaves only a temporary name.
            with atomic_open(os.path.join(work[name], DONE_MARKER), 'w', encoding='utf-8') as f:
                json.dump(summary, f, indent=1)
            final = os.path.join(out_root, name)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(work[name], final)
        return summaries
    finally:
        for path in work.values():
            shutil.rmtree(path, ignore_errors=True)
        if own_detector:
            detector.close()


def clean_stale_temporaries(out_root, names=None):
    """Delete temporary folders/files a killed run left in OUT (they never count as finished).

    names: only those of these outputs (a shard must not delete the work of shards running beside it).
    """
    for entry in os.listdir(out_root):
        if not is_temporary(entry) or entry.startswith('.write_test'):
            continue
        if names is not None and not any(entry.startswith(f'.{name}.') for name in names):
            continue
        path = os.path.join(out_root, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
