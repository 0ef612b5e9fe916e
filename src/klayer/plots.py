"""Figures like the reports': cost, loss and accuracy against the update step, train and val.

The only module that imports matplotlib, and only inside the functions (Agg backend). Figures are
rendered in memory and written atomically.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .io import save_figure

__all__ = ["plot_history", "plot_curves", "plot_diagnostics", "plot_lr_range", "plot_schedules"]

_LABELS = {"cost": "cost", "loss": "loss (cross-entropy)", "accuracy": "accuracy"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _plain_text(plot):
    """Draw every text of ``plot`` literally. Class names, run names and titles come from users
    (folder names, experiment files), and matplotlib reads the text between two ``$`` as mathtext:
    a class folder ``a$_$b`` raised a ValueError when the figure was drawn (at the end of training,
    after the last update). The caller's own matplotlib settings are left as they were."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return wrapper


@_plain_text
def plot_history(rows: list[dict], out_dir, title: str = "") -> list[Path]:
    """Write ``cost.png``, ``loss.png`` and ``accuracy.png`` for one run's history rows."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    steps = [r["step"] for r in rows]
    paths = []
    for metric, label in _LABELS.items():
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
        ax.plot(steps, [r[f"train_{metric}"] for r in rows], label="training")
        ax.plot(steps, [r[f"val_{metric}"] for r in rows], label="validation")
        ax.set_xlabel("update step")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


@_plain_text
def plot_curves(
    series: dict[str, tuple[list, list]],
    path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """One figure with a line per named ``(x, y)`` series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) < 40 else None, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


__all__ += ["plot_confusion", "png_thumbnail"]

MAX_NAMED_CLASSES = 150  # a confusion matrix with more classes counts them instead of naming them


@_plain_text
def plot_confusion(cm, classes, path, title: str = "") -> Path:
    """The confusion matrix as a heat map: rows the true class, columns the predicted class,
    coloured by the fraction of each true class (a row sums to 1), with the counts written in
    (up to 20 classes) and the class names on the axes (up to ``MAX_NAMED_CLASSES``; beyond, the
    axes count the classes from 0). The figure grows with the classes up to 22 x 21 inches: a
    figure 0.45 inch per class had 45,000 pixels a side for 1000 classes, and drawing it took
    more than 20 GB."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(cm)
    C = len(classes)
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(max(4.5, 0.45 * C + 2), 21.0)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if C <= MAX_NAMED_CLASSES:
        fontsize = min(8.0, 1100 / C)  # at most about a class's share of the axis (points)
        ax.set_xticks(range(C), [str(c) for c in classes], rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticks(range(C), [str(c) for c in classes], fontsize=fontsize)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    else:
        ax.set_xlabel(f"predicted class (0..{C - 1})")
        ax.set_ylabel(f"true class (0..{C - 1})")
    if C <= 20:
        for i in range(C):
            for j in range(C):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_title(title or f"confusion matrix ({cm.sum()} images)")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def png_thumbnail(image, scale: int = 2) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` or ``(H, W)`` uint8 image, enlarged ``scale`` times (nearest
    neighbour, so the pixels stay visible), for an HTML gallery."""
    import io

    import numpy as np
    from matplotlib.image import imsave

    a = np.repeat(np.repeat(np.asarray(image, np.uint8), scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    imsave(buf, a, format="png", cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255)
    return buf.getvalue()


@_plain_text
def plot_diagnostics(rows: list[dict], path, title: str = "") -> Path:
    """Per-layer std of ``S_l``, dead-unit fraction and relative gradient size against the step."""
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    layers = sorted({int(k[1:-4]) for k in rows[0] if k.startswith("s") and k.endswith("_std")})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for l in layers:
        axes[0].plot(steps, [max(r[f"s{l}_std"], 1e-300) for r in rows], label=f"layer {l}")
        axes[1].plot(steps, [r[f"dead{l}"] for r in rows], label=f"layer {l}")
        if f"grad{l}" in rows[0]:
            axes[2].plot(steps, [max(r[f"grad{l}"], 1e-300) for r in rows], label=f"layer {l}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("std of S_l (before batch norm)")
    axes[1].set_ylabel("fraction of dead ReLUs")
    grads = [r[k] for r in rows for k in r if k.startswith("grad") and r[k] > 0]
    if grads and max(grads) > 10 * min(grads):  # a log axis only where it spans a decade
        axes[2].set_yscale("log")
    axes[2].set_ylabel("||dJ/dW_l|| / ||W_l||")
    for ax in axes:
        ax.set_xlabel("update step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


@_plain_text
def plot_lr_range(result: dict, path) -> Path:
    """The learning-rate range test: smoothed batch loss and validation accuracy against ``eta``
    (log axis), with the suggested ``eta_min`` and ``eta_max`` marked."""
    plt = _pyplot()
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    ax.plot([r["eta"] for r in rows], [r["smoothed_loss"] for r in rows], color="tab:blue", label="training loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate eta")
    ax.set_ylabel("training loss (smoothed)", color="tab:blue")
    ax2 = ax.twinx()
    ev = [r for r in rows if r.get("val_accuracy") is not None]
    ax2.plot([r["eta"] for r in ev], [r["val_accuracy"] for r in ev], "o-", ms=3, color="tab:orange")
    ax2.set_ylabel("validation accuracy", color="tab:orange")
    s = result["suggestion"]
    for key, style in (("eta_min", ":"), ("eta_max", "--")):
        ax.axvline(s[key], color="k", ls=style, lw=1)
        ax.annotate(f"{key} {s[key]:.2g}", (s[key], 0.98), xycoords=("data", "axes fraction"), fontsize=8,
                    rotation=90, va="top", ha="right")  # fmt: skip
    ax.set_title(f"learning-rate range test: {result['experiment']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


@_plain_text
def plot_schedules(path, n_s: int = 500, n_cycles: int = 3) -> Path:
    """Every learning-rate schedule over the same run, one panel each (for the docs)."""
    import numpy as np

    from .training import schedules as s

    plt = _pyplot()
    T = 2 * n_s * n_cycles
    t = np.arange(T + 1)
    lo, hi = 1e-5, 1e-1
    curves = {
        "cyclic (triangular)": [s.cyclic_eta(i, lo, hi, n_s) for i in t],
        "triangular2": [s.triangular2_eta(i, lo, hi, n_s) for i in t],
        "exp_range (gamma 0.9995)": [s.exp_range_eta(i, lo, hi, n_s, 0.9995) for i in t],
        "one_cycle (warmup 0.3)": [s.one_cycle_eta(i, lo, hi, T, 0.3) for i in t],
        "cosine (warmup 0.05)": [s.cosine_eta(i, lo, hi, T, 0.05) for i in t],
        "decay (0.9 per 100 updates)": [s.decay_eta(i, hi, 0.9, 100) for i in t],
    }
    fig, axes = plt.subplots(2, 3, figsize=(12, 5.5), dpi=100, sharex=True)
    for ax, (name, eta) in zip(axes.flat, curves.items(), strict=True):
        ax.plot(t, eta)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("update step t")
    for ax in axes[:, 0]:
        ax.set_ylabel("eta")
    fig.suptitle(f"learning-rate schedules, eta_min {lo:g}, eta_max {hi:g}, n_s {n_s}, {n_cycles} cycles")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)
