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

from ..errors import KlayerError
from ..runs.shape import ShapeError, check, read_checked, read_results
from ..schema import show

__all__ = [
    "Link",
    "read_study",
    "read_suite",
    "read_gradcheck",
    "read_sanity",
    "run_notes",
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


# -- the files the report reads, shape-checked (klayer.runs.shape) --------------------------------
_ENTRY = {"seed": "int", "run": "str"}
_STUDIES = {
    "gradcheck": {},
    "sanity": {},
    "runs": {"experiments": ["str"], "runs": [{**_ENTRY, "experiment": "str"}]},
    "search": {"key": "str", "low": "num", "high": "num", "runs": [{**_ENTRY, "stage": "str", "value": "num"}]},
    "grid": {
        "key": "str",
        "experiments": ["str"],
        "values": ["num"],
        "runs": [{**_ENTRY, "experiment": "str", "value": "num"}],
    },
}
_SUITE = {"studies": ["any"], "seeds": "int", "quick": "bool", "wall_seconds": "num", "estimated_seconds": "num"}
_GRADCHECK = {
    "source": "str",
    "features": "int",
    "tables": [
        {
            "depth": "int",
            "batch_norm": "bool",
            "batch": "int",
            "lam": "num",
            "hs": ["num"],
            "passed": "bool",
            "rows": [{"name": "str", "kind": "str", "errors": ["num?"], "best?": "int", "bound?": "num"}],
        }
    ],
}
# a loss that became NaN or infinite is written as null (JSON has neither)
_SANITY = {"settings": {}, "curves": {"*": [{"epoch": "num", "train_loss": "num?", "train_accuracy": "num?"}]}}


def read_study(sdir: Path) -> dict:
    """A study folder's ``study.json``; KlayerError naming the file and field when it is
    missing, not JSON or not the shape ``klayer reproduce`` writes (the report cannot tell which
    run is which without it)."""
    path = Path(sdir) / "study.json"
    study, problem = read_checked(path, {"name": "str", "kind": "str", "description?": "str?"})
    if problem is None and study["kind"] not in _STUDIES:
        problem = f"{path}: field kind is {show(study['kind'])}, expected one of {', '.join(_STUDIES)}"
    if problem is None:
        try:
            check(study, _STUDIES[study["kind"]])
        except ShapeError as e:
            problem = f"{path}: {e}"
    if problem is None and study["kind"] == "grid" and not study["values"]:
        problem = f"{path}: field values is empty"
    if problem is not None:
        raise KlayerError(problem)
    return study


def read_suite(path: Path) -> dict | None:
    """``suite.json`` of a reproduce folder, or None when there is none; KlayerError naming the
    file and field when it is damaged."""
    if not Path(path).exists():
        return None
    suite, problem = read_checked(path, _SUITE)
    if problem is not None:
        raise KlayerError(problem)
    return suite


def read_gradcheck(sdir: Path) -> tuple[dict | None, str | None]:
    """``(gradcheck.json, None)``, or ``(None, problem)`` naming the file and field."""
    path = Path(sdir) / "gradcheck.json"
    g, problem = read_checked(path, _GRADCHECK)
    if problem is None and not g["tables"]:
        problem = f"{path}: field tables is empty"
    for i, t in enumerate(g["tables"] if problem is None else []):
        for j, r in enumerate(t["rows"]):
            best = r.get("best")
            ok = 0 <= best < len(r["errors"]) if best is not None else r["errors"] and None not in r["errors"]
            if not ok:
                problem = f"{path}: field tables[{i}].rows[{j}].best does not index its errors"
                break
        if problem is not None:
            break
    return (g, None) if problem is None else (None, problem)


def read_sanity(sdir: Path) -> tuple[dict | None, str | None]:
    """``(sanity.json, None)``, or ``(None, problem)`` naming the file and field."""
    path = Path(sdir) / "sanity.json"
    s, problem = read_checked(path, _SANITY)
    if problem is None:
        empty = [k for k, v in s["curves"].items() if not v]
        if empty or not s["curves"]:
            problem = f"{path}: field curves{'.' + empty[0] if empty else ''} is empty"
        for rows in s["curves"].values():  # null (what write_json makes of NaN or infinity) back to NaN
            for r in rows:
                for k in ("train_loss", "train_accuracy"):
                    r[k] = float("nan") if r[k] is None else r[k]
    return (s, None) if problem is None else (None, problem)


def _pairs(sdir: Path, study: dict) -> list[tuple[dict, dict | None]]:
    """Each run entry of the study with its results (None: unfinished or damaged)."""
    return [(e, read_results(sdir / e["run"] / "results.json")[0]) for e in study.get("runs", [])]


def run_notes(sdir: Path, study: dict) -> list[str]:
    """One line per run of the study that is not in its numbers: diverged (with the update
    step), unfinished, or with a damaged ``results.json`` (naming the field)."""
    notes = []
    for e in study.get("runs", []):
        path = sdir / e["run"] / "results.json"
        res, problem = read_results(path)
        if res is not None and res["status"] == "diverged":
            notes.append(f"{e['run']} diverged at update step {res['diverged_at_step']}")
        elif res is None and not path.exists():
            notes.append(f"{e['run']} is unfinished (no results.json)")
        elif res is None:
            notes.append(problem)
    return notes


def diverged_count(pairs) -> int:
    return sum(1 for _, r in pairs if r and r["status"] == "diverged")


def _with_diverged(cell: str, pairs) -> str:
    n = diverged_count(pairs)
    return f"{cell} ({n} diverged)" if n else cell


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
            g, _ = read_gradcheck(sdir)
            if g is None:
                rows.append([name, "gradcheck.json missing or damaged", "1e-10 to 1e-5", "missing", link])
            else:
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
            s, _ = read_sanity(sdir)
            if s is None:
                rows.append([name, "sanity.json missing or damaged", "", "missing", link])
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
                mine = [(e, r) for e, r in pairs if e["experiment"] == exp]
                accs = _acc(mine)
                rv = refs.get(exp, {}).get("values", [])
                rows.append([exp, _with_diverged(_ms(accs), mine), reported_range(rv), verdict(accs, rv), link])
        elif kind == "search":
            final = [(e, r) for e, r in pairs if e["stage"] == "final"]
            if final:
                rv = ref.get("search", {}).get(name, {}).get("values", [])
                key = st["key"].split(".")[-1]
                accs = _acc(final)
                rows.append(
                    [
                        f"{name}: best {key} {final[0][0]['value']:.4g}, retrained",
                        _with_diverged(_ms(accs), final),
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
                mine = [(e, r) for e, r in pairs if e["experiment"] == exp]
                rows.append([f"{exp}, {key} {values}", _with_diverged(" / ".join(ours) + "%", mine),
                             " / ".join(theirs) + "%",
                             " / ".join(verdicts), link])  # fmt: skip
    for d in loose:
        r = read_results(d / "results.json")[0] or {}
        acc = r.get("test_accuracy")
        rows.append([d.name, "n/a" if acc is None else f"{100 * acc:.2f}%", "", "", Link("runs", "runs")])
    return rows


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    except (OSError, ValueError, TypeError):  # a damaged history is left out of the overlay
        return []
    return rows if all("step" in r for r in rows) else []


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
    done = [(d, read_results(d / "results.json")[0] or {}) for d in loose]
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
