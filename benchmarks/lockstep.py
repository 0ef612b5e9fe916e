"""Many runs at once: 16 settings of the 3-layer batch-norm network, 20 epochs each.

klayer trains them in lockstep stacks (one matrix product for all first layers), split over two
worker processes with one BLAS thread each. Compared, in the same run, with K separate klayer
runs and with PyTorch runs one after another (each measured on ``--sample`` runs and scaled to 16;
the scaled numbers are marked). Settings differ in lam and in the initialization seed.

    python benchmarks/lockstep.py [--data DIR] [--k 16] [--eval-train-subset 5000] [--sample 2]

Writes benchmarks/results/lockstep.txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import torch_train  # noqa: E402

from klayer import load_experiment  # noqa: E402
from klayer.data import DataConfig, load_dataset  # noqa: E402
from klayer.runs import train  # noqa: E402
from klayer.sweep import run_many  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def configs(k, subset, data_root):
    lams = np.geomspace(1e-4, 3e-2, k)
    return [
        load_experiment(
            ROOT / "experiments/a3_3layer_bn.toml",
            [
                f"name='lam{i:02d}'",
                f"train.lam={lam:.6g}",
                f"train.seed={i}",
                "train.shuffle_seed=0",
                f"train.eval_train_subset={subset}",
                "train.checkpoint_every=0",
            ]
            + ([f"data.path='{data_root}'"] if data_root else []),
        )
        for i, lam in enumerate(lams)
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--eval-train-subset", type=int, default=5000)
    ap.add_argument("--sample", type=int, default=2, help="separate runs actually timed per peer")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/lockstep.txt"))
    args = ap.parse_args()
    cfgs = configs(args.k, args.eval_train_subset, args.data)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = run_many(cfgs, [Path(tmp) / c.name for c in cfgs], data_root=args.data, n_jobs=2, progress=False)
        lock_wall = time.perf_counter() - t
    accs = [r["test_accuracy"] for r in res]
    print(f"lockstep: {lock_wall:.1f} s for {args.k} runs", flush=True)

    data = load_dataset(DataConfig(download=False), args.data, dtype="float32")
    sep = []
    for c in cfgs[: args.sample]:
        t = time.perf_counter()
        r = train(c, data, progress=False).results
        sep.append(time.perf_counter() - t)
        print(f"klayer alone: {sep[-1]:.1f} s, test {r['test_accuracy']:.4f}", flush=True)
    torch_times = []
    try:
        for c in cfgs[: args.sample]:
            r = torch_train(
                data, lam=c.train.lam, eval_train_subset=args.eval_train_subset, threads=2, seed=c.train.seed
            )
            torch_times.append(r["wall"])
            print(f"pytorch eager (2 threads): {r['wall']:.1f} s, test {r['test_accuracy']:.4f}", flush=True)
    except ImportError:
        pass
    k = args.k
    lines = [
        f"klayer lockstep benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {k} settings of a3_3layer_bn (lam 1e-4..3e-2, seeds 0..{k - 1}), 20 epochs, "
        f"train curve on {args.eval_train_subset} fixed images",
        f"{'what':52s} {'wall s':>8s} {'ratio':>7s}",
        f"{'klayer lockstep, 2 workers x 1 BLAS thread':52s} {lock_wall:8.1f} {1.0:7.2f}",
        f"{'klayer, 16 separate runs one after another (scaled*)':52s} {k * statistics.median(sep):8.1f} {k * statistics.median(sep) / lock_wall:7.2f}",
    ]
    if torch_times:
        tt = k * statistics.median(torch_times)
        lines.append(
            f"{'PyTorch eager 2 threads, 16 runs one after another (scaled*)':52s} {tt:8.1f} {tt / lock_wall:7.2f}"
        )
    lines += [
        f"* median of {args.sample} timed single runs times {k}",
        f"lockstep test accuracy: mean {np.mean(accs):.4f}, min {min(accs):.4f}, max {max(accs):.4f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
