"""The face loop behind `python -m preprocess` and predict_video.py: decode -> detect -> track -> align
-> encode, one video at a time, in one pass.

    with Detector(FaceSettings(), device='cpu', workers=2) as detector:
        loop = FaceLoop('clip.mp4', detector, fps=25)
        for crop in loop:                 # every face of at least min_prob, frame by frame
            keep(crop.frame, crop.index, crop.jpeg)
        loop.tracked.people               # afterwards: people 1..P, loop.tracked.person[t][i]

Which person a face belongs to is only settled once the whole video was seen (person 1 = most
frames), so callers keep each crop under (frame, index) and choose at the end.
"""
import collections
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import os
import re
import time

from errors import UsageError
from preprocess.faces import (FaceAligner, FaceAlignError, FaceSettings, detection_scale, encode_face,
                              scale_face, shrink)
from preprocess.tracking import FaceTracker, TrackedVideo
from preprocess.video import VideoDecodeError, VideoEncodeError, iter_frames

# Tracking needs a frame rate; videos that state none are taken to be at this one.
FALLBACK_FPS = 30.0

FaceCrop = collections.namedtuple('FaceCrop', ['frame', 'index', 'face', 'jpeg'])
FaceCrop.__doc__ = """A face of at least min_prob: frame (1-based), index (in that frame's detections,
most confident first), face (preprocess.faces.Face in full-frame pixels), jpeg (the aligned face,
encoded as the face files are)."""

# What one bad video raises: it is named and counted, and a folder run goes on (preprocess and
# predict_video alike). Nothing else is caught per video: a UsageError (a bad flag or input) stops
# the run with exit 2, and any other exception is a bug and shows its traceback.
VIDEO_FAILURES = (VideoDecodeError, VideoEncodeError, FaceAlignError, BrokenProcessPool, OSError)


def video_failure(label, err, detector):
    """The summary line for a video that raised one of VIDEO_FAILURES. A crashed detection worker
    breaks the whole pool, so the pool is replaced here for the videos that follow."""
    if isinstance(err, VideoDecodeError):
        return f"{label}: {err}"
    if isinstance(err, BrokenProcessPool):
        detector.restart()
        return f"{label}: a detection worker died ({err}); restarting workers"
    return f"{label}: {type(err).__name__}: {err}"


def torch_device(device):
    """torch's name of a -device value (cpu, gpu, gpu:N; cuda, cuda:N accepted); a GPU asked for
    where torch sees none is one UsageError, before any video is touched."""
    match = re.fullmatch(r'(cpu|gpu|cuda)(?::(\d+))?', device)
    if not match or (match.group(1) == 'cpu' and match.group(2)):
        raise UsageError(f"-device {device}: choose cpu or gpu (gpu:N for GPU N)")
    if match.group(1) == 'cpu':
        return 'cpu'
    import torch  # only a GPU run pays for importing torch here (the workers import it anyway)
    index = int(match.group(2) or 0)
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise UsageError(f"-device {device}: torch sees no usable GPU"
                         f"{'' if not torch.cuda.is_available() else f' {index}'} on this machine "
                         "(use -device cpu)")
    return f'cuda:{match.group(2)}' if match.group(2) else 'cuda'


def default_workers(device):
    """Detection worker processes when none are asked for: one per core on CPU, none on a GPU."""
    return 0 if str(device).startswith('cuda') else (os.cpu_count() or 1)


# ---- detection backends: in-process, or a pool of worker processes ----------------------------

_worker_aligner = None


def _init_worker(device, settings, torch_threads):
    global _worker_aligner
    import torch  # only the processes that run MTCNN need torch (seconds to import)

    # Several single-threaded MTCNNs side by side use the cores better than one multi-threaded one:
    # MTCNN's small convolutions and per-box Python work scale poorly over threads.
    torch.set_num_threads(torch_threads)
    _worker_aligner = FaceAligner(device, settings)


def _detect_in_worker(frames):
    return _worker_aligner.detect_batch(frames)


