"""Run folders, model files and checkpoints: verified, never silently wrong; faults lose nothing."""

import errno
import json
import os
import re

import numpy as np
import pytest

import klayer.io
from klayer import load_model, save_model
from klayer.cli import main
from klayer.config import ExperimentConfig, ModelConfig, TrainConfig
from klayer.errors import ModelFileError, OutputError
from klayer.network import Network, NetworkConfig
from klayer.runs import read_history, train
from klayer.runs.checkpoint import checkpoint_files, read_checkpoint
from klayer.runs.tensorfile import encode_tensors, read_tensors
from klayer.training import Trainer

from .conftest import tiny_dataset


def small_net(seed=0, batch_norm=True, dtype="float64"):
    cfg = NetworkConfig(6, (5, 4), 3, batch_norm=batch_norm, dtype=dtype)
    net = Network.init(cfg, np.random.default_rng(seed))
    for v in net.bn_state.values():
        v[...] = np.random.default_rng(seed + 1).uniform(0.5, 2.0, v.shape)
    return net


def saved_bytes(tmp_path, net=None, classes=("a", "b", "c")):
    net = net or small_net()
    path = save_model(tmp_path / "m.safetensors", net, np.arange(6.0), np.full(6, 2.0), {"name": "x"}, classes=classes)
    return path, path.read_bytes()


def test_model_file_round_trip_with_classes_and_statistics(tmp_path):
    net = small_net()
    path, _ = saved_bytes(tmp_path, net)
    m = load_model(path)
    assert m.classes == ("a", "b", "c") and m.meta["name"] == "x"
    for k in net.params:
        np.testing.assert_array_equal(m.network.params[k], net.params[k])
    for k in net.bn_state:
        np.testing.assert_array_equal(m.network.bn_state[k], net.bn_state[k])
    X = np.random.default_rng(3).uniform(0, 255, (7, 6))
    # raw rows are standardized with the saved statistics before the network sees them
    expected = net.predict_proba((X - np.arange(6.0)) / 2.0)
    np.testing.assert_allclose(m.predict_proba(X), expected, rtol=1e-12)
    network, mean, std, meta = m  # unpacks as before
    np.testing.assert_array_equal(mean, np.arange(6.0))


def test_every_flipped_byte_of_a_model_file_is_refused(tmp_path):
    """Flip a bit in each byte of a whole model file in turn (a seeded bit per byte, every bit of
    the length prefix): every copy is refused with a one-line ModelFileError, none loads."""
    path, raw = saved_bytes(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bits = np.random.default_rng(0).integers(0, 8, len(raw))
    cases = [(i, int(bits[i])) for i in range(len(raw))] + [(i, b) for i in range(8) for b in range(8)]
    for i, bit in cases:
        b = bytearray(raw)
        b[i] ^= 1 << bit
        bad.write_bytes(bytes(b))
        with pytest.raises(ModelFileError) as e:
            load_model(bad)
        assert str(e.value).startswith(str(bad)) and "\n" not in str(e.value)


def test_every_truncation_of_a_model_file_is_refused(tmp_path):
    path, raw = saved_bytes(tmp_path)
    bad = tmp_path / "cut.safetensors"
    for n in range(0, len(raw), 3):
        bad.write_bytes(raw[:n])
        with pytest.raises(ModelFileError, match="truncated|not a safetensors|corrupt"):
            load_model(bad)
    bad.write_bytes(raw[: len(raw) - 3])
    with pytest.raises(ModelFileError, match=r"truncated: tensor \S+ ends at byte"):
        load_model(bad)


def _forge(tmp_path, change):
    """A file with valid SHA-256 digests but contents edited by ``change(tensors, meta)``: only
    the checks against the architecture can catch it."""
    path, _ = saved_bytes(tmp_path)
    tensors, meta = read_tensors(path)
    change(tensors, meta)
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(encode_tensors(tensors, meta))
    return forged


def _net_meta(update):
    def change(tensors, meta):
        d = json.loads(meta["network"])
        d.update(update)
        meta["network"] = json.dumps(d)

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t, m: t.update({"param.W1": t["param.W1"][:, :5].copy()}), r"tensor param\.W1 has shape \(5, 5\)"),
        (lambda t, m: t.update({"param.W2": t["param.W2"].astype(np.float32)}), r"tensor param\.W2 is float32"),
        (lambda t, m: t.pop("param.gamma2"), r"tensor param\.gamma2 is missing"),
        (lambda t, m: t.pop("bn.var1"), r"tensor bn\.var1 is missing"),
        (lambda t, m: t.update({"param.W9": np.zeros((2, 2))}), r"unexpected tensor param\.W9"),
        (lambda t, m: t.update({"extra": np.zeros(2)}), r"unexpected tensor extra"),
        (lambda t, m: t["param.b3"].__setitem__(1, np.nan), r"tensor param\.b3 holds non-finite"),
        (lambda t, m: t["param.W1"].__setitem__((0, 0), np.inf), r"tensor param\.W1 holds non-finite"),
        (lambda t, m: t["bn.var2"].__setitem__(0, -1.0), r"tensor bn\.var2 holds negative"),
        (lambda t, m: t["data.std"].__setitem__(2, 0.0), r"data\.std holds values that are not positive"),
        (lambda t, m: t["data.mean"].__setitem__(2, np.nan), r"tensor data\.mean holds non-finite"),
        (lambda t, m: t.pop("data.std"), r"tensor data\.std is missing"),
        (lambda t, m: t.update({"data.mean": np.zeros(5)}), r"tensor data\.mean is float64 \(5,\)"),
        (_net_meta({"hidden": [10**12, 4]}), r"network\.hidden\[0\]=1000000000000 is not a plausible size"),
        (_net_meta({"input_size": 0}), r"network\.input_size=0"),
        (_net_meta({"n_classes": "3"}), r"network\.n_classes is '3'"),
        (_net_meta({"hidden": [5]}), r"unexpected tensor|is missing|has shape"),
        (_net_meta({"batch_norm": False}), r"unexpected tensor param\.(gamma|beta)|unexpected tensor bn\."),
        (_net_meta({"dtype": "float32"}), r"tensor param\.\w+ is float64, the network is float32"),
        (lambda t, m: m.update({"network": "{not json"}), r"metadata field network is not valid JSON"),
        (lambda t, m: m.pop("network"), r"metadata field network is missing"),
        (lambda t, m: m.update({"format": "other"}), r"not a klayer model"),
        (lambda t, m: m.update({"classes": json.dumps(["a", "b"])}), r"metadata field classes must list 3"),
        (lambda t, m: m.update({"name": "{oops"}), r"metadata field name is not valid JSON"),
    ],
)
def test_forged_model_files_are_refused_naming_the_tensor_or_field(tmp_path, change, message):
    with pytest.raises(ModelFileError, match=message):
        load_model(_forge(tmp_path, change))


