"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks",
WACV 2017, section 3.3): train briefly while ``eta`` grows, and read good bounds off the curves.

``eta`` grows exponentially from ``eta_start`` to ``eta_end`` over ``steps`` updates (so every
decade gets the same number of updates; Smith's paper ramps linearly over a few epochs, fastai's
``lr_find`` exponentially). The batch loss is recorded at every update (and smoothed by an
exponential moving average, bias-corrected); the validation accuracy on a fixed subset every
``eval_every`` updates. The suggestion follows the paper: ``eta_max`` is where the validation
accuracy peaks (beyond it accuracy stops increasing and turns ragged), ``eta_min`` where the
accuracy starts to increase (the first ``eta`` at which it has covered a tenth of its rise from
its starting value to the peak). The run stops early when the loss diverges.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import ExperimentConfig
from ..data.prepare import Dataset
from ..errors import ConfigError, DivergenceError
from .loop import Trainer

__all__ = ["lr_range_test", "suggest_bounds"]


def suggest_bounds(rows: list[dict], diverged_at_step: int | None = None) -> dict:
    """``eta_min`` and ``eta_max`` from the rows' validation accuracies (see the module notes)."""
    pts = [(r["eta"], r["val_accuracy"]) for r in rows if r.get("val_accuracy") is not None]
    if len(pts) < 3:
        if diverged_at_step is not None:
            eta = rows[-1]["eta"] if rows else None
            at = f" (eta {eta:.3g})" if eta is not None else ""
            raise ConfigError(
                f"the loss diverged at update {diverged_at_step}{at}, before 3 evaluations: "
                "lower --eta-start and --eta-end"
            )
        raise ConfigError("too few evaluations for a suggestion: increase --steps or lower --eval-every")
    etas, accs = np.array(pts).T
    peak = int(np.argmax(accs))
    rise = accs[peak] - accs[0]
    start = int(np.argmax(accs[: peak + 1] >= accs[0] + 0.1 * rise)) if rise > 0 else 0
    return {
        "eta_max": float(etas[peak]),
        "eta_min": float(etas[start]),
        "peak_val_accuracy": float(accs[peak]),
        "rule": "eta_max: peak validation accuracy; eta_min: accuracy first a tenth of the way up to it",
    }


def lr_range_test(
    config: ExperimentConfig,
    data: Dataset,
    steps: int = 400,
    eta_start: float = 1e-5,
    eta_end: float = 1.0,
    eval_every: int = 10,
    n_val: int = 1000,
    beta: float = 0.9,
    progress: bool | None = None,
) -> dict:
    """Run the test for one experiment.

    Returns
    -------
    dict ``rows`` (one per update: ``step, eta, loss, smoothed_loss`` and ``val_accuracy`` every
    ``eval_every`` updates), ``suggestion`` (:func:`suggest_bounds`), ``diverged_at_step`` (None
    or the update whose loss was not finite), and the settings.
    """
    if steps < 3 or not 0 < eta_start < eta_end or eval_every < 1:
        raise ConfigError("lr-range needs steps >= 3, 0 < eta_start < eta_end and eval_every >= 1")
    ratio = math.log(eta_end / eta_start)

    def eta(t):
        return eta_start * math.exp(ratio * t / (steps - 1))

    trainer = Trainer([config], data, schedule=eta)
    trainer.total_steps = steps
    trainer.init_bn_state()
    Xv, yv = data.X_val[:n_val], data.y_val[:n_val]
    prep = lambda a: data.features(a, config.train.dtype)  # noqa: E731
    rows, avg, diverged = [], 0.0, None
    from tqdm.auto import tqdm

    for t in tqdm(range(steps), desc="lr-range", unit="upd", disable=progress is False or None, leave=False):
        e = eta(t)
        try:
            trainer.step()
        except DivergenceError:
            diverged = t
            break
        loss = float(trainer.last_loss[0])
        avg = beta * avg + (1 - beta) * loss
        row = {"step": t, "eta": e, "loss": loss, "smoothed_loss": avg / (1 - beta ** (t + 1))}
        if (t + 1) % eval_every == 0 or t == steps - 1:
            with np.errstate(over="ignore", invalid="ignore"):
                row["val_accuracy"] = float(trainer.stack.evaluate(Xv, yv, prep=prep)["accuracy"][0])
        rows.append(row)
        if not math.isfinite(row["smoothed_loss"]) or row["smoothed_loss"] > 4 * max(rows[0]["smoothed_loss"], 1e-12):
            diverged = t  # the loss has blown up: the rest of the range says nothing
            break
    return {
        "experiment": config.name,
        "steps": steps,
        "eta_start": eta_start,
        "eta_end": eta_end,
        "eval_every": eval_every,
        "n_val": len(yv),
        "rows": rows,
        "diverged_at_step": diverged,
        "suggestion": suggest_bounds(rows, diverged),
    }
