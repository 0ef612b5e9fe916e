"""Many runs at once: 16 settings of the 3-layer batch-norm network, 20 epochs each.

klayer trains them in lockstep stacks (one matrix product for all first layers), split over two
worker processes with one BLAS thread each. Compared, in the same run, with K separate klayer
runs and with PyTorch runs one after another (each measured on ``--sample`` runs and scaled to 16;
the scaled numbers are marked). Settings differ in lam and in the initialization seed.

Each row gives its wall time, the ratio to PyTorch eager (2 threads, runs one after another) and
the fraction of its limit: the matrix products it has to do, timed alone at their shapes and
thread count in this run (lockstep: two stacks of K/2 networks, one per core, 1 BLAS thread each,
so the limit is one stack's products; separate runs: K times one run's products on 2 threads).

    python benchmarks/lockstep.py [--data DIR] [--k 16] [--eval-train-subset 5000] [--sample 2]

Writes benchmarks/results/lockstep.txt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import (  # noqa: E402
    eval_products,
    peak_rss_mb,
    products_gflop,
    sgemm_peak,
    step_products,
    time_products,
    torch_train,
)

from klayer import load_experiment  # noqa: E402
from klayer.data import DataConfig, load_dataset  # noqa: E402
from klayer.kernels import name as kernels_name  # noqa: E402
from klayer.runs import train  # noqa: E402
from klayer.sweep import run_many  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def configs(k, subset, data_root, extra=()):
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
            + ([f"data.path='{data_root}'"] if data_root else [])
            + list(extra),
        )
        for i, lam in enumerate(lams)
    ]


def _limit_worker(K, sizes, B, T, n_evals, sub, barrier, out):
    """One core's share of the lockstep limit, started with the other core's (see both_cores)."""
    step = step_products(sizes, B, K)
    ev = eval_products(sizes, sub, K) + eval_products(sizes, 5000, K)
    time_products(step[:1], 1)  # warm up
    barrier.wait()
    out.put(T * time_products(step, 1) + n_evals * time_products(ev, 1))


def both_cores(K, sizes, B, T, n_evals, sub) -> float:
    """The lockstep limit with both cores busy: each of two processes times one stack's products
    on one BLAS thread at the same time, as the two workers run (they share the L3 cache and
    the memory bus, and the clock of a busy chip). The mean of the two."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_limit_worker, args=(K, sizes, B, T, n_evals, sub, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    times = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(times) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--eval-train-subset", type=int, default=5000)
    ap.add_argument("--sample", type=int, default=3, help="separate runs actually timed per peer")
    ap.add_argument("--repeats", type=int, default=3, help="lockstep runs timed (median)")
    ap.add_argument("--quick", action="store_true", help="plumbing test: k=4, 100 steps, 1 repeat")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/lockstep.txt"))
    args = ap.parse_args()
    extra = []
    if args.quick:
        args.k, args.sample, args.repeats, args.eval_train_subset = 4, 1, 1, 1000
        extra = ["train.n_s=50", "train.n_cycles=1", "train.evals_per_cycle=2"]
    cfgs = configs(args.k, args.eval_train_subset, args.data, extra)

    k = args.k
    tc = cfgs[0].train
    sizes, B = [3072, 50, 50, 10], tc.batch_size
    T, n_evals = 2 * tc.n_s * tc.n_cycles, tc.evals_per_cycle * tc.n_cycles + 1
    sub = args.eval_train_subset or 45000

    def limit(K, threads):
        step = step_products(sizes, B, K)
        ev = eval_products(sizes, sub, K) + eval_products(sizes, 5000, K)
        t = T * time_products(step, threads) + n_evals * time_products(ev, threads)
        return t, T * products_gflop(step) + n_evals * products_gflop(ev)

    walls = {"auto": [], "numpy": []}  # KLAYER_KERNELS of the workers: numba when installed, the reference
    ratios = {"auto": [], "numpy": []}  # limit / wall, the limit measured just before and after each run
    ratios_busy = {"auto": [], "numpy": []}  # the same with the limit timed on both cores at once
    for _ in range(args.repeats):
        for kernels in walls:  # interleaved, so that noise hits both alike
            os.environ["KLAYER_KERNELS"] = kernels
            # run_many starts fresh workers (a klayer.pool.WorkerPool) with this environment
            before = limit(-(-k // 2), 1)[0], both_cores(-(-k // 2), sizes, B, T, n_evals, sub)
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                r = run_many(cfgs, [Path(tmp) / c.name for c in cfgs], data_root=args.data, n_jobs=2, progress=False)
                walls[kernels].append(time.perf_counter() - t)
            after = limit(-(-k // 2), 1)[0], both_cores(-(-k // 2), sizes, B, T, n_evals, sub)
            ratios[kernels].append((before[0] + after[0]) / 2 / walls[kernels][-1])
            ratios_busy[kernels].append((before[1] + after[1]) / 2 / walls[kernels][-1])
            used = {x.get("kernels") for x in r}
            assert used == {kernels_name()} if kernels == "auto" else used == {"numpy"}, used
            if kernels == "auto":
                res = r
            print(
                f"lockstep ({kernels} kernels): {walls[kernels][-1]:.1f} s, limit/ours {ratios[kernels][-1]:.2f} "
                f"(both cores busy: {ratios_busy[kernels][-1]:.2f})",
                flush=True,
            )
    os.environ["KLAYER_KERNELS"] = "auto"
    lock_wall = statistics.median(walls["auto"])
    accs = [r["test_accuracy"] for r in res]

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
                data,
                lam=c.train.lam,
                eval_train_subset=args.eval_train_subset,
                threads=2,
                seed=c.train.seed,
                n_s=c.train.n_s,
                n_cycles=c.train.n_cycles,
                evals_per_cycle=c.train.evals_per_cycle,
            )
            torch_times.append(r["wall"])
            print(f"pytorch eager (2 threads): {r['wall']:.1f} s, test {r['test_accuracy']:.4f}", flush=True)
    except ImportError:
        pass
    peak = {t: sgemm_peak(t) for t in (1, 2)}
    lim_lock, gf_lock = limit(-(-k // 2), 1)
    lim_sep, _ = limit(1, 2)
    lim_sep *= k
    rows = [
        (
            f"klayer lockstep, 2 workers x 1 BLAS thread ({kernels_name()} kernels)",
            lock_wall,
            statistics.median(ratios["auto"]) * lock_wall,  # so that the column shows the median ratio
        ),
        (
            "klayer lockstep, the same with the numpy kernels",
            statistics.median(walls["numpy"]),
            statistics.median(ratios["numpy"]) * statistics.median(walls["numpy"]),
        ),
    ]
    if sep:
        rows.append((f"klayer, {k} separate runs one after another (scaled*)", k * statistics.median(sep), lim_sep))
    if torch_times:
        rows.append(
            (
                f"PyTorch eager 2 threads, {k} runs one after another (scaled*)",
                k * statistics.median(torch_times),
                lim_sep,
            )
        )
    tt = rows[-1][1] if torch_times else float("nan")
    lines = [
        f"klayer lockstep benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {k} settings of a3_3layer_bn (lam 1e-4..3e-2, seeds 0..{k - 1}), {T / (45000 // B):g} epochs, "
        f"train curve on {args.eval_train_subset} fixed images",
        f"sgemm peak (3072-square) {peak[1]:.0f} GFLOP/s (1 thread), {peak[2]:.0f} GFLOP/s (2 threads); load average "
        f"{__import__('os').getloadavg()[0]:.2f} at the end",
        f"limit: lockstep {lim_lock:.1f} s (one stack of {-(-k // 2)}, 1 thread; {gf_lock:.0f} GFLOP a core, "
        f"{gf_lock / peak[1]:.1f} s at the 1-thread peak); separate runs {lim_sep:.1f} s ({k} runs, 2 threads)",
        f"{'what':66s} {'wall s':>8s} {'vs lockstep':>11s} {'vs torch':>8s} {'limit/ours':>10s}",
    ]
    for what, wall, lim in rows:
        lines.append(f"{what:66s} {wall:8.1f} {wall / lock_wall:11.2f} {wall / tt:8.2f} {lim / wall:10.2f}")
    lines.append(
        "lockstep limit/ours with the limit timed on both cores at once (as the two workers run): "
        + ", ".join(f"{kn} kernels {statistics.median(v):.2f}" for kn, v in ratios_busy.items())
    )
    lines += [
        f"peak RSS: {peak_rss_mb():.0f} MB (this process; the lockstep workers are other processes)",
        f"lockstep: median of {args.repeats} run(s), limit/ours the median of per-run ratios (each run's limit measured "
        f"just before and after it); * median of {args.sample} timed single runs times {k}",
        f"lockstep test accuracy: mean {np.mean(accs):.4f}, min {min(accs):.4f}, max {max(accs):.4f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
