"""ONNX export: the exported graph, run in onnxruntime on the 10,000 CIFAR-10 test images, gives
klayer's own predictions (identical classes, probabilities within 1e-5)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from klayer import ExperimentConfig, ModelConfig, Network, NetworkConfig, TrainConfig, train
from klayer.cli import main
from klayer.runs import SavedModel, load_model, save_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from klayer.export import OPSET, export_onnx, fold_batch_norm, onnx_model  # noqa: E402

HIDDEN = {2: (50,), 3: (50, 50), 9: (50, 30, 20, 20, 10, 10, 10, 10)}
CASES = [(depth, bn) for depth in (2, 3, 9) for bn in (False, True)]


def run(path_or_model, X):
    data = path_or_model if isinstance(path_or_model, bytes) else open(path_or_model, "rb").read()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"pixels": np.asarray(X, np.float32)})[0]


@pytest.fixture(scope="module")
def trained(cifar_f32, tmp_path_factory):
    """Six genuinely trained models (300 updates each on CIFAR-10): depth 2, 3, 9, without and with
    batch norm; the 3-layer batch-norm one is a run folder, the others model files."""
    out = tmp_path_factory.mktemp("models")
    models = {}
    for depth, bn in CASES:
        name = f"d{depth}{'_bn' if bn else ''}"
        cfg = ExperimentConfig(
            name=name,
            model=ModelConfig(hidden=HIDDEN[depth], batch_norm=bn),
            train=TrainConfig(
                lam=0.005, n_s=150, n_cycles=1, evals_per_cycle=2, eval_train_subset=1000, checkpoint_every=0
            ),
        )
        if (depth, bn) == (3, True):
            train(cfg, data=cifar_f32, out=out / name, progress=False)
            models[depth, bn] = out / name
        else:
            r = train(cfg, data=cifar_f32, progress=False)
            path = out / f"{name}.safetensors"
            extra = {"name": name, "test_accuracy": r.results["test_accuracy"]}
            save_model(path, r.network, cifar_f32.mean, cifar_f32.std, extra, classes=cifar_f32.classes)
            models[depth, bn] = path
    return models


def model_file(p):
    return p / "model.safetensors" if p.is_dir() else p


@pytest.mark.parametrize("depth,bn", CASES)
def test_onnxruntime_agrees_on_the_10000_test_images(trained, cifar_f32, tmp_path, depth, bn):
    m = load_model(model_file(trained[depth, bn]))
    # trained (10% is chance), not a random network; the 9-layer one reaches 0.24-0.26 after 300
    # updates depending on float rounding alone (float64: 0.237)
    assert m.meta["test_accuracy"] > 0.2
    assert main(["export", str(trained[depth, bn]), "--onnx", str(tmp_path / "m.onnx")]) == 0
    X = cifar_f32.X_test
    assert X.shape == (10000, 3072) and X.dtype == np.uint8  # raw pixels go in
    ours = m.predict_proba(X)
    theirs = run(tmp_path / "m.onnx", X)
    diff = float(np.abs(theirs - ours).max())
    agree = int((theirs.argmax(axis=1) == ours.argmax(axis=1)).sum())
    print(f"depth {depth}, batch norm {bn}: max |p_onnx - p_klayer| = {diff:.2e}, argmax agrees on {agree}/10000")
    assert agree == 10000
    assert diff <= 1e-5
    acc = float((theirs.argmax(axis=1) == cifar_f32.y_test).mean())
    assert acc == pytest.approx(m.meta["test_accuracy"], abs=1e-12)


def test_graph_structure_and_metadata(trained):
    m = load_model(model_file(trained[3, True]))
    proto = onnx_model(m)
    assert proto.opset_import[0].version >= 17 and OPSET >= 17
    assert proto.ir_version == 8  # the oldest the opset allows: onnxruntime 1.17 reads it
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Sub", "Mul", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]  # no BatchNormalization
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["probabilities"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 3072
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"])[:3] == ["airplane", "automobile", "bird"]
    assert json.loads(props["image_shape"]) == [3, 32, 32]
    assert props["name"] == "d3_bn" and float(props["test_accuracy"]) == m.meta["test_accuracy"]
    onnx.checker.check_model(proto, full_check=True)


def test_standardization_is_in_the_graph():
    rng = np.random.default_rng(0)
    net = Network.init(NetworkConfig(6, (5,), 3, dtype="float64"), rng)
    mean, std = rng.uniform(50, 200, 6), rng.uniform(10, 80, 6)
    X = rng.uniform(0, 255, (50, 6))
    p = run(onnx_model(SavedModel(net, mean, std, {})).SerializeToString(), X)
    np.testing.assert_allclose(p, net.predict_proba((X - mean) / std), atol=1e-6)
    # without statistics (a model on features) the input goes straight in
    p = run(onnx_model(SavedModel(net, None, None, {})).SerializeToString(), X / 100)
    np.testing.assert_allclose(p, net.predict_proba(X / 100), atol=1e-6)


@pytest.mark.parametrize("depth", [2, 3, 9])
def test_folding_equals_evaluation_mode_batch_norm(depth):
    """Random parameters and random running statistics, float64: the folded layers give the same
    scores as klayer's evaluation-mode forward pass to round-off."""
    rng = np.random.default_rng(depth)
    net = Network.init(NetworkConfig(20, HIDDEN[depth], 10, batch_norm=True, dtype="float64"), rng)
    for k in net.params:
        if k.startswith(("gamma", "beta", "b")):
            net.params[k] = rng.normal(0.5 if k.startswith("gamma") else 0, 0.5, net.params[k].shape)
    for k in net.bn_state:
        shape = net.bn_state[k].shape
        net.bn_state[k] = rng.uniform(0.1, 3, shape) if k.startswith("var") else rng.normal(0, 2, shape)
    X = rng.standard_normal((64, 20))
    H = X
    layers = fold_batch_norm(net)
    for i, (W, b) in enumerate(layers):
        H = H @ W.T + b
        if i < len(layers) - 1:
            H = np.maximum(H, 0)
    np.testing.assert_allclose(H, net.forward(X), rtol=1e-10, atol=1e-10)
    p = run(onnx_model(SavedModel(net, None, None, {})).SerializeToString(), X)
    np.testing.assert_allclose(p, net.predict_proba(X), atol=1e-5)


