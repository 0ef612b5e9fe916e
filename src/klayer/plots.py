"""Figures like the reports': cost, loss and accuracy against the update step, train and val.

The only module that imports matplotlib, and only inside the functions (Agg backend). Figures are
rendered in memory and written atomically.
"""

from __future__ import annotations

from pathlib import Path

from .io import save_figure

__all__ = ["plot_history", "plot_curves", "plot_diagnostics"]

_LABELS = {"cost": "cost", "loss": "loss (cross-entropy)", "accuracy": "accuracy"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


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


def plot_confusion(cm, classes, path, title: str = "") -> Path:
    """The confusion matrix as a heat map: rows the true class, columns the predicted class,
    coloured by the fraction of each true class (a row sums to 1), with the counts written in."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(cm)
    C = len(classes)
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.45 * C + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(C), [str(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(C), [str(c) for c in classes], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
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
