"""What every command-line tool shares: console logging (plain progress lines on stderr,
warnings and errors prefixed `warning:` / `error:`), an argument parser whose mistakes are
reported like every other error, and the entry wrapper that turns the project's errors into one
`error: ...` line and an exit code (errors.py: 2 for a bad flag or input, 1 for a failure)."""
import argparse
import copy
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


class _OneSpellingShown:
    """Help shows the first spelling of each flag: its one-dash name (aliases are accepted only)."""

    def _format_action_invocation(self, action):
        if len(action.option_strings) > 1:
            action = copy.copy(action)
            action.option_strings = action.option_strings[:1]
        return super()._format_action_invocation(action)


def both_spellings(names):
    """'-cfg' -> ['-cfg', '--cfg'] (the release's one dash first, as help shows it); '--x' too.
    One-letter flags (-h) stay as they are."""
    one, two = [], []
    for name in names:
        if len(name) <= 2 or not name.startswith('-'):
            one.append(name)
            continue
        core = name.lstrip('-')
        one.append('-' + core)
        two.append('--' + core)
    return list(dict.fromkeys(one + two))


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors (unknown flag, bad value, `parser.error`) raise
    UsageError, so they reach the user as one `error: ...` line with exit code 2, and whose every
    flag is accepted as `-flag` and `--flag` (help and docs show `-flag`, the release's style)."""

    def __init__(self, *args, formatter_class=argparse.HelpFormatter, **kwargs):
        formatter_class = type(f'OneSpelling{formatter_class.__name__}',
                               (_OneSpellingShown, formatter_class), {})
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def add_argument(self, *names, **kwargs):
        if names and all(name.startswith('-') for name in names):
            names = both_spellings(names)
        return super().add_argument(*names, **kwargs)

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
