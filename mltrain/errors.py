"""The errors mltrain reports to users as one line (``mltrain: error: ...``) and a non-zero exit.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class MLTrainError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-line message.

    ``exit_code`` is the process exit status the CLI uses for it.
    """

    exit_code = 2


class ConfigError(MLTrainError):
    """A setting has a value that is not allowed (names the key and what is allowed)."""


class DataError(MLTrainError):
    """A corpus, data file or tokenizer cannot be used (names the setting or path)."""


class CheckpointError(MLTrainError):
    """A checkpoint cannot be written, read, or does not fit this run."""


class DivergenceError(MLTrainError):
    """A non-finite loss or gradient: names the step and the level (exit status 3)."""

    exit_code = 3


class Preempted(MLTrainError):
    """SIGTERM/SIGINT: a checkpoint was saved and the run stopped (exit status 128 + signal,
    set on the instance)."""
