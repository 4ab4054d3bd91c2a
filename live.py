"""predict_video.py -live: a camera, a stream or a video file played at its own frame rate,
classified as the frames arrive.

    source thread --(bounded queue: frames that do not fit are skipped)--> adaptive.Sampler
        --> causal smoothing (causal.py) per person --> CSV rows, flushed at least once a second

- The source is read by FFmpeg in a thread. When the models fall behind, the queue fills and
  its oldest frame is dropped rather than the queue grown: it is counted as skipped and gets its
  row like any frame (filled along the people present on both sides, adaptive.py).
- Smoothing cannot wait for the future, so it is causal: the release's 2K+1 frames, ending at
  the current one (causal.py). The CSV says so in its `smoothing` column.
- Rows reach the file as frames are decided and are flushed at least every FLUSH_S seconds, so a
  killed run loses about the last second; Ctrl-C or SIGTERM, the end of a file, or no frame for
  -live_timeout seconds all end the run the same way: every frame seen gets its row and the
  files are closed.
- The latency of a frame is the time from its arrival (read from the source) to its row being
  written; the run ends with the median and 95th percentile.

The CSV has predict_video's columns plus `processed` (1: detected and classified, 0: filled or
skipped), `person` (numbered in order of appearance) and `smoothing`; a frame with several
people has one row per person, a frame without a face one row with face 0 and the last label.
"""
import collections
import csv
import logging
import os
import queue
import re
import signal
import sys
import threading
import time

import numpy as np

import adaptive
from causal import CausalSmoother
from errors import CfcspError, UsageError
from labels import ABAW_CLASSES
from preprocess.faceloop import FALLBACK_FPS, StageClock
from preprocess.tracking import FaceTracker
from preprocess.video import VideoDecodeError, iter_frames, probe_frame_rate

log = logging.getLogger('predict_video')

FLUSH_S = 1.0
STATUS_S = 1.0
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_QUEUE = 8
LIVE_COLUMNS = ['processed', 'person', 'smoothing']


def add_arguments(parser):
    """-live, -live_timeout, -live_queue, -show (predict_video.py)."""
    parser.add_argument('-live', action='store_true',
                        help='VIDEO_OR_FOLDER is a live source: a webcam index (0), a stream URL FFmpeg '
                             'opens, or a video file played at its own frame rate; frames are classified '
                             'as they arrive (causal smoothing; see docs/realtime.md)')
    parser.add_argument('-live_timeout', type=float, default=DEFAULT_TIMEOUT_S,
                        help='-live: end the run when the source sends no frame for this many seconds '
                             '(default %(default)g)')
    parser.add_argument('-live_queue', type=int, default=DEFAULT_QUEUE,
                        help='-live: frames waiting for the models at most; when a frame arrives at a '
                             'full queue the oldest waiting frame is skipped (default %(default)d)')
    parser.add_argument('-show', action='store_true',
                        help='-live: show the frames with boxes and labels in a window (needs a display '
                             'and an OpenCV with window support)')


def check_arguments(parser, args):
    if args.live_timeout <= 0:
        parser.error(f"-live_timeout must be > 0, got {args.live_timeout}")
    if args.live_queue < 1:
        parser.error(f"-live_queue must be >= 1, got {args.live_queue}")
    if args.show and not args.live:
        parser.error("-show goes with -live")


# ----------------------------------------------------------------------------- the source

def describe_source(spec):
    """(output name, FFmpeg input, input options, frames/s to pace a file at or None)."""
    if re.fullmatch(r'\d+', spec):
        if sys.platform.startswith('linux'):
            return f'camera{spec}', f'/dev/video{spec}', {'format': 'v4l2'}, None
        if sys.platform == 'darwin':
            return f'camera{spec}', spec, {'format': 'avfoundation'}, None
        return f'camera{spec}', f'video={spec}', {'format': 'dshow'}, None
    if '://' in spec:
        name = re.sub(r'[^A-Za-z0-9_.-]+', '_', spec.split('://', 1)[1]).strip('_')[:60] or 'stream'
        return name, spec, {}, None
    if not os.path.isfile(spec):
        raise CfcspError(f"{spec}: cannot open the live source: no such file, camera index or URL")
    return os.path.splitext(os.path.basename(spec))[0], spec, {}, probe_frame_rate(spec) or FALLBACK_FPS