def test_a_file_without_digests_is_refused(tmp_path):
    from safetensors.numpy import save

    path = tmp_path / "plain.safetensors"
    path.write_bytes(save({"param.W1": np.zeros((2, 2))}, metadata={"format": "klayer-model-2"}))
    with pytest.raises(ModelFileError, match="no sha256"):
        load_model(path)


def test_cli_refuses_a_corrupt_model_with_exit_2_and_one_line(tmp_path, capsys):
    path, raw = saved_bytes(tmp_path)
    b = bytearray(raw)
    b[-5] ^= 0x10  # inside the last tensor's data
    path.write_bytes(bytes(b))
    np.save(tmp_path / "rows.npy", np.zeros((2, 6)))
    assert main(["predict", str(path), str(tmp_path / "rows.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"klayer: error: {path}: tensor ") and "SHA-256" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "rows,message",
    [
        (np.array([[0, 1, 2, np.nan, 4, 5.0]]), r"row 0, column 3 is nan"),
        (np.vstack([np.zeros((2, 6)), [[0, 0, 0, 0, 0, -np.inf]]]), r"row 2, column 5 is -inf"),
        (np.zeros((2, 6), complex), r"complex"),
        (np.zeros((2, 5)), r"rows have 5 features, the model expects 6"),
        (np.zeros((2, 3, 6)), r"has shape \(2, 3, 6\)"),
        (np.zeros((2, 6), bool), r"dtype bool"),
        (np.array([["a"] * 6]), r"dtype <U1"),
        (np.zeros((0, 6)), r"no rows"),
    ],
)
def test_predict_refuses_bad_rows_naming_row_and_column(tmp_path, capsys, rows, message):
    path, _ = saved_bytes(tmp_path)
    np.save(tmp_path / "rows.npy", rows)
    assert main(["predict", str(path), str(tmp_path / "rows.npy"), "--out", str(tmp_path / "p.npy")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "rows.npy") in err
    assert re.search(message, err), err
    assert not (tmp_path / "p.npy").exists()  # nothing written for a refused input


def test_predict_prints_class_names_from_the_model(tmp_path, capsys):
    path, _ = saved_bytes(tmp_path, classes=("cat", "dog", "eel"))
    rows = np.random.default_rng(0).uniform(0, 10, (4, 6))
    np.save(tmp_path / "rows.npy", rows)
    assert main(["predict", str(path), str(tmp_path / "rows.npy"), "--out", str(tmp_path / "p.npy")]) == 0
    out = capsys.readouterr().out.splitlines()[1:]  # below the table's header
    P = np.load(tmp_path / "p.npy")
    names = ("cat", "dog", "eel")
    assert [line.split()[1] for line in out] == [names[i] for i in P.argmax(axis=1)]


# -- training runs: resume, checkpoints, faults -------------------------------------------------
def run_config(**train):
    base = dict(lam=0.001, batch_size=20, n_s=30, n_cycles=2, eta_min=1e-4, eta_max=0.05, dtype="float64")
    base.update(train)
    return ExperimentConfig(name="r", model=ModelConfig(hidden=(8, 6), batch_norm=True), train=TrainConfig(**base))


def assert_same_model(a_dir, b_dir):
    a, b = load_model(a_dir / "model.safetensors"), load_model(b_dir / "model.safetensors")
    for k in a.network.params:
        np.testing.assert_array_equal(a.network.params[k], b.network.params[k])
    for k in a.network.bn_state:
        np.testing.assert_array_equal(a.network.bn_state[k], b.network.bn_state[k])
    assert read_history(a_dir / "history.csv") == read_history(b_dir / "history.csv")


def interrupt_at(monkeypatch, step):
    real = Trainer.step

    def fake(self):
        real(self)
        if self.t == step:
            self._stop = True  # what SIGINT does

    monkeypatch.setattr(Trainer, "step", fake)
    return real


def test_resume_on_a_finished_run_changes_nothing(tmp_path, capsys):
    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    first = train(run_config(), data, out=out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    again = train(run_config(), data, out=out, resume=True)
    assert again.finished_before and again.results == first.results
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    for k in first.network.params:
        np.testing.assert_array_equal(again.network.params[k], first.network.params[k])


def test_cli_resume_on_a_finished_run_says_so_and_retrain_trains_again(tmp_path, capsys, monkeypatch):
    import klayer.runs.run as run_module

    data = tiny_dataset(np.random.default_rng(0))
    exp = tmp_path / "e.toml"
    exp.write_text(run_config().replace(name="e").to_toml())
    monkeypatch.setattr(run_module, "load_dataset", lambda *a, **k: data)
    out = tmp_path / "run"
    assert main(["train", str(exp), "--out", str(out), "--quiet"]) == 0
    (tmp_path / "before.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", str(exp), "--out", str(out), "--resume", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "is finished" in said and "nothing changed" in said and "--retrain" in said
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert main(["train", str(exp), "--out", str(out), "--quiet"]) == 1  # refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(exp), "--out", str(out), "--retrain", "--quiet"]) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns != mtime
    again, first = load_model(out / "model.safetensors"), load_model(tmp_path / "before.safetensors")
    for k in first.network.params:  # same seed, same model
        np.testing.assert_array_equal(again.network.params[k], first.network.params[k])


def test_a_checkpoint_is_written_beside_the_previous_one(tmp_path, monkeypatch):
    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 50)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(checkpoint_every=7), data, out=out)
    names = sorted(p.name for p in checkpoint_files(out))
    assert names == ["checkpoint.prev.safetensors", "checkpoint.safetensors"]
    steps = {p.name: json.loads(read_tensors(p)[1]["state"])["t"] for p in checkpoint_files(out)}
    assert steps == {"checkpoint.safetensors": 50, "checkpoint.prev.safetensors": 49}


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, capsys, damage):
    data = tiny_dataset(np.random.default_rng(0))
    cfg = run_config(checkpoint_every=7, momentum=0.5)
    ref = tmp_path / "ref"
    train(cfg, data, out=ref)
    out = tmp_path / "run"
    real = interrupt_at(monkeypatch, 50)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, out=out)
    monkeypatch.setattr(Trainer, "step", real)
    latest = out / "checkpoint.safetensors"
    raw = latest.read_bytes()
    latest.write_bytes(
        {"flip": raw[:-9] + bytes([raw[-9] ^ 4]) + raw[-8:], "truncate": raw[:100], "empty": b""}[damage]
    )
    said = []
    train(cfg, data, out=out, resume=True, log=said.append)
    assert (
        len(said) == 1
        and "checkpoint.safetensors" in said[0]
        and "resuming from checkpoint.prev.safetensors" in said[0]
    )
    assert "at update step 49" in said[0]
    assert_same_model(ref, out)  # still exactly the uninterrupted run
    assert not checkpoint_files(out)


def test_no_usable_checkpoint_is_a_one_line_refusal(tmp_path, monkeypatch, capsys):
    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 50)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(checkpoint_every=7), data, out=out)
    for p in checkpoint_files(out):
        p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ModelFileError, match="no usable checkpoint") as e:
        read_checkpoint(out)
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_architecture_is_refused(tmp_path, monkeypatch):
    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 20)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(checkpoint_every=7), data, out=out)
    from klayer.runs.checkpoint import restore

    other = Trainer([run_config().replace(model={"hidden": [9, 6]})], data)
    with pytest.raises(ModelFileError, match=r"tensor param\.W1 is float64 \(1, 8, 12\); this run needs"):
        restore(other, *read_checkpoint(out))


