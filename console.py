"""What every command-line tool shares: console logging (plain progress lines on stderr,
warnings and errors prefixed `warning:` / `error:`), an argument parser whose mistakes are
reported like every other error, and the entry wrapper that turns the project's errors into one
`error: ...` line and an exit code (errors.py: 2 for a bad flag or input, 1 for a failure)."""
import argparse
import logging
import sys

from errors import CfcspError, UsageError


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors (unknown flag, bad value, `parser.error`) raise
    UsageError, so they reach the user as one `error: ...` line with exit code 2."""

    def error(self, message):
        raise UsageError(message)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on a terminal; none when stderr goes to a file or pipe (a log), where
    every redraw would add another line."""
    from tqdm import tqdm
    kwargs['disable'] = kwargs.get('disable', False) or not stderr_is_terminal()
    return tqdm(iterable, **kwargs)


def stderr_is_terminal():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def run_command(function, *args, error_label='error', **kwargs):
    """Call a tool's main body; its return value is the exit code (None: 0). A CfcspError ends as
    one `<error_label>: <message>` line on stderr and the error's exit code, without a traceback."""
    try:
        return int(function(*args, **kwargs) or 0)
    except CfcspError as err:
        print(f"{error_label}: {err}", file=sys.stderr, flush=True)
        return err.exit_code
