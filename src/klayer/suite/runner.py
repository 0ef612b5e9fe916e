"""``klayer reproduce``: every study of the suite, resumably, then the report."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from ..io import write_json
from .studies import experiment_config, load_study, run_study, suite_files

__all__ = ["reproduce", "estimate_seconds"]


# this machine's measured rates (one BLAS thread per worker): per-update overhead, float32 matrix
# products, and the one-off ZCA whitening
UPDATE_OVERHEAD = 3e-4
FLOP_RATE = 1.25e11
ZCA_SECONDS = 20.0


def _forward_flops(cfg, d: int = 3072, classes: int = 10) -> float:
    sizes = [d, *cfg.model.hidden, classes]
    return 2.0 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def update_seconds(cfg) -> float:
    """Estimated seconds of one update: forward, backward (about twice the forward) and overhead."""
    return UPDATE_OVERHEAD + 3 * cfg.train.batch_size * _forward_flops(cfg) / FLOP_RATE


def row_seconds(cfg) -> float:
    """Estimated seconds to evaluate one row."""
    return 2e-7 + _forward_flops(cfg) / FLOP_RATE


def estimate_seconds(studies: list[dict], seeds: int, exp_dir: Path, n_jobs: int) -> float:
    """A rough wall-time estimate: updates and evaluated rows at this machine's measured rates."""
    total = 0.0
    for st in studies:
        kind = st["kind"]
        if kind == "gradcheck":
            n_tables = len(st["depths"]) * 2 * len(st["batch_sizes"]) * len(st["lams"])
            total += n_tables * 2.0 * len(st["hs"]) / 6 * st["max_entries"] / 15
            continue
        if kind == "sanity":
            total += 2 * st["n_epochs"] * st["n"] / st["batch_size"] * 1.5e-3
            continue
        if kind == "runs":
            items = [(experiment_config(e, exp_dir, st["set"]), seeds) for e in st["experiments"]]
        elif kind == "grid":
            items = [(experiment_config(e, exp_dir, st["set"]), seeds * len(st["values"])) for e in st["experiments"]]
        else:
            base = experiment_config(st["base"], exp_dir, st["set"])
            items = [
                (base, st["coarse_n"] + st["fine_n"]),
                (experiment_config(st["base"], exp_dir, [*st["set"], *st["final_set"]]), seeds),
            ]
        for cfg, count in items:
            tc = cfg.train
            n_train = 10000 if cfg.data.split == "batch1" else 50000 - cfg.data.n_val
            spe = n_train // tc.batch_size
            updates = 2 * tc.n_s * tc.n_cycles if tc.cyclic else tc.n_epochs * spe
            cycle = 2 * tc.n_s if tc.cyclic else spe
            evals = updates / max(1, round(cycle / tc.evals_per_cycle)) + 1
            rows = (tc.eval_train_subset or n_train) + (10000 if cfg.data.split == "batch1" else cfg.data.n_val)
            total += count * (updates * update_seconds(cfg) + evals * rows * row_seconds(cfg))
            total += count * (ZCA_SECONDS if cfg.data.whiten == "zca" else 0.0)
    return total / max(1, n_jobs) + 10 * len(studies)


def _log(*args):
    print(*args, flush=True)


def reproduce(
    files=None,
    out="runs/reproduce",
    quick: bool = False,
    seeds: int | None = None,
    data_root=None,
    n_jobs=None,
    scheduler=None,
    report: bool = True,
    log=_log,
    all_studies: bool = False,
) -> Path:
    """Run studies (default: the whole suite, without its optional studies unless
    ``all_studies``) and write the report; return the output folder."""
    import os

    files = [Path(f) for f in files] if files else suite_files(optional=all_studies)
    if not files:
        raise ConfigError("no study files found (experiments/*.toml with a [study] table)")
    # every study file and every experiment it names is validated before anything runs
    studies = [load_study(f, quick) for f in files]
    names: dict[str, Path] = {}
    for f, st in zip(files, studies, strict=True):
        if st["name"] in names:
            raise ConfigError(f"{f}: study name {st['name']!r} is also the name of {names[st['name']]}")
        names[st["name"]] = f
    seeds = seeds if seeds is not None else (2 if quick else 3)
    out = Path(out)
    n_jobs = n_jobs or os.cpu_count() or 1
    est = estimate_seconds(studies, seeds, files[0].parent, n_jobs)
    log(
        f"klayer reproduce: {len(studies)} studies, {seeds} seeds{' (quick)' if quick else ''}, "
        f"{n_jobs} workers; estimated {est / 60:.1f} min (finished runs in {out} are reused)"
    )
    t0 = time.perf_counter()
    for st in studies:
        t = time.perf_counter()
        run_study(st, out, seeds, data_root, n_jobs, scheduler, quick=quick)
        log(f"  {st['name']}: {time.perf_counter() - t:.0f} s")
    wall = time.perf_counter() - t0
    write_json(
        out / "suite.json",
        {
            "studies": [st["name"] for st in studies],
            "seeds": seeds,
            "quick": quick,
            "wall_seconds": wall,
            "estimated_seconds": est,
        },
    )
    if report:
        from .report import build_report

        md, html = build_report([out], out, data_root)
        log(f"report: {md} and {html}")
    log(f"klayer reproduce: done in {wall / 60:.1f} min (estimated {est / 60:.1f} min)")
    return out
