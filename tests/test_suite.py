"""The experiment suite: searches, resumable sweeps, Dask, the report."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from klayer.cli import main
from klayer.config import load_experiment
from klayer.search import best, coarse_values, fine_values, top
from klayer.suite import build_report, load_study, reported_values, suite_files
from klayer.sweep import lockstep_groups, run_many

from .conftest import ROOT, write_idx_data

STUDIES = (
    "gradcheck",
    "sanity",
    "a2_cyclic",
    "a2_lambda_search",
    "a3_networks",
    "a3_lambda_search",
    "a3_sensitivity",
    "a3_eta_search",
)

BASE = """
name = "idx_base"
[model]
hidden = [16, 8]
batch_norm = true
[data]
dataset = "idx"
path = "{data}"
n_val = 100
[train]
lam = 0.001
batch_size = 20
n_s = {n_s}
n_cycles = 1
eta_min = 1e-4
eta_max = 0.05
evals_per_cycle = 2
checkpoint_every = 0
"""

SEARCH = """
name = "idx_search"
[study]
kind = "search"
base = "idx_base"
key = "train.lam"
low = 1e-4
high = 1e-1
coarse_n = {coarse}
fine_n = 2
decades = 0.5
"""


@pytest.fixture
def idx_suite(tmp_path, rng):
    data = write_idx_data(tmp_path / "data", rng)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "idx_base.toml").write_text(BASE.format(data=data, n_s=30))
    (exp / "idx_search.toml").write_text(SEARCH.format(coarse=4))
    return exp, data


# -- search logic ------------------------------------------------------------------------------
def test_coarse_and_fine_values():
    assert coarse_values(1e-5, 1e-1, 5) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    r = coarse_values(1e-5, 1e-1, 20, "random", np.random.default_rng(0))
    assert r == sorted(r) and min(r) >= 1e-5 and max(r) <= 1e-1 and len(set(r)) == 20
    assert r == coarse_values(1e-5, 1e-1, 20, "random", np.random.default_rng(0))  # seeded
    f = fine_values(1e-3, 3, 0.5)
    assert f == [float(f"{10**-3.5:.4g}"), 1e-3, float(f"{10**-2.5:.4g}")]


def test_top_ignores_diverged_runs():
    def res(v, status="complete"):
        return {"status": status, "final": {"val_accuracy": v}}

    pts = [(1.0, res(0.3)), (2.0, res(0.9, "diverged")), (3.0, res(0.5)), (4.0, res(0.4))]
    assert [v for v, _ in top(pts, 2)] == [3.0, 4.0]
    assert best(pts) == 3.0


# -- sweeps: resumable, lockstep groups, Dask ---------------------------------------------------
def test_lockstep_groups(idx_suite):
    exp, _ = idx_suite
    base = exp / "idx_base.toml"
    cfgs = [load_experiment(base, [f"train.lam={l}"]) for l in (0.1, 0.01)]
    cfgs.append(load_experiment(base, ["train.batch_size=10"]))
    cfgs.append(load_experiment(base, ["train.seed=3"]))  # another shuffle: another stack
    assert lockstep_groups(cfgs) == [[0, 1], [2], [3]]


def test_run_many_resumes_without_retraining(tmp_path, idx_suite, monkeypatch):
    exp, _ = idx_suite
    cfgs = [
        load_experiment(exp / "idx_base.toml", [f"train.lam={l}", f"name='r{i}'"])
        for i, l in enumerate((0.1, 0.01, 0.001))
    ]
    dirs = [tmp_path / "runs" / c.name for c in cfgs]
    first = run_many(cfgs[:2], dirs[:2], n_jobs=1, progress=False)
    import klayer.sweep as sweep

    calls = []
    real = sweep._run_task
    monkeypatch.setattr(sweep, "_run_task", lambda c, o, *a, **k: calls.append(o) or real(c, o, *a, **k))
    again = run_many(cfgs, dirs, n_jobs=1, progress=False)
    assert calls == [[str(dirs[2])]]  # only the unfinished run was trained
    assert again[:2] == first
    assert all(r["status"] == "complete" for r in again)
    changed = load_experiment(exp / "idx_base.toml", ["train.lam=0.5", "name='r0'"])
    with pytest.raises(Exception, match="holds a finished run with a different config"):
        run_many([changed], dirs[:1], n_jobs=1, progress=False)


def test_run_many_on_two_workers_equals_in_process(tmp_path, idx_suite):
    exp, _ = idx_suite
    cfgs = [
        load_experiment(exp / "idx_base.toml", [f"train.lam={l}", f"name='p{i}'"])
        for i, l in enumerate((0.1, 0.01, 0.001, 0.0))
    ]
    a = run_many(cfgs, [tmp_path / "a" / c.name for c in cfgs], n_jobs=2, progress=False)
    b = run_many(cfgs, [tmp_path / "b" / c.name for c in cfgs], n_jobs=1, lockstep=False, progress=False)
    for x, y in zip(a, b, strict=True):
        assert x["final"]["val_loss"] == pytest.approx(y["final"]["val_loss"], rel=1e-6)
    assert {x["lockstep_k"] for x in a} == {2}  # two stacks of two, one per worker


class _InlinePool:
    """A stand-in for a shared WorkerPool: runs each task at once, records its priority."""

    n_jobs = 2

    def __init__(self):
        self.priorities = []

    def submit(self, fn, *args, priority=0.0):
        from concurrent.futures import Future

        self.priorities.append(priority)
        fut = Future()
        fut.set_result(fn(*args))
        return fut


def test_run_many_on_a_shared_pool_queues_the_longest_first_and_a_stage_ahead(tmp_path, idx_suite):
    from klayer.sweep import run_seconds

    exp, _ = idx_suite
    cfgs = [
        load_experiment(exp / "idx_base.toml", [f"train.lam={l}", f"name='q{i}'", f"train.n_s={n}"])
        for i, (l, n) in enumerate(((0.1, 30), (0.01, 30), (0.001, 30), (0.1, 60)))
    ]
    pool = _InlinePool()
    res = run_many(cfgs, [tmp_path / "a" / c.name for c in cfgs], pool=pool)
    assert all(r["status"] == "complete" for r in res)
    assert sorted(r["lockstep_k"] for r in res) == [1, 1, 2, 2]
    # a stack of three split in two for two workers, and the n_s=60 run: the tasks' estimated seconds
    rs = [run_seconds(c) for c in cfgs]
    seconds = sorted([rs[0] + rs[1], rs[2], rs[3]])
    assert sorted(pool.priorities) == pytest.approx(seconds)
    pool = _InlinePool()
    run_many(cfgs, [tmp_path / "b" / c.name for c in cfgs], pool=pool, priority=500.0)
    # work waits on these: every task goes ahead by 500 s plus the longest task
    assert sorted(pool.priorities) == pytest.approx([500.0 + seconds[-1] + s for s in seconds])


GRAD_STUDY = """
name = "grad"
[study]
kind = "gradcheck"
depths = [2, 3]
batch_sizes = [4, 6]
lams = [0.0, 0.1]
hs = [1e-6, 1e-5]
features = 10
max_entries = 4
"""

RUNS_STUDY = """
name = "idx_runs"
[study]
kind = "runs"
experiments = ["idx_base"]
"""


def _suite_files(exp):
    (exp / "grad.toml").write_text(GRAD_STUDY)
    (exp / "runs.toml").write_text(RUNS_STUDY)
    return [exp / "grad.toml", exp / "idx_search.toml", exp / "runs.toml"]


def test_studies_at_once_on_two_workers_equal_one_after_another(tmp_path, idx_suite):
    """reproduce with two workers runs every study at once on one pool: the same runs, the same
    numbers and the same gradient-check tables as one study after another in one process."""
    from klayer.suite import reproduce

    exp, data = idx_suite
    files = _suite_files(exp)
    lines = []
    together = reproduce(files, tmp_path / "a", seeds=2, data_root=data, n_jobs=2, report=False, log=lines.append)
    alone = reproduce(files, tmp_path / "b", seeds=2, data_root=data, n_jobs=1, report=False, log=lambda *a: None)
    assert sorted(x.split(":")[0].strip() for x in lines if "done after" in x) == ["grad", "idx_runs", "idx_search"]
    grad = [json.loads((d / "grad" / "gradcheck.json").read_text()) for d in (together, alone)]
    assert grad[0] == grad[1] and len(grad[0]["tables"]) == 16
    assert [(t["depth"], t["batch_norm"], t["batch"], t["lam"]) for t in grad[0]["tables"]] == [
        (d, bn, n, lam) for d in (2, 3) for bn in (False, True) for n in (4, 6) for lam in (0.0, 0.1)
    ]
    for study in ("idx_search", "idx_runs"):
        runs = [json.loads((d / study / "study.json").read_text())["runs"] for d in (together, alone)]
        assert runs[0] == runs[1]
        for e in runs[0]:
            x, y = (json.loads((d / study / e["run"] / "results.json").read_text()) for d in (together, alone))
            assert x["final"]["val_loss"] == pytest.approx(y["final"]["val_loss"], rel=1e-6)


def test_a_failing_study_stops_the_others(tmp_path, idx_suite):
    """One study fails (its data is gone): reproduce raises that error, one line, without waiting
    for the other studies' queued work."""
    from klayer.errors import KlayerError
    from klayer.suite import reproduce

    exp, _ = idx_suite
    files = _suite_files(exp)
    bad = exp / "idx_gone.toml"
    bad.write_text(BASE.format(data=tmp_path / "nowhere", n_s=30).replace('"idx_base"', '"idx_gone"'))
    (exp / "runs_gone.toml").write_text(RUNS_STUDY.replace("idx_base", "idx_gone").replace("idx_runs", "gone"))
    with pytest.raises(KlayerError, match="nowhere"):
        reproduce(
            [exp / "runs_gone.toml", *files], tmp_path / "o", seeds=2, data_root=None, n_jobs=2,
            report=False, log=lambda *a: None,
        )  # fmt: skip
    assert not (tmp_path / "o" / "suite.json").exists()


