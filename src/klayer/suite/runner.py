"""``klayer reproduce``: every study of the suite, resumably, then the report."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from ..io import sole_writer, write_json
from ..sweep import run_seconds
from .studies import experiment_config, gradcheck_seconds, load_study, run_study, suite_files

__all__ = ["reproduce", "estimate_seconds"]


def estimate_seconds(studies: list[dict], seeds: int, exp_dir: Path, n_jobs: int) -> float:
    """A rough wall-time estimate: updates and evaluated rows at this machine's measured rates."""
    total = 0.0
    for st in studies:
        kind = st["kind"]
        if kind == "gradcheck":
            per_depth = 2 * len(st["batch_sizes"]) * len(st["lams"])
            total += sum(per_depth * gradcheck_seconds(d, len(st["hs"]), st["max_entries"]) for d in st["depths"])
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
        total += sum(count * run_seconds(cfg) for cfg, count in items)
    return total / max(1, n_jobs) + 10 * len(studies)


def _log(*args):
    print(*args, flush=True)


def _run_together(studies, out, seeds, data_root, n_jobs, scheduler, quick, log) -> None:
    """Every study at once, each in a thread, their tasks on one shared pool of workers."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from ..pool import WorkerPool

    t0 = time.perf_counter()
    # the studies that compute here (sanity; the gradient checks' sample) use one BLAS thread, as
    # the workers do (with two, sanity took 25-56 s beside two busy workers; 6 s alone)
    with (
        threadpool_limits(limits=1, user_api="blas"),
        tqdm(total=0, desc="tasks", unit="task", disable=None) as bar,
        WorkerPool(n_jobs, scheduler, bar) as pool,
        ThreadPoolExecutor(len(studies), "study") as threads,
    ):
        futures = {threads.submit(run_study, st, out, seeds, data_root, quick=quick, pool=pool): st for st in studies}
        try:
            for fut in as_completed(futures):
                fut.result()
                with bar.external_write_mode():
                    log(f"  {futures[fut]['name']}: done after {time.perf_counter() - t0:.0f} s")
        except BaseException:
            pool.close(cancel=True)  # the other studies' waits end with PoolClosed
            raise


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
    # one reproduce per output folder: a second is refused before it prints or writes anything
    with sole_writer(out, "reproduce folder", ("figures",)):
        _reproduce(studies, out, seeds, data_root, n_jobs, scheduler, quick, report, log, est)
    return out


def _reproduce(studies, out: Path, seeds, data_root, n_jobs, scheduler, quick, report, log, est) -> None:
    """:func:`reproduce`'s work, holding the output folder."""
    log(
        f"klayer reproduce: {len(studies)} studies, {seeds} seeds{' (quick)' if quick else ''}, "
        f"{n_jobs} workers; estimated {est / 60:.1f} min (finished runs in {out} are reused)"
    )
    t0 = time.perf_counter()
    if n_jobs == 1 and not scheduler:  # one after another, in this process
        for st in studies:
            t = time.perf_counter()
            run_study(st, out, seeds, data_root, n_jobs, scheduler, quick=quick)
            log(f"  {st['name']}: {time.perf_counter() - t:.0f} s")
    else:
        _run_together(studies, out, seeds, data_root, n_jobs, scheduler, quick, log)
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
        from .report import write_report

        md, html = write_report([out], out, data_root)
        log(f"report: {md} and {html}")
    log(f"klayer reproduce: done in {wall / 60:.1f} min (estimated {est / 60:.1f} min)")
