"""The project's one error family. Every failure a user must act on is a `CfcspError` whose
message names the flag, file or line at fault; each command-line entry point catches it once,
prints `error: <message>` and exits with its `exit_code`: 2 for a bad flag or bad input (fix the
command or the file), 1 for a failure while running (the input was fine)."""


class CfcspError(Exception):
    """A failure while running; the message says what to do."""
    exit_code = 1


class UsageError(CfcspError, ValueError):
    """A bad flag, config key or input file (exit code 2)."""
    exit_code = 2


class TrainingError(CfcspError):
    """A training or evaluation run that cannot go on (exit code 1)."""