def test_dask_local_cluster(tmp_path, idx_suite):
    distributed = pytest.importorskip("distributed")
    exp, _ = idx_suite
    cfgs = [
        load_experiment(exp / "idx_base.toml", [f"train.lam={l}", f"name='d{i}'"]) for i, l in enumerate((0.1, 0.001))
    ]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = run_many(cfgs, [tmp_path / c.name for c in cfgs], scheduler=cluster.scheduler_address, progress=False)
    local = run_many(cfgs, [tmp_path / "local" / c.name for c in cfgs], n_jobs=1, progress=False)
    for x, y in zip(res, local, strict=True):
        assert x["status"] == "complete"
        assert x["final"]["val_loss"] == pytest.approx(y["final"]["val_loss"], rel=1e-6)
    assert (tmp_path / "d0" / "model.safetensors").is_file()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_killed_search_continues_where_it_stopped(tmp_path, rng, jobs):
    """SIGKILL a search midway (with its workers); the restart keeps every finished run and trains
    only the rest."""
    data = write_idx_data(tmp_path / "data", rng, n_train=3000)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "idx_base.toml").write_text(BASE.format(data=data, n_s=600))
    (exp / "idx_search.toml").write_text(SEARCH.format(coarse=6))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "klayer",
        "reproduce",
        str(exp / "idx_search.toml"),
        "--out",
        str(out),
        "--jobs",
        jobs,
        "--seeds",
        "1",
    ]
    # one network per task, so that runs finish one at a time
    env = {**os.environ, "KLAYER_MAX_K": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    runs = out / "idx_search" / "runs"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(runs.glob("*/results.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    time.sleep(3)  # orphaned workers notice within a second and stop
    done = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/results.json")}
    assert 2 <= len(done) < 6
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/results.json")}
    for name, mtime in done.items():
        assert after[name] == mtime, f"{name} was trained again"
    study = json.loads((out / "idx_search" / "study.json").read_text())
    assert {Path(e["run"]).name for e in study["runs"]} <= set(after)
    assert sum(e["stage"] == "coarse" for e in study["runs"]) == 6


# -- the suite's files and the report -------------------------------------------------------------
def test_suite_files_cover_the_reports():
    names = {load_study(f)["name"] for f in suite_files(ROOT / "experiments")}
    assert names == set(STUDIES)
    for f in suite_files(ROOT / "experiments"):
        for quick in (False, True):
            st = load_study(f, quick)
            for e in st.get("experiments", []) + ([st["base"]] if "base" in st else []):
                load_experiment(ROOT / "experiments" / f"{e}.toml", st.get("set", []))
    ref = reported_values()
    assert ref["runs"]["a3_3layer_bn"]["values"] and ref["runs"]["a3_3layer_bn"]["sources"]


def test_optional_studies_run_only_when_asked(tmp_path, idx_suite, monkeypatch):
    import klayer.suite.runner as runner

    src, _ = idx_suite
    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "idx_base.toml").write_text((src / "idx_base.toml").read_text())
    for name, optional in (("a_default", False), ("b_optional", True)):
        text = f'[study]\nkind = "runs"\nexperiments = ["idx_base"]\noptional = {str(optional).lower()}\n'
        (exp / f"{name}.toml").write_text(text)
    assert [f.stem for f in suite_files(exp)] == ["a_default"]
    assert [f.stem for f in suite_files(exp, optional=True)] == ["a_default", "b_optional"]
    ran = []
    monkeypatch.setattr(runner, "suite_files", lambda optional=False: suite_files(exp, optional))
    monkeypatch.setattr(runner, "run_study", lambda st, *a, **k: ran.append(st["name"]))
    runner.reproduce(out=tmp_path / "o", seeds=1, report=False, log=lambda *a: None)
    assert ran == ["a_default"]
    ran.clear()
    import klayer.suite.report

    monkeypatch.setattr(klayer.suite.report, "write_report", lambda *a, **k: ("md", "html"))
    assert main(["reproduce", "--all", "--out", str(tmp_path / "o2"), "--seeds", "1"]) == 0
    assert sorted(ran) == ["a_default", "b_optional"]  # the studies run at once on two workers


def test_reproduce_rejects_a_plain_experiment(capsys):
    assert main(["reproduce", str(ROOT / "experiments/a3_3layer_bn.toml"), "--out", "/tmp/klayer-x"]) == 1
    assert "not a study" in capsys.readouterr().err


def test_report_from_loose_run_folders(tmp_path, idx_suite):
    exp, _ = idx_suite
    cfgs = [
        load_experiment(exp / "idx_base.toml", [f"name='l{i}'", f"train.lam={l}"]) for i, l in enumerate((0.1, 0.001))
    ]
    res = run_many(cfgs, [tmp_path / c.name for c in cfgs], n_jobs=1, progress=False)
    assert main(["report", str(tmp_path / "l0"), str(tmp_path / "l1"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"{100 * res[0]['test_accuracy']:.2f}%" in md and "| l1 |" in md


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory, cifar_dir):
    out = tmp_path_factory.mktemp("quick")
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "klayer", "reproduce", "--quick", "--out", str(out), "--data", str(cifar_dir)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p.stdout, time.perf_counter() - t


def test_quick_suite_end_to_end(quick_suite):
    out, stdout, seconds = quick_suite
    assert re.search(r"estimated [\d.]+ min", stdout.splitlines()[0])
    assert "done in" in stdout.splitlines()[-1]
    md = (out / "report.md").read_text()
    for name in STUDIES:
        assert f"## {name}" in md
    assert "2 seeds per headline number" in md
    assert "| a3_3layer_bn | " in md and "(n=2)" in md
    assert "coarse search" in md and "fine search" in md and "best lam" in md
    assert "Why: without batch norm" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10 and 'src="figures' not in html  # self-contained
    for img in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / img).is_file(), img


def test_report_numbers_come_from_the_runs(quick_suite, tmp_path):
    """Edit one run's results.json: the rebuilt report changes accordingly (nothing is copied)."""
    out, _, _ = quick_suite
    study = json.loads((out / "a3_networks" / "study.json").read_text())
    runs = [e["run"] for e in study["runs"] if e["experiment"] == "a3_9layer_bn"]
    accs = [json.loads((out / "a3_networks" / r / "results.json").read_text())["test_accuracy"] for r in runs]
    before = f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}% (n=2)"
    assert f"| a3_9layer_bn | {before} |" in (out / "report.md").read_text()
    path = out / "a3_networks" / runs[0] / "results.json"
    original = path.read_text()
    try:
        res = json.loads(original)
        res["test_accuracy"] = 0.987
        path.write_text(json.dumps(res))
        build_report([out], tmp_path)
        accs[0] = 0.987
        after = f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}% (n=2)"
        assert f"| a3_9layer_bn | {after} |" in (tmp_path / "report.md").read_text()
    finally:
        path.write_text(original)


def test_bonus_ablation_study_runs_and_reports_against_the_best_student_solution(tmp_path, rng):
    """The optional "Beyond the reports" study, in quick mode on a small IDX data set: every
    experiment of the ladder trains (ZCA, augmentation, Nesterov, AdamW, dropout, smoothing
    together), and the report's table compares each with 54.0% and 58.66%."""
    from klayer.suite.runner import reproduce

    data = write_idx_data(tmp_path / "data", rng)
    exp = tmp_path / "experiments"
    exp.mkdir()
    study = load_study(ROOT / "experiments" / "suite_bonus.toml", quick=True)
    assert study["optional"] and study["name"] not in STUDIES
    assert study["experiments"][0] == "a3_3layer_bn" and "bonus_fast" in study["experiments"]
    assert "bonus_best" in study["experiments"]
    for name in study["experiments"]:
        text = (ROOT / "experiments" / f"{name}.toml").read_text()
        text = re.sub(r'split = "all"\nn_val = \d+', f'dataset = "idx"\npath = "{data}"\nn_val = 100', text)
        text = re.sub(r"hidden = \[[^]]*\]", "hidden = [32, 16]", text)
        assert f'path = "{data}"' in text, name
        (exp / f"{name}.toml").write_text(text)
    (exp / "suite_bonus.toml").write_text((ROOT / "experiments" / "suite_bonus.toml").read_text())
    out = reproduce([exp / "suite_bonus.toml"], out=tmp_path / "o", quick=True, seeds=1, n_jobs=1, log=lambda *a: None)
    md = (out / "report.md").read_text()
    assert "## bonus_ablation" in md
    for name in study["experiments"]:
        assert re.search(rf"\| {name} \| \d+\.\d\d ± \d+\.\d\d% \(n=1\)", md), name
        res = json.loads((out / "bonus_ablation" / "runs" / f"{name}-s0" / "results.json").read_text())
        assert res["status"] == "complete"
    assert md.count("54.00%, 58.66%") == len(study["experiments"]) - 1  # not the baseline's row
    assert "best public student solution (58.66%)" in md


def test_the_estimate_grows_with_the_networks_products_and_whitening():
    """The printed estimate follows the work: a 1024-512 network at batch 256 costs about its
    products more per update than [50, 50] at batch 100, and ZCA whitening adds its one-off cost."""
    from klayer.suite.runner import estimate_seconds
    from klayer.sweep import ZCA_SECONDS, update_seconds

    exp = ROOT / "experiments"
    small = load_experiment(exp / "a3_3layer_bn.toml")
    wide = load_experiment(exp / "bonus_fast.toml")
    flops = lambda c, d=3072: sum(a * b for a, b in zip([d, *c.model.hidden], [*c.model.hidden, 10], strict=True))  # noqa: E731
    ratio = (wide.train.batch_size * flops(wide)) / (small.train.batch_size * flops(small))
    assert 0.5 * ratio < update_seconds(wide) / update_seconds(small) < ratio
    study = {"kind": "runs", "experiments": ["bonus_fast"], "set": []}
    plain = {**study, "set": ["data.whiten='none'"]}
    one = estimate_seconds([study], 1, exp, 1)
    assert one - estimate_seconds([plain], 1, exp, 1) == pytest.approx(ZCA_SECONDS)
    assert estimate_seconds([study], 3, exp, 1) - 10 == pytest.approx(3 * (one - 10))
