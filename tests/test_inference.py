"""klayer evaluate (per-class scores, confusion matrix, ensembles, user data) and klayer predict
(rows and images, top-k, table/json/csv, failures one line each), as a user runs them."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from klayer import ExperimentConfig, ModelConfig, Network, NetworkConfig, TrainConfig, train
from klayer.cli import main
from klayer.data.prepare import DataConfig, load_dataset
from klayer.inference import evaluate_run, format_predictions
from klayer.metrics import classification_report
from klayer.runs import load_model, save_model

from .conftest import write_idx_data

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short runs on 8x8 grey IDX images (10 classes), seeds 0 and 1, and their data."""
    root = tmp_path_factory.mktemp("inf")
    data_dir = write_idx_data(root / "data", np.random.default_rng(5))
    dcfg = DataConfig(dataset="idx", path=str(data_dir), n_val=100)
    data = load_dataset(dcfg, dtype="float64")
    out = []
    for seed in (0, 1):
        cfg = ExperimentConfig(
            name=f"idx{seed}",
            model=ModelConfig(hidden=(24,), batch_norm=True),
            data=dcfg,
            train=TrainConfig(lam=0.001, batch_size=20, n_s=30, n_cycles=1, eta_max=0.05, seed=seed,
                              checkpoint_every=0, dtype="float64"),
        )  # fmt: skip
        train(cfg, data=data, out=root / f"run{seed}", progress=False)
        out.append(root / f"run{seed}")
    return out, data, data_dir


