"""The evaluation pass on two threads: two BLAS threads per product (one Python thread), against
the chunks shared out between two Python threads with one BLAS thread each (what klayer does with
``train.blas_threads = 2``), and one thread for reference; on a quiet machine and with another
process keeping one core busy (a spinning Python loop).

Interleaved in one process, medians of ``--repeats`` passes of 45000 + 5000 rows (the run's own
pass) by a network trained for a few steps.

    python benchmarks/eval_threads.py [--data DIR] [--repeats 7] [--networks a3,bonus]

Writes benchmarks/results/eval_threads.txt.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from klayer import load_experiment
from klayer.data import load_dataset
from klayer.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {
    "a3": ("experiments/a3_3layer_bn.toml", []),
    # bonus_fast's products on standardized rows (ZCA costs the pass nothing; computing it would)
    "bonus": ("experiments/bonus_fast.toml", ["data.whiten='none'", "augment.flip=false", "augment.translate=0"]),
}
MODES = (("1 BLAS thread", 1, 1), ("2 BLAS threads, 1 evaluation thread", 2, 1), ("2 evaluation threads", 2, 2))


def _spin(stop):
    while not stop.is_set():
        pass


def measure(name: str, data_dir, repeats: int) -> dict:
    path, over = NETWORKS[name]
    cfg = load_experiment(ROOT / path, [*over, "data.n_val=5000"])
    data = load_dataset(cfg.data, data_dir, dtype="float32", progress=False)
    tr = Trainer([cfg], data)
    tr.init_bn_state()
    for _ in range(5):
        tr.step()
    tr.X_eval, tr.y_eval = data.X_train[:45000], data.y_train[:45000]
    out = {}
    for busy in (False, True):
        stop = multiprocessing.Event()
        spinner = multiprocessing.Process(target=_spin, args=(stop,)) if busy else None
        if spinner:
            spinner.start()
        times = {m: [] for m, _, _ in MODES}
        for _ in range(repeats):
            for mode, blas, threads in MODES:
                tr.eval_threads = threads
                tr._select_kernels(tr.lam.dtype)  # one evaluation workspace per thread
                with threadpool_limits(blas, user_api="blas"):
                    t = time.perf_counter()
                    tr.evaluate()
                    times[mode].append(time.perf_counter() - t)
        if spinner:
            stop.set()
            spinner.join()
        out[busy] = {m: statistics.median(v) for m, v in times.items()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--networks", default="a3,bonus")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/eval_threads.txt"))
    args = ap.parse_args()
    lines = [
        f"klayer evaluation on two threads, {time.strftime('%Y-%m-%d %H:%M')}, cores={os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f} at start",
        f"seconds per pass of 50000 rows, medians of {args.repeats} interleaved passes; 'busy': another process "
        "spins on one core",
        "",
        f"{'network':<8} {'machine':<6} " + " ".join(f"{m:>36}" for m, _, _ in MODES) + "  2 BLAS / 2 eval threads",
    ]
    for name in args.networks.split(","):
        for busy, t in measure(name, args.data, args.repeats).items():
            cells = " ".join(f"{t[m]:>36.3f}" for m, _, _ in MODES)
            ratio = t[MODES[1][0]] / t[MODES[2][0]]
            lines.append(f"{name:<8} {'busy' if busy else 'quiet':<6} {cells}  {ratio:.2f}x")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