def test_class_names_of_other_data_sets_are_kept(tmp_path):
    net = Network.init(NetworkConfig(4, (3,), 2, dtype="float32"), np.random.default_rng(0))
    save_model(tmp_path / "m.safetensors", net, np.zeros(4), np.ones(4), classes=["cat", "dog"])
    export_onnx(load_model(tmp_path / "m.safetensors"), tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(props["classes"]) == ["cat", "dog"] and "image_shape" not in props  # 4 features: no image


def test_old_opsets_are_refused():
    net = Network.init(NetworkConfig(4, (3,), 2), np.random.default_rng(0))
    with pytest.raises(Exception, match="opset 13 is too old"):
        onnx_model(SavedModel(net, None, None, {}), opset=13)


def test_opsets_newer_than_the_installed_onnx_and_empty_paths_are_one_line_errors(tmp_path, capsys):
    from klayer.cli import main
    from klayer.errors import KlayerError
    from klayer.runs.model import save_model

    net = Network.init(NetworkConfig(4, (3,), 2), np.random.default_rng(0))
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(
        KlayerError, match=rf"opset {newest + 1} is newer than the installed onnx .* \(at most {newest}\)"
    ):
        onnx_model(SavedModel(net, None, None, {}), opset=newest + 1)
    assert onnx_model(SavedModel(net, None, None, {}), opset=newest).opset_import[0].version == newest
    save_model(tmp_path / "m.safetensors", net, np.zeros(4), np.ones(4), {"name": "m"})
    for argv, message in (
        (["--onnx", str(tmp_path / "x.onnx"), "--opset", str(newest + 1)], f"opset {newest + 1} is newer"),
        (["--onnx", ""], "path is empty"),
    ):
        assert main(["export", str(tmp_path / "m.safetensors"), *argv]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]


def test_export_command_in_a_subprocess(trained, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "klayer", "export", str(trained[2, False]), "--onnx", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "x.onnx" in p.stdout and "opset 17" in p.stdout
    assert onnx.load(tmp_path / "x.onnx").graph.output[0].name == "probabilities"


def test_export_refuses_a_missing_model_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.safetensors"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("klayer: error:") and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()