def evaluate_json(capsys, *args):
    capsys.readouterr()
    assert main(["evaluate", *map(str, args), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- evaluate ----------------------------------------------------------------------------------
def test_evaluate_json_matches_the_run_and_an_independent_count(runs, capsys):
    (r0, _), data, _ = runs
    rep = evaluate_json(capsys, r0)
    res = json.loads((r0 / "results.json").read_text())
    assert rep["accuracy"] == pytest.approx(res["test_accuracy"]) and rep["n"] == len(data.y_test) == 200
    P = load_model(r0 / "model.safetensors").predict_proba(data.X_test)
    pred = P.argmax(axis=1)
    cm = np.zeros((10, 10), int)
    for t, p in zip(data.y_test, pred, strict=True):
        cm[t, p] += 1
    assert rep["confusion"] == cm.tolist()
    assert [c["support"] for c in rep["per_class"]] == np.bincount(data.y_test, minlength=10).tolist()
    i = int(np.argmax(cm.sum(axis=0)))
    assert rep["per_class"][i]["precision"] == pytest.approx(cm[i, i] / cm[:, i].sum())
    assert rep["per_class"][i]["recall"] == pytest.approx(cm[i, i] / cm[i].sum())
    assert rep["loss"] == pytest.approx(res["test_loss"])
    assert rep["split"] == "test" and "test split of" in rep["what"]


def test_evaluate_table_shows_classes_scores_and_the_matrix(runs, capsys):
    (r0, _), data, data_dir = runs
    rep = evaluate_json(capsys, r0, "--data", data_dir, "--split", "val")
    assert rep["n"] == 100 and rep["split"] == "val"
    assert main(["evaluate", str(r0), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {rep['accuracy']:.4f}" in out
    assert "class  images  accuracy  precision  recall      f1" in out
    lines = out.splitlines()
    head = lines.index("confusion matrix (rows: true class, columns: predicted class)")
    matrix = [[int(v) for v in ln.split()[1:]] for ln in lines[head + 2 : head + 12]]
    assert matrix == rep["confusion"]
    row3 = next(ln for ln in lines if ln.startswith("3 ") and "." in ln)  # per-class row of class "3"
    c = rep["per_class"][3]
    assert row3.split()[1:] == [str(c["support"]), *(f"{c[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1"))]


def test_evaluate_out_writes_the_confusion_plot_and_metrics(runs, capsys, tmp_path):
    (r0, _), data, _ = runs
    assert main(["evaluate", str(r0), "--out", str(tmp_path / "ev"), "--json", "--save-probabilities"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == printed
    png = (tmp_path / "ev" / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    P = np.load(tmp_path / "ev" / "probabilities.npy")
    np.testing.assert_allclose(P, load_model(r0 / "model.safetensors").predict_proba(data.X_test))


def test_evaluate_writes_nothing_without_out(runs, capsys, tmp_path, monkeypatch):
    (r0, _), _, _ = runs
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(r0)]) == 0
    assert list(tmp_path.iterdir()) == []


def test_ensemble_of_runs_and_a_model_file(runs, capsys, tmp_path):
    (r0, r1), data, _ = runs
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes((r1 / "model.safetensors").read_bytes())
    rep = evaluate_json(capsys, r0, r1, copy)
    singles = [evaluate_json(capsys, p) for p in (r0, r1, r1)]  # a lone model file would mean CIFAR-10
    assert [m["accuracy"] for m in rep["members"]] == pytest.approx([s["accuracy"] for s in singles])
    assert [m["loss"] for m in rep["members"]] == pytest.approx([s["loss"] for s in singles])
    P = np.mean([load_model(p / "model.safetensors").predict_proba(data.X_test) for p in (r0, r1, r1)], axis=0)
    assert rep["accuracy"] == pytest.approx(float((P.argmax(1) == data.y_test).mean()))
    assert rep["confusion"] == classification_report(data.y_test, P, data.classes)["confusion"]
    assert rep["models"] == [str(r0), str(r1), str(copy)]
    assert main(["evaluate", str(r0), str(r1)]) == 0
    out = capsys.readouterr().out
    ens = next(ln for ln in out.splitlines() if ln.startswith("ensemble"))
    two = evaluate_json(capsys, r0, r1)
    assert ens.split()[1:] == [f"{two['accuracy']:.4f}", f"{two['loss']:.4f}", "(mean", "of", "2)"]
    assert str(r1) in out


def test_ensemble_members_must_agree(runs, capsys, tmp_path):
    (r0, _), _, _ = runs
    other = Network.init(NetworkConfig(64, (5,), 10), np.random.default_rng(0))
    save_model(tmp_path / "o.safetensors", other, np.zeros(64), np.ones(64), classes=list("abcdefghij"))
    assert main(["evaluate", str(r0), str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other classes" in err and "o.safetensors" in err


def test_evaluate_on_user_rows_and_labels(runs, capsys, tmp_path):
    (r0, _), data, _ = runs
    np.save(tmp_path / "X.npy", data.X_test[:50].astype(np.float32))
    np.save(tmp_path / "y.npy", data.y_test[:50].astype(np.int32))
    rep = evaluate_json(capsys, r0, "--rows", tmp_path / "X.npy", "--labels", tmp_path / "y.npy")
    P = load_model(r0 / "model.safetensors").predict_proba(data.X_test[:50])
    assert rep["n"] == 50 and rep["accuracy"] == pytest.approx(float((P.argmax(1) == data.y_test[:50]).mean()))
    assert rep["split"] is None and rep["what"] == str(tmp_path / "X.npy")


@pytest.mark.parametrize(
    "X,y,where,message",
    [
        (np.full((3, 64), np.nan), np.zeros(3), "X", "row 0, column 0 is nan"),
        (
            np.vstack([np.zeros((2, 64)), np.r_[np.zeros(63), np.inf][None]]),
            np.zeros(3),
            "X",
            "row 2, column 63 is inf",
        ),
        (np.zeros((3, 64), complex), np.zeros(3), "X", "complex"),
        (np.zeros((3, 60)), np.zeros(3), "X", "rows have 60 features, the model expects 64"),
        (np.array([["x"] * 64]), np.zeros(1), "X", "dtype <U1"),
        (np.zeros((3, 64)), np.array([0, 10, 1]), "y", "row 1: label 10 is outside the classes 0..9"),
        (np.zeros((3, 64)), np.array([0, -1, 1]), "y", "row 1: label -1 is outside"),
        (np.zeros((3, 64)), np.array([0.0, 1.5, 1]), "y", "row 1: label 1.5 is not an integer"),
        (np.zeros((3, 64)), np.zeros(4), "y", "4 labels for 3 rows"),
    ],
)
def test_evaluate_refuses_bad_user_data_in_one_line(runs, capsys, tmp_path, X, y, where, message):
    (r0, _), _, _ = runs
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    assert main(["evaluate", str(r0), "--rows", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / where}.npy: " in err and message in err, err


def test_a_model_file_alone_is_evaluated_on_cifar_and_says_so_when_it_does_not_fit(runs, capsys, tmp_path, cifar_dir):
    (r0, _), _, _ = runs
    alone = tmp_path / "model.safetensors"
    alone.write_bytes((r0 / "model.safetensors").read_bytes())
    assert main(["evaluate", str(alone), "--data", str(cifar_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rows have 3072 features, the model expects 64" in err and "--rows" in err


def test_a_runs_model_file_is_evaluated_on_the_runs_data(runs, capsys):
    # the model.safetensors of a run folder was evaluated as a model file of its own, on CIFAR-10
    # from $KLAYER_DATA: refused for an IDX or image-folder run, and a 3072-wide 10-class one was
    # scored on another data set; now its run's config.toml names the data, as for the folder
    (r0, _), _, _ = runs
    whole = evaluate_json(capsys, r0)
    assert evaluate_json(capsys, r0 / "model.safetensors")["confusion"] == whole["confusion"]
    assert evaluate_json(capsys, r0 / "model.safetensors", "--split", "val")["what"].startswith("val split of")


def test_rows_and_labels_go_together(runs, capsys, tmp_path):
    (r0, _), _, _ = runs
    np.save(tmp_path / "X.npy", np.zeros((2, 64)))
    assert main(["evaluate", str(r0), "--rows", str(tmp_path / "X.npy")]) == 1
    assert "--rows needs --labels" in capsys.readouterr().err


def test_evaluate_run_hook_writes_the_confusion_plot(runs, tmp_path):
    (r0, _), data, _ = runs
    m = load_model(r0 / "model.safetensors")
    out = evaluate_run(tmp_path, m.network, data, "float64", "idx0")
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    ref = classification_report(data.y_test, m.predict_proba(data.X_test), data.classes)
    assert out == {k: ref[k] for k in ("per_class", "confusion", "macro")}
    json.dumps(out)  # JSON-ready for results.json


# -- predict -----------------------------------------------------------------------------------
def grey_png(path, value, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(value + rng.normal(0, 10, (16, 16)), 0, 255).astype(np.uint8), "L").save(path)
    return path


@pytest.fixture
def inputs(tmp_path, rng):
    photos = tmp_path / "photos"
    for name, v in (("b.png", 40), ("a.png", 200), ("sub/c.png", 120)):
        grey_png(photos / name, v, rng)
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    np.save(tmp_path / "rows.npy", rng.integers(0, 256, (2, 64)).astype(np.uint8))
    single = grey_png(tmp_path / "one.png", 90, rng)
    return photos, tmp_path / "rows.npy", single


def expected(model, paths_or_rows):
    from klayer.data.images import read_image

    rows = [read_image(p, (1, 8, 8)) if not isinstance(p, np.ndarray) else p for p in paths_or_rows]
    return model.predict_proba(np.stack(rows).astype(np.float64))


def test_predict_images_folders_and_rows_with_failures_reported(runs, inputs, capsys):
    (r0, _), _, _ = runs
    photos, rows, single = inputs
    code = main(
        ["predict", str(r0), str(single), str(photos), str(rows), str(photos / "missing.jpg"), "--format", "json"]
    )
    assert code == 1  # some inputs failed
    out = json.loads(capsys.readouterr().out)
    names = [r["input"] for r in out]
    assert names == [
        str(single),
        str(photos / "a.png"),
        str(photos / "b.png"),
        str(photos / "sub/c.png"),
        f"{rows}[0]",
        f"{rows}[1]",
    ]  # argument order, folders sorted and recursive
    m = load_model(r0 / "model.safetensors")
    R = np.load(rows)
    P = expected(m, [single, photos / "a.png", photos / "b.png", photos / "sub/c.png", R[0], R[1]])
    for r, p in zip(out, P, strict=True):
        top = np.argsort(-p)[:3]
        assert [t["class"] for t in r["top"]] == [m.classes[j] for j in top]
        assert [t["probability"] for t in r["top"]] == pytest.approx(p[top].tolist())
    capsys.readouterr()
    assert main(["predict", str(r0), str(photos), str(photos / "missing.jpg")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(ln.startswith("klayer: error: ") for ln in err)
    assert {ln.split(": ")[2] for ln in err} == {str(photos / n) for n in ("broken.png", "notes.txt", "missing.jpg")}


def test_predict_exit_zero_and_probabilities_when_all_inputs_work(runs, inputs, capsys, tmp_path):
    (r0, _), _, _ = runs
    photos, rows, single = inputs
    assert main(["predict", str(r0), str(single), str(rows), "--out", str(tmp_path / "p.npy")]) == 0
    P = np.load(tmp_path / "p.npy")
    m = load_model(r0 / "model.safetensors")
    np.testing.assert_allclose(P, expected(m, [single, *np.load(rows)]))
    assert capsys.readouterr().err == ""
    assert main(["predict", str(r0), str(photos), "--out", str(tmp_path / "q.npy")]) == 1
    assert not (tmp_path / "q.npy").exists()  # a partial array would not say which row is which


def test_predict_formats_and_top_k(runs, inputs, capsys):
    (r0, _), _, _ = runs
    _, rows, single = inputs
    m = load_model(r0 / "model.safetensors")
    P = expected(m, [single, *np.load(rows)])
    assert main(["predict", str(r0), str(single), str(rows), "--format", "csv", "--top-k", "2"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["input", "class_1", "probability_1", "class_2", "probability_2"]
    assert len(table) == 4 and table[1][0] == str(single)
    for line, p in zip(table[1:], P, strict=True):
        j = np.argsort(-p)[:2]
        assert line[1::2] == [m.classes[i] for i in j] and [float(v) for v in line[2::2]] == pytest.approx(
            p[j], abs=1e-6
        )
    assert main(["predict", str(r0), str(single), str(rows)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["input", "top", "1", "top", "2", "top", "3"]
    first = lines[1].split()
    j = np.argsort(-P[0])[:3]
    assert first[0] == str(single) and first[1::2] == [m.classes[i] for i in j]
    assert [float(v) for v in first[2::2]] == pytest.approx(P[0, j], abs=1e-4)


def test_format_predictions_orders_by_probability():
    P = np.array([[0.1, 0.7, 0.2]])
    out = json.loads(format_predictions(["x"], P, ("a", "b", "c"), k=5, fmt="json"))
    assert [t["class"] for t in out[0]["top"]] == ["b", "c", "a"]  # k is capped at the classes


def test_predict_images_on_a_features_model_is_one_line_each(tmp_path, inputs, capsys):
    net = Network.init(NetworkConfig(5, (3,), 2), np.random.default_rng(0))
    save_model(tmp_path / "f.safetensors", net, np.zeros(5), np.ones(5))
    _, _, single = inputs
    assert main(["predict", str(tmp_path / "f.safetensors"), str(single)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes 5 features, not images" in err


def test_cifar_class_names_shown_for_a_cifar_model(cifar_f32, tmp_path, capsys):
    net = Network.init(NetworkConfig(3072, (10,), 10, dtype="float32"), np.random.default_rng(0))
    save_model(tmp_path / "c.safetensors", net, cifar_f32.mean, cifar_f32.std, classes=cifar_f32.classes)
    img = cifar_f32.X_test[0].reshape(3, 32, 32).transpose(1, 2, 0)
    Image.fromarray(img).resize((96, 96)).save(tmp_path / "big.jpg")
    assert main(["predict", str(tmp_path / "c.safetensors"), str(tmp_path / "big.jpg"), "--top-k", "10"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("airplane", "automobile", "truck", "ship"))


# -- as a user runs them ---------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "klayer", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_evaluate_and_predict_in_a_subprocess(runs, inputs):
    (r0, r1), _, data_dir = runs
    photos, _, _ = inputs
    p = run_cli("evaluate", r0, r1, "--data", data_dir)
    assert p.returncode == 0, p.stderr
    assert "confusion matrix (rows: true class, columns: predicted class)" in p.stdout and "(mean of 2)" in p.stdout
    p = run_cli("predict", r0, photos, "--format", "csv")
    assert p.returncode == 1 and p.stderr.count("\n") == 2 and "Traceback" not in p.stderr
    assert len(p.stdout.splitlines()) == 4  # header and three images


def test_file_names_that_are_not_utf8_are_printed_as_their_bytes(runs, tmp_path, rng):
    # a file name with a byte that is not UTF-8 is held by Python as a surrogate escape; printing
    # it to a strict UTF-8 stdout (a UTF-8 locale, PYTHONIOENCODING) raised UnicodeEncodeError: a
    # traceback after the predictions were made
    import os

    (r0, _), _, _ = runs
    folder = tmp_path / "photos"
    grey_png(Path(os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9 1.png"))), 90, rng)
    grey_png(folder / "\u732b.png", 200, rng)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for fmt in ("table", "csv"):
        p = subprocess.run(
            [sys.executable, "-m", "klayer", "predict", str(r0), str(folder), "--format", fmt],
            capture_output=True, timeout=300, env=env,
        )  # fmt: skip
        assert p.returncode == 0 and p.stderr == b"", p.stderr.decode(errors="replace")
        assert b"caf\xe9 1.png" in p.stdout and "\u732b.png".encode() in p.stdout  # as ls shows them
    # an output encoding without the character writes an escape instead of failing
    p = subprocess.run(
        [sys.executable, "-m", "klayer", "predict", str(r0), str(folder / "\u732b.png")],
        capture_output=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )  # fmt: skip
    assert p.returncode == 0 and b"\\u732b.png" in p.stdout, p.stderr.decode(errors="replace")


@pytest.mark.parametrize("C", [60, 160])
def test_confusion_plots_of_many_classes_stay_a_bounded_size(tmp_path, C):
    # the figure grew by 0.45 inch per class: 2900 pixels a side for 60 classes, 45,000 for an
    # image folder of 1000 classes, whose drawing at the end of klayer train took more than 20 GB
    # (killed, no model file); it now stops growing at 22 x 21 inches and names up to 150 classes
    import time

    from klayer.plots import plot_confusion

    rng = np.random.default_rng(C)
    cm = rng.integers(0, 5, (C, C)) + np.diag(rng.integers(0, 50, C))
    t0 = time.perf_counter()
    path = plot_confusion(cm, [f"class {i}" for i in range(C)], tmp_path / "cm.png")
    width, height = Image.open(path).size
    assert width <= 2200 and height <= 2100, (width, height)
    assert time.perf_counter() - t0 < 60
