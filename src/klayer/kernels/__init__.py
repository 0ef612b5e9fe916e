"""Compiled kernels for the training step (optional: ``pip install 'klayer[fast]'``, numba).

The layers' numpy functions (:mod:`klayer.layers`, :mod:`klayer.network`) are the reference and
do everything. numpy makes one call, and one pass over memory, per operation; a batch-norm
layer's forward is about ten of them on a 100 x 50 array, each a few microseconds of call
overhead for a microsecond of arithmetic. With numba installed, the trainer instead runs, between
the matrix products (which stay numpy's, written into arrays allocated once), one compiled loop
per layer and direction (the bias addition included), one for the softmax and loss, one for the
mini-batch's gather and standardization, and one call for the SGD update of all parameters; the
evaluation pass gets one loop per hidden layer and one for its loss and accuracy
(:mod:`klayer.kernels.step`). The numbers equal the reference up to float rounding (the data, the
update and the accuracy bit for bit); tests/test_kernels.py compares them.

Which one runs: the environment variable ``KLAYER_KERNELS`` = ``numba`` (fail if it is missing),
``numpy`` (the reference), or unset / ``auto`` (numba when it imports). Runs with dropout use the
reference. A run records which kernels it used (:func:`name`); since the two differ by float
rounding, a run resumed with the other ones continues within rounding, not bitwise.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

__all__ = ["name", "load", "ENV"]

ENV = "KLAYER_KERNELS"
CHOICES = ("auto", "numba", "numpy")


def _wanted() -> str:
    v = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if v not in CHOICES:
        raise ConfigError(f"{ENV}={v!r}: must be one of {', '.join(CHOICES)}")
    return v


def load():
    """The compiled step module (:mod:`klayer.kernels.step`), or None for the numpy reference."""
    wanted = _wanted()
    if wanted == "numpy":
        return None
    try:
        from . import step
    except ImportError as e:
        if wanted == "numba":
            raise ConfigError(f"{ENV}=numba, but numba does not import ({e}); pip install 'klayer[fast]'") from None
        return None
    return step


def name() -> str:
    """``"numba"`` or ``"numpy"``: the kernels a trainer started now would use."""
    return "numpy" if load() is None else "numba"
