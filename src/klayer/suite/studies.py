"""The reports' experiment suite: studies defined in TOML, run resumably, collected in a report.

A *study* is a TOML file under ``experiments/`` with a ``[study]`` table (and ``[quick]``
reductions for ``--quick``); ``klayer reproduce`` runs every study there (or the files given),
each into ``OUT/<name>/``, then writes ``OUT/report.md`` and ``OUT/report.html``. Kinds:

``gradcheck``
    gradient-check tables for ``depths`` x batch norm x ``batch_sizes`` x ``lams``, columns ``hs``.
``sanity``
    overfit ``n`` training images with and without batch norm; loss curves.
``runs``
    each of ``experiments`` (single-run TOML files) over the seeds.
``search``
    one key (``train.lam`` or ``train.eta``) of ``base``: a coarse stage over ``[low, high]``,
    a fine stage around its best (skipped when ``fine_n = 0``), top-3 tables, then the best value
    retrained with ``final_set`` overrides over the seeds.
``grid``
    each of ``experiments`` for every value of ``key`` in ``values`` (the sensitivity to
    initialization: ``model.sigma`` with ``model.init = "normal"``), over the seeds, with
    per-layer diagnostics.

Each kind has its own typed schema (:mod:`klayer.config`); :func:`load_study` checks a study file,
its ``[quick]`` variant and every experiment it names, with their overrides, and ``reproduce``
checks every study file that way before it runs the first one.

Seeds: run ``s`` of a setting uses ``seed = shuffle_seed = s``. Every run is a run folder;
finished ones are never run again, so an interrupted ``reproduce`` continues where it stopped.
``study.json`` records the structure (which run is which); every number in the report is read
back from the runs' own ``results.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import GRADCHECK_HIDDEN, STUDY_KINDS, ExperimentConfig, load_experiment, read_toml, study_from_dict
from ..errors import ConfigError
from ..io import sole_writer, write_json
from ..schema import suggest
from ..search import coarse_values, fine_values, top
from ..sweep import run_many, run_seconds

__all__ = ["load_study", "run_study", "suite_files", "experiment_config", "default_experiments_dir"]

KINDS = tuple(STUDY_KINDS)


def default_experiments_dir() -> Path:
    here = Path.cwd() / "experiments"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "experiments"


def load_study(path, quick: bool = False) -> dict:
    """A study file, validated, as a dict: the ``[study]`` table (with ``[quick]`` merged in when
    ``quick``) with every default filled in, plus ``name``, ``description`` and ``file``.

    Both variants (with and without ``[quick]``) are checked against the schema of their kind
    (:func:`klayer.config.study_from_dict`), every experiment they name must exist beside the
    study file, and every experiment is resolved with the study's overrides (for a search, with
    ``low`` and ``high``; for a grid, with every value), so that a bad ``set`` entry fails here,
    before anything is trained. Errors are ConfigErrors naming the file and the key."""
    path = Path(path)
    name, description, full, reduced = study_from_dict(read_toml(path, "study"), str(path))
    _resolve(full, path, "study")
    if reduced != full:
        _resolve(reduced, path, "quick")
    study = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(reduced if quick else full).items()}
    study.update(name=name, description=description, file=str(path))
    return study


def suite_files(folder=None, optional: bool = False) -> list[Path]:
    """Every study file of the suite (the TOML files with a ``[study]`` table), validated, in
    ``study.order``; studies marked ``optional`` only when ``optional`` is true."""
    folder = Path(folder) if folder else default_experiments_dir()
    studies = []
    for f in sorted(folder.glob("*.toml")):
        if "study" in read_toml(f, "study"):
            study = load_study(f)
            if optional or not study["optional"]:
                studies.append((study["order"], f))
    return [f for _, f in sorted(studies)]


def _resolve(study, path: Path, table: str) -> None:
    """Load every experiment ``study`` would train, with its overrides; ConfigError if one fails."""
    exp_dir = path.parent
    kind = study.kind
    if kind in ("gradcheck", "sanity"):
        return
    # (field, experiment, overrides), each experiment alone first, then with each field's overrides
    if kind == "search":
        what = "base"
        with_value = [[f"{study.key}={v!r}"] for v in (study.low, study.high)]
        jobs = [("base", study.base, []), ("set", study.base, study.set)]
        jobs += [("key", study.base, [*study.set, *v]) for v in with_value]
        jobs += [("final_set", study.base, [*study.set, *study.final_set, *v]) for v in with_value]
    else:
        what, names = "experiments", study.experiments
        jobs = [("experiments", e, []) for e in names] + [("set", e, study.set) for e in names]
        if kind == "grid":
            jobs += [("values", e, [*study.set, f"{study.key}={v!r}"]) for e in names for v in study.values]
    known = sorted(f.stem for f in exp_dir.glob("*.toml"))
    for field, exp, overrides in jobs:
        file = exp_dir / f"{exp}.toml"
        try:
            found = file.is_file()
        except OSError:  # a name the file system cannot hold
            found = False
        if not found:
            raise ConfigError(f"{path}: {table}.{what}: no experiment {file}{suggest(exp, known)}")
        try:
            load_experiment(file, overrides)
        except ConfigError as e:
            raise ConfigError(f"{path}: {table}.{field} for {exp}: {e}") from None


def experiment_config(name: str, exp_dir: Path, overrides) -> ExperimentConfig:
    """The experiment ``exp_dir/<name>.toml`` with ``overrides``."""
    return load_experiment(exp_dir / f"{name}.toml", overrides)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class _Context:
    def __init__(self, seeds: int, data_root, n_jobs, scheduler, exp_dir: Path, pool=None):
        self.seeds, self.data_root = seeds, data_root
        self.n_jobs, self.scheduler, self.exp_dir, self.pool = n_jobs, scheduler, exp_dir, pool

    def run(self, configs: list[ExperimentConfig], dirs: list[Path], after: float = 0.0) -> list[dict]:
        """Train ``configs`` into ``dirs``. ``after``: estimated seconds of the work that waits for
        these runs (a search's later stages); it puts them ahead in a shared pool's queue."""
        if self.pool is None:
            return run_many(configs, dirs, self.data_root, n_jobs=self.n_jobs, scheduler=self.scheduler)
        return run_many(configs, dirs, self.data_root, pool=self.pool, priority=after, progress=False)

    def map(self, fn, items: list[tuple], seconds: list[float]) -> list:
        """``[fn(*a) for a in items]``, on the shared pool when there is one (``fn`` module-level);
        ``seconds``: each item's estimated seconds."""
        if self.pool is None:
            return [fn(*a) for a in items]
        futures = [self.pool.submit(fn, *a, priority=t) for a, t in zip(items, seconds, strict=True)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def stage_seconds(self, cfg: ExperimentConfig, n_runs: int) -> float:
        """Rough wall seconds of ``n_runs`` runs of ``cfg`` spread over the workers."""
        return run_seconds(cfg) * -(-n_runs // (self.pool.n_jobs if self.pool else self.n_jobs or 1))


def _seeded(cfg: ExperimentConfig, s: int, name: str) -> ExperimentConfig:
    return cfg.replace(name=name, train={"seed": s, "shuffle_seed": s})


# -- the kinds -----------------------------------------------------------------------------------
def _study_runs(study, ctx: _Context, sdir: Path) -> dict:
    configs, dirs, entries = [], [], []
    for exp in study["experiments"]:
        base = experiment_config(exp, ctx.exp_dir, study["set"])
        for s in range(ctx.seeds):
            name = f"{exp}-s{s}"
            configs.append(_seeded(base, s, name))
            dirs.append(sdir / "runs" / name)
            entries.append({"experiment": exp, "seed": s, "run": f"runs/{name}"})
    ctx.run(configs, dirs)
    return {"runs": entries}


def _study_grid(study, ctx: _Context, sdir: Path) -> dict:
    key = study["key"]
    configs, dirs, entries = [], [], []
    for exp in study["experiments"]:
        for v in study["values"]:
            base = experiment_config(exp, ctx.exp_dir, [*study["set"], f"{key}={v!r}"])
            for s in range(ctx.seeds):
                name = f"{exp}-{key.split('.')[-1]}{_fmt(v)}-s{s}"
                configs.append(_seeded(base, s, name))
                dirs.append(sdir / "runs" / name)
                entries.append({"experiment": exp, "value": v, "seed": s, "run": f"runs/{name}"})
    ctx.run(configs, dirs)
    return {"key": key, "runs": entries}


def _search_stage(study, ctx, sdir, stage: str, values: list[float], after: float = 0.0):
    key = study["key"]
    short = key.split(".")[-1]
    configs, dirs, entries = [], [], []
    for v in values:
        name = f"{stage}-{short}{_fmt(v)}"
        configs.append(_seeded(experiment_config(study["base"], ctx.exp_dir, [*study["set"], f"{key}={v}"]), 0, name))
        dirs.append(sdir / "runs" / name)
        entries.append({"stage": stage, "value": v, "seed": 0, "run": f"runs/{name}"})
    results = ctx.run(configs, dirs, after)
    return entries, list(zip(values, results, strict=True))


def _study_search(study, ctx: _Context, sdir: Path) -> dict:
    rng = np.random.default_rng(study["search_seed"])
    # the stages wait for each other: the earlier ones go first in a shared pool's queue
    final_cfg = experiment_config(study["base"], ctx.exp_dir, [*study["set"], *study["final_set"]])
    final_s = ctx.stage_seconds(final_cfg, ctx.seeds)
    fine_s = ctx.stage_seconds(experiment_config(study["base"], ctx.exp_dir, study["set"]), study["fine_n"])
    c = coarse_values(study["low"], study["high"], study["coarse_n"], study["sampling"], rng)
    entries, coarse = _search_stage(study, ctx, sdir, "coarse", c, after=fine_s + final_s)
    points = coarse
    if study["fine_n"]:
        center = top(coarse, 1)[0][0]
        f = fine_values(center, study["fine_n"], study["decades"], study["sampling"], rng)
        f = [v for v in f if v not in c]
        fine_entries, fine = _search_stage(study, ctx, sdir, "fine", f, after=final_s)
        entries += fine_entries
        points = coarse + fine
    best_value = top(points, 1)[0][0]
    key = study["key"]
    final_over = [*study["set"], *study["final_set"], f"{key}={best_value}"]
    base = experiment_config(study["base"], ctx.exp_dir, final_over)
    configs, dirs = [], []
    for s in range(ctx.seeds):
        name = f"final-{key.split('.')[-1]}{_fmt(best_value)}-s{s}"
        configs.append(_seeded(base, s, name))
        dirs.append(sdir / "runs" / name)
        entries.append({"stage": "final", "value": best_value, "seed": s, "run": f"runs/{name}"})
    ctx.run(configs, dirs)
    return {"key": key, "runs": entries}


def _gradcheck_table(X, y, depth: int, bn: bool, lam: float, hs, max_entries: int) -> dict:
    """One table of the gradient-check study: the network of ``depth`` layers (batch norm ``bn``)
    checked on the rows ``X``, ``y``."""
    from ..gradcheck import GradcheckRefused, check_gradients
    from ..network import Network, NetworkConfig

    N = len(y)
    rng = np.random.default_rng(depth * 1000 + N + int(bn))
    net = Network.init(NetworkConfig(X.shape[1], GRADCHECK_HIDDEN[depth], 10, bn), rng)
    table = {"depth": depth, "batch_norm": bn, "batch": N, "lam": lam, "hs": list(hs)}
    try:
        rep = check_gradients(net, X, y, lam, rng, hs=hs, max_entries=max_entries)
    except GradcheckRefused as e:
        return {**table, "passed": False, "refused": str(e), "note": "", "rows": []}
    rows = [
        {
            "name": r.name,
            "kind": r.kind,
            "errors": [e if np.isfinite(e) else None for e in r.errors],  # None: every step kinked
            "best": r.best,
            "bound": r.bound,
            "status": r.status,
            "checked": r.n_checked,
            "total": r.n_total,
        }
        for r in rep.rows
    ]
    return {
        **table,
        "hs": list(rep.hs),
        "tol": rep.tol,
        "passed": rep.passed,
        "refused": rep.refused,
        "note": rep.settings.get("note", ""),
        "rows": rows,
    }


def gradcheck_seconds(depth: int, n_hs: int, max_entries: int) -> float:
    """Rough seconds of one gradient-check table (measured: depth 9, 6 steps, 15 entries: 2.5 s)."""
    return 2.5 * depth / 9 * n_hs / 6 * max_entries / 15


def _study_gradcheck(study, ctx: _Context, sdir: Path) -> dict:
    from ..data import default_data_dir, sample_rows

    root = ctx.data_root or default_data_dir()
    d = study["features"]
    n = max(study["batch_sizes"])
    X, y, source = sample_rows(root, n, d, np.random.default_rng(0))
    hs, m = tuple(study["hs"]), study["max_entries"]
    items = [
        (X[:N], y[:N], depth, bn, lam, hs, m)
        for depth in study["depths"]
        for bn in (False, True)
        for N in study["batch_sizes"]
        for lam in study["lams"]
    ]
    tables = ctx.map(_gradcheck_table, items, [gradcheck_seconds(a[2], len(hs), m) for a in items])
    write_json(sdir / "gradcheck.json", {"source": source, "features": d, "tables": tables})
    return {"results": "gradcheck.json"}


def _study_sanity(study, ctx: _Context, sdir: Path) -> dict:
    from ..data.prepare import DataConfig, load_dataset
    from ..sanity import overfit

    ds = load_dataset(DataConfig(download=False), ctx.data_root, dtype="float64")
    curves = {}
    for bn in (False, True):
        rows = overfit(
            ds,
            n=study["n"],
            hidden=tuple(study["hidden"]),
            batch_norm=bn,
            eta=study["eta"],
            n_epochs=study["n_epochs"],
            batch_size=study["batch_size"],
            lam=study["lam"],
        )
        curves["with batch norm" if bn else "without batch norm"] = [
            {"epoch": r["epoch"], "train_loss": r["train_loss"], "train_accuracy": r["train_accuracy"]} for r in rows
        ]
    write_json(
        sdir / "sanity.json",
        {
            "settings": {k: study.get(k) for k in ("n", "hidden", "eta", "n_epochs", "batch_size", "lam")},
            "curves": curves,
        },
    )
    return {"results": "sanity.json"}


_RUNNERS = {
    "gradcheck": _study_gradcheck,
    "sanity": _study_sanity,
    "runs": _study_runs,
    "search": _study_search,
    "grid": _study_grid,
}


def run_study(
    study: dict,
    out: Path,
    seeds: int = 3,
    data_root=None,
    n_jobs=None,
    scheduler=None,
    exp_dir=None,
    quick: bool = False,
    pool=None,
) -> Path:
    """Run one study into ``out/<name>`` (resumably) and write its ``study.json``; with a shared
    :class:`klayer.pool.WorkerPool` ``pool`` its tasks queue there (``n_jobs`` and ``scheduler``
    are the pool's). The study folder has one writer at a time: the study runs holding its lock
    (KlayerError naming it while another klayer process writes it), after the temporary files a
    killed write left in it are removed."""
    exp_dir = Path(exp_dir) if exp_dir else Path(study["file"]).parent
    ctx = _Context(seeds, data_root, n_jobs, scheduler, exp_dir, pool)
    with sole_writer(Path(out) / study["name"], "study folder") as sdir:
        t = time.perf_counter()
        structure = _RUNNERS[study["kind"]](study, ctx, sdir)
        write_json(
            sdir / "study.json",
            {**study, "seeds": seeds, "quick": quick, **structure, "wall_seconds": time.perf_counter() - t},
        )
    return sdir
