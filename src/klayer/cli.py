"""The ``klayer`` command: a thin layer that parses arguments and calls the API.

Exit status: 0 success, 1 failure (bad data or config, divergence, a failed check), 2 usage
error, 130 interrupted (a checkpoint was written; ``--resume`` continues).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import KlayerError

__all__ = ["main"]


def _hidden(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if any(m < 1 for m in sizes):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive, got {text!r}")
    return sizes


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _data_root(args):
    return Path(args.data) if getattr(args, "data", None) else None


# -- train -----------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .config import load_experiment
    from .train import train

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.blas_threads is not None:
        overrides.append(f"train.blas_threads={args.blas_threads}")
    if args.no_download:
        overrides.append("data.download=false")
    config = load_experiment(args.experiment, overrides)
    out = Path(args.out) if args.out else Path("runs") / config.name
    try:
        result = train(
            config,
            out=out,
            resume=args.resume,
            data_root=_data_root(args),
            progress=False if args.quiet else None,
        )
    except KeyboardInterrupt:
        print(f"klayer: interrupted; checkpoint in {out}; continue with --resume", file=sys.stderr)
        return 130
    r = result.results
    print(
        f"{config.name}: test accuracy {r['test_accuracy']:.4f}, final val accuracy "
        f"{r['final']['val_accuracy']:.4f}, {r['seconds_per_epoch']:.2f} s/epoch, "
        f"{r['wall_seconds']:.1f} s wall -> {out}"
    )
    return 0


# -- evaluate / predict ------------------------------------------------------------------------
def _model_path(path: Path) -> Path:
    return path / "model.safetensors" if path.is_dir() else path


def cmd_evaluate(args) -> int:
    from .config import ExperimentConfig, load_experiment
    from .data.prepare import load_raw, split_raw, standardize
    from .runs import load_model

    path = Path(args.model)
    network, mean, std, _ = load_model(_model_path(path))
    if path.is_dir() and (path / "config.toml").is_file():
        data_cfg = load_experiment(path / "config.toml").data
    else:
        data_cfg = ExperimentConfig().data
    raw = load_raw(data_cfg, _data_root(args))
    splits = dict(zip(("train", "val", "test"), split_raw(raw, data_cfg.split, data_cfg.n_val), strict=True))
    X, y = splits[args.split]
    if mean is None:
        raise KlayerError(f"{path}: model has no standardization statistics")
    Xs = standardize(X, mean, std, network.config.dtype)
    res = network.evaluate(Xs, y, lam=args.lam)
    res.update({"split": args.split, "n": len(y)})
    print(
        json.dumps(res)
        if args.json
        else f"{args.split}: accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f} on {len(y)} images"
    )
    return 0


def cmd_predict(args) -> int:
    from .data.cifar10 import CLASSES
    from .data.prepare import standardize
    from .errors import DataError
    from .runs import load_model

    network, mean, std, _ = load_model(_model_path(Path(args.model)))
    try:
        X = np.load(args.rows, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(args.rows, f"cannot read as .npy ({e})") from None
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != network.config.input_size:
        raise DataError(args.rows, f"rows have shape {X.shape}, the model expects (N, {network.config.input_size})")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(args.rows, f"rows have dtype {X.dtype}, expected numbers")
    Xs = standardize(X, mean, std, network.config.dtype) if mean is not None else X
    P = network.predict_proba(Xs)
    if args.out:
        np.save(args.out, P)
    names = CLASSES if network.config.n_classes == 10 and network.config.input_size == 3072 else None
    for i, p in enumerate(P[: args.show]):
        c = int(p.argmax())
        label = names[c] if names else str(c)
        print(f"{i}\t{label}\t{p[c]:.4f}")
    return 0


# -- gradcheck / sanity ------------------------------------------------------------------------
def _number(kind, low: float, strict: bool):
    """An argparse type: a finite ``kind`` number above ``low`` (``>= low`` unless ``strict``)."""
    relation = ">" if strict else ">="

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not (np.isfinite(value) and (value > low if strict else value >= low)):
            raise argparse.ArgumentTypeError(f"must be finite and {relation} {low:g}, got {text!r}")
        return value

    return parse


def _steps(text: str) -> tuple[float, ...]:
    steps = _floats(text)
    if not all(np.isfinite(h) and h > 0 for h in steps):
        raise argparse.ArgumentTypeError(f"step sizes must be positive and finite, got {text!r}")
    return steps


def cmd_gradcheck(args) -> int:
    from .data import default_data_dir, sample_rows
    from .gradcheck import check_gradients
    from .network import Network, NetworkConfig

    if args.batch_norm and args.hidden and args.batch_size < 3:
        args.usage_error(
            f"--batch-norm needs --batch-size 3 or more (got {args.batch_size}): batch norm over 2 samples maps "
            "every feature to about +-1 whatever its input, so the gradients in front of it vanish"
        )
    rng = np.random.default_rng(args.seed)
    root = _data_root(args) or default_data_dir()
    X, y, src = sample_rows(root, args.batch_size, args.features or None, rng, args.source)
    config = NetworkConfig(X.shape[1], args.hidden, 10, args.batch_norm, dtype=args.dtype)
    net = Network.init(config, rng)
    report = check_gradients(
        net, X.astype(args.dtype), y, args.lam, rng, hs=args.h, max_entries=args.max_entries, tol=args.tol
    )
    print(f"data: {src}")
    print(report.format_table())
    return 0 if report.passed else 1


def cmd_sanity(args) -> int:
    from .data.prepare import DataConfig, load_dataset
    from .sanity import overfit

    ds = load_dataset(DataConfig(download=not args.no_download), _data_root(args), dtype="float64")
    rows = overfit(
        ds,
        n=args.n,
        hidden=args.hidden,
        batch_norm=args.batch_norm,
        eta=args.eta,
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        lam=args.lam,
        seed=args.seed,
    )
    for r in rows[:: max(1, len(rows) // 10)] + [rows[-1]]:
        print(f"epoch {r['epoch']:6.1f}  train loss {r['train_loss']:.5f}  train acc {r['train_accuracy']:.3f}")
    if args.out:
        from .plots import plot_curves

        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot_curves(
            {"training loss": ([r["epoch"] for r in rows], [r["train_loss"] for r in rows])},
            Path(args.out) / "sanity_loss.png",
            "epoch",
            "loss",
            "overfit 100 images",
            logy=True,
        )
    final = rows[-1]["train_loss"]
    ok = final < args.target
    print(f"final training loss {final:.5f} {'<' if ok else '>='} {args.target}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="klayer", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"klayer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_arg(q):
        q.add_argument(
            "--data",
            metavar="DIR",
            help="data folder or archive (default: $KLAYER_DATA, else the user cache)",
        )

    t = sub.add_parser("train", help="train a network from an experiment TOML file")
    t.add_argument("experiment", help="experiment file, e.g. experiments/a3_3layer_bn.toml")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.lam=0.01 (repeatable)",
    )
    data_arg(t)
    t.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<name>)")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--blas-threads", type=int, metavar="N", help="BLAS threads (default 1)")
    t.add_argument("--no-download", action="store_true", help="fail instead of downloading CIFAR-10")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a saved model on a split")
    e.add_argument("model", help="run folder or model.safetensors")
    e.add_argument("--split", choices=("train", "val", "test"), default="test")
    e.add_argument("--lam", type=float, default=0.0, help="lam for the reported cost")
    e.add_argument("--json", action="store_true")
    data_arg(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="class probabilities for the rows of a .npy file")
    pr.add_argument("model", help="run folder or model.safetensors")
    pr.add_argument("rows", help=".npy array (N, d) of raw features, e.g. CIFAR pixels 0..255")
    pr.add_argument("--out", metavar="PROBS.npy", help="save the (N, C) probabilities")
    pr.add_argument("--show", type=int, default=20, help="rows to print")
    pr.set_defaults(func=cmd_predict)

    g = sub.add_parser("gradcheck", help="analytic against numerical gradients, as a table")
    g.add_argument(
        "--hidden",
        type=_hidden,
        default=(50,),
        help='hidden widths, e.g. 50,50 ("" or none: no hidden layer)',
    )
    g.add_argument("--batch-norm", action="store_true", help="batch norm on every hidden layer (needs a batch of 3+)")
    g.add_argument("--lam", type=_number(float, 0, False), default=0.0, help="L2 penalty, >= 0")
    g.add_argument("--batch-size", type=_number(int, 1, False), default=10, help="samples, >= 1")
    g.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="the network's dtype; the numerical side is always float64",
    )
    g.add_argument(
        "--tol",
        type=_number(float, 0, True),
        help="relative accuracy asked of every parameter (default 1e-7 for float64, 1e-3 for float32)",
    )
    g.add_argument("--seed", type=_number(int, 0, False), default=0, help="seed of data, weights and entries, >= 0")
    g.add_argument(
        "--features", type=_number(int, 0, False), default=20, help="use the first d input features (0: all)"
    )
    g.add_argument(
        "--max-entries",
        type=_number(int, 1, False),
        default=200,
        help="entries checked per parameter, >= 1 (a seeded subset beyond, with the largest gradient)",
    )
    g.add_argument("--h", type=_steps, help="step sizes, e.g. 1e-6,1e-5,1e-4 (default 1e-7 ... 1e-2)")
    g.add_argument(
        "--source",
        choices=("auto", "cifar", "random"),
        default="auto",
        help="CIFAR-10 rows if found locally (auto), or Gaussian data",
    )
    data_arg(g)
    g.set_defaults(func=cmd_gradcheck, usage_error=g.error)

    s = sub.add_parser("sanity", help="overfit 100 training images; the loss must approach 0")
    s.add_argument("--hidden", type=_hidden, default=(50,))
    s.add_argument("--batch-norm", action="store_true")
    s.add_argument("--n", type=int, default=100)
    s.add_argument("--epochs", type=int, default=200)
    s.add_argument("--eta", type=float, default=0.01)
    s.add_argument("--batch-size", type=int, default=10)
    s.add_argument("--lam", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--target", type=float, default=0.01, help="final loss must be below this")
    s.add_argument("--out", metavar="DIR", help="write sanity_loss.png here")
    s.add_argument("--no-download", action="store_true")
    data_arg(s)
    s.set_defaults(func=cmd_sanity)

    from .suite import add_commands  # reproduce and report

    add_commands(sub, data_arg)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "features", None) == 0:
        args.features = None
    try:
        return args.func(args)
    except KlayerError as e:
        print(f"klayer: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("klayer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
