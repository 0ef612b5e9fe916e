"""Before and after: the same short a3_3layer_bn run with two git revisions, in the same run.

Each revision is exported (``git archive``) to a temporary folder and imported from there in a
fresh process; the runs alternate (A, B, A, B, ...) so that noise hits both alike, and the
medians are compared. Seconds per epoch include the evaluation passes, as in the run folders.

    python benchmarks/ab.py [--a main] [--b HEAD] [--threads 1] [--repeats 3] [--n-s 225] [--data DIR]

Prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, time
from klayer import load_experiment
from klayer.data import DataConfig, load_dataset
from klayer.runs import train
a = json.loads(sys.argv[1])
cfg = load_experiment(a["exp"], a["overrides"])
data = load_dataset(DataConfig(download=False), a["data"], dtype="float32")
r = train(cfg, data, progress=False).results
print(json.dumps({k: r[k] for k in ("seconds_per_epoch", "train_seconds", "eval_seconds", "test_accuracy")}))
"""


def export(rev: str, dest: Path) -> Path:
    archive = dest / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest / rev.replace("/", "_"), filter="data")
    return dest / rev.replace("/", "_") / "src"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="main")
    ap.add_argument("--b", default="HEAD")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-s", type=int, default=225, help="half-cycle steps (2 cycles; 225 = 1 epoch a cycle)")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    task = {
        "exp": str(ROOT / "experiments/a3_3layer_bn.toml"),
        "data": args.data,
        "overrides": [
            f"train.blas_threads={args.threads}",
            f"train.n_s={args.n_s}",
            "train.evals_per_cycle=1",
            "train.checkpoint_every=0",
        ],
    }
    res = {args.a: [], args.b: []}
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {rev: export(rev, Path(tmp)) for rev in res}
        for _ in range(args.repeats):
            for rev in res:
                env = {**os.environ, "PYTHONPATH": str(srcs[rev]), "PYTHONDONTWRITEBYTECODE": "1"}
                out = subprocess.run(
                    [sys.executable, "-c", WORKER, json.dumps(task)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                res[rev].append(r)
                print(f"{rev:10s} {r['seconds_per_epoch']:.3f} s/epoch", flush=True)
    print(f"\na3_3layer_bn, n_s={args.n_s}, 2 cycles, {args.threads} thread(s); medians of {args.repeats}")
    print(f"{'revision':12s} {'s/epoch':>8s} {'train s':>8s} {'eval s':>8s} {'test acc':>9s}")
    med = {}
    for rev, rs in res.items():
        med[rev] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        m = med[rev]
        print(
            f"{rev:12s} {m['seconds_per_epoch']:8.3f} {m['train_seconds']:8.2f} {m['eval_seconds']:8.2f} "
            f"{m['test_accuracy']:9.4f}"
        )
    print(f"ratio {args.b} / {args.a}: {med[args.b]['seconds_per_epoch'] / med[args.a]['seconds_per_epoch']:.3f}")


if __name__ == "__main__":
    main()
