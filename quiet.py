"""Drop the lines Paddle prints on every run that tell a user nothing, keep everything else.

Imported by cpu_env.py, so before Paddle in every entry point. What is dropped, and why:
- `WARNING: OMP_NUM_THREADS set to N, not 1 ... PLEASE USE OMP_NUM_THREADS WISELY.`: Paddle's
  import-time advice for data-parallel GPU jobs; cpu_env sets the threads on purpose.
- `Modified FLAGS detected` and its list: the Paddle flags cpu_env sets on purpose, printed by
  init_parallel_env in every worker.
- `No ccache found`: Paddle's custom-op compiler cache; nothing here compiles ops.
- glog INFO lines from Paddle's C++ side (`I1201 ... tcp_utils.cc ...` connection retries):
  GLOG_minloglevel=1 keeps glog's warnings and errors.
- ONNX Runtime's quantizer's per-tensor INFO lines (only_warnings() around the call), and the
  bare `ReduceMeanCheckIfOneDNNSupport` a paddle.inference predictor prints at its first run
  (native_lines_dropped() around it).
A value the user set for GLOG_minloglevel is kept; every other line passes through unchanged.
"""
import contextlib
import logging
import os
import re
import sys
import threading
import warnings

_NOISE = (re.compile(r'WARNING: OMP_NUM_THREADS set to \d+, not 1\. '),
          re.compile(r'PLEASE USE OMP_NUM_THREADS WISELY\.'))
_FLAGS_BLOCK_START = '======================= Modified FLAGS detected ======================='
_FLAGS_BLOCK_END = '=' * 71


class QuietStream:
    """A text stream that drops whole writes of the known noise (print() writes a message, then
    its newline, as two writes) and passes every other write at once, so progress bars that
    redraw a line without a newline are not held back."""

    def __init__(self, stream):
        self._stream = stream
        self._in_flags_block = False
        self._drop_newline = False

    def write(self, text):
        line = text.rstrip('\n')
        if self._drop_newline and text == '\n':
            self._drop_newline = False
            return len(text)
        self._drop_newline = False
        if line == _FLAGS_BLOCK_START:
            self._in_flags_block = True
            return len(text)
        if self._in_flags_block:
            if line == _FLAGS_BLOCK_END:
                self._in_flags_block = False
            return len(text)
        if any(pattern.match(line) for pattern in _NOISE):
            self._drop_newline = not text.endswith('\n')
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def only_warnings():
    """Within the block, Python log records below WARNING are dropped: for libraries that log a
    line per tensor at INFO (ONNX Runtime's quantizer: ~30 lines per Swin)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def native_lines_dropped(lines, fd=1):
    """Within the block, lines that C++ code writes to file descriptor `fd` and that equal one of
    `lines` are dropped; every other line is passed on. For bare debug prints of Paddle's kernels
    (`ReduceMeanCheckIfOneDNNSupport`, on stdout at a predictor's first run)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)
    dropped = {line.encode() for line in lines}

    def forward():
        with os.fdopen(read_end, 'rb') as pipe:
            for raw in pipe:
                if raw.rstrip(b'\r\n') not in dropped:
                    os.write(saved, raw)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved, fd)  # closes the pipe's last write end: the thread sees EOF
        thread.join()
        os.close(saved)


def install():
    """Filter sys.stderr (once) and Python warnings; quieten glog's INFO lines."""
    os.environ.setdefault('GLOG_minloglevel', '1')
    warnings.filterwarnings('ignore', message='No ccache found')
    if not isinstance(sys.stderr, QuietStream) and sys.stderr is not None:
        sys.stderr = QuietStream(sys.stderr)


install()
