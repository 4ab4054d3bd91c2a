"""Atomic file output: a reader (or a resumed job) never sees a half-written file.

Every output the project writes goes to a temporary name in the same folder and is renamed into
place once complete; a kill at any moment leaves either the old file or the new one.
"""
import contextlib
import os
import tempfile

from errors import UsageError

# The file that marks an output folder of a resumable job (python -m preprocess) finished; it
# holds that output's JSON manifest (frames, faces, ...). Its dot keeps it out of frame listings.
DONE_MARKER = '.done'


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    # Keep the extension last so writers that pick a format by suffix (cv2, np.savez, paddle) still work.
    stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes owner-only files; give outputs the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path, mode='w', **kwargs):
    """open() whose result appears at `path` only when the block finishes without error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def is_temporary(name):
    """True for names atomic_path() creates, so resumable jobs can ignore and clean them."""
    return name.startswith('.') and '.tmp' in name


def is_inside(path, folder):
    """True when `path` is `folder` or lies below it (after resolving links): outputs must not."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_writable_dir(path, flag='-output'):
    """Create `path` if needed and prove it is writable, or raise naming the flag and the folder."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.write_test'):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write there ({err.strerror})") from None
    return path
