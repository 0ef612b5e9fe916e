"""Using trained models: ``klayer evaluate``, ``klayer predict`` and ``klayer export``.

A MODEL argument is a run folder (its ``model.safetensors`` is used) or a model file, as
everywhere else. Class names come from the model file.

``evaluate MODEL [MODEL ...]``
    Accuracy, cross-entropy, per-class accuracy (= recall), precision, recall and F1, and the
    confusion matrix (rows: true class, columns: predicted), on a split of the model's data set
    (the ``config.toml`` of the run folder, also for its ``model.safetensors`` and
    ``snapshots/``, says which; CIFAR-10 for a model file of its own) or on user data
    (``--rows X.npy --labels y.npy``). Several models form an ensemble that averages their class
    probabilities (:mod:`klayer.ensemble`): each member and the ensemble are reported. ``--format
    json`` gives the same as data; ``--out DIR`` also writes ``confusion.png`` and
    ``metrics.json``.
``predict MODEL INPUT [INPUT ...]``
    The top-k classes with their probabilities for each row of ``.npy`` files and each image
    (PNG, JPEG, ...; folders are searched recursively, in sorted order), as a table, JSON or CSV.
    A file that cannot be used gets one line on stderr and the others are still predicted; the
    exit status is 1 if any input failed.
``export MODEL --onnx OUT.onnx``
    The model as ONNX (:mod:`klayer.export.onnx`).

Every input is checked at the door (:mod:`klayer.data.validate`): NaN, infinities, complex
numbers, non-numeric dtypes, the wrong width and labels outside the classes are one-line errors
naming the file, row and column.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from .cliargs import int_range, nonneg_float, nonneg_int, positive_int
from .errors import DataError, KlayerError

__all__ = [
    "model_path",
    "run_folder_of",
    "evaluate_models",
    "format_evaluation",
    "predict_inputs",
    "format_predictions",
    "evaluate_run",
    "add_commands",
]


def model_path(path) -> Path:
    """A run folder's ``model.safetensors``, or the path itself."""
    path = Path(path)
    return path / "model.safetensors" if path.is_dir() else path


