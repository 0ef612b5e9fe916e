"""Hostile run folders: forged checkpoints (valid digests, impossible values), damaged JSON,
--retrain faults, a damaged config.toml, Ctrl-C while the final outputs are written, and a
report that must say what it leaves out."""

import json
import os
import re
import signal

import numpy as np
import pytest

import klayer.runs.run as run_module
from klayer.cli import main
from klayer.errors import DataError, KlayerError, ModelFileError
from klayer.runs import train, train_lockstep
from klayer.runs.checkpoint import checkpoint_files
from klayer.runs.folder import RunFolder
from klayer.runs.tensorfile import encode_tensors, read_tensors
from klayer.suite import build_report
from klayer.sweep import load_results
from klayer.training import Trainer

from .conftest import tiny_dataset
from .test_runs import assert_same_model, interrupt_at, run_config


def forge(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(tensors, state)`` applied and fresh,
    valid digests: only the values are wrong."""
    tensors, meta = read_tensors(path)
    tensors = {k: v.copy() for k, v in tensors.items()}
    state = json.loads(meta["state"])
    change(tensors, state)
    path.write_bytes(encode_tensors(tensors, {**meta, "state": json.dumps(state)}))


def _set(key, value):
    def change(tensors, state):
        state[key] = value

    return change


def _perm(fn):
    def change(tensors, state):
        tensors["perm"] = fn(tensors["perm"])

    return change


def _history_row(key, value):
    def change(tensors, state):
        state["history"][0][-1][key] = value

    return change


FORGERIES = {
    "perm out of range": (_perm(lambda p: np.where(p == 0, len(p), p)), "tensor perm is not a permutation"),
    "perm with duplicates": (_perm(lambda p: np.where(p == 0, p[p != 0][0], p)), "tensor perm is not a permutation"),
    "perm of floats": (_perm(lambda p: p.astype(np.float64)), "tensor perm is float64"),
    "t huge": (_set("t", 10**12), "field t is 1000000000000, outside"),
    "t negative": (_set("t", -3), "field t is -3"),
    "t beyond the end": (_set("t", 121), "field t is 121, outside this run's update steps 0..120"),
    "t a float": (_set("t", 50.0), "field t is 50.0, expected an integer"),
    "perm_epoch": (_set("perm_epoch", -3), "field perm_epoch is -3"),
    "diverged": (_set("diverged", [5]), r"field diverged\[0\] is 5"),
    "history a string": (_set("history", "[[1,2,3]]"), "field history is '\\[\\[1,2,3\\]\\]', expected a list"),
    "history rows missing": (lambda t, s: s["history"][0].pop(), r"field history\[0\] does not hold"),
    "history value a string": (_history_row("val_accuracy", "x"), r"history\[0\]\[\d+\]\.val_accuracy is 'x'"),
    "history row a list": (_set("history", [[[1, 2, 3]]]), r"field history\[0\]\[0\] is \[1, 2, 3\]"),
    "K": (_set("K", 2), "field K is 2"),
    "rng": (_set("rng", {"bit_generator": "PCG64", "state": 5}), "field rng is not a random generator state"),
    "train_seconds": (_set("train_seconds", -1.0), "field train_seconds is -1.0"),
}


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A run interrupted at update 50 (checkpoints at 50 and 49) and the uninterrupted reference."""
    data = tiny_dataset(np.random.default_rng(0))
    cfg = run_config(checkpoint_every=7, momentum=0.5)
    train(cfg, data, out=tmp_path / "ref")
    real = interrupt_at(monkeypatch, 50)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, out=tmp_path / "run")
    monkeypatch.setattr(Trainer, "step", real)
    return data, cfg, tmp_path / "run", tmp_path / "ref"


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_checkpoint_is_skipped_like_a_corrupt_one(interrupted, forgery):
    """Valid digests, impossible values: the latest checkpoint is refused naming the tensor or
    field, the run resumes from the previous one and ends exactly as the uninterrupted run."""
    data, cfg, out, ref = interrupted
    change, message = FORGERIES[forgery]
    forge(out / "checkpoint.safetensors", change)
    said = []
    res = train(cfg, data, out=out, resume=True, log=said.append).results
    assert len(said) == 1 and "checkpoint.safetensors" in said[0]
    assert re.search(message, said[0]), said[0]
    assert "resuming from checkpoint.prev.safetensors at update step 49" in said[0]
    assert res["status"] == "complete" and res["updates"] == 120
    assert_same_model(ref, out)


