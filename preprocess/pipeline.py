"""Per-video job: decode every frame, detect faces in batches, write aligned crops and detections.csv.

Output of one video (one "output name"; Aff-Wild2's `<name>_left` / `<name>_right` are two outputs
of the raw video `<name>`):

    OUT/<output>/00001.jpg ...   frame number = decoded frame index from 1; only frames with a face
    OUT/<output>/detections.csv  every detection of every frame and which one was kept
    OUT/<output>/.done           JSON manifest, the completion marker

Everything is written into the temporary folder OUT/.<output>.tmp-partial, the marker last, and the
folder is renamed to OUT/<output> in one step; so OUT/<output> existing means finished, and a killed
run leaves only a temporary folder (fileio.is_temporary) that the next run deletes and redoes.
"""
import collections
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import csv
import json
import multiprocessing
import os
import shutil
import time


from fileio import atomic_open, is_temporary
from preprocess.faces import LANDMARK_NAMES, FaceAligner, encode_face, select_face
from preprocess.video import VideoDecodeError, iter_frames

DONE_MARKER = '.done'
CSV_NAME = 'detections.csv'
CSV_HEADER = (['frame', 'face', 'x1', 'y1', 'x2', 'y2', 'prob']
              + [f'{name}_{axis}' for name in LANDMARK_NAMES for axis in ('x', 'y')]
              + ['chosen', 'image'])


def frame_name(index):
    return f'{index:05d}.jpg'


def partial_dir(out_root, name):
    return os.path.join(out_root, f'.{name}.tmp-partial')


def is_done(out_root, name):
    return os.path.isfile(os.path.join(out_root, name, DONE_MARKER))


def clear_unfinished(out_root, name):
    """Remove what an interrupted run of `name` left: its temporary folder, or a folder without marker."""
    shutil.rmtree(partial_dir(out_root, name), ignore_errors=True)
    final = os.path.join(out_root, name)
    if os.path.isdir(final) and not is_done(out_root, name):
        shutil.rmtree(final)


# ---- detection backends: in-process, or a pool of worker processes ----------------------------

_worker_aligner = None


def _init_worker(aligner_kwargs, torch_threads):
    global _worker_aligner
    import torch

    # Several single-threaded MTCNNs side by side use the cores better than one multi-threaded one:
    # MTCNN's small convolutions and per-box Python work scale poorly over threads.
    torch.set_num_threads(torch_threads)
    _worker_aligner = FaceAligner(**aligner_kwargs)


def _detect_in_worker(frames):
    return _worker_aligner.detect_batch(frames)


# What stops one video without stopping a folder run (preprocess and predict_video alike).
VIDEO_FAILURES = (VideoDecodeError, BrokenProcessPool, OSError, ValueError, RuntimeError)


def video_failure(label, err, detector):
    """The summary line for a video that raised one of VIDEO_FAILURES. A crashed detection worker
    breaks the whole pool, so the pool is replaced here for the videos that follow."""
    if isinstance(err, VideoDecodeError):
        return f"{label}: {err}"
    if isinstance(err, BrokenProcessPool):
        detector.restart()
        return f"{label}: a detection worker died ({err}); restarting workers"
    return f"{label}: {type(err).__name__}: {err}"


