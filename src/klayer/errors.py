"""klayer's exceptions: every error a user can cause is one of these, with a one-line message.

The command line prints ``klayer: error: <message>`` and exits with the error's ``exit_code``
(1 unless the class says otherwise), never with a traceback.
"""

from __future__ import annotations

import os


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


class KlayerError(Exception):
    """Base class; the CLI prints ``klayer: error: <message>`` and exits ``exit_code``."""

    exit_code = 1


class DataError(KlayerError, ValueError):
    """A data file is missing, corrupt, unsafe or of the wrong shape. Names the file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):  # pickled from a worker process to the main one
        return type(self), (self.path, self.problem)


class ChecksumError(DataError):
    """A downloaded or given file does not have the expected md5."""


class ModelFileError(DataError):
    """A model or checkpoint file is corrupt, truncated or inconsistent with its architecture.

    Names the file and the tensor or field; the CLI exits with status 2."""

    exit_code = 2


class ConfigError(KlayerError, ValueError):
    """A configuration key or value is unknown or of the wrong type. Names the key."""


class OutputError(KlayerError, OSError):
    """A file could not be written (disk full, permission denied, ...). Names the path and the
    cause; whatever was written before is intact."""

    def __init__(self, path, cause: OSError | str):
        self.path = str(path)
        reason = cause if isinstance(cause, str) else (cause.strerror or os.strerror(cause.errno or 0) or str(cause))
        self.errno = getattr(cause, "errno", None)
        self.reason = str(reason)
        super().__init__(f"{self.path}: cannot write ({reason})")

    def __reduce__(self):
        return type(self), (self.path, self.reason), {"errno": self.errno}

    def __str__(self) -> str:  # OSError's own __str__ would format (errno, strerror)
        return self.args[0]


class DivergenceError(KlayerError, FloatingPointError):
    """The cost became NaN or infinite during training. Names the update step."""

    def __init__(self, step: int, value: float, model: int | None = None):
        self.step = step
        self.value = value
        self.model = model
        who = "" if model is None else f" of model {model}"
        super().__init__(
            f"training diverged: the cost{who} became {value} at update step {step}; "
            "lower eta_max (or eta) and try again"
        )

    def __reduce__(self):
        return type(self), (self.step, self.value, self.model)
