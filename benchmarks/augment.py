"""Data augmentation's cost, as a fraction of the training step it is part of.

For each network (the assignment-3 3-layer batch-norm network at batch 100 and bonus_fast's
3072-1024-512-10 at batch 256) and each augmentation (flips, translations, both, crops with
scaling, colour jitter, everything), in one process: the median time of the augmenter on the
mini-batch's raw rows, and the median time of a whole training step with that augmentation
(gather, augment, standardize, forward, backward, update). The issue's budget: at most 15% of a
step.

    python benchmarks/augment.py [--data DIR] [--steps 200] [--threads 1 2]

Writes benchmarks/results/augment.txt.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from klayer import load_experiment
from klayer.data import DataConfig, load_dataset
from klayer.training import Trainer

ROOT = Path(__file__).resolve().parents[1]

NETWORKS = {
    "a3_3layer_bn (50-50, batch 100)": ("a3_3layer_bn", []),
    "bonus_fast (1024-512, batch 256)": ("bonus_fast", ["data.whiten='none'"]),
}
AUGMENTS = {
    "flip": ["augment.flip=true", "augment.translate=0"],
    "translate 2 (zero)": ["augment.flip=false", "augment.translate=2"],
    "flip + translate 2": ["augment.flip=true", "augment.translate=2"],
    "flip + translate 3 (reflect)": ["augment.flip=true", "augment.translate=3", "augment.padding='reflect'"],
    "crop_scale 0.6": ["augment.flip=false", "augment.translate=0", "augment.crop_scale=0.6"],
    "jitter 0.2": ["augment.flip=false", "augment.translate=0", "augment.jitter=0.2"],
    "everything": ["augment.flip=true", "augment.translate=2", "augment.crop_scale=0.6", "augment.jitter=0.2"],
}


def _median_seconds(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(data, exp: str, sets: list[str], steps: int) -> tuple[float, float]:
    """(median augmenter seconds, median step seconds) for one network and augmentation."""
    cfg = load_experiment(ROOT / "experiments" / f"{exp}.toml", [*sets, "train.checkpoint_every=0"])
    trainer = Trainer([cfg], data)
    trainer.init_bn_state()
    for _ in range(10):  # warm up: buffers, BLAS threads
        trainer.step()
    B = cfg.train.batch_size
    rng = np.random.default_rng(0)
    raw = [data.X_train[rng.choice(len(data.y_train), B, replace=False)] for _ in range(16)]
    it = iter(range(10**9))
    aug = _median_seconds(lambda: trainer.augmenter(raw[next(it) % 16], trainer.augment_rng), steps)
    step = _median_seconds(trainer.step, steps)
    return aug, step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/augment.txt"))
    args = ap.parse_args()
    data = load_dataset(DataConfig(download=False, split="all", n_val=1000), args.data, dtype="float32")
    lines = [
        f"klayer augmentation benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        f"machine: {platform.machine()}, {platform.platform()}; numpy {np.__version__}",
        f"medians of {args.steps} augmenter calls and {args.steps} training steps (with that augmentation), "
        "in one process; budget: augmentation <= 15% of a step",
        "",
        f"{'network':34} {'augmentation':30} {'threads':>7} {'augment ms':>10} {'step ms':>8} {'share':>6}",
    ]
    print("\n".join(lines))
    worst = 0.0
    for threads in args.threads:
        with threadpool_limits(threads):
            for label, (exp, base) in NETWORKS.items():
                for aname, sets in AUGMENTS.items():
                    aug, step = measure(data, exp, [*base, *sets], args.steps)
                    share = aug / step
                    worst = max(worst, share) if aname != "everything" else worst
                    row = f"{label:34} {aname:30} {threads:7d} {1e3 * aug:10.3f} {1e3 * step:8.3f} {100 * share:5.1f}%"
                    print(row, flush=True)
                    lines.append(row)
    lines += ["", f"largest share of a single transform: {100 * worst:.1f}% of a step"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
