"""ONNX export against klayer itself, on fully trained networks: the six experiments of the
assignments' depths (2, 3 and 9 layers, without and with batch norm), each trained as its
experiment file says (seed 0), exported, and run in onnxruntime on the 10,000 test images.

    python benchmarks/onnx_agreement.py [--data DIR] [--out runs/onnx_agreement]

Finished runs in --out are reused. Writes benchmarks/results/onnx_agreement.txt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {  # label: (experiment file, overrides); the run folder is named after the label
    "a2_2layer": ("a2_2layer", []),
    "a2_2layer_bn": ("a2_2layer", ["model.batch_norm=true", "name='a2_2layer_bn'"]),
    "a3_3layer": ("a3_3layer", []),
    "a3_3layer_bn": ("a3_3layer_bn", []),
    "a3_9layer": ("a3_9layer", []),
    "a3_9layer_bn": ("a3_9layer_bn", []),
}


def main():
    import onnxruntime as ort

    from klayer import load_experiment, train
    from klayer.data import DataConfig, load_dataset
    from klayer.export import onnx_model
    from klayer.runs import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--out", default="runs/onnx_agreement")
    args = p.parse_args()
    test = load_dataset(DataConfig(download=False), args.data)
    X, y = test.X_test, test.y_test
    lines = [
        f"klayer ONNX export against klayer, {time.strftime('%Y-%m-%d %H:%M')}; onnxruntime {ort.__version__}, "
        f"{len(y)} CIFAR-10 test images, raw uint8 pixels cast to float32",
        f"{'model':<24} {'test acc':>8} {'max |dp|':>9} {'mean |dp|':>9} {'argmax agrees':>14}",
    ]
    for label, (exp, overrides) in EXPERIMENTS.items():
        cfg = load_experiment(ROOT / "experiments" / f"{exp}.toml", [*overrides, "train.checkpoint_every=0"])
        out = Path(args.out) / label
        r = train(cfg, out=out, resume=True, data_root=args.data, progress=False)
        m = load_model(out / "model.safetensors")
        ours = m.predict_proba(X)
        sess = ort.InferenceSession(onnx_model(m).SerializeToString(), providers=["CPUExecutionProvider"])
        theirs = sess.run(["probabilities"], {"pixels": X.astype(np.float32)})[0]
        d = np.abs(theirs - ours)
        agree = int((theirs.argmax(1) == ours.argmax(1)).sum())
        lines.append(
            f"{label:<24} {100 * r.results['test_accuracy']:7.2f}% {d.max():9.2e} {d.mean():9.2e} {agree:>8}/{len(y)}"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results" / "onnx_agreement.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
