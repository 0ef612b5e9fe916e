"""Events of the training loop, for everything that is not training itself.

:class:`~klayer.training.loop.Trainer` calls these hooks; persistence (checkpoints, history,
models, plots: :mod:`klayer.runs`) and recorders (per-layer diagnostics, snapshots) hang on them,
so the loop knows nothing of files. A callback with state returns it from :meth:`state` (JSON
values) and :meth:`tensors` (arrays); both go into checkpoints under its :attr:`key`, so a
resumed run continues bitwise.
"""

from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Base class: every hook is optional and does nothing by default."""

    key: str | None = None  # name under which state() and tensors() are checkpointed

    def on_train_begin(self, trainer) -> None:
        """Before the first update (also when resuming)."""

    def on_step_end(self, trainer) -> None:
        """After every update; ``trainer.t`` is the number of updates done."""

    def on_evaluate(self, trainer) -> None:
        """After an evaluation appended one row to each network's ``trainer.history``."""

    def on_cycle_end(self, trainer) -> None:
        """After the last update of a learning-rate cycle (an epoch for non-cyclic schedules)."""

    def on_interrupt(self, trainer) -> None:
        """On Ctrl-C (SIGINT), before KeyboardInterrupt propagates."""

    def on_diverge(self, trainer, error) -> None:
        """When a single network's cost became NaN or infinite, before the error propagates."""

    def on_train_end(self, trainer) -> None:
        """After the last update and its evaluation."""

    def state(self) -> dict:
        """JSON-serializable state to checkpoint."""
        return {}

    def tensors(self) -> dict:
        """Array state to checkpoint."""
        return {}

    def load_state(self, state: dict, tensors: dict) -> None:
        """Restore what :meth:`state` and :meth:`tensors` returned."""
