"""The ``klayer`` command: a thin layer that parses arguments and calls the API.

Exit status: 0 success, 1 failure (bad data or config, divergence, a failed check), 2 usage
error, 130 interrupted by Ctrl-C (a checkpoint was written; ``--resume`` continues), 143 stopped by
SIGTERM (``kill``, a batch scheduler, ``docker stop``), which is handled exactly like Ctrl-C.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import multiprocessing
import os
import select
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from .cliargs import (
    UsageError,
    finite_float,
    hidden_sizes,
    int_range,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from .errors import KlayerError, one_line

__all__ = ["main"]

MAX_ETA = 1e3  # the range test's largest learning rate: far beyond where any network diverges


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _data_root(args):
    return Path(args.data) if getattr(args, "data", None) else None


# -- interruptions --------------------------------------------------------------------------------
_terminated = False  # set by SIGTERM: the interruption is reported as such, with exit status 143


def _on_sigterm(signum, frame) -> None:
    """SIGTERM does what Ctrl-C does at this instant: it calls the SIGINT handler in place (the
    training loop's, which stops at the end of the current update and writes a checkpoint; else
    Python's, which raises KeyboardInterrupt), or raises KeyboardInterrupt when SIGINT is ignored
    (a background job of a non-interactive shell)."""
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _takes_sigterm() -> bool:
    """SIGTERM is taken as Ctrl-C in the main thread of the main process only. Never in a worker
    process: the pool stops its workers with SIGTERM and relies on them dying at once."""
    return multiprocessing.parent_process() is None and threading.current_thread() is threading.main_thread()


def _interrupted() -> tuple[str, int]:
    """How the run was stopped: ``("terminated", 143)`` after SIGTERM, else ``("interrupted", 130)``."""
    return ("terminated", 128 + signal.SIGTERM) if _terminated else ("interrupted", 130)


# -- train -----------------------------------------------------------------------------------------
def _after_interrupt(out: Path) -> str:
    """What an interrupted ``klayer train`` left in ``out``, and what to do next."""
    from .runs import run_status
    from .runs.checkpoint import checkpoint_files

    try:
        status, saved = run_status(out), bool(checkpoint_files(out))
    except (OSError, KlayerError):
        status, saved = "unfinished", True
    if status in ("complete", "diverged"):
        return f"the run in {out} had finished ({status}); nothing to resume"
    if saved:
        return f"checkpoint in {out}; continue with --resume"
    return f"no checkpoint yet in {out}; --resume starts the run from the beginning"


def cmd_train(args) -> int:
    from .config import load_experiment
    from .runs import train

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.blas_threads is not None:
        overrides.append(f"train.blas_threads={args.blas_threads}")
    if args.no_download:
        overrides.append("data.download=false")
    if args.data:  # config.toml then names the run's data, for evaluate and --resume
        overrides.append(f"data.path={json.dumps(str(Path(args.data).resolve()), ensure_ascii=False)}")
    config = load_experiment(args.experiment, overrides)
    out = Path(args.out) if args.out else Path("runs") / config.name
    try:
        result = train(
            config,
            out=out,
            resume=args.resume,
            data_root=_data_root(args),
            progress=False if args.quiet else None,
            retrain=args.retrain,
        )
    except KeyboardInterrupt:
        word, code = _interrupted()
        print(f"klayer: {word}; {_after_interrupt(out)}", file=sys.stderr)
        return code
    r = result.results
    if result.finished_before:
        print(
            f"{out} is finished (test accuracy {r['test_accuracy']:.4f}); nothing to resume, nothing changed "
            "(--retrain trains it again)"
        )
        return 0
    print(
        f"{config.name}: test accuracy {r['test_accuracy']:.4f}, final val accuracy "
        f"{r['final']['val_accuracy']:.4f}, {r['seconds_per_epoch']:.2f} s/epoch, "
        f"{r['wall_seconds']:.1f} s wall -> {out}"
    )
    if r.get("snapshot_ensemble"):
        se = r["snapshot_ensemble"]
        members = ", ".join(f"{a:.4f}" for a in se["member_test_accuracy"])
        n = len(se["snapshots"])
        print(f"snapshot ensemble of {n} cycles: test accuracy {se['test_accuracy']:.4f} (members {members})")
    return 0


def cmd_lr_range(args) -> int:
    from .config import load_experiment
    from .data.prepare import load_dataset
    from .io import ensure_dir, write_json
    from .plots import plot_lr_range
    from .training.lr_range import lr_range_test

    config = load_experiment(args.experiment, list(args.set or []))
    if args.eta_start >= args.eta_end:
        raise UsageError(f"--eta-start {args.eta_start:g} must be below --eta-end {args.eta_end:g}")
    out = ensure_dir(Path(args.out) if args.out else Path("runs") / f"{config.name}-lr-range")
    data = load_dataset(config.data, _data_root(args), dtype=config.train.dtype)
    res = lr_range_test(
        config, data, args.steps, args.eta_start, args.eta_end, args.eval_every, progress=False if args.quiet else None
    )
    write_json(out / "lr_range.json", res)
    plot_lr_range(res, out / "lr_range.png")
    s = res["suggestion"]
    stop = "" if res["diverged_at_step"] is None else f"; the loss diverged at update {res['diverged_at_step']}"
    print(
        f"{config.name}: suggested eta_min {s['eta_min']:.3g}, eta_max {s['eta_max']:.3g} (peak validation accuracy "
        f"{s['peak_val_accuracy']:.4f}){stop} -> {out}/lr_range.png, lr_range.json"
    )
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
    if not all(np.isfinite(h) and 0 < h <= 1 for h in steps):
        raise argparse.ArgumentTypeError(f"step sizes must be in (0, 1], got {text!r}")
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
    from .data.prepare import DataConfig, load_raw, prepare
    from .sanity import overfit

    if args.batch_norm and args.batch_size < 2:
        raise UsageError(f"--batch-norm needs --batch-size >= 2, got {args.batch_size}")
    if args.batch_size > args.n:
        raise UsageError(f"--batch-size {args.batch_size} exceeds --n {args.n}")
    raw = load_raw(DataConfig(download=not args.no_download), _data_root(args))
    n_rows = sum(len(y) for name, (_, y) in raw.batches.items() if name.startswith("data_batch_"))
    # assignment 3's 5000 validation images, fewer for a smaller copy (sanity never uses them)
    ds = prepare(raw, "all", max(1, min(5000, n_rows // 10)), "float64")
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
    t.add_argument("--seed", type=nonneg_int, metavar="N", help="train.seed (>= 0)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--retrain", action="store_true", help="start the run in --out over, replacing what it holds")
    t.add_argument("--blas-threads", type=int_range(1, 256), metavar="N", help="BLAS threads, 1 .. 256 (default 1)")
    t.add_argument("--no-download", action="store_true", help="fail instead of downloading CIFAR-10")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    lr = sub.add_parser("lr-range", help="learning-rate range test: suggest eta_min and eta_max (Smith 2017)")
    lr.add_argument("experiment", help="experiment file")
    lr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    lr.add_argument("--steps", type=int_range(3, 10**7), default=400, metavar="N", help="updates (default 400)")
    eta = finite_float(above=0, max=MAX_ETA)
    lr.add_argument("--eta-start", type=eta, default=1e-5, metavar="ETA", help="first eta (default 1e-5)")
    lr.add_argument("--eta-end", type=eta, default=1.0, metavar="ETA", help="last eta (default 1, at most 1000)")
    lr.add_argument("--eval-every", type=positive_int, default=10, metavar="N", help="updates between evaluations")
    lr.add_argument("--out", metavar="DIR", help="folder for lr_range.png and lr_range.json")
    lr.add_argument("--quiet", action="store_true", help="no progress bar")
    data_arg(lr)
    lr.set_defaults(func=cmd_lr_range)

    g = sub.add_parser("gradcheck", help="analytic against numerical gradients, as a table")
    g.add_argument(
        "--hidden",
        type=hidden_sizes,
        default=(50,),
        help='hidden widths, e.g. 50,50 ("" or none: no hidden layer)',
    )
    g.add_argument("--batch-norm", action="store_true", help="batch norm on every hidden layer (needs a batch of 3+)")
    g.add_argument("--lam", type=_number(float, 0, False), default=0.0, help="L2 penalty, >= 0")
    g.add_argument("--batch-size", type=int_range(1, 10**5), default=10, help="samples, 1 .. 100000")
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
    s.add_argument("--hidden", type=hidden_sizes, default=(50,), help="hidden widths, e.g. 50,50 (default 50)")
    s.add_argument("--batch-norm", action="store_true")
    s.add_argument("--n", type=int_range(2), default=100, help="training images to overfit (>= 2; default 100)")
    s.add_argument("--epochs", type=positive_int, default=200)
    s.add_argument("--eta", type=positive_float, default=0.01)
    s.add_argument("--batch-size", type=positive_int, default=10, help="(>= 2 with --batch-norm; default 10)")
    s.add_argument("--lam", type=nonneg_float, default=0.0)
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--target", type=positive_float, default=0.01, help="final loss must be below this")
    s.add_argument("--out", metavar="DIR", help="write sanity_loss.png here")
    s.add_argument("--no-download", action="store_true")
    data_arg(s)
    s.set_defaults(func=cmd_sanity)

    from .inference import add_commands as add_model_commands  # evaluate, predict, export
    from .suite.cli import add_commands  # reproduce and report

    add_model_commands(sub, data_arg)
    add_commands(sub, data_arg)
    from .learn.cli import add_commands as add_learn_commands  # vectors and check

    add_learn_commands(sub, data_arg)
    return p


def _printable_output(error: UnicodeEncodeError):
    """The encoding error handler of klayer's output: a file name's bytes that are not UTF-8
    (which Python holds as surrogate escapes) are written back as those bytes, as ``ls`` shows
    them; any other character the output's encoding lacks is written ``\\uNNNN``. With the
    default, strict handler (a UTF-8 locale, ``PYTHONIOENCODING``) ``klayer predict`` on a file
    named so ended in a UnicodeEncodeError traceback."""
    try:
        return codecs.lookup_error("surrogateescape")(error)
    except UnicodeEncodeError:
        return codecs.lookup_error("backslashreplace")(error)


codecs.register_error("klayer.printable", _printable_output)


def main(argv=None) -> int:
    global _terminated
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="klayer.printable")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "features", None) == 0:
        args.features = None
    _terminated = False
    if not _takes_sigterm():
        return _run(args)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _stdout_is_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (``klayer predict ... | head``)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return False


def _os_error(e: OSError) -> int:
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    print(f"klayer: error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
    return 1


def _run(args) -> int:
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a reader that went away is seen below, not at exit
        return code
    except BrokenPipeError as e:
        if not _stdout_is_closed():
            return _os_error(e)
        # the reader of the output went away (| head): stop quietly with SIGPIPE's status, as cat
        # does, and send what Python still holds to /dev/null, not to a traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KlayerError as e:
        print(f"klayer: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a fault outside klayer's own file writing: still one line
        return _os_error(e)
    except MemoryError as e:  # e.g. numpy's "Unable to allocate 48.0 GiB for an array with shape ..."
        what = one_line(e) or "an allocation failed"
        print(f"klayer: error: out of memory: {what} (lower the sizes: hidden widths, batch, images)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        word, code = _interrupted()
        print(f"klayer: {word}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