class LiveSource:
    """Reads frames in a thread into a bounded queue of (number, arrival, image); when the queue is
    full its oldest frame is dropped and recorded in `dropped` as (number, arrival). The queue
    ends with None, or with the exception that stopped the reader."""

    def __init__(self, spec, queue_size=DEFAULT_QUEUE):
        self.spec = spec
        self.name, self.input, self.options, self.pace_fps = describe_source(spec)
        self.queue = queue.Queue(maxsize=queue_size)
        self.dropped = collections.deque()
        self.read = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name='live-source', daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _read(self):
        frames = iter_frames(self.input, input_options=self.options)
        started = None
        try:
            for image in frames:
                if self.stop.is_set():
                    break
                if started is None:
                    started = time.monotonic()
                if self.pace_fps:
                    # A file plays like a camera: frame n is available n / fps seconds after the first.
                    delay = started + self.read / self.pace_fps - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        break
                self.read += 1
                self._put((self.read, time.monotonic(), image))
            end = None
        except Exception as err:  # noqa: BLE001  (handed to the main thread, which reports it)
            end = err
        finally:
            frames.close()
        while not self.stop.is_set():
            try:
                self.queue.put(end, timeout=0.1)
                return
            except queue.Full:
                continue

    def _put(self, item):
        # A full queue loses its oldest frame, not the new one: what the models see next is then
        # at most queue-size frames old, which bounds the latency.
        with self.lock:
            while True:
                try:
                    self.queue.put_nowait(item)
                    return
                except queue.Full:
                    pass
                try:
                    oldest = self.queue.get_nowait()
                except queue.Empty:
                    continue
                self.dropped.append(oldest[:2])

    def get(self, timeout=None):
        """The next item; frames dropped before it are in `dropped` by then."""
        item = self.queue.get(timeout=timeout)
        with self.lock:  # a drop under way (oldest taken, not yet recorded) finishes first
            return item

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


# ----------------------------------------------------------------------------- the output

class LiveWriter:
    """The CSV of a live run: rows appended as frames are decided, flushed every FLUSH_S seconds.
    Not written through a temporary file: its point is that the rows are there while it runs."""

    def __init__(self, path, fps, header):
        self.path = path
        self.fps = fps
        self.file = open(path, 'w', encoding='utf-8', newline='')
        self.writer = csv.writer(self.file, lineterminator='\n')
        self.last_flush = time.monotonic()
        self.writer.writerow(list(header) + LIVE_COLUMNS)
        self.flush()

    def row(self, frame, face, person, probs, label, processed):
        time_text = f"{(frame - 1) / self.fps:.3f}" if self.fps else ''
        if face is None:
            self.writer.writerow([frame, time_text, 0] + [''] * (5 + len(ABAW_CLASSES))
                                 + [ABAW_CLASSES[label], label, int(processed), '', 'causal'])
        else:
            self.writer.writerow([frame, time_text, 1] + [f"{v:.1f}" for v in face.box] + [f"{face.prob:.4f}"]
                                 + [f"{p:.6f}" for p in probs] + [ABAW_CLASSES[label], label,
                                                                  int(processed), person, 'causal'])

    def maybe_flush(self):
        if time.monotonic() - self.last_flush >= FLUSH_S:
            self.flush()

    def flush(self):
        self.file.flush()
        self.last_flush = time.monotonic()

    def close(self):
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


class Stats:
    """Frames seen / processed / filled / skipped and the latency of each row."""

    def __init__(self):
        self.counts = collections.Counter()
        self.latency = []

    def line(self):
        counts = self.counts
        text = (f"frames seen {counts['seen']}, processed {counts['processed']}, filled {counts['filled']}, "
                f"skipped {counts['skipped']}")
        if self.latency:
            median, p95 = np.percentile(self.latency, [50, 95])
            text += f"; latency from arrival to row: median {median:.3f} s, 95th percentile {p95:.3f} s"
        return text