def run_folder_of(path) -> Path | None:
    """The run folder a MODEL argument belongs to: the folder itself, the folder of its
    ``model.safetensors`` or of its ``snapshots/`` (each with a ``config.toml``); None for a
    model file of its own."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name == "model.safetensors":
        folder = path.parent
    elif path.parent.name == "snapshots":
        folder = path.parent.parent
    else:
        return None
    return folder if (folder / "config.toml").is_file() else None


def _warn_line(message: str) -> None:
    print(f"klayer: error: {message}", file=sys.stderr)


# -- evaluate ----------------------------------------------------------------------------------
def _finite_rows(P: np.ndarray) -> np.ndarray:
    """Which rows of probabilities ``P: (n, C)`` are all finite, ``(n,)`` bool."""
    return np.isfinite(P).all(axis=1)


def _not_finite(what, dtype) -> str:
    return f"the model's output for {what} is not finite (its features are too large for {dtype} arithmetic)"


def evaluate_models(models, X: np.ndarray, y: np.ndarray, names=None, lam: float = 0.0, source="rows") -> dict:
    """Evaluate one model, or the probability-averaged ensemble of several, on raw rows.

    Parameters
    ----------
    models : SavedModel objects (same input size and classes).
    X : (n, d) raw rows; y : (n,) class indices.
    names : a name per model (for the members table).
    lam : penalty for the reported ``cost`` (one model only).
    source : where ``X`` came from, named when a row's probabilities are not finite (a
        DataError: rows beyond the range of the models' arithmetic).

    Returns
    -------
    :func:`klayer.metrics.classification_report` of the (ensemble's) probabilities, plus
    ``models`` (the names) and, for an ensemble, ``members`` (``model, accuracy, loss`` each).
    """
    from .ensemble import check_members, evaluate_ensemble
    from .metrics import classification_report
    from .network import weight_penalty

    names = list(names or (f"model {i}" for i in range(len(models))))
    check_members(models, names)
    with np.errstate(all="ignore"):  # overflow shows as non-finite probabilities, refused below
        P = models[0].predict_proba(X) if len(models) == 1 else None
        r = None if P is not None else evaluate_ensemble(models, X, y)
    P = P if P is not None else r["probabilities"]
    finite = _finite_rows(P)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(source, _not_finite(f"row {row}", models[0].network.config.dtype))
    if len(models) == 1:
        m = models[0]
        rep = classification_report(y, P, m.classes)
        penalty = float(weight_penalty(m.network.params, m.network.config))
        rep["cost"] = rep["loss"] + lam * penalty
    else:
        rep = classification_report(y, P, models[0].classes)
        rep["members"] = [{"model": n, **s} for n, s in zip(names, r["members"], strict=True)]
    rep["models"] = names
    rep["probabilities"] = P
    return rep


def _short_names(classes, width: int) -> list[str]:
    short = [c[:width] for c in classes]
    return short if len(set(short)) == len(short) else [str(i) for i in range(len(classes))]


def format_evaluation(rep: dict) -> str:
    """The evaluation as text: headline, members, per-class table, confusion matrix."""
    lines = [f"{rep['what']}: {rep['n']} images"] if rep.get("what") else []
    if "members" in rep:
        w = max(len("ensemble"), *(len(m["model"]) for m in rep["members"]))
        lines += ["", f"{'model':<{w}}  accuracy    loss"]
        lines += [f"{m['model']:<{w}}  {m['accuracy']:8.4f}  {m['loss']:6.4f}" for m in rep["members"]]
        lines += [f"{'ensemble':<{w}}  {rep['accuracy']:8.4f}  {rep['loss']:6.4f}  (mean of {len(rep['members'])})"]
    else:
        lines += [f"accuracy {rep['accuracy']:.4f}, loss {rep['loss']:.4f}"]
    classes = rep["classes"]
    w = max(5, *(len(c) for c in classes))
    lines += ["", f"{'class':<{w}}  images  accuracy  precision  recall      f1"]
    for c in rep["per_class"]:
        lines.append(
            f"{c['class']:<{w}}  {c['support']:6d}  {c['accuracy']:8.4f}  {c['precision']:9.4f}  "
            f"{c['recall']:6.4f}  {c['f1']:6.4f}"
        )
    mac = rep["macro"]
    lines.append(
        f"{'mean':<{w}}  {rep['n']:6d}  {mac['accuracy']:8.4f}  {mac['precision']:9.4f}  "
        f"{mac['recall']:6.4f}  {mac['f1']:6.4f}"
    )
    lines.append("(a class's accuracy is the share of its images classified correctly, which is its recall)")
    cm = np.asarray(rep["confusion"])
    C = len(classes)
    if C > 30:
        lines += ["", f"confusion matrix: {C} x {C}, too wide to print (--format json or --out DIR)"]
        return "\n".join(lines)
    cw = max(5, len(str(cm.max())))
    short = _short_names(classes, cw)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    lines.append(" " * w + "".join(f" {s:>{cw}}" for s in short))
    for name, row in zip(classes, cm, strict=True):
        lines.append(f"{name:<{w}}" + "".join(f" {v:>{cw}d}" for v in row))
    if short[0] == "0":
        lines.append("columns: " + ", ".join(f"{i} {c}" for i, c in enumerate(classes)))
    return "\n".join(lines)


def _evaluation_data(args, first: Path, width: int, n_classes: int):
    from .data.validate import check_labels, check_rows, load_npy

    if args.rows:
        if not args.labels:
            raise KlayerError("--rows needs --labels (the true class of every row)")
        X = check_rows(load_npy(args.rows), args.rows, width)
        y = check_labels(load_npy(args.labels), args.labels, n_classes, len(X))
        return X, y, f"{args.rows}"
    if args.labels:
        raise KlayerError("--labels needs --rows")
    from .config import load_experiment
    from .data.prepare import DataConfig, load_raw, split_raw

    run = run_folder_of(first)  # a run's model file is evaluated on the run's data, as the run folder is
    cfg = load_experiment(run / "config.toml").data if run and (run / "config.toml").is_file() else DataConfig()
    raw = load_raw(cfg, Path(args.data) if args.data else None)
    splits = dict(zip(("train", "val", "test"), split_raw(raw, cfg.split, cfg.n_val), strict=True))
    X, y = splits[args.split]
    where = f"{raw.source} ({args.split} split)"
    if X.ndim == 2 and X.shape[1] != width:
        raise DataError(
            where,
            f"rows have {X.shape[1]} features, the model expects {width}; evaluate its run folder (whose "
            "config.toml names the data) or give --rows X.npy --labels y.npy",
        )
    X = check_rows(X, where, width)
    y = check_labels(y, where, n_classes, len(X))
    return X, y, f"{args.split} split of {raw.source}"


def _strict_json(obj, **kwargs) -> str:
    """``obj`` as RFC 8259 JSON: a NaN or infinity (which the checks before should make
    impossible) is an error, never a bare ``NaN`` token in the output."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        raise KlayerError("internal error: a metric is not a finite number; nothing was written") from None


def cmd_evaluate(args) -> int:
    from .data.validate import check_magnitude
    from .io import atomic_write, ensure_dir, write_json
    from .runs import load_model

    paths = [Path(p) for p in args.models]
    models = [load_model(model_path(p)) for p in paths]
    for p, m in zip(paths, models, strict=True):
        if m.mean is None and not args.rows:
            raise KlayerError(f"{p}: model has no standardization statistics; give its features with --rows")
    cfg = models[0].network.config
    X, y, what = _evaluation_data(args, paths[0], cfg.input_size, cfg.n_classes)
    source = args.rows or what
    for m in models:
        check_magnitude(X, source, m.mean, m.std, m.network.config.dtype)
    rep = evaluate_models(models, X, y, [str(p) for p in paths], args.lam, source)
    P = rep.pop("probabilities")
    rep.update({"what": what, "split": None if args.rows else args.split})
    text = _strict_json(rep, indent=1)
    if args.out:
        from .plots import plot_confusion

        out = ensure_dir(args.out)
        title = f"{'ensemble of ' + str(len(models)) if len(models) > 1 else paths[0].name}: {what}"
        plot_confusion(rep["confusion"], rep["classes"], out / "confusion.png", title[:90])
        write_json(out / "metrics.json", rep, nonfinite="refuse")  # finite: _strict_json passed above
        if args.save_probabilities:
            buf = io.BytesIO()
            np.save(buf, P)
            atomic_write(out / "probabilities.npy", buf.getvalue())
    fmt = "json" if args.json else args.format
    print(text if fmt == "json" else format_evaluation(rep))
    return 0


def evaluate_run(folder, network, data, dtype="float32", title: str = "") -> dict:
    """Evaluate a finished run on its test split, write ``confusion.png`` into its folder and
    return ``{"per_class", "confusion", "macro"}`` for its ``results.json``.

    Called by :class:`klayer.runs.RunFolder` at the end of training."""
    from .metrics import classification_report
    from .plots import plot_confusion

    P = network.predict_proba(data.X_test, prep=lambda a: data.features(a, dtype))
    rep = classification_report(data.y_test, P, data.classes)
    plot_confusion(rep["confusion"], rep["classes"], Path(folder) / "confusion.png", f"{title}: test set".strip(": "))
    return {k: rep[k] for k in ("per_class", "confusion", "macro")}


# -- predict -----------------------------------------------------------------------------------
def predict_inputs(model, inputs, log=_warn_line) -> tuple[list[str], np.ndarray, int]:
    """Class probabilities for ``.npy`` row files, image files and folders of images.

    Returns
    -------
    names : one per predicted row (``file.npy[i]`` for rows, the path for an image).
    P : (n, C) probabilities in that order.
    failed : how many inputs could not be used (each was reported through ``log``).
    """
    from .data.images import list_files, model_image_shape, read_image
    from .data.validate import check_magnitude, check_rows, load_npy

    d = model.network.config.input_size
    dtype = model.network.config.dtype
    shape = model_image_shape(model.meta, d)
    names, parts, owners, failed = [], [], [], 0
    for arg in inputs:
        arg = Path(arg)
        files = list_files(arg)
        if not files:
            log(str(DataError(arg, "folder holds no files (hidden files are skipped)")))
            failed += 1
            continue
        for f in files:
            try:
                if f.suffix.lower() == ".npy":
                    if f != arg:  # folders hold images; .npy files are given one by one
                        raise DataError(f, "a .npy file inside a folder; give row files by name")
                    X = check_magnitude(check_rows(load_npy(f), f, d), f, model.mean, model.std, dtype)
                    names += [f"{f}[{i}]" for i in range(len(X))]
                    parts.append(np.asarray(X, np.float64))
                    owners += [str(f)] * len(X)
                    continue
                if not f.exists():
                    raise DataError(f, "no such file")
                if shape is None:
                    raise DataError(f, f"the model takes {d} features, not images; give rows as a .npy file")
                row = read_image(f, shape)
            except DataError as e:
                log(str(e))
                failed += 1
                continue
            names.append(str(f))
            parts.append(row[None, :].astype(np.float64))
            owners.append(str(f))
    if not parts:
        return [], np.empty((0, model.network.config.n_classes)), failed
    with np.errstate(all="ignore"):  # overflow shows as non-finite probabilities, dropped below
        P = model.predict_proba(np.concatenate(parts))
    finite = _finite_rows(P)
    if not finite.all():  # one line per input with such a row; the other inputs are still predicted
        owners = np.asarray(owners)
        bad = list(dict.fromkeys(owners[~finite]))
        for f in bad:
            mine = np.flatnonzero(owners == f)
            row = int(np.flatnonzero(~finite[mine])[0])
            log(
                str(
                    DataError(
                        f, _not_finite(f"row {row}" if len(mine) > 1 or f.lower().endswith(".npy") else "it", dtype)
                    )
                )
            )
        failed += len(bad)
        keep = ~np.isin(owners, bad)
        names, P = [n for n, k in zip(names, keep, strict=True) if k], P[keep]
    return names, P, failed


def format_predictions(names, P, classes, k: int = 3, fmt: str = "table") -> str:
    """The top-``k`` classes of every row, as ``table``, ``json`` or ``csv``."""
    k = max(1, min(k, P.shape[1]))
    top = np.argsort(-P, axis=1, kind="stable")[:, :k]
    if fmt == "json":
        return _strict_json(
            [
                {"input": n, "top": [{"class": classes[j], "probability": float(p[j])} for j in t]}
                for n, p, t in zip(names, P, top, strict=True)
            ],
            indent=1,
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["input", *[f"{h}_{i + 1}" for i in range(k) for h in ("class", "probability")]])
        for n, p, t in zip(names, P, top, strict=True):
            w.writerow([n, *[v for j in t for v in (classes[j], f"{p[j]:.6f}")]])
        return buf.getvalue().rstrip("\n")
    wn = max(5, *(len(n) for n in names)) if names else 5
    wc = max(5, *(len(c) for c in classes))
    cell = wc + 8
    lines = [f"{'input':<{wn}}" + "".join(f"  {f'top {i + 1}':<{cell}}" for i in range(k)).rstrip()]
    for n, p, t in zip(names, P, top, strict=True):
        lines.append(f"{n:<{wn}}" + "".join(f"  {classes[j]:<{wc}} {p[j]:7.4f}" for j in t))
    return "\n".join(lines)


def cmd_predict(args) -> int:
    from .io import atomic_write
    from .runs import load_model

    model = load_model(model_path(args.model))
    names, P, failed = predict_inputs(model, args.inputs)
    if names:
        shown = slice(None) if args.show is None else slice(0, args.show)
        print(format_predictions(names[shown], P[shown], model.classes, args.top_k, args.format))
    if args.out and names and not failed:  # a partial array would not say which row is which input
        buf = io.BytesIO()
        np.save(buf, P)
        atomic_write(args.out, buf.getvalue())
    return 1 if failed else 0


# -- export ------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from .export.onnx import export_onnx
    from .runs import load_model

    model = load_model(model_path(args.model))
    path = export_onnx(model, args.onnx, args.opset)
    cfg = model.network.config
    print(
        f"{path}: ONNX opset {args.opset}, {cfg.input_size} -> {list(cfg.hidden)} -> {cfg.n_classes}"
        f"{', batch norm folded into the linear layers' if cfg.batch_norm else ''}; input 'pixels' "
        f"(N, {cfg.input_size}) float32 raw values, output 'probabilities' (N, {cfg.n_classes})"
    )
    return 0


# -- command line ------------------------------------------------------------------------------
def add_commands(sub, data_arg) -> None:
    """Add ``evaluate``, ``predict`` and ``export`` to the ``klayer`` parser."""
    from .export.onnx import OPSET

    e = sub.add_parser(
        "evaluate",
        help="accuracy, per-class scores and confusion matrix of a model or an ensemble",
        description="Evaluate one model, or the ensemble (mean class probabilities) of several.",
    )
    e.add_argument("models", nargs="+", metavar="MODEL", help="run folders or model files")
    e.add_argument("--split", choices=("train", "val", "test"), default="test", help="data set split (default test)")
    e.add_argument("--rows", metavar="X.npy", help="evaluate on these raw rows (N, d) instead of a split")
    e.add_argument("--labels", metavar="y.npy", help="the true class indices (N,) of --rows")
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.add_argument("--json", action="store_true", help="same as --format json")
    e.add_argument("--out", metavar="DIR", help="also write confusion.png and metrics.json here")
    e.add_argument("--save-probabilities", action="store_true", help="with --out: also probabilities.npy")
    e.add_argument("--lam", type=nonneg_float, default=0.0, help="lam for the reported cost (one model; >= 0)")
    data_arg(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser(
        "predict",
        help="top-k classes of .npy rows or image files",
        description="Class probabilities for rows of .npy files and for images (folders: recursively).",
    )
    pr.add_argument("model", help="run folder or model file")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy rows (N, d), image files or folders of images")
    pr.add_argument("--top-k", type=positive_int, default=3, metavar="K", help="classes shown per input (default 3)")
    pr.add_argument("--format", choices=("table", "json", "csv"), default="table")
    pr.add_argument("--out", metavar="PROBS.npy", help="save all (N, C) probabilities (only when every input worked)")
    pr.add_argument("--show", type=nonneg_int, metavar="N", help="print only the first N inputs")
    pr.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="export a model (ONNX)", description="Export a model for other runtimes.")
    x.add_argument("model", help="run folder or model file")
    x.add_argument("--onnx", required=True, metavar="OUT.onnx", help="write an ONNX model here")
    x.add_argument("--opset", type=int_range(17, 99), default=OPSET, help=f"ONNX opset (default {OPSET}, 17 or later)")
    x.set_defaults(func=cmd_export)