def test_an_invalid_only_checkpoint_is_a_one_line_refusal_that_writes_nothing(interrupted, monkeypatch, capsys):
    data, cfg, out, _ = interrupted
    (out / "checkpoint.prev.safetensors").unlink()
    forge(out / "checkpoint.safetensors", _set("t", 10**12))  # was: trained on, marked complete
    exp = out.parent / "e.toml"
    exp.write_text(cfg.replace(name="r").to_toml())
    monkeypatch.setattr(run_module, "load_dataset", lambda *a, **k: data)
    assert main(["train", str(exp), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no usable checkpoint" in err and "field t is 1000000000000" in err
    assert not (out / "results.json").exists() and not (out / "model.safetensors").exists()
    with pytest.raises(ModelFileError, match="field t is"):
        train(cfg, data, out=out, resume=True)


# -- damaged results.json: not trusted, trained again -------------------------------------------
DAMAGED_RESULTS = {
    "a list": ("[1]", "the content is [1], expected an object"),
    "no fields": ('{"status": "complete"}', "field test_accuracy is missing"),
    "accuracy a string": (None, "field test_accuracy is 'high'"),
    "not JSON": ("{bad", "not valid JSON"),
    "no status": ("{}", "field status is missing"),
}


@pytest.mark.parametrize("damage", DAMAGED_RESULTS)
def test_a_damaged_results_json_is_trained_again_not_trusted(tmp_path, damage):
    data = tiny_dataset(np.random.default_rng(0))
    cfg = run_config()
    ref = tmp_path / "ref"
    train(cfg, data, out=ref)
    out = tmp_path / "run"
    train(cfg, data, out=out)
    text, message = DAMAGED_RESULTS[damage]
    if text is None:
        res = json.loads((out / "results.json").read_text())
        text = json.dumps({**res, "test_accuracy": "high"})
    (out / "results.json").write_text(text)
    assert load_results(out) is None  # reproduce trains it again
    said = []
    again = train(cfg, data, out=out, resume=True, log=said.append)
    assert not again.finished_before and again.results["status"] == "complete"
    assert len(said) == 1 and str(out / "results.json") in said[0] and message in said[0]
    assert_same_model(ref, out)
    assert load_results(out)["status"] == "complete"


# -- --retrain keeps the finished run until the new one is ready --------------------------------
def test_retrain_keeps_the_finished_run_when_the_data_or_trainer_fail(tmp_path, monkeypatch):
    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    train(run_config(), data, out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"model.safetensors", "results.json", "history.csv", "accuracy.png"} <= set(before)

    def no_data(*a, **k):
        raise DataError(tmp_path / "nothere", "no data here")

    monkeypatch.setattr(run_module, "load_dataset", no_data)
    with pytest.raises(DataError):
        train(run_config(), None, out=out, retrain=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(KlayerError, match="batch_size"):  # the trainer cannot be built
        train(run_config(batch_size=10**6), data, out=out, retrain=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    again = train(run_config(lam=0.01), data, out=out, retrain=True)
    assert again.results["status"] == "complete" and not checkpoint_files(out)
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]


def test_resume_with_a_damaged_config_toml_says_it_is_damaged(interrupted):
    data, cfg, out, _ = interrupted
    (out / "config.toml").write_text("garbage [[\n")
    with pytest.raises(KlayerError) as e:
        train(cfg, data, out=out, resume=True)
    msg = str(e.value)
    assert "config.toml is damaged" in msg and "invalid TOML" in msg and "differs" not in msg


# -- Ctrl-C while the final outputs are written -------------------------------------------------
def test_ctrl_c_while_the_final_outputs_are_written_still_stops(tmp_path, monkeypatch):
    """A SIGINT that arrives after the last update (the loop no longer checks its flag) lets the
    outputs finish, then raises KeyboardInterrupt: reproduce stops (exit 130) instead of going on;
    the finished runs are complete, so a rerun reuses them."""
    data = tiny_dataset(np.random.default_rng(0))
    real = RunFolder.on_train_end

    def interrupted_end(self, trainer):
        os.kill(os.getpid(), signal.SIGINT)  # handled by the trainer: only its flag is set
        real(self, trainer)

    monkeypatch.setattr(RunFolder, "on_train_end", interrupted_end)
    configs = [run_config().replace(name=f"n{i}", train={"lam": lam}) for i, lam in enumerate((0.001, 0.01))]
    outs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(KeyboardInterrupt):
        train_lockstep(configs, data, outs)
    assert [load_results(o)["status"] for o in outs] == ["complete", "complete"]
    with pytest.raises(KeyboardInterrupt):
        train(run_config(), data, out=tmp_path / "single")
    assert train(run_config(), data, out=tmp_path / "single", resume=True).finished_before


# -- the report says what it leaves out ----------------------------------------------------------
def _results(acc=0.3, **extra):
    return {"name": "x", "status": "complete", "test_accuracy": acc, "final": {"val_accuracy": acc}, **extra}


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _search_study(root):
    sdir = root / "etasearch"
    entries = []
    for stage, v, res in [
        ("coarse", 0.01, _results(0.30)),
        ("coarse", 3.16, _results(0.35)),
        ("coarse", 1000.0, {"name": "x", "status": "diverged", "diverged_at_step": 7, "seed": 0}),
        ("final", 3.16, _results(0.36)),
    ]:
        run = f"runs/{stage}-{v:g}"
        entries.append({"stage": stage, "value": v, "seed": 0, "run": run})
        _write(sdir / run / "results.json", res)
    study = {"name": "etasearch", "kind": "search", "key": "train.eta_max", "low": 0.01, "high": 1000.0}
    _write(sdir / "study.json", {**study, "runs": entries})
    return sdir


def test_the_report_names_diverged_runs_and_the_real_searched_range(tmp_path):
    _search_study(tmp_path)
    md = build_report([tmp_path / "etasearch"], tmp_path / "out")[0].read_text()
    assert "coarse search: 3 values of eta_max in [0.01, 1e+03], 1 diverged (1e+03), top 3" in md
    assert "runs/coarse-1000 diverged at update step 7" in md


def test_an_empty_gradcheck_json_is_a_visible_missing_entry(tmp_path):
    _search_study(tmp_path)
    _write(tmp_path / "gc" / "study.json", {"name": "gc", "kind": "gradcheck"})
    _write(tmp_path / "gc" / "gradcheck.json", {})
    md = build_report([tmp_path / "gc", tmp_path / "etasearch"], tmp_path / "out")[0].read_text()
    assert "| gc | gradcheck.json missing or damaged | 1e-10 to 1e-5 | missing |" in md
    assert "gradcheck.json: field source is missing" in md


def test_damaged_sanity_and_results_files_are_named_in_the_report(tmp_path):
    sdir = _search_study(tmp_path)
    _write(sdir / "runs/coarse-0.01/results.json", _results("high"))
    _write(tmp_path / "san" / "study.json", {"name": "san", "kind": "sanity"})
    _write(tmp_path / "san" / "sanity.json", [1, 2])
    _write(tmp_path / "loose" / "results.json", [1])
    md = build_report([tmp_path / "san", sdir, tmp_path / "loose"], tmp_path / "out")[0].read_text()
    assert "coarse-0.01/results.json: field test_accuracy is 'high'" in md
    assert "1 without results" in md
    assert "sanity.json: the content is [1, 2], expected an object" in md
    assert "| loose | damaged |" in md and "loose/results.json: the content is [1]" in md


@pytest.mark.parametrize(
    "content, message",
    [
        ("{bad", "study.json: not valid JSON"),
        ("[]", "study.json: the content is [], expected an object"),
        (
            '{"name": "s", "kind": "search", "key": "train.lam", "low": 1, "high": 2}',
            "study.json: field runs is missing",
        ),
        ('{"name": "s", "kind": "nope"}', "study.json: field kind is 'nope'"),
    ],
)
def test_a_damaged_study_json_is_one_line_naming_the_field(tmp_path, capsys, content, message):
    sdir = _search_study(tmp_path)
    (sdir / "study.json").write_text(content)
    assert main(["report", str(sdir), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_damaged_suite_json_is_one_line_naming_the_field(tmp_path, capsys):
    _search_study(tmp_path)
    _write(tmp_path / "suite.json", {"studies": ["etasearch"], "seeds": "two"})
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "suite.json: field seeds is 'two', expected an integer" in err
