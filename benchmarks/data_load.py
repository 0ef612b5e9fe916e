"""Loading and standardizing all of CIFAR-10 (float32), from the archive and from the folder,
and the peak memory of preparation and of one training run. Each measurement is a fresh process.

    python benchmarks/data_load.py [--archive-dir DIR] [--repeats 3]

Writes benchmarks/results/data_load.txt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD = """
import json, resource, sys, time
t = time.perf_counter()
from klayer.data import DataConfig, load_dataset
ds = load_dataset(DataConfig(download=False), sys.argv[1], dtype="float32")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

TRAIN = """
import json, resource, sys
from klayer import load_experiment, train
cfg = load_experiment(sys.argv[2], ["train.n_s=450", "train.n_cycles=1", "train.checkpoint_every=0"])
r = train(cfg, data_root=sys.argv[1], progress=False)
print(json.dumps({"seconds": r.results["wall_seconds"], "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(code, *args):
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive-dir", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/data_load.txt"))
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(Path(args.archive_dir) / "cifar-10-python.tar.gz") as tar:
            tar.extractall(tmp, filter="data")
        for _ in range(args.repeats):
            for name, root in (("archive", args.archive_dir), ("folder", tmp)):
                rows.setdefault(name, []).append(measure(LOAD, root))
        rows["training run (1 cycle, 3-layer BN)"] = [measure(TRAIN, tmp, ROOT / "experiments/a3_3layer_bn.toml")]
    lines = [
        f"klayer data loading, {time.strftime('%Y-%m-%d %H:%M')}; medians of {args.repeats} fresh processes",
        f"{'what':40s} {'seconds':>8s} {'peak MB':>8s}",
    ]
    for name, rs in rows.items():
        lines.append(
            f"{name:40s} {statistics.median(r['seconds'] for r in rs):8.2f} {statistics.median(r['peak_mb'] for r in rs):8.0f}"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
