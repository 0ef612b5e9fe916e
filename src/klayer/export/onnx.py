"""ONNX export: raw pixels in, class probabilities out, batch norm folded away.

The graph (opset 17 or later, float32)::

    pixels (N, d) --Sub(mean)--Mul(1/std)--> x
    x --Gemm(W'_1, b'_1)--Relu--> ... --Gemm(W'_k, b'_k)--Softmax--> probabilities (N, C)

- ``pixels`` are the raw features the model was trained on (0..255 for images, in CIFAR-10's
  channel-major layout), so the standardization with the training statistics is part of the
  model: nothing needs to be done to the input.
- Batch normalization in evaluation mode is an affine map per unit,
  ``gamma (s - mu) / sqrt(var + eps) + beta``, so it folds into the linear layer in front of it:
  with ``a = gamma / sqrt(var + eps)``, ``W' = a[:, None] * W`` and ``b' = a (b - mu) + beta``.
  The folding is done in float64 and the result cast to float32.
- Metadata (``metadata_props``): ``classes`` (the class names as a JSON list), ``image_shape``
  (``[C, H, W]`` as JSON, when the model takes images), ``name``, ``test_accuracy`` and
  ``klayer_version`` when known.

The ``onnx`` package builds the graph (``pip install 'klayer[onnx]'``); it is checked with
``onnx.checker.check_model`` before it is written.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import KlayerError
from ..io import atomic_write
from ..network import fold_batchnorm

__all__ = ["OPSET", "fold_batch_norm", "onnx_model", "export_onnx"]

OPSET = 17


def _onnx():
    try:
        import onnx
    except ImportError:
        raise KlayerError("ONNX export needs the onnx package: pip install 'klayer[onnx]'") from None
    return onnx


def fold_batch_norm(network) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's linear layers with evaluation-mode batch norm folded in, in float64.

    Returns
    -------
    list of ``(W', b')``, ``W': (m_l, m_{l-1})``, ``b': (m_l,)``, one per linear layer: the
    network computes ``relu(... relu(x @ W'_1.T + b'_1) ...) @ W'_k.T + b'_k`` in evaluation mode.
    """
    params, cfg = fold_batchnorm(network.params, network.bn_state, network.config, np.float64)
    return [(params[f"W{l}"], params[f"b{l}"]) for l in range(1, cfg.n_layers + 1)]


def onnx_model(model, opset: int = OPSET, image_shape=None):
    """An ``onnx.ModelProto`` for a :class:`~klayer.runs.SavedModel`.

    Parameters
    ----------
    model : SavedModel (network, mean, std, meta).
    opset : ONNX opset version, 17 or later.
    image_shape : ``(C, H, W)`` recorded in the metadata (default: the model's own).
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset < 17:
        raise KlayerError(f"opset {opset} is too old; klayer exports opset 17 or later")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise KlayerError(f"opset {opset} is newer than the installed onnx {onnx.__version__} knows (at most {newest})")
    net = model.network
    cfg = net.config
    d, C = cfg.input_size, cfg.n_classes
    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    x = "pixels"
    if model.mean is not None:
        mean = np.asarray(model.mean, np.float64)
        inv = 1.0 / np.asarray(model.std, np.float64)
        nodes.append(helper.make_node("Sub", [x, const("mean", mean)], ["centred"], name="subtract_mean"))
        nodes.append(helper.make_node("Mul", ["centred", const("inv_std", inv)], ["standardized"], name="divide_std"))
        x = "standardized"
    layers = fold_batch_norm(net)
    for l, (W, b) in enumerate(layers, start=1):
        out = f"s{l}" if l < len(layers) else "scores"
        nodes.append(
            helper.make_node("Gemm", [x, const(f"W{l}", W), const(f"b{l}", b)], [out], name=f"linear{l}", transB=1)
        )
        if l < len(layers):
            nodes.append(helper.make_node("Relu", [out], [f"h{l}"], name=f"relu{l}"))
            x = f"h{l}"
    nodes.append(helper.make_node("Softmax", ["scores"], ["probabilities"], name="softmax", axis=-1))
    graph = helper.make_graph(
        nodes,
        "klayer",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", C])],
        inits,
    )
    from .. import __version__

    m = helper.make_model(
        graph,
        producer_name="klayer",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string=(
            f"klayer network {d} -> {list(cfg.hidden)} -> {C}"
            f"{' with batch norm (folded)' if cfg.batch_norm else ''}: raw features in, class probabilities out"
        ),
    )
    # the oldest IR version the opset allows (8 for opset 17), so that older runtimes read the file
    m.ir_version = helper.find_min_ir_version_for(list(m.opset_import))
    meta = {"classes": json.dumps(list(model.classes)), "klayer_version": __version__}
    shape = image_shape or model.meta.get("image_shape")
    if shape is None:
        from ..data.images import model_image_shape

        shape = model_image_shape(model.meta, d)
    if shape is not None:
        meta["image_shape"] = json.dumps([int(v) for v in shape])
    for key in ("name", "test_accuracy"):
        if model.meta.get(key) is not None:
            meta[key] = str(model.meta[key])
    helper.set_model_props(m, meta)
    onnx.checker.check_model(m, full_check=True)
    return m


def export_onnx(model, path, opset: int = OPSET):
    """Write ``model`` (a SavedModel) as an ONNX file at ``path``, atomically; return the path."""
    if not str(path).strip():
        raise KlayerError(f"the ONNX file's path is empty ({str(path)!r})")
    m = onnx_model(model, opset)
    return atomic_write(path, m.SerializeToString())
