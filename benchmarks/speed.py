"""One training run: klayer against PyTorch and scikit-learn on identical data and settings.

The assignment-3 3-layer batch-norm network (45000 training images, batch 100, float32, n_s 2250,
2 cycles = 20 epochs, 10 evaluations per cycle on train and validation). Seconds per epoch include
the evaluation passes on both sides (scikit-learn evaluates nothing and has no batch norm; it is
listed for reference). Ratios are to PyTorch eager with the same thread count, measured in this
run. The hardware limit is the epoch's matrix-product FLOPs at the measured 2-thread sgemm peak.

    python benchmarks/speed.py [--data DIR] [--repeats 3] [--compile] [--epochs-cycles 2]

Writes benchmarks/results/speed.txt.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import epoch_gflop, sgemm_peak, sklearn_train, torch_train  # noqa: E402

from klayer import load_experiment  # noqa: E402
from klayer.data import DataConfig, load_dataset  # noqa: E402
from klayer.runs import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def klayer_run(data, threads, cycles, subset):
    cfg = load_experiment(
        ROOT / "experiments/a3_3layer_bn.toml",
        [
            f"train.blas_threads={threads}",
            f"train.n_cycles={cycles}",
            f"train.eval_train_subset={subset}",
            "train.checkpoint_every=0",
        ],
    )
    r = train(cfg, data, progress=False).results
    return {"seconds_per_epoch": r["seconds_per_epoch"], "test_accuracy": r["test_accuracy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--eval-train-subset", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (slow to warm up)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/speed.txt"))
    args = ap.parse_args()

    data = load_dataset(DataConfig(download=False), args.data, dtype="float32")
    peak = {t: sgemm_peak(t) for t in (1, 2)}
    runs = {}
    plan = [("klayer", 1), ("klayer", 2), ("pytorch eager", 1), ("pytorch eager", 2)]
    if args.compile:
        plan.append(("pytorch compile", 2))
    plan.append(("scikit-learn (no BN)", 1))
    for rep in range(args.repeats):
        for name, threads in plan:  # interleaved, so that noise hits all alike
            if name.startswith("scikit") and rep:
                continue
            kw = dict(n_cycles=args.cycles, threads=threads, eval_train_subset=args.eval_train_subset)
            try:
                if name == "klayer":
                    r = klayer_run(data, threads, args.cycles, args.eval_train_subset)
                elif name.startswith("pytorch"):
                    r = torch_train(data, compile=name.endswith("compile"), **kw)
                else:
                    from threadpoolctl import threadpool_limits

                    with threadpool_limits(threads):
                        r = sklearn_train(data, epochs=10 * args.cycles)
            except ImportError as e:
                print(f"skipping {name}: {e}")
                continue
            runs.setdefault((name, threads), []).append(r)
            print(
                f"{name:22s} threads={threads} {r['seconds_per_epoch']:.3f} s/epoch  test {r['test_accuracy']:.4f}",
                flush=True,
            )

    rows_eval = (args.eval_train_subset or len(data.y_train)) + len(data.y_val)
    gflop = epoch_gflop(data, evals_per_epoch=1.0, eval_rows=rows_eval)
    limit = gflop / peak[2]
    lines = [
        f"klayer speed benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {platform.processor() or platform.machine()}, {platform.platform()}, cores={len(__import__('os').sched_getaffinity(0))}",
        f"numpy {np.__version__}; sgemm peak {peak[1]:.0f} GFLOP/s (1 thread), {peak[2]:.0f} GFLOP/s (2 threads)",
        f"task: 3-layer BN [50, 50], 45000 train, batch 100, float32, {10 * args.cycles} epochs, "
        f"evaluation on {rows_eval} rows once per epoch; {gflop:.1f} GFLOP/epoch -> limit {limit:.3f} s/epoch",
        f"medians of {args.repeats} run(s); ratio = s/epoch / PyTorch eager s/epoch at the same thread count",
        "",
        f"{'implementation':24s} {'threads':>7s} {'s/epoch':>8s} {'vs torch':>9s} {'limit/ours':>10s} {'test acc':>9s}",
    ]
    for (name, threads), rs in runs.items():
        spe = statistics.median(r["seconds_per_epoch"] for r in rs)
        acc = statistics.median(r["test_accuracy"] for r in rs)
        ref = runs.get(("pytorch eager", threads))
        ratio = spe / statistics.median(r["seconds_per_epoch"] for r in ref) if ref else float("nan")
        lines.append(f"{name:24s} {threads:7d} {spe:8.3f} {ratio:9.2f} {limit / spe:10.2f} {acc:9.4f}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