class Detector:
    """detect_batch over one in-process FaceAligner (workers=0, e.g. on GPU) or a process pool.

    `map(batches)` yields detections batch by batch, in order, with at most `2 * workers` batches in
    flight so a long video is never held in memory.
    """

    def __init__(self, aligner_kwargs, workers=0, torch_threads=None):
        self.aligner_kwargs = dict(aligner_kwargs)
        self.workers = int(workers)
        # The cores are shared out between the workers (on an idle 2-core machine one MTCNN on
        # 2 threads ran 19.5 frames/s, on 1 thread 11.6: threads do help when they have cores).
        self.torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))
        self.aligner = None
        self.pool = None
        if self.workers <= 0:
            self.aligner = FaceAligner(**self.aligner_kwargs)
        else:
            self._start_pool()

    def _start_pool(self):
        # spawn: forking a process that may already run torch threads can deadlock the child.
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context('spawn'),
            initializer=_init_worker, initargs=(self.aligner_kwargs, self.torch_threads))

    def restart(self):
        """Replace a pool broken by a crashed worker so the following videos still run."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._start_pool()

    def map(self, batches):
        if self.pool is None:
            for batch in batches:
                yield batch, self.aligner.detect_batch(batch)
            return
        pending = collections.deque()
        try:
            for batch in batches:
                pending.append((batch, self.pool.submit(_detect_in_worker, batch)))
                if len(pending) >= 2 * self.workers:
                    batch_done, future = pending.popleft()
                    yield batch_done, future.result()
            while pending:
                batch_done, future = pending.popleft()
                yield batch_done, future.result()
        finally:
            for _, future in pending:
                future.cancel()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def batches(frames, batch_size):
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv_rows(frame_index, faces, chosen, image):
    if not faces:
        return [[frame_index, ''] + [''] * (len(CSV_HEADER) - 4) + [0, '']]
    rows = []
    for face_index, face in enumerate(faces):
        picked = face is chosen
        rows.append([frame_index, face_index]
                    + [f'{value:.2f}' for value in face.box] + [f'{face.prob:.6f}']
                    + [f'{value:.2f}' for value in face.landmarks.reshape(-1)]
                    + [int(picked), image if picked else ''])
    return rows


def process_video(video_path, out_root, outputs=None, detector=None, aligner_kwargs=None,
                  batch_size=8, jpeg_quality=95, prefer_system_ffmpeg=False, progress=None,
                  manifest_extra=None):
    """Turn one raw video into finished output folders; returns {output name: summary dict}.

    outputs: {output name: side} with side None (most confident face), 'left' or 'right'; default
    {video stem: None}. detector: a Detector to share across videos; otherwise an in-process one is
    built from aligner_kwargs. progress: optional callable(n_frames) for progress bars.
    Raises preprocess.video.VideoDecodeError if FFmpeg fails; nothing then looks finished.
    """
    if outputs is None:
        outputs = {os.path.splitext(os.path.basename(video_path))[0]: None}
    own_detector = detector is None
    if own_detector:
        detector = Detector(aligner_kwargs or {}, workers=0)
    min_prob = detector.aligner_kwargs.get('min_prob', 0.9)
    geometry = detector.aligner or FaceAligner(**detector.aligner_kwargs)

    work = {}
    csv_files = {}
    frames = results = None
    try:
        for name in outputs:
            clear_unfinished(out_root, name)
            work[name] = partial_dir(out_root, name)
            os.makedirs(work[name])
            csv_files[name] = open(os.path.join(work[name], CSV_NAME), 'w', newline='', encoding='utf-8')
        writers = {name: csv.writer(f) for name, f in csv_files.items()}
        for writer in writers.values():
            writer.writerow(CSV_HEADER)
        faces_written = dict.fromkeys(outputs, 0)
        frame_index = 0
        started = time.time()
        frames = iter_frames(video_path, prefer_system=prefer_system_ffmpeg)
        results = detector.map(batches(frames, batch_size))
        for batch, detections in results:
            for frame, faces in zip(batch, detections):
                frame_index += 1
                for name, side in outputs.items():
                    chosen = select_face(faces, side=side, min_prob=min_prob)
                    image = ''
                    if chosen is not None:
                        image = frame_name(frame_index)
                        with open(os.path.join(work[name], image), 'wb') as f:
                            f.write(encode_face(geometry.align(frame, chosen), jpeg_quality))
                        faces_written[name] += 1
                    writers[name].writerows(_csv_rows(frame_index, faces, chosen, image))
            if progress is not None:
                progress(len(batch))
        seconds = time.time() - started
        if frame_index == 0:
            raise VideoDecodeError(f"{video_path}: ffmpeg decoded no frames")

        summaries = {}
        for name, side in outputs.items():
            csv_files[name].close()
            summary = {
                'video': os.path.abspath(video_path), 'output': name, 'side': side or 'most_confident',
                'frames': frame_index, 'faces': faces_written[name],
                'mode': geometry.mode, 'image_size': geometry.image_size,
                'settings': {key: list(value) if isinstance(value, tuple) else value
                             for key, value in detector.aligner_kwargs.items()},
                'seconds': round(seconds, 3),
            }
            summary.update((manifest_extra or {}).get(name, {}))
            # The marker is the last file written into the folder, and the folder's rename is the
            # commit: a crash before it leaves only a temporary name.
            with atomic_open(os.path.join(work[name], DONE_MARKER), 'w', encoding='utf-8') as f:
                json.dump(summary, f, indent=1)
            final = os.path.join(out_root, name)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(work[name], final)
            summaries[name] = summary
        return summaries
    finally:
        # Closing the generators stops FFmpeg and cancels queued detections when a video fails.
        for generator in (results, frames):
            if generator is not None:
                generator.close()
        for f in csv_files.values():
            f.close()
        for path in work.values():
            shutil.rmtree(path, ignore_errors=True)
        if own_detector:
            detector.close()


def clean_stale_temporaries(out_root):
    """Delete temporary folders/files a killed run left in OUT (they never count as finished)."""
    for entry in os.listdir(out_root):
        if is_temporary(entry) and not entry.startswith('.write_test'):
            path = os.path.join(out_root, entry)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
