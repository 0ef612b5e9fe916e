"""Reference implementations that klayer is measured against: PyTorch (eager or compiled) and
scikit-learn, on the same data and settings. Optional: install with ``pip install -e '.[bench]'``."""

from __future__ import annotations

import time

import numpy as np


def torch_train(
    data,
    hidden=(50, 50),
    batch_norm=True,
    lam=0.005,
    eta_min=1e-5,
    eta_max=1e-1,
    n_s=2250,
    n_cycles=2,
    batch_size=100,
    evals_per_cycle=10,
    eval_train_subset=0,
    threads=1,
    seed=0,
    compile=False,
    momentum=0.0,
    nesterov=False,
    augment=None,
):
    """Train the assignment-3 network with PyTorch on CPU, evaluating like klayer does.

    ``augment``: None, or a klayer Augmenter applied to each mini-batch's rows (numpy, as klayer
    does it, so that both sides pay the same for it), with SGD momentum/Nesterov as given.

    Returns dict with seconds_per_epoch (training and evaluation passes), test_accuracy.
    """
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    X = torch.from_numpy(data.features(data.X_train, "float32"))
    y = torch.from_numpy(data.y_train)
    Xv, yv = torch.from_numpy(data.features(data.X_val, "float32")), torch.from_numpy(data.y_val)
    Xt, yt = torch.from_numpy(data.features(data.X_test, "float32")), torch.from_numpy(data.y_test)
    if eval_train_subset:
        sub = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(y), eval_train_subset, replace=False)))
        Xe, ye = X[sub], y[sub]
    else:
        Xe, ye = X, y
    layers, d = [], X.shape[1]
    for m in hidden:
        layers.append(nn.Linear(d, m))
        if batch_norm:
            layers.append(nn.BatchNorm1d(m, eps=1e-10, momentum=0.1))
        layers.append(nn.ReLU())
        d = m
    layers.append(nn.Linear(d, 10))
    model = nn.Sequential(*layers)
    weights = []
    for mod in model:
        if isinstance(mod, nn.Linear):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            nn.init.zeros_(mod.bias)
            weights.append(mod.weight)
    opt = torch.optim.SGD(model.parameters(), lr=eta_min, momentum=momentum, nesterov=nesterov)
    loss_fn = nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        out = model(xb)
        loss = loss_fn(out, yb) + lam * sum((w * w).sum() for w in weights)
        loss.backward()
        opt.step()
        return loss

    if compile:
        step = torch.compile(step)

    def evaluate(Xs, ys):
        model.eval()
        with torch.no_grad():
            correct = 0
            for i in range(0, len(ys), 10000):
                out = model(Xs[i : i + 10000])
                loss_fn(out, ys[i : i + 10000])
                correct += (out.argmax(1) == ys[i : i + 10000]).sum().item()
        model.train()
        return correct / len(ys)

    N = len(y)
    spe = N // batch_size
    T = 2 * n_s * n_cycles
    every = round(2 * n_s / evals_per_cycle)
    g = torch.Generator().manual_seed(seed)
    X_np, aug_rng = X.numpy(), np.random.default_rng(seed)
    t0 = time.perf_counter()
    evaluate(Xe, ye), evaluate(Xv, yv)
    perm = None
    for t in range(T):
        j = t % spe
        if j == 0:
            perm = torch.randperm(N, generator=g)
        idx = perm[j * batch_size : (j + 1) * batch_size]
        frac = (n_s - abs(t % (2 * n_s) - n_s)) / n_s
        for group in opt.param_groups:
            group["lr"] = eta_min + (eta_max - eta_min) * frac
        if augment is None:
            step(X[idx], y[idx])
        else:
            step(torch.from_numpy(augment(X_np[idx.numpy()], aug_rng)), y[idx])
        if (t + 1) % every == 0:
            evaluate(Xe, ye), evaluate(Xv, yv)
    seconds = time.perf_counter() - t0
    return {"seconds_per_epoch": seconds / (T / spe), "test_accuracy": evaluate(Xt, yt), "wall": seconds}


def sklearn_train(data, hidden=(50, 50), lam=0.005, batch_size=100, epochs=20, eta=0.02, seed=0):
    """scikit-learn's MLPClassifier (sgd, no batch norm). Its ``alpha`` is ``2 * lam * batch``:
    sklearn adds ``0.5 * alpha * ||W||^2 / n_batch`` to the mean loss."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=hidden,
        solver="sgd",
        alpha=2 * lam * batch_size,
        batch_size=batch_size,
        learning_rate="constant",
        learning_rate_init=eta,
        momentum=0.0,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        shuffle=True,
        random_state=seed,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(data.features(data.X_train, "float32"), data.y_train)
    seconds = time.perf_counter() - t0
    return {
        "seconds_per_epoch": seconds / epochs,
        "test_accuracy": clf.score(data.features(data.X_test, "float32"), data.y_test),
        "wall": seconds,
    }


def sgemm_peak(threads: int, n: int = 3072, reps: int = 5) -> float:
    """Measured float32 matrix-product throughput in GFLOP/s (median of reps)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n), dtype=np.float32)
    B = rng.standard_normal((n, n), dtype=np.float32)
    times = []
    with threadpool_limits(threads, user_api="blas"):
        A @ B
        for _ in range(reps):
            t = time.perf_counter()
            A @ B
            times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(times)) / 1e9