class Show:
    """-show: the latest processed frame with boxes and labels, where a window can be opened."""

    def __init__(self, enabled):
        self.enabled = enabled
        if enabled and sys.platform.startswith('linux') and not (os.environ.get('DISPLAY')
                                                                 or os.environ.get('WAYLAND_DISPLAY')):
            log.warning("-show: no display (DISPLAY is not set); going on without a window")
            self.enabled = False

    def __call__(self, image, shown):
        if not self.enabled or image is None:
            return
        import cv2
        frame = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        for box, text in shown:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), 2)
            cv2.putText(frame, text, (x1, max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
        try:
            cv2.imshow('predict_video -live', frame)
            cv2.waitKey(1)
        except cv2.error as err:
            log.warning("-show: OpenCV cannot open a window (%s); going on without one",
                        str(err).strip().splitlines()[-1])
            self.enabled = False


# ----------------------------------------------------------------------------- the run

def warm_up(analyse, classify, clock):
    """One detection and one call of each model before the source opens: their first calls load
    weights and build kernels (seconds), which would otherwise be the first frames' latency."""
    from PIL import Image
    analyse([0], [np.zeros((120, 160, 3), np.uint8)])
    classify([Image.new('RGB', (224, 224))], clock)
    clock.seconds.clear()


class _Terminated(Exception):
    pass


def _drain(items):
    while True:
        try:
            yield items.get_nowait()
        except queue.Empty:
            return


def run_live(args, detector, classify, smoothing, csv_header, out_dir):
    """One live run; returns {'name', 'csv', 'stats', 'interrupted', 'seconds'}.
    classify(PIL faces, clock) -> logits; csv_header: predict_video's columns (rows follow them)."""
    source = LiveSource(args.input, args.live_queue)
    path = os.path.join(out_dir, source.name + '.csv')
    if os.path.exists(path) and not args.overwrite:
        raise UsageError(f"{path} exists: a live run would replace it; pass -overwrite or choose another -output")
    settings = detector.settings
    strides = adaptive.parse_strides(args.strides) if args.sampling == 'adaptive' else (1,)
    clock = StageClock()
    sampler = adaptive.Sampler(adaptive.FrameAnalyser(detector, classify, clock),
                               FaceTracker(source.pace_fps or FALLBACK_FPS, settings.min_prob, settings.track_gap_s),
                               strides, args.agree_prob, smoothing.fusion, settings.min_prob)
    smoother = CausalSmoother(smoothing)
    stats = Stats()
    show = Show(args.show)
    people, current = {}, {}
    arrivals, images = {}, {}
    state = {'label': ABAW_CLASSES.index('Neutral'), 'fed': 0}

    def emit(records, writer):
        for record in records:
            shown = []
            rows = 0
            for index, face in enumerate(record.faces):
                if record.ids[index] < 0 or np.isnan(record.coarse[index]).any():
                    continue
                person = people.setdefault(record.ids[index], len(people) + 1)
                probs = smoother.push(person, record.frame, record.coarse[index], record.negative[index])
                label = int(np.argmax(probs))
                writer.row(record.frame, face, person, probs, label, record.processed)
                current[person] = ABAW_CLASSES[label]
                shown.append((face.box, f"{person}: {ABAW_CLASSES[label]}"))
                state['label'] = label
                rows += 1
            if not rows:
                writer.row(record.frame, None, None, None, state['label'], record.processed)
            kind = 'processed' if record.processed else ('filled' if images.get(record.frame) is not None
                                                         else 'skipped')
            stats.counts[kind] += 1
            stats.latency.append(time.monotonic() - arrivals.pop(record.frame))
            if record.processed:
                show(images.get(record.frame), shown)
            images.pop(record.frame, None)
        writer.maybe_flush()

    def feed(number, arrival, image):
        arrivals[number] = arrival
        images[number] = image
        state['fed'] = number
        stats.counts['seen'] += 1
        return sampler.feed(number, image)

    def terminate(signum, frame):
        raise _Terminated()

    warm_up(sampler.analyse, classify, clock)
    previous_term = signal.signal(signal.SIGTERM, terminate)
    writer = None
    interrupted = None
    failures = []
    try:
        source.start()
        first = source.get()   # blocks until the source opened (or failed to)
        if isinstance(first, BaseException) or first is None:
            message = str(first) if first is not None else 'it sent no frame'
            raise CfcspError(f"{args.input}: cannot open the live source ({message})")
        writer = LiveWriter(path, source.pace_fps, csv_header)
        log.info("live: %s -> %s (%s sampling, causal smoothing, %s)", args.input, path, args.sampling,
                 smoothing.short)
        item, last_arrival, last_status = first, time.monotonic(), time.monotonic()
        while True:
            if item is not None:
                if isinstance(item, BaseException):
                    failures.append(f"{args.input}: the live source stopped: {item}")
                    break
                number, arrival, image = item
                while source.dropped and source.dropped[0][0] < number:
                    emit(feed(*source.dropped.popleft(), None), writer)
                emit(feed(number, arrival, image), writer)
                last_arrival = time.monotonic()
            now = time.monotonic()
            if now - last_status >= STATUS_S:
                last_status = now
                labels = ', '.join(f"person {p}: {label}" for p, label in sorted(current.items())) or 'no face'
                print(f"live {state['fed']} frames: {labels}", file=sys.stderr, flush=True)
            try:
                item = source.get(timeout=0.2)
            except queue.Empty:
                item = None
                writer.maybe_flush()
                if time.monotonic() - last_arrival > args.live_timeout:
                    log.warning("live: no frame for %g s (-live_timeout); ending", args.live_timeout)
                    break
                continue
            if item is None:
                break   # the end of a file
        emit(sampler.finish(), writer)
    except (KeyboardInterrupt, _Terminated) as err:
        interrupted = 'SIGTERM' if isinstance(err, _Terminated) else 'Ctrl-C'
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        source.close()
        if writer is not None:
            # Every frame read gets its row, without running the models again.
            waiting = [item for item in _drain(source.queue) if isinstance(item, tuple)]
            for number, arrival in sorted([item[:2] for item in waiting] + list(source.dropped)):
                if number > state['fed']:
                    emit(feed(number, arrival, None), writer)
            emit(sampler.abandon(), writer)
            writer.close()
    if interrupted:
        log.warning("live: stopped by %s; %s complete", interrupted, path)
    log.info("live: %s", stats.line())
    for failure in failures:
        log.error("failed: %s", failure)
    return {'name': source.name, 'csv': path, 'stats': stats, 'interrupted': interrupted,
            'seconds': clock.seconds, 'failures': failures}
