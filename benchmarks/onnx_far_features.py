"""ONNX export of features far from zero: the graph's float32 input keeps about 7 significant
digits, so a constant offset large against the features' spread costs agreement with klayer.
scikit-learn's digits (pixels 0..16) shifted by 0, 1e3, 1e4 and 1e5, each trained with
KLayerClassifier(random_state=0) (float64), exported and run in onnxruntime on the same rows.

    python benchmarks/onnx_far_features.py

Writes benchmarks/results/onnx_far_features.txt (quoted in docs/export.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main():
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    from klayer.export.onnx import export_onnx
    from klayer.runs import load_model
    from klayer.sklearn import KLayerClassifier

    X, y = load_digits(return_X_y=True)
    lines = ["offset  max|p_onnx - p_klayer|  predicted class agrees"]
    for offset in (0.0, 1e3, 1e4, 1e5):
        Xs = X + offset
        clf = KLayerClassifier(random_state=0).fit(Xs, y)
        p = clf.predict_proba(Xs)
        with tempfile.TemporaryDirectory() as d:
            clf.save_model(Path(d) / "m.safetensors")
            export_onnx(load_model(Path(d) / "m.safetensors"), Path(d) / "m.onnx")
            q = ort.InferenceSession(str(Path(d) / "m.onnx")).run(None, {"pixels": Xs.astype(np.float32)})[0]
        agree = int((p.argmax(1) == q.argmax(1)).sum())
        lines.append(f"{offset:>6.0e}  {np.abs(p - q).max():>23.2e}  {agree} / {len(y)}")
        print(lines[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "onnx_far_features.txt"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
