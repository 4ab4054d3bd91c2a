"""Video in and out through FFmpeg (ffmpeg-python driving the binary imageio-ffmpeg ships).

Frame i of the output is always the i-th decoded frame of the video: labels in Aff-Wild2 are
per decoded frame, so no frame-rate conversion may drop or duplicate frames (`fps_mode
passthrough`, `-vsync 0` on FFmpeg older than 5.1).
"""
import functools
import os
import re
import shutil
import subprocess
import threading

import ffmpeg
import imageio_ffmpeg
import numpy as np

from errors import CfcspError
from fileio import atomic_path
from labels import VIDEO_EXTENSIONS  # one list: video lists drop these extensions too


class VideoDecodeError(CfcspError, RuntimeError):
    """FFmpeg could not decode a video; the message names the file and FFmpeg's own complaint."""


class VideoEncodeError(CfcspError, RuntimeError):
    """FFmpeg could not write a video; the message names the file and FFmpeg's own complaint."""


@functools.lru_cache(maxsize=None)
def ffmpeg_exe(prefer_system=False):
    """Path of the FFmpeg binary: imageio-ffmpeg's by default, a system `ffmpeg` when asked and present."""
    if prefer_system:
        system = shutil.which('ffmpeg')
        if system:
            return system
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=None)
def _passthrough_args(exe):
    # `-fps_mode` replaced `-vsync` in FFmpeg 5.1, and recent releases dropped `-vsync` entirely.
    try:
        banner = subprocess.run([exe, '-version'], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r'ffmpeg version n?(\d+)\.(\d+)', banner)
        if match and (int(match.group(1)), int(match.group(2))) < (5, 1):
            return {'vsync': '0'}
    except (OSError, subprocess.SubprocessError):
        pass
    return {'fps_mode': 'passthrough'}


def _tail(text, lines=3):
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return ' | '.join(kept[-lines:]) or 'no message from ffmpeg'


def is_video_file(name):
    """Whether the file name has a video extension."""
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def probe_frame_count(path, prefer_system=False):
    """Number of video frames, counted by remuxing the first video stream without decoding.

    Cheap (no decode), meant for progress bars; a file FFmpeg cannot open raises VideoDecodeError.
    """
    exe = ffmpeg_exe(prefer_system)
    stream = ffmpeg.input(str(path)).output('-', format='null', map='0:v:0', c='copy')
    result = subprocess.run(ffmpeg.compile(stream, cmd=exe) + ['-hide_banner', '-nostdin'],
                            capture_output=True, text=True, errors='replace')
    if result.returncode != 0:
        raise VideoDecodeError(f"{path}: ffmpeg cannot read this video ({_tail(result.stderr)})")
    counts = re.findall(r'frame=\s*(\d+)', result.stderr)
    return int(counts[-1]) if counts else 0


def probe_frame_rate(path, prefer_system=False):
    """Average frame rate FFmpeg reports for the first video stream, or None if it states none."""
    result = subprocess.run([ffmpeg_exe(prefer_system), '-hide_banner', '-nostdin', '-i', str(path)],
                            capture_output=True, text=True, errors='replace')
    for line in result.stderr.splitlines():
        if 'Video:' not in line:
            continue
        for unit in ('fps', 'tbr'):
            match = re.search(r'([\d.]+)(k?) ' + unit, line)
            if match and float(match.group(1)) > 0:
                return float(match.group(1)) * (1000 if match.group(2) else 1)
    return None


def _output_size(stderr_lines):
    """Width, height of the rawvideo stream FFmpeg announces it will write (after rotation/scaling)."""
    in_output = False
    for line in stderr_lines:
        if line.startswith('Output #0'):
            in_output = True
        elif in_output:
            match = re.search(r'Video: rawvideo.*?, (\d{1,5})x(\d{1,5})', line)
            if match:
                return int(match.group(1)), int(match.group(2))
    return None


