"""Where the time of a training step goes: products, batch norm, ReLU, softmax, update, data,
Python overhead; and of an evaluation pass. Beside it, the limit: the matrix products the step
(and the evaluation) has to do, timed alone at the same shapes and thread count in this run.

The step is the Trainer's own (:meth:`klayer.training.Trainer.step`); the layer functions, the
mini-batch, the augmenter and the optimizer are wrapped with timers (a few microseconds a step,
shown as the difference between the instrumented and the plain step). "linear" is the layers'
products with their bias addition (forward) and bias gradient (backward); "other" is what no
timer covers: Python calls, the learning rate, the running batch-norm averages, the dict
bookkeeping.

    python benchmarks/profile_step.py [--data DIR] [--steps 300] [--repeats 3] [--runs a3:2,a3:1,bonus:2,lockstep:1]

Writes benchmarks/results/profile.txt. bonus_fast keeps its ZCA-whitened rows as float32; that
is emulated here by standardized float32 rows (the whitening is done once, at load, and costs the
step nothing), which saves computing the ZCA matrix.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import eval_products, peak_rss_mb, sgemm_peak, step_products, time_products  # noqa: E402

from klayer import layers, load_experiment  # noqa: E402
from klayer.data import DataConfig, load_dataset  # noqa: E402
from klayer.data.prepare import Dataset  # noqa: E402
from klayer.training import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CATEGORIES = {
    "linear_forward": "linear (products + bias)",
    "linear_backward": "linear (products + bias)",
    "batchnorm_train_forward": "batch norm",
    "batchnorm_backward": "batch norm",
    "batchnorm_eval_forward": "batch norm",
    "relu_forward": "ReLU",
    "relu_backward": "ReLU",
    "relu_forward_inplace": "ReLU",
    "relu_backward_inplace": "ReLU",
    "softmax_cross_entropy": "softmax + loss",
    "log_softmax": "softmax + loss",
    "dropout_forward": "dropout",
    "dropout_backward": "dropout",
}
ORDER = [
    "linear (products + bias)",
    "batch norm",
    "ReLU",
    "softmax + loss",
    "dropout",
    "update",
    "data (gather + standardize)",
    "augmentation",
    "other (Python, eta, running averages)",
]


class Timers:
    def __init__(self):
        self.acc: dict[str, float] = {}

    def add(self, key, dt):
        self.acc[key] = self.acc.get(key, 0.0) + dt

    def wrap(self, fn, key):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.add(key, time.perf_counter() - t)

        return timed


# the compiled kernels (klayer.kernels, with numba): each fuses its category's passes
KERNELS = {
    "bn_relu_forward": "batch norm",
    "bn_relu_backward": "batch norm",
    "relu_forward": "ReLU",
    "relu_bias_backward": "ReLU",
    "softmax_ce": "softmax + loss",
}


class _TimedNumpy:
    """numpy, with ``matmul`` timed as "linear": the compiled step calls it for its products
    (the biases are added by the kernels, so "linear" is the products alone there)."""

    def __init__(self, timers):
        self._matmul = timers.wrap(np.matmul, "linear (products + bias)")

    def __getattr__(self, name):
        return self._matmul if name == "matmul" else getattr(np, name)


def instrument(trainer: Trainer, timers: Timers):
    """Wrap the layer functions and compiled kernels (module-wide), the trainer's batch,
    augmenter and update. Returns a function undoing it. With the compiled kernels, "batch norm"
    includes the ReLU (one loop does both)."""
    modules = [(layers, CATEGORIES)]
    if trainer.kernels == "numba":
        from klayer.kernels import compiled

        modules.append((compiled, KERNELS))
    saved = []
    if trainer.kernels == "numba":
        from klayer.kernels import step

        # its products are numpy's matmul (older revisions called the layers', timed above)
        saved.append((step, "np", step.np))
        step.np = _TimedNumpy(timers)
    for mod, cats in modules:
        for name in cats:
            if hasattr(mod, name):  # older revisions too
                fn = getattr(mod, name)
                saved.append((mod, name, fn))
                setattr(mod, name, timers.wrap(fn, cats[name]))
    batch, aug, update = trainer.batch, trainer.augmenter, trainer.update_fn
    trainer.batch = timers.wrap(batch, "data (gather + standardize)")
    if aug is not None:
        trainer.augmenter = timers.wrap(aug, "augmentation")
    trainer.update_fn = timers.wrap(update, "update")

    def undo():
        for mod, name, fn in saved:
            setattr(mod, name, fn)
        del trainer.batch
        trainer.augmenter, trainer.update_fn = aug, update

    return undo


def emulate_zca(data: Dataset) -> Dataset:
    """float32 standardized rows with mean 0, std 1, as prepare(whiten='zca') keeps them."""
    f = lambda X: data.features(X, "float32")  # noqa: E731
    d = data.input_size
    return Dataset(
        f(data.X_train), data.y_train, f(data.X_val), data.y_val, f(data.X_test), data.y_test,
        np.zeros(d), np.ones(d), data.n_classes, data.source, data.classes, data.image_shape, "float32",
    )  # fmt: skip


def profile(cfg, data, threads: int, steps: int, repeats: int, evals: int):
    cfgs = cfg if isinstance(cfg, list) else [cfg]
    trainer = Trainer(cfgs, data)
    cfg = cfgs[0]
    K = len(cfgs)
    sizes = trainer.config.sizes
    B = cfg.train.batch_size
    with threadpool_limits(threads, user_api="blas"):
        trainer.init_bn_state()
        for _ in range(min(20, steps)):
            trainer.step()
        plain, inst, breakdown = [], [], []
        for _ in range(repeats):  # plain and instrumented steps alternate, so that noise hits both
            t = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            plain.append((time.perf_counter() - t) / steps)
            timers = Timers()
            undo = instrument(trainer, timers)
            try:
                t = time.perf_counter()
                for _ in range(steps):
                    trainer.step()
                inst.append((time.perf_counter() - t) / steps)
            finally:
                undo()
            breakdown.append({k: v / steps for k, v in timers.acc.items()})
        # evaluation pass: time, and its standardization
        ev, ev_feat = [], []
        for _ in range(evals):
            timers = Timers()
            cast = np.copyto  # the rows' cast (the standardization is folded into the first layer)
            np.copyto = timers.wrap(cast, "features")
            try:
                t = time.perf_counter()
                trainer.evaluate()
                ev.append(time.perf_counter() - t)
            finally:
                np.copyto = cast
            ev_feat.append(timers.acc.get("features", 0.0))
    step_s = statistics.median(plain)
    bd = {k: statistics.median(b.get(k, 0.0) for b in breakdown) for k in ORDER}
    inst_s = statistics.median(inst)
    bd["augmentation"] = bd["augmentation"]
    bd["data (gather + standardize)"] -= bd["augmentation"]  # batch() includes the augmenter
    bd["other (Python, eta, running averages)"] = inst_s - sum(v for k, v in bd.items() if not k.startswith("other"))
    lim_step = time_products(step_products(sizes, B, K), threads)
    rows_eval = len(trainer.y_eval) + len(data.y_val)
    lim_eval = time_products(
        eval_products(sizes, len(trainer.y_eval), K) + eval_products(sizes, len(data.y_val), K), threads
    )
    spe = trainer.steps_per_epoch
    evals_per_epoch = spe / trainer.eval_every
    return {
        "kernels": trainer.kernels,
        "step": step_s,
        "inst": inst_s,
        "breakdown": bd,
        "limit_step": lim_step,
        "eval": statistics.median(ev),
        "eval_features": statistics.median(ev_feat),
        "limit_eval": lim_eval,
        "rows_eval": rows_eval,
        "spe": spe,
        "evals_per_epoch": evals_per_epoch,
        "sizes": sizes,
        "batch": B,
        "K": K,
    }


def report(name, threads, r):
    ms = lambda s: f"{1e3 * s:8.3f}"  # noqa: E731
    step = r["inst"]
    lines = [
        f"{name}: sizes {r['sizes']}, batch {r['batch']}, {r['K']} network(s) in lockstep, {threads} BLAS thread(s), "
        f"{r['spe']} steps and {r['evals_per_epoch']:.2f} evaluation(s) of {r['rows_eval']} rows per epoch, "
        f"{r['kernels']} kernels",
        f"  {'per training step':40s} {'ms':>8s} {'share':>7s}",
    ]
    for k in ORDER:
        v = r["breakdown"][k]
        if v or k.startswith(("linear", "update", "data", "other")):
            lines.append(f"  {k:40s} {ms(v)} {v / step:7.1%}")
    lines += [
        f"  {'instrumented step':40s} {ms(step)} {1:7.1%}",
        f"  {'plain step (no timers)':40s} {ms(r['step'])}",
        f"  {'limit: its products alone':40s} {ms(r['limit_step'])}   -> step at {r['limit_step'] / r['step']:.2f} of the limit",
        f"  {'evaluation pass':40s} {ms(r['eval'])}",
        f"  {'  of which casting/standardizing rows':40s} {ms(r['eval_features'])}",
        f"  {'limit: its products alone':40s} {ms(r['limit_eval'])}   -> evaluation at {r['limit_eval'] / r['eval']:.2f} of the limit",
    ]
    epoch = r["spe"] * r["step"] + r["evals_per_epoch"] * r["eval"]
    lim = r["spe"] * r["limit_step"] + r["evals_per_epoch"] * r["limit_eval"]
    lines.append(
        f"  epoch estimate {epoch:.3f} s (training {r['spe'] * r['step']:.3f} s + evaluation "
        f"{r['evals_per_epoch'] * r['eval']:.3f} s); limit {lim:.3f} s -> {lim / epoch:.2f} of the limit"
    )
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--evals", type=int, default=3)
    ap.add_argument(
        "--runs",
        default="a3:2,a3:1,bonus:2,lockstep:1",
        help="what to profile, name:threads, names a3, bonus, lockstep (one worker's stack of 8)",
    )
    ap.add_argument("--bonus-steps", type=int, default=None, help="steps for bonus_fast (default --steps)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 100 steps (bonus 20), 1 evaluation")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/profile.txt"))
    args = ap.parse_args()
    if args.quick:
        args.steps, args.bonus_steps, args.evals = 100, 20, 1

    data = load_dataset(DataConfig(download=False), args.data, dtype="float32")
    bonus_data = lambda: emulate_zca(load_dataset(DataConfig(download=False, n_val=1000), args.data))  # noqa: E731
    peak = {t: sgemm_peak(t) for t in (1, 2)}
    a3 = load_experiment(ROOT / "experiments/a3_3layer_bn.toml", ["train.checkpoint_every=0"])
    bonus = load_experiment(ROOT / "experiments/bonus_fast.toml", ["train.checkpoint_every=0"])
    # as benchmarks/lockstep.py: one worker's stack of 8 settings, train curve on 5000 images
    lockstep = [
        load_experiment(
            ROOT / "experiments/a3_3layer_bn.toml",
            [
                "train.checkpoint_every=0",
                f"train.lam={lam:.6g}",
                f"train.seed={i}",
                "train.shuffle_seed=0",
                "train.eval_train_subset=5000",
            ],
        )
        for i, lam in enumerate(np.geomspace(1e-4, 3e-2, 16)[::2])
    ]
    what = {
        "a3": lambda: ("a3_3layer_bn", a3, data),
        "bonus": lambda: ("bonus_fast", bonus, bonus_data()),
        "lockstep": lambda: ("a3_3layer_bn x 8 (lockstep)", lockstep, data),
    }
    plan = []
    for item in args.runs.split(","):
        name, threads = item.split(":")
        plan.append((*what[name](), int(threads), name))
    load = os.getloadavg()[0]
    import klayer

    lines = [
        f"klayer step profile, {time.strftime('%Y-%m-%d %H:%M')}, klayer from {Path(klayer.__file__).parent}",
        f"machine: {platform.machine()}, cores={len(os.sched_getaffinity(0))}, load average {load:.2f} at start; "
        f"numpy {np.__version__}; sgemm peak {peak[1]:.0f} GFLOP/s (1 thread), {peak[2]:.0f} GFLOP/s (2 threads)",
        f"medians of {args.repeats} repeat(s) of {args.steps} steps (bonus_fast {args.bonus_steps or args.steps}); "
        f"evaluation: median of {args.evals} pass(es)",
    ]
    if load > 0.5:
        lines.append(f"WARNING: the machine was busy (load {load:.2f}): the figures are indicative only")
    lines.append("")
    for name, cfg, d, threads, key in plan:
        steps = args.bonus_steps or args.steps if key == "bonus" else args.steps
        r = profile(cfg, d, threads, steps, args.repeats, args.evals)
        lines += report(name, threads, r) + [""]
        print("\n".join(lines[-len(report(name, threads, r)) - 1 :]), flush=True)
    lines.append(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
