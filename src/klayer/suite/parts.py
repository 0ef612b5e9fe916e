"""Parts of the report that read more than ``results.json``: the one-screen summary, the
validation-curve overlays and the headline run's confusion matrix and worst mistakes.

:mod:`klayer.report` lays the report out; this module computes what goes in. Every number is
read from the saved runs (``results.json``, ``history.csv``, ``model.safetensors``) when the
report is built. The headline run's confusion matrix and the gallery of its most confidently
misclassified test images need the test images: they are read as the run's ``config.toml``
says (never downloaded); when they are not there, the report says so and leaves them out.
"""

from __future__ import annotations

import csv
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..io import read_json

__all__ = [
    "Link",
    "slug",
    "verdict",
    "reported_range",
    "summary_rows",
    "validation_series",
    "headline_run",
    "headline_evaluation",
]

SLACK = 0.005  # as klayer.report: half a point either side of the reported range


@dataclass(frozen=True)
class Link:
    """A table cell linking to a section of the report."""

    text: str
    anchor: str

    def __str__(self) -> str:
        return self.text


def slug(text: str) -> str:
    """The anchor of a heading, as GitHub makes it: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def verdict(xs: list[float], ref: list[float]) -> str:
    """``inside``, ``above`` or ``below`` the reported values (with :data:`SLACK`), or ``""``."""
    if not xs or not ref:
        return ""
    m = statistics.fmean(xs)
    if min(ref) - SLACK <= m <= max(ref) + SLACK:
        return "inside"
    return "above" if m > max(ref) else "below"


def reported_range(ref: list[float]) -> str:
    if not ref:
        return ""
    lo, hi = min(ref), max(ref)
    return f"{100 * lo:.2f}%" if lo == hi else f"{100 * lo:.2f}-{100 * hi:.2f}%"


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.fmean(xs):.2f} ± {100 * s:.2f}%"


def _pairs(sdir: Path, study: dict) -> list[tuple[dict, dict | None]]:
    return [(e, read_json(sdir / e["run"] / "results.json")) for e in study.get("runs", [])]


def _acc(pairs) -> list[float]:
    return [r["test_accuracy"] for _, r in pairs if r and r.get("status") == "complete"]


def summary_rows(studies: list[tuple[Path, dict]], loose: list[Path], ref: dict) -> list[list]:
    """One row per experiment: what, ours (mean ± std over seeds), the reported range, the
    verdict and a :class:`Link` to its section."""
    rows = []
    for sdir, st in studies:
        name, kind, link = st["name"], st["kind"], Link(st["name"], slug(st["name"]))
        pairs = _pairs(sdir, st)
        if kind == "gradcheck":
            g = read_json(sdir / "gradcheck.json")
            if g:
                ok = sum(t["passed"] for t in g["tables"])
                rows.append(
                    [
                        name,
                        f"{ok}/{len(g['tables'])} tables pass",
                        "1e-10 to 1e-5",
                        "pass" if ok == len(g["tables"]) else "FAIL",
                        link,
                    ]
                )
        elif kind == "sanity":
            s = read_json(sdir / "sanity.json")
            for k, v in (s or {}).get("curves", {}).items():
                rows.append(
                    [
                        f"overfit {s['settings'].get('n')} images, {k}",
                        f"final loss {v[-1]['train_loss']:.4f}",
                        "",
                        "",
                        link,
                    ]
                )
        elif kind == "runs":
            refs = ref.get("runs", {})
            for exp in st["experiments"]:
                accs = _acc([(e, r) for e, r in pairs if e["experiment"] == exp])
                rv = refs.get(exp, {}).get("values", [])
                rows.append([exp, _ms(accs), reported_range(rv), verdict(accs, rv), link])
        elif kind == "search":
            final = [(e, r) for e, r in pairs if e["stage"] == "final"]
            if final:
                rv = ref.get("search", {}).get(name, {}).get("values", [])
                key = st["key"].split(".")[-1]
                accs = _acc(final)
                rows.append(
                    [
                        f"{name}: best {key} {final[0][0]['value']:.4g}, retrained",
                        _ms(accs),
                        reported_range(rv),
                        verdict(accs, rv),
                        link,
                    ]
                )
        elif kind == "grid":  # one row per experiment, the values side by side
            key = st["key"].split(".")[-1]
            rs = ref.get("grid", {}).get(name, {})
            for exp in st["experiments"]:
                ours, theirs, verdicts = [], [], []
                for v in st["values"]:
                    accs = _acc([(e, r) for e, r in pairs if e["experiment"] == exp and e["value"] == v])
                    rv = rs.get(exp, {}).get(repr(float(v)), rs.get(exp, {}).get(f"{v:g}", {})).get("values", [])
                    ours.append(f"{100 * statistics.fmean(accs):.2f}" if accs else "n/a")
                    theirs.append(reported_range(rv).rstrip("%") or "-")
                    verdicts.append(verdict(accs, rv) or "-")
                values = " / ".join(f"{v:g}" for v in st["values"])
                rows.append([f"{exp}, {key} {values}", " / ".join(ours) + "%", " / ".join(theirs) + "%",
                             " / ".join(verdicts), link])  # fmt: skip
    for d in loose:
        r = read_json(d / "results.json") or {}
        acc = r.get("test_accuracy")
        rows.append([d.name, "n/a" if acc is None else f"{100 * acc:.2f}%", "", "", Link("runs", "runs")])
    return rows


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


def validation_series(runs: dict[str, list[Path]], metric: str = "val_accuracy") -> dict[str, tuple[list, list]]:
    """Per label, the step and the mean of ``metric`` over its runs (the steps all runs share)."""
    series = {}
    for label, dirs in runs.items():
        hists = [h for h in (read_history(d / "history.csv") for d in dirs) if h]
        if not hists:
            continue
        steps = sorted(set.intersection(*({r["step"] for r in h} for h in hists)))
        by_step = [{r["step"]: r[metric] for r in h} for h in hists]
        n = len(hists)
        series[f"{label} (mean of {n})" if n > 1 else label] = (
            steps,
            [statistics.fmean(b[s] for b in by_step) for s in steps],
        )
    return series


def headline_run(studies: list[tuple[Path, dict]], loose: list[Path]) -> Path | None:
    """The run shown in detail: seed 0 (the lowest seed) of the experiment with the best mean
    test accuracy over the ``runs`` studies; without any, the best loose run."""
    best = None
    for sdir, st in studies:
        if st["kind"] != "runs":
            continue
        pairs = _pairs(sdir, st)
        for exp in st["experiments"]:
            done = [(e, r) for e, r in pairs if e["experiment"] == exp and r and r.get("status") == "complete"]
            if done and (best is None or statistics.fmean(_acc(done)) > best[0]):
                first = min(done, key=lambda p: p[0].get("seed", 0))[0]
                best = (statistics.fmean(_acc(done)), sdir / first["run"])
    if best is not None:
        return best[1]
    done = [(d, read_json(d / "results.json") or {}) for d in loose]
    done = [(d, r) for d, r in done if r.get("status") == "complete" and (d / "model.safetensors").is_file()]
    return max(done, key=lambda p: p[1]["test_accuracy"])[0] if done else None


def headline_evaluation(run: Path, data_root=None, k: int = 12) -> dict:
    """The headline run's test-set evaluation and its ``k`` most confident mistakes.

    Returns
    -------
    dict ``report`` (:func:`klayer.metrics.classification_report`) and ``mistakes`` (each with
    ``true``, ``predicted``, ``probability``, ``index`` and, for image data, ``png`` bytes), or
    ``note`` saying why it could not be made.
    """
    from ..config import load_experiment
    from ..data.cifar10 import load_cifar10
    from ..data.images import model_image_shape, row_to_image
    from ..data.prepare import load_raw, split_raw
    from ..errors import KlayerError
    from ..metrics import classification_report, confident_mistakes
    from ..plots import png_thumbnail
    from ..runs import load_model

    try:
        model = load_model(run / "model.safetensors")
        cfg = load_experiment(run / "config.toml").data
        if cfg.dataset == "cifar10":  # the test batch only, and never a download
            root = data_root if data_root is not None else cfg.path
            raw = load_cifar10(root, cfg.layout, download_missing=False, batches=("test_batch",))
            X, y = raw.batches["test_batch"]
        else:
            raw = load_raw(cfg, data_root)
            X, y = split_raw(raw, cfg.split, cfg.n_val)[2]
    except (KlayerError, OSError) as e:
        return {"note": f"test images not available ({e}); no confusion matrix or gallery"}
    if X.shape[1] != model.network.config.input_size:
        return {"note": "the test images do not fit the model; no confusion matrix or gallery"}
    P = model.predict_proba(X)
    rep = classification_report(y, P, model.classes)
    mistakes = confident_mistakes(y, P, k)
    shape = model_image_shape(model.meta, X.shape[1]) or raw.image_shape
    for m in mistakes:
        m["true"], m["predicted"] = model.classes[m["true"]], model.classes[m["predicted"]]
        if shape is not None:
            m["png"] = png_thumbnail(row_to_image(X[m["index"]], shape), scale=max(1, 64 // shape[1]))
    return {"report": rep, "mistakes": mistakes, "source": raw.source}


# -- blocks of the report (``doc`` is klayer.report's block document) ------------------------------
def add_summary(doc, at: int, studies, loose, ref) -> None:
    """Insert the one-screen summary at block ``at``: every experiment, ours against reported."""
    rows = summary_rows(studies, loose, ref)
    if not rows:
        return
    part = type(doc)(doc.root)
    part.h(2, "Summary")
    part.p(
        "Each experiment's test accuracy (mean ± sample standard deviation over seeds), the reference reports' "
        f"range and the verdict: inside the range (with {100 * SLACK:.1f} points of slack), above or below it. "
        "The last column links to the section with the details."
    )
    part.table(["experiment", "ours", "reported", "verdict", "section"], rows)
    doc.blocks[at:at] = part.blocks


def add_overlay(doc, figdir: Path, name: str, runs: dict[str, list[Path]]) -> None:
    """A figure overlaying the validation-accuracy curves of several experiments."""
    from ..plots import plot_curves

    series = validation_series(runs)
    if len(series) < 2:
        return
    fig = plot_curves(series, figdir / f"{name}_validation.png", "update step", "validation accuracy", name)
    doc.img(fig, f"{name}: validation accuracy of every experiment, overlaid (mean over seeds)")


def add_headline(doc, figdir: Path, studies, loose, data_root=None, k: int = 12) -> None:
    """The headline run's confusion matrix, per-class scores and most confident mistakes."""
    from ..plots import plot_confusion

    run = headline_run(studies, loose)
    if run is None:
        return
    doc.h(2, "Headline run")
    ev = headline_evaluation(run, data_root, k)
    if "note" in ev:
        doc.p(f"{run.name}: {ev['note']}.")
        doc.img(run / "confusion.png", f"{run.name}: confusion matrix on the test set")
        return
    rep = ev["report"]
    doc.p(
        f"{run.name} ({run}), on the {rep['n']} test images of {ev['source']}: accuracy {100 * rep['accuracy']:.2f}%. "
        "A class's accuracy is the share of its images classified correctly (its recall); precision is the share "
        "of the images predicted as the class that belong to it."
    )
    doc.table(
        ["class", "images", "accuracy", "precision", "recall", "f1"],
        [[c["class"], c["support"], *(f"{100 * c[m]:.1f}%" for m in ("accuracy", "precision", "recall", "f1"))]
         for c in rep["per_class"]],
    )  # fmt: skip
    fig = plot_confusion(rep["confusion"], rep["classes"], figdir / "confusion.png", f"{run.name}: test set")
    doc.img(fig, f"{run.name}: confusion matrix on the test set (rows: true class, columns: predicted)")
    items = [
        (m["png"], f"true {m['true']}, predicted {m['predicted']} ({100 * m['probability']:.0f}%)")
        for m in ev["mistakes"]
        if "png" in m
    ]
    doc.gallery(items, f"The {len(items)} test images {run.name} misclassified most confidently")