class Faulty:
    """Makes the ``fail_at``-th file klayer opens for writing fail with ``err``."""

    def __init__(self, fail_at, err=errno.ENOSPC):
        self.calls, self.fail_at, self.err = 0, fail_at, err
        self.real = os.fdopen

    def __call__(self, fd, *args, **kwargs):
        f = self.real(fd, *args, **kwargs)
        self.calls += 1
        if self.calls == self.fail_at:
            f.close()
            raise OSError(self.err, os.strerror(self.err))
        return f


def test_a_fault_at_any_write_loses_nothing_and_the_run_resumes(tmp_path, monkeypatch):
    """Disk full at the k-th file write of a run, for every k: one OutputError naming the path,
    no temporary file left, every file present complete, and the resumed run equals an
    uninterrupted one bit for bit."""
    data = tiny_dataset(np.random.default_rng(0))
    cfg = run_config(checkpoint_every=40, momentum=0.5)
    ref = tmp_path / "ref"
    counter = Faulty(fail_at=0)
    monkeypatch.setattr(klayer.io.os, "fdopen", counter)
    train(cfg, data, out=ref)
    n_writes = counter.calls
    assert n_writes >= 12  # config, 3 x (checkpoint, history), history, model, 3 plots, results
    for k in range(1, n_writes + 1):
        out = tmp_path / f"fault{k}"
        monkeypatch.setattr(klayer.io.os, "fdopen", Faulty(k))
        with pytest.raises(OutputError, match=r"cannot write \(No space left on device\)") as e:
            train(cfg, data, out=out)
        assert str(out) in str(e.value)
        monkeypatch.setattr(klayer.io.os, "fdopen", counter.real)
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        for p in checkpoint_files(out):
            read_tensors(p)  # complete and verified
        if (out / "results.json").exists():
            assert json.loads((out / "results.json").read_text())["status"] == "complete"
        train(cfg, data, out=out, resume=True)
        assert_same_model(ref, out)


