"""One training run: klayer against PyTorch and scikit-learn on identical data and settings.

The assignment-3 3-layer batch-norm network (45000 training images, batch 100, float32, n_s 2250,
2 cycles = 20 epochs, 10 evaluations per cycle on train and validation), on 1 and 2 threads; and
bonus_fast (3072-1024-512-10, batch 256, flips and 2-pixel translations, ZCA, Nesterov SGD;
``--bonus-epochs`` of its 20 epochs) on 2 threads. Seconds per epoch include the evaluation
passes on both sides (scikit-learn evaluates nothing and has no batch norm; it is listed for
reference) and, for bonus_fast, the augmentation (PyTorch gets the same numpy augmenter).

Every row gives, measured in this run:

- ``limit/ours``: the limit, the time the matrix products of the run take when timed alone at
  their real shapes and the same thread count (:func:`peers.time_products`), over the run's time;
- ``peak/ours``: the same products' FLOPs at the large-square sgemm peak, over the run's time;
- ``vs torch``: seconds per epoch over PyTorch eager's at the same thread count.

The evaluation pass (forward only, in evaluation mode, 50000 rows, uint8 rows standardized on the
way) is timed on its own and given as a fraction of the sgemm peak. klayer runs each in a fresh
process, whose peak RSS is reported.

    python benchmarks/speed.py [--data DIR] [--repeats 3] [--cycles 2] [--bonus-epochs 2] [--compile]

Writes benchmarks/results/speed.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import (  # noqa: E402
    eval_products,
    peak_rss_mb,
    products_gflop,
    sgemm_peak,
    sklearn_train,
    step_products,
    time_products,
    torch_train,
)

ROOT = Path(__file__).resolve().parents[1]
NUMPY = "klayer, numpy kernels"  # KLAYER_KERNELS=numpy: the reference, without numba
EXPERIMENTS = {"a3": "experiments/a3_3layer_bn.toml", "bonus": "experiments/bonus_fast.toml"}


def overrides(task):
    threads = task["threads"]
    quick = ["train.n_s=50", "train.evals_per_cycle=2"] if task.get("quick") else []
    if task["exp"] == "a3":
        return quick + [
            f"train.blas_threads={threads}",
            f"train.n_cycles={task['cycles']}",
            f"train.eval_train_subset={task['subset']}",
            "train.checkpoint_every=0",
        ]
    return [f"train.blas_threads={threads}", f"train.n_epochs={task['epochs']}", "train.checkpoint_every=0"]


def worker(task: dict) -> dict:
    """Run in a fresh process: one klayer training run, or one timed evaluation pass."""
    os.environ["KLAYER_KERNELS"] = task.get("kernels", "auto")
    from threadpoolctl import threadpool_limits

    from klayer import load_experiment
    from klayer.data import load_dataset
    from klayer.runs import train
    from klayer.training import Trainer

    over = overrides(task)
    if task["kind"] == "eval" and task["exp"] == "bonus":
        # the same products without computing the ZCA matrix: standardized rows, as a3's
        over += ["data.whiten='none'", "augment.flip=false", "augment.translate=0", "data.n_val=5000"]
    cfg = load_experiment(ROOT / EXPERIMENTS[task["exp"]], over)
    data = load_dataset(cfg.data, task["data"], dtype=cfg.train.dtype, progress=False)
    if task["kind"] == "eval":
        trainer = Trainer([cfg], data)
        sizes = list(trainer.config.sizes)
        with threadpool_limits(task["threads"], user_api="blas"):
            trainer.init_bn_state()
            for _ in range(20):
                trainer.step()
            trainer.X_eval, trainer.y_eval = data.X_train[:45000], data.y_train[:45000]  # the run's pass
            ts, lims, peaks = [], [], []
            for _ in range(task["reps"]):  # the pass and its limit alternate, so that noise hits both
                t = time.perf_counter()
                trainer.evaluate()
                ts.append(time.perf_counter() - t)
                lims.append(time_products(eval_products(sizes, 45000) + eval_products(sizes, 5000), task["threads"]))
                peaks.append(sgemm_peak(task["threads"]))
        rows = len(trainer.y_eval) + len(data.y_val)
        return {
            "seconds": statistics.median(ts), "rows": rows, "rss_mb": peak_rss_mb(),
            "limit": statistics.median(lims), "peak": statistics.median(peaks),
        }  # fmt: skip
    before = run_limit_of(task)
    r = train(cfg, data, progress=False).results
    after = run_limit_of(task)
    import klayer.kernels

    assert klayer.kernels.name() == ("numpy" if task.get("kernels") == "numpy" else "numba"), "numba missing"
    return {
        "seconds_per_epoch": r["seconds_per_epoch"],
        "test_accuracy": r["test_accuracy"],
        "rss_mb": peak_rss_mb(),
        "limit": (before[0] + after[0]) / 2,
        "peak": (before[2] + after[2]) / 2,
    }


def in_process(task: dict) -> dict:
    """Run :func:`worker` in a fresh Python process (its own peak RSS, its own BLAS threads)."""
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"worker {task} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def torch_bonus(data, threads, epochs):
    """PyTorch eager on bonus_fast's network and data, with klayer's augmenter on the rows."""
    from klayer import load_experiment
    from klayer.training.augment import Augmenter

    cfg = load_experiment(ROOT / EXPERIMENTS["bonus"])
    tc = cfg.train
    aug = Augmenter.from_config(cfg.augment, data.image_shape)
    spe = len(data.y_train) // tc.batch_size
    return torch_train(
        data,
        hidden=tuple(cfg.model.hidden),
        lam=tc.lam,
        eta_min=tc.eta_min,
        eta_max=tc.eta_max,
        n_s=spe * epochs // 2,
        n_cycles=1,
        batch_size=tc.batch_size,
        evals_per_cycle=epochs,
        eval_train_subset=tc.eval_train_subset,
        threads=threads,
        momentum=tc.momentum,
        nesterov=tc.nesterov,
        augment=aug,
    )


def run_limit_of(task: dict) -> tuple[float, float, float]:
    """``(limit s/epoch, GFLOP/epoch, sgemm peak GFLOP/s)`` of a row's run, measured now (each
    run measures them just before and just after itself, in its own process)."""
    threads = task["threads"]
    if task["exp"] == "a3":
        cycles = 1 if task.get("quick") else task["cycles"]
        n_eval = task["subset"] or 45000
        lim, gf = run_limit([3072, 50, 50, 10], 100, 45000, [n_eval, 5000], 10 * cycles + 1, 10 * cycles, threads)
    else:
        from klayer import load_experiment

        cfg = load_experiment(ROOT / EXPERIMENTS["bonus"])
        sizes = [3072, *cfg.model.hidden, 10]
        evals = [cfg.train.eval_train_subset, 1000]
        epochs = task["epochs"]
        lim, gf = run_limit(sizes, cfg.train.batch_size, 49000, evals, epochs + 1, epochs, threads)
    return lim, gf, sgemm_peak(threads)


def run_limit(sizes, batch, n_train, eval_rows, evals, epochs, threads, chunk=None):
    """Limit (seconds per epoch) and products (GFLOP per epoch) of a run."""
    spe = n_train // batch
    per_step = step_products(sizes, batch)
    per_eval = [p for rows in eval_rows for p in eval_products(sizes, rows, chunk=chunk)]
    seconds = spe * time_products(per_step, threads) + evals / epochs * time_products(per_eval, threads)
    gflop = spe * products_gflop(per_step) + evals / epochs * products_gflop(per_eval)
    return seconds, gflop


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--eval-train-subset", type=int, default=0)
    ap.add_argument("--bonus-epochs", type=int, default=2, help="epochs of bonus_fast (0: leave it out)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (slow to warm up)")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--quick", action="store_true", help="plumbing test: 100 steps, 1 repeat, no bonus_fast")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/speed.txt"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.repeats, args.cycles, args.eval_train_subset, args.bonus_epochs, args.no_sklearn = 1, 1, 1000, 0, True

    from klayer import load_experiment
    from klayer.data import DataConfig, load_dataset

    data = load_dataset(DataConfig(download=False), args.data, dtype="float32")
    peak = {t: sgemm_peak(t) for t in (1, 2)}
    base = {"data": args.data, "cycles": args.cycles, "subset": args.eval_train_subset, "epochs": args.bonus_epochs}
    base["quick"] = args.quick
    plan = [("klayer", "a3", 1), ("klayer", "a3", 2), ("pytorch eager", "a3", 1), ("pytorch eager", "a3", 2)]
    plan += [(NUMPY, "a3", 1), (NUMPY, "a3", 2)]
    if args.compile:
        plan.append(("pytorch compile", "a3", 2))
    if not args.no_sklearn:
        plan.append(("scikit-learn (no BN)", "a3", 1))
    if args.bonus_epochs:
        plan += [("klayer", "bonus", 2), ("pytorch eager", "bonus", 2), (NUMPY, "bonus", 2)]
    bonus_data = None
    runs = {}
    evals = {}
    for rep in range(args.repeats):
        for name, exp, threads in plan:  # interleaved, so that noise hits all alike
            if name.startswith("scikit") and rep:
                continue
            kw = dict(n_cycles=args.cycles, threads=threads, eval_train_subset=args.eval_train_subset)
            if args.quick:
                kw.update(n_s=50, evals_per_cycle=2)
            task = {**base, "exp": exp, "threads": threads}
            try:
                if not name.startswith("klayer"):
                    before = run_limit_of(task)
                if name.startswith("klayer"):
                    kernels = "numpy" if name == NUMPY else "numba"
                    r = in_process({**base, "kind": "train", "exp": exp, "threads": threads, "kernels": kernels})
                elif exp == "bonus":
                    if bonus_data is None:
                        cfg = load_experiment(ROOT / EXPERIMENTS["bonus"])
                        bonus_data = load_dataset(cfg.data, args.data, dtype="float32", progress=False)
                    r = torch_bonus(bonus_data, threads, args.bonus_epochs)
                elif name.startswith("pytorch"):
                    r = torch_train(data, compile=name.endswith("compile"), **kw)
                else:
                    from threadpoolctl import threadpool_limits

                    with threadpool_limits(threads):
                        r = sklearn_train(data, epochs=10 * args.cycles)
            except ImportError as e:
                print(f"skipping {name}: {e}")
                continue
            if not name.startswith("klayer"):
                after = run_limit_of(task)
                r = {**r, "limit": (before[0] + after[0]) / 2, "peak": (before[2] + after[2]) / 2}
            runs.setdefault((name, exp, threads), []).append(r)
            print(
                f"{name:24s} {exp:5s} threads={threads} {r['seconds_per_epoch']:.3f} s/epoch  "
                f"test {r['test_accuracy']:.4f}  limit/ours {r['limit'] / r['seconds_per_epoch']:.2f}",
                flush=True,
            )
        for exp in ("a3", "bonus") if args.bonus_epochs else ("a3",):
            for threads in (1, 2):
                e = in_process({**base, "kind": "eval", "exp": exp, "threads": threads, "reps": 3})
                evals.setdefault((exp, threads), []).append(e)
                print(f"evaluation pass {exp} threads={threads} {e['seconds']:.3f} s for {e['rows']} rows", flush=True)

    # the limits: each run's own (measured around it, in its process), for the header a fresh one
    n_eval_a3 = args.eval_train_subset or 45000
    a3_epochs = 10 * (1 if args.quick else args.cycles)
    a3_evals = a3_epochs + 1  # evaluations on train and val: one at the start, 10 a cycle
    limits = {("a3", t): run_limit_of({**base, "exp": "a3", "threads": t})[:2] for t in (1, 2)}
    if args.bonus_epochs:
        cfg = load_experiment(ROOT / EXPERIMENTS["bonus"])
        limits[("bonus", 2)] = run_limit_of({**base, "exp": "bonus", "threads": 2})[:2]
    eval_sizes = {"a3": [3072, 50, 50, 10]}
    if args.bonus_epochs:
        eval_sizes["bonus"] = [3072, *cfg.model.hidden, 10]
    eval_gflop = {e: products_gflop(eval_products(sz, 50000)) for e, sz in eval_sizes.items()}

    load = os.getloadavg()[0]
    lines = [
        f"klayer speed benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {platform.processor() or platform.machine()}, {platform.platform()}, "
        f"cores={len(os.sched_getaffinity(0))}, load average {load:.2f} at the end",
        f"numpy {np.__version__}; sgemm peak (3072-square) {peak[1]:.0f} GFLOP/s (1 thread), {peak[2]:.0f} GFLOP/s (2 threads)",
        f"a3: 3-layer BN [50, 50], 45000 train, batch 100, float32, {a3_epochs} epochs, {a3_evals} evaluations "
        f"on {n_eval_a3} + 5000 rows; {limits[('a3', 1)][1]:.1f} GFLOP/epoch of products; limit "
        f"{limits[('a3', 1)][0]:.3f} s/epoch (1 thread), {limits[('a3', 2)][0]:.3f} s/epoch (2 threads)",
    ]
    if args.bonus_epochs:
        lim, gf = limits[("bonus", 2)]
        lines.append(
            f"bonus: bonus_fast 3072-1024-512-10, batch 256, flips + translations, ZCA, {args.bonus_epochs} epochs, "
            f"evaluation on 5000 + 1000 rows each epoch; {gf:.1f} GFLOP/epoch; limit {lim:.3f} s/epoch (2 threads)"
        )
    lines += [
        f"medians of {args.repeats} run(s); vs torch = s/epoch / PyTorch eager s/epoch at the same thread count;",
        "limit/ours = the run's products timed alone at their shapes / s/epoch; peak/ours = the products at the sgemm peak / s/epoch;",
        "both are medians of per-run ratios, each run's limit and peak measured just before and after it, in its process",
        "",
        f"{'implementation':24s} {'task':5s} {'threads':>7s} {'s/epoch':>8s} {'vs torch':>9s} {'limit/ours':>10s} "
        f"{'peak/ours':>9s} {'test acc':>9s} {'RSS MB':>7s}",
    ]
    for (name, exp, threads), rs in runs.items():
        spe = statistics.median(r["seconds_per_epoch"] for r in rs)
        acc = statistics.median(r["test_accuracy"] for r in rs)
        ref = runs.get(("pytorch eager", exp, threads))
        ratio = spe / statistics.median(r["seconds_per_epoch"] for r in ref) if ref else float("nan")
        gf = limits[(exp, threads)][1]
        of_limit = statistics.median(r["limit"] / r["seconds_per_epoch"] for r in rs)
        of_peak = statistics.median(gf / r["peak"] / r["seconds_per_epoch"] for r in rs)
        rss = f"{max(r['rss_mb'] for r in rs):7.0f}" if "rss_mb" in rs[0] else f"{'':7s}"
        lines.append(
            f"{name:24s} {exp:5s} {threads:7d} {spe:8.3f} {ratio:9.2f} {of_limit:10.2f} {of_peak:9.2f} {acc:9.4f} {rss}"
        )
    lines += [
        "",
        "evaluation pass (evaluation mode, batch norm and standardization folded into the weights, 50000 uint8 rows",
        "cast on the way, chunks of 1000 rows; medians of per-pass ratios to the peak and limit measured between passes):",
    ]
    for (exp, threads), es in evals.items():
        s = statistics.median(e["seconds"] for e in es)
        gf = eval_gflop[exp]
        of_peak = statistics.median(gf / e["seconds"] / e["peak"] for e in es)
        of_limit = statistics.median(e["limit"] / e["seconds"] for e in es)
        lines.append(
            f"  {exp:5s} {'-'.join(map(str, eval_sizes[exp]))}, {threads} thread(s): {s:.3f} s, {gf / s:.0f} GFLOP/s = "
            f"{of_peak:.2f} of the sgemm peak; {of_limit:.2f} of its products' time alone"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
