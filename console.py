"""Console logging shared by the command-line tools: plain progress lines on stderr, and
warnings and errors prefixed `warning:` / `error:` so they stand out without a traceback."""
import logging
import sys


class _LevelPrefix(logging.Formatter):
    def format(self, record):
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup(log, propagate=True):
    """Send `log` (INFO and up) to stderr with the prefixes above; returns it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix('%(message)s'))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = propagate
    return log
