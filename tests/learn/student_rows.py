"""A second independent student, written the other common way: klayer's row layout (one row per
sample, ``S = X @ W.T + b``), a CS231n-style batch-norm backward pass in terms of ``x_hat``,
PyTorch-like names, and gradients that carry the ``1/n`` from the loss's gradient on.
It shares no code with klayer nor with ``student.py``."""

import numpy as np

BUGS = {
    "var_unbiased",  # np.var(ddof=1)
    "eps_outside_sqrt",
    "no_dxhat_sum",  # the mean term of the backward pass
    "no_xhat_term",  # the variance term
    "relu_ge",  # (z >= 0)
    "softmax_axis0",
    "half_reg",  # lam * W
    "dscores_not_divided",  # dscores = probs - onehot
    "momentum_convention",  # PyTorch's momentum = 0.9 read as the weight of the batch
    "gamma_inside",  # gamma * x + beta normalized with the batch statistics of x
    "np_mean_loss",  # np.mean(onehot * log(probs))
    "dx_with_W_T",  # dx = dout @ W.T
    "eval_train_mode",
    "bias_decay",
    "db_axis1",
}


def run(p, bugs=(), dtype=np.float64):
    """All quantities, in klayer's layout, from inputs in klayer's layout."""
    bugs = set(bugs)
    assert bugs <= BUGS, bugs - BUGS
    X, onehot, labels = p["X"].astype(dtype), p["Y"].astype(dtype), np.asarray(p["y"])
    lam, lr, eps, mom = (dtype(np.asarray(p[s]).item()) for s in ("lam", "eta", "eps", "bn_alpha"))
    n = X.shape[0]
    L = sum(1 for key in p if key.startswith("W") and key[1:].isdigit())
    bn = "gamma1" in p
    prm = {key: np.asarray(val, dtype) for key, val in p.items() if key[:1] in "Wbgb" and key[-1].isdigit()}
    out, caches = {}, []

    def bn_forward(x, g, be, mean, var):
        xhat = (x - mean) / (np.sqrt(var) + eps if "eps_outside_sqrt" in bugs else np.sqrt(var + eps))
        if "gamma_inside" in bugs:
            return xhat, ((g * x + be) - mean) / np.sqrt(var + eps)
        return xhat, g * xhat + be

    h = X
    for i in range(1, L):
        z = h @ prm[f"W{i}"].T + prm[f"b{i}"]
        out[f"S{i}"] = z
        a = z
        if bn:
            mean = z.mean(axis=0)
            var = z.var(axis=0, ddof=1 if "var_unbiased" in bugs else 0)
            xhat, a = bn_forward(z, prm[f"gamma{i}"], prm[f"beta{i}"], mean, var)
            out.update({f"mu{i}": mean, f"var{i}": var, f"S_hat{i}": xhat, f"S_tilde{i}": a})
            caches.append((h, z, a, xhat, var))
        else:
            caches.append((h, z, a, None, None))
        h = np.maximum(a, 0)
        out[f"H{i}"] = h
    scores = h @ prm[f"W{L}"].T + prm[f"b{L}"]
    out[f"S{L}"] = scores
    axis = 0 if "softmax_axis0" in bugs else 1
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    probs = e / e.sum(axis=axis, keepdims=True)
    out["P"] = probs
    if "np_mean_loss" in bugs:
        loss = -np.mean(onehot * np.log(probs))
    else:
        loss = -np.log(probs[np.arange(n), labels]).mean()
    reg = sum((prm[f"W{i}"] ** 2).sum() for i in range(1, L + 1))
    out.update({"loss": loss, "cost": loss + lam * reg})

    grads = {}
    dscores = probs - onehot if "dscores_not_divided" in bugs else (probs - onehot) / n
    dout = dscores
    for i in range(L, 0, -1):
        if i < L:
            h_prev, z, a, xhat, var = caches[i - 1]
            dout = dout * ((a >= 0) if "relu_ge" in bugs else (a > 0))
            if bn:
                grads[f"gamma{i}"] = (dout * xhat).sum(axis=0)
                grads[f"beta{i}"] = dout.sum(axis=0)
                dxhat = dout * prm[f"gamma{i}"]
                inv = 1 / np.sqrt(var + eps)
                total = n * dxhat
                if "no_dxhat_sum" not in bugs:
                    total = total - dxhat.sum(axis=0)
                if "no_xhat_term" not in bugs:
                    total = total - xhat * (dxhat * xhat).sum(axis=0)
                dout = inv * total / n
        out[f"G{i}"] = dout
        inp = h if i == L else caches[i - 1][0]  # the layer's input
        W = prm[f"W{i}"]
        grads[f"W{i}"] = dout.T @ inp + (1 if "half_reg" in bugs else 2) * lam * W
        grads[f"b{i}"] = dout.sum(axis=1 if "db_axis1" in bugs else 0)
        if "bias_decay" in bugs:
            grads[f"b{i}"] = grads[f"b{i}"] + 2 * lam * prm[f"b{i}"]
        if i > 1:
            dout = dout @ (W.T if "dx_with_W_T" in bugs and W.shape[0] == W.shape[1] else W)
    out.update({f"grad_{key}": g for key, g in grads.items()})

    running = {}
    for i in range(1, L if bn else 1):
        w_old, w_new = (1 - mom, mom) if "momentum_convention" in bugs else (mom, 1 - mom)
        running[f"mu_av{i}"] = w_old * p[f"mu_av{i}_init"] + w_new * out[f"mu{i}"]
        running[f"var_av{i}"] = w_old * p[f"var_av{i}_init"] + w_new * out[f"var{i}"]
    out.update(running)
    new = {key: prm[key] - lr * grads[key] if grads[key].shape == prm[key].shape else prm[key] for key in grads}
    out.update({f"{key}_next": val for key, val in new.items()})

    h = X
    for i in range(1, L):
        z = h @ new[f"W{i}"].T + new[f"b{i}"]
        if bn:
            if "eval_train_mode" in bugs:
                mean, var = z.mean(axis=0), z.var(axis=0)
            else:
                mean, var = running[f"mu_av{i}"], running[f"var_av{i}"]
            z = new[f"gamma{i}"] * (z - mean) / np.sqrt(var + eps) + new[f"beta{i}"]
        h = np.maximum(z, 0)
    s = h @ new[f"W{L}"].T + new[f"b{L}"]
    e = np.exp(s - s.max(axis=1, keepdims=True))
    out["P_eval"] = e / e.sum(axis=1, keepdims=True)
    return out