def iter_frames(path, prefer_system=False, input_options=None):
    """Yield every decoded frame of the first video stream as an RGB uint8 array (H, W, 3), in order.

    Raises VideoDecodeError naming the file if FFmpeg fails at the start or part-way through.
    input_options: FFmpeg input options, e.g. {'format': 'v4l2'} for a camera (predict_video -live).
    """
    exe = ffmpeg_exe(prefer_system)
    stream = ffmpeg.input(str(path), **(input_options or {})).output('pipe:', format='rawvideo', pix_fmt='rgb24', map='0:v:0',
                                            **_passthrough_args(exe))
    cmd = ffmpeg.compile(stream, cmd=exe) + ['-nostdin', '-hide_banner']
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr_lines = []
    size_known = threading.Event()

    def read_stderr():
        # Drained in a thread so FFmpeg never blocks on a full stderr pipe; the header tells the size.
        for raw in iter(proc.stderr.readline, b''):
            stderr_lines.append(raw.decode('utf-8', 'replace').rstrip())
            if not size_known.is_set() and _output_size(stderr_lines):
                size_known.set()
        size_known.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        size_known.wait()
        size = _output_size(stderr_lines)
        if size is None:
            proc.wait()
            reader.join()
            raise VideoDecodeError(f"{path}: ffmpeg cannot decode a video stream ({_tail(chr(10).join(stderr_lines))})")
        width, height = size
        frame_bytes = width * height * 3
        while True:
            data = proc.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        proc.wait()
        reader.join()
        if proc.returncode != 0:
            raise VideoDecodeError(f"{path}: ffmpeg stopped with an error ({_tail(chr(10).join(stderr_lines))})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def extract_frames(video, out_dir, quality=2, prefer_system=False):
    """Write every decoded frame as out_dir/00001.jpg, 00002.jpg, ...; returns the number written.

    `quality` is FFmpeg's JPEG q-scale (2 best .. 31 worst). Frames go to a temporary folder that is
    renamed to `out_dir` only once FFmpeg finished, so an interrupted run leaves nothing that looks done.
    """
    if not 2 <= int(quality) <= 31:
        raise ValueError(f"quality {quality}: JPEG q-scale must be between 2 (best) and 31")
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f'.{name}.tmp-frames')
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    exe = ffmpeg_exe(prefer_system)
    stream = ffmpeg.input(str(video)).output(os.path.join(tmp_dir, '%05d.jpg'), map='0:v:0',
                                             start_number=1, **{'q:v': int(quality)},
                                             **_passthrough_args(exe))
    try:
        result = subprocess.run(ffmpeg.compile(stream, cmd=exe) + ['-nostdin', '-hide_banner', '-y'],
                                capture_output=True, text=True, errors='replace')
        if result.returncode != 0:
            raise VideoDecodeError(f"{video}: ffmpeg cannot extract frames ({_tail(result.stderr)})")
        count = len([n for n in os.listdir(tmp_dir) if n.endswith('.jpg')])
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
        return count
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_video(path, frames, fps=30, crf=18, prefer_system=False, preset='medium'):
    """Encode an iterable of RGB uint8 frames (H, W, 3) to H.264 mp4 (yuv420p) atomically.

    All frames must share one size; odd sizes are padded by one pixel because yuv420p needs even
    dimensions. Returns the number of frames written.
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    first = np.ascontiguousarray(first, dtype=np.uint8)
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"{path}: frames must be RGB arrays of shape (H, W, 3), got {first.shape}")
    height, width = first.shape[:2]
    exe = ffmpeg_exe(prefer_system)
    count = 0
    with atomic_path(path) as tmp:
        stream = (ffmpeg.input('pipe:', format='rawvideo', pix_fmt='rgb24', s=f'{width}x{height}', r=fps)
                  .output(tmp, vcodec='libx264', pix_fmt='yuv420p', crf=crf, preset=preset, r=fps,
                          vf='pad=ceil(iw/2)*2:ceil(ih/2)*2', movflags='+faststart', format='mp4'))
        cmd = ffmpeg.compile(stream, cmd=exe, overwrite_output=True) + ['-hide_banner', '-loglevel', 'error']
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # stderr goes to a thread so a chatty encoder cannot deadlock us while we feed stdin.
        errors = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        drain.start()
        try:
            for frame in _chain(first, frames):
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if frame.shape != first.shape:
                    raise ValueError(f"{path}: frame {count + 1} has shape {frame.shape}, "
                                     f"expected {first.shape}")
                proc.stdin.write(frame.tobytes())
                count += 1
            proc.stdin.close()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            drain.join()
        if proc.returncode != 0:
            message = errors[0].decode('utf-8', 'replace') if errors else ''
            raise VideoEncodeError(f"{path}: ffmpeg failed to encode ({_tail(message)})")
    return count


def _chain(first, rest):
    yield first
    yield from rest
