"""klayer's exceptions: every error a user can cause is one of these, with a one-line message."""

from __future__ import annotations


class KlayerError(Exception):
    """Base class; the CLI prints ``klayer: error: <message>`` and exits 1."""


class DataError(KlayerError, ValueError):
    """A data file is missing, corrupt, unsafe or of the wrong shape. Names the file."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ChecksumError(DataError):
    """A downloaded or given file does not have the expected md5."""


class ConfigError(KlayerError, ValueError):
    """A configuration key or value is unknown or of the wrong type. Names the key."""


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