def epoch_gflop(data, hidden=(50, 50), batch_size=100, evals_per_epoch=1.0, eval_rows=None):
    """Matrix-product FLOPs of one epoch: forward and backward products, plus evaluation."""
    sizes = [data.X_train.shape[1], *hidden, 10]
    N = (len(data.y_train) // batch_size) * batch_size
    fwd = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))  # per sample
    first = 2 * sizes[0] * sizes[1]
    train = N * (fwd + (fwd - first) + fwd)  # forward, input gradients (not of layer 1), weight gradients
    rows = eval_rows if eval_rows is not None else len(data.y_train) + len(data.y_val)
    return (train + evals_per_epoch * rows * fwd) / 1e9


# -- the limit: the matrix products a run has to do, timed alone at their real shapes --------------


def step_products(sizes, batch, K=1):
    """The matrix products of one training step of K networks of ``sizes = [d, m_1, ..., C]``
    on ``batch`` rows, as klayer computes them: a list of ``(count, rows, inner, cols, label)``
    (``count`` independent products of ``(rows, inner) @ (inner, cols)``). The first layer's
    input gradient is not computed; the first layer of a stack is one product for all K."""
    out = []
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False), start=1):
        if l == 1:
            out.append((1, batch, a, K * b, "fwd1"))
            out.append((1, K * b, batch, a, "dW1"))
        else:
            out.append((K, batch, a, b, f"fwd{l}"))
            out.append((K, b, batch, a, f"dW{l}"))
            out.append((K, batch, b, a, f"dX{l}"))
    return out


def eval_products(sizes, rows, K=1, chunk=None):
    """The forward products of evaluating ``rows`` rows in chunks of ``chunk`` (default
    klayer's :data:`klayer.network.EVAL_CHUNK`; see step_products)."""
    from klayer import network

    chunk = chunk or getattr(network, "EVAL_CHUNK", 2500)  # 2500 before it was a constant
    out = []
    for start in range(0, rows, chunk):
        r = min(chunk, rows - start)
        for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False), start=1):
            out.append((1, r, a, K * b, "eval1") if l == 1 else (K, r, a, b, f"eval{l}"))
    return out


def products_gflop(products) -> float:
    return sum(2.0 * c * m * k * n for c, m, k, n, _ in products) / 1e9


def time_products(products, threads: int, reps: int = 5, dtype=np.float32) -> float:
    """Seconds the products take when timed alone (each the median of ``reps`` timings, with the
    operand layouts klayer uses: ``X @ W.T``, ``dS.T @ X``, ``dS @ W``), summed."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    cache = {}
    total = 0.0
    with threadpool_limits(threads, user_api="blas"):
        for c, m, k, n, label in products:
            key = (c, m, k, n, label[:2])
            if key not in cache:
                lead = (c,) if c > 1 else ()
                if label.startswith(("fwd", "eval")):  # X (m, k) @ W.T, W (n, k)
                    A = rng.standard_normal((*lead, m, k), dtype=dtype)
                    B = np.swapaxes(rng.standard_normal((*lead, n, k), dtype=dtype), -1, -2)
                elif label.startswith("dW"):  # dS.T @ X, dS (k, m), X (k, n)
                    A = np.swapaxes(rng.standard_normal((*lead, k, m), dtype=dtype), -1, -2)
                    B = rng.standard_normal((*lead, k, n), dtype=dtype)
                else:  # dS (m, k) @ W (k, n)
                    A = rng.standard_normal((*lead, m, k), dtype=dtype)
                    B = rng.standard_normal((*lead, k, n), dtype=dtype)
                C = np.empty((*lead, m, n), dtype)
                t = time.perf_counter()
                np.matmul(A, B, out=C)
                inner = max(1, int(0.002 / max(time.perf_counter() - t, 1e-7)))  # >= 2 ms a timing
                ts = []
                for _ in range(reps):
                    t = time.perf_counter()
                    for _ in range(inner):
                        np.matmul(A, B, out=C)
                    ts.append((time.perf_counter() - t) / inner)
                cache[key] = float(np.median(ts))
            total += cache[key]
    return total


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB: Linux's VmHWM, which starts afresh in
    an exec'd process (``ru_maxrss`` survives ``execve``, so a child would report its parent's)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
