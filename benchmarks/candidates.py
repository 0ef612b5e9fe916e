"""The optimization candidates of the speed issue, measured one by one at the real shapes.

Each line times a reference expression against a candidate (medians of ``--repeats`` timings of
``--number`` calls, microseconds per call) and says whether the candidate gives the same bits:

- ReLU backward: ``np.where(H > 0, dout, 0)`` against a multiplication by the 0/1 pattern;
- standardizing a uint8 mini-batch: the casting subtract against cast-then-in-place;
- the SGD update of a weight matrix fused into its gradient product by sgemm's ``beta``
  (scipy.linalg.blas): ``W <- c W - G^T X`` in one call, against the product, then ``W *= c``,
  ``W -= dW``;
- the Nesterov update in blocks of rows against whole arrays.

    python benchmarks/candidates.py [--threads 1] [--repeats 5]

Writes benchmarks/results/candidates.txt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]


def t_us(fn, number, repeats):
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--number", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/candidates.txt"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    f32 = np.float32
    T = lambda fn: t_us(fn, args.number, args.repeats)  # noqa: E731
    rows = []

    def row(what, ref, cand, same):
        rows.append(f"{what:58s} {ref:10.1f} {cand:10.1f} {cand / ref:7.2f}  {'yes' if same else 'NO'}")

    with threadpool_limits(args.threads, user_api="blas"):
        from klayer import layers

        for shape in [(100, 50), (256, 1024)]:
            dout = rng.standard_normal(shape, dtype=f32)
            H = np.maximum(rng.standard_normal(shape, dtype=f32), 0)
            buf = dout.copy()
            same = layers.relu_backward_inplace(dout.copy(), H).tobytes() == layers.relu_backward(dout, H).tobytes()
            row(
                f"ReLU backward {shape}: where -> multiply by H > 0",
                T(lambda dout=dout, H=H: layers.relu_backward(dout, H)),
                T(lambda dout=dout, H=H, buf=buf: layers.relu_backward_inplace(np.copyto(buf, dout) or buf, H)),
                same,
            )

        X8 = rng.integers(0, 256, (100, 3072), dtype=np.uint8)
        m, inv = (rng.random(3072, dtype=f32) * 100), rng.random(3072, dtype=f32)
        out = np.empty((100, 3072), f32)

        def ref_std():
            np.subtract(X8, m, out=out, dtype=f32, casting="unsafe")
            out.__imul__(inv)

        def fast_std():
            np.copyto(out, X8, casting="unsafe")
            out.__isub__(m)
            out.__imul__(inv)

        ref_std()
        a = out.copy()
        fast_std()
        row(
            "standardize uint8 (100, 3072): casting subtract -> cast first",
            T(ref_std),
            T(fast_std),
            a.tobytes() == out.tobytes(),
        )

        try:
            from scipy.linalg import blas
        except ImportError:
            blas = None
        if blas is not None:
            for m_, N, d in [(50, 100, 3072), (1024, 256, 3072)]:
                G = rng.standard_normal((N, m_), dtype=f32) * 0.01
                X = rng.standard_normal((N, d), dtype=f32)
                W0 = rng.standard_normal((m_, d), dtype=f32)
                c = f32(1 - 2 * 0.05 * 0.005)
                P, P2 = W0.copy(), W0.copy()

                def ref_upd(P=P, G=G, X=X, c=c):
                    g = G.T @ X
                    P *= c
                    P -= g

                def fused(P2=P2, G=G, X=X, c=c):  # P2.T = c P2.T - X^T G, in place (Fortran order)
                    blas.sgemm(-1.0, X.T, G.T, beta=c, c=P2.T, trans_b=1, overwrite_c=1)

                ref_upd()
                fused()
                same = P.tobytes() == P2.tobytes()
                row(f"update fused into sgemm (beta), W {m_}x{d}, batch {N}", T(ref_upd), T(fused), same)

        from klayer.training.optim import sgd_update

        for shape in [(1, 1024, 3072), (1, 512, 1024)]:
            p = {"W1": rng.standard_normal(shape, dtype=f32)}
            eta, lam = np.array([0.01], f32), np.array([5e-4], f32)
            st = {"v.W1": np.zeros(shape, f32)}
            g = rng.standard_normal(shape, dtype=f32) * 0.01
            gbuf = g.copy()

            def whole(p=p, st=st, g=g, eta=eta, lam=lam):
                gg = g.copy()
                gg += (2 * eta * lam).reshape(-1, 1, 1) * p["W1"]
                v = st["v.W1"]
                v *= 0.9
                v -= gg
                p["W1"] += 0.9 * v
                p["W1"] -= gg

            def blocked(p=p, st=st, g=g, gbuf=gbuf, eta=eta, lam=lam):
                np.copyto(gbuf, g)
                sgd_update(p, {"W1": gbuf}, st, eta, lam, 0.9, True)

            row(f"Nesterov update {shape}: whole arrays -> blocks of rows", T(whole), T(blocked), True)

    lines = [
        f"klayer optimization candidates, {time.strftime('%Y-%m-%d %H:%M')}, {args.threads} BLAS thread(s), "
        f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeats} x {args.number} calls",
        f"{'candidate':58s} {'ref us':>10s} {'cand us':>10s} {'ratio':>7s}  same bits",
        *rows,
        "(the Nesterov line includes a gradient copy on both sides; 'same bits' for it is proved by",
        " tests/test_techniques.py::test_sgd_momentum_with_scratch_arrays_is_bitwise_the_plain_expression)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