class Detector:
    """detect_batch over one in-process FaceAligner (workers=0, e.g. on GPU) or a process pool.

    `map(items)` takes (key, frames) pairs and yields (key, detections) in order, with at most
    `2 * workers` batches in flight so a long video is never held in memory.
    """

    def __init__(self, settings=None, device='cpu', workers=0, torch_threads=None):
        self.settings = settings or FaceSettings()
        self.device = device
        self.workers = int(workers)
        # The cores are shared out between the workers: MTCNN's torch threads do help when they
        # have cores of their own (benchmarks/RESULTS.md).
        self.torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))
        self.aligner = FaceAligner(device, self.settings)
        self.pool = None
        if self.workers > 0:
            self._start_pool()

    def _start_pool(self):
        # spawn: forking a process that may already run torch threads can deadlock the child.
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context('spawn'),
            initializer=_init_worker, initargs=(self.device, self.settings, self.torch_threads))

    def restart(self):
        """Replace a pool broken by a crashed worker so the following videos still run."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._start_pool()

    def map(self, items):
        if self.pool is None:
            for key, frames in items:
                yield key, self.aligner.detect_batch(frames)
            return
        pending = collections.deque()
        try:
            for key, frames in items:
                pending.append((key, self.pool.submit(_detect_in_worker, frames)))
                if len(pending) >= 2 * self.workers:
                    key_done, future = pending.popleft()
                    yield key_done, future.result()
            while pending:
                key_done, future = pending.popleft()
                yield key_done, future.result()
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


def batches(items, batch_size):
    """Lists of up to `batch_size` consecutive items."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class StageClock:
    """Seconds spent per stage; `timed_iter` charges the time inside next() to one stage."""

    def __init__(self):
        self.seconds = {}

    def add(self, stage, seconds):
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def timed_iter(self, iterable, stage):
        iterator = iter(iterable)
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.add(stage, time.perf_counter() - start)
                yield item
        finally:
            close = getattr(iterator, 'close', None)
            if close is not None:
                close()


class FaceLoop:
    """One video through decode -> detect -> track -> align -> encode; iterate once for FaceCrops.

    Detection runs on a copy shrunk to settings.detect_size when the frame is larger, and the
    detections are scaled back so the crop is cut from the full-resolution frame. The settings are
    the detector's. After the iteration `tracked` is the TrackedVideo and `clock.seconds` holds
    decode / detect / track / align seconds (detect includes shrinking). progress: optional
    callable(n_frames).
    """

    def __init__(self, video_path, detector, fps=None, prefer_system_ffmpeg=False, progress=None,
                 clock=None):
        self.video_path = video_path
        self.detector = detector
        self.settings = detector.settings
        self.fps = fps or FALLBACK_FPS
        self.prefer_system_ffmpeg = prefer_system_ffmpeg
        self.progress = progress
        self.clock = clock or StageClock()
        self.tracked = None

    def _detection_items(self, frames):
        for batch in batches(frames, self.settings.detect_batch):
            scales = [detection_scale(frame.shape, self.settings.detect_size) for frame in batch]
            yield (batch, scales), [shrink(frame, scale) for frame, scale in zip(batch, scales)]

    def __iter__(self):
        settings, clock = self.settings, self.clock
        tracker = FaceTracker(self.fps, settings.min_prob, settings.track_gap_s)
        all_faces = []
        size = (0, 0)
        frames = clock.timed_iter(iter_frames(self.video_path, prefer_system=self.prefer_system_ffmpeg),
                                  'decode')
        results = self.detector.map(self._detection_items(frames))
        try:
            while True:
                start = time.perf_counter()
                decode_before = clock.seconds.get('decode', 0.0)
                step = next(results, None)
                # map() pulls frames from the decoder itself: that share is decoding, not detection.
                clock.add('detect', time.perf_counter() - start
                          - (clock.seconds.get('decode', 0.0) - decode_before))
                if step is None:
                    break
                (batch, scales), detections = step
                for frame, scale, faces in zip(batch, scales, detections):
                    start = time.perf_counter()
                    faces = [scale_face(face, 1 / scale) for face in faces]
                    all_faces.append(faces)
                    tracker.update(faces)
                    clock.add('track', time.perf_counter() - start)
                    start = time.perf_counter()
                    size = frame.shape[1], frame.shape[0]
                    crops = [FaceCrop(len(all_faces), index, face,
                                      encode_face(self.detector.aligner.align(frame, face), settings.jpeg_quality))
                             for index, face in enumerate(faces) if face.prob >= settings.min_prob]
                    clock.add('align', time.perf_counter() - start)
                    yield from crops
                if self.progress is not None:
                    self.progress(len(batch))
        finally:
            # Closing the generators stops FFmpeg and cancels queued detections when a video fails.
            results.close()
            frames.close()
        if not all_faces:
            raise VideoDecodeError(f"{self.video_path}: ffmpeg decoded no frames")
        self.tracked = TrackedVideo(all_faces, tracker.ids, settings.min_prob, *size)