def test_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    import klayer.runs.run as run_module

    data = tiny_dataset(np.random.default_rng(0))
    exp = tmp_path / "e.toml"
    exp.write_text(run_config(checkpoint_every=10).replace(name="e").to_toml())
    monkeypatch.setattr(run_module, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(klayer.io.os, "fdopen", Faulty(4, errno.EACCES))
    assert main(["train", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write (Permission denied)" in err and "Traceback" not in err


def test_training_data_with_nan_is_named_before_training(tmp_path):
    data = tiny_dataset(np.random.default_rng(0))
    data.X_train[17, 4] = np.nan
    with pytest.raises(Exception, match=r"train split\): row 17, column 4 is nan"):
        train(run_config(), data, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_compares_configs_not_text(tmp_path, monkeypatch):
    """A run folder whose config.toml predates a key with a default still resumes; a real
    difference is refused."""
    from klayer.errors import KlayerError

    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 20)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(checkpoint_every=7), data, out=out)
    text = (out / "config.toml").read_text()
    assert "label_smoothing = 0.0\n" in text
    (out / "config.toml").write_text(text.replace("label_smoothing = 0.0\n", ""))  # an older klayer's file
    with pytest.raises(KlayerError, match="config differs"):
        train(run_config(checkpoint_every=7, lam=0.5), data, out=out, resume=True)
    monkeypatch.undo()
    r = train(run_config(checkpoint_every=7), data, out=out, resume=True)
    assert r.results["status"] == "complete"


def test_results_account_for_training_and_evaluation_time(tmp_path, monkeypatch):
    """train_seconds and eval_seconds in results.json are measured (not zero) and add up to at
    most the wall time; a resumed run keeps the time spent before the interruption."""
    data = tiny_dataset(np.random.default_rng(0))
    res = train(run_config(), data, out=tmp_path / "run").results
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert res["train_seconds"] > 0 and res["eval_seconds"] > 0
    assert res["train_seconds"] + res["eval_seconds"] <= res["wall_seconds"]
    assert res["seconds_per_epoch"] == pytest.approx((res["train_seconds"] + res["eval_seconds"]) / res["epochs"])
    real = interrupt_at(monkeypatch, 60)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(checkpoint_every=7), data, out=tmp_path / "r2")
    before = json.loads(read_tensors(tmp_path / "r2" / "checkpoint.safetensors")[1]["state"])["train_seconds"]
    assert before > 0
    monkeypatch.setattr(Trainer, "step", real)
    again = train(run_config(checkpoint_every=7), data, out=tmp_path / "r2", resume=True).results
    assert again["train_seconds"] > before
