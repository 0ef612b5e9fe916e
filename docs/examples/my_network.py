"""A student's k-layer network with batch normalization, written as assignment 3 describes it:
one column per image (X is d x n), S = W X + b, and its formulas taken literally. It has one bug,
found in docs/learn.md by

    klayer check --python docs/examples/my_network.py:forward_backward --case 3layer_bn --layout assignment
"""

import numpy as np


def batch_norm_back_pass(G, S, mu, var, eps):
    n = S.shape[1]
    sigma1 = (var + eps) ** -0.5
    sigma2 = (var + eps) ** -0.5
    G1 = G * sigma1
    G2 = G * sigma2
    D = S - mu
    c = np.sum(G2 * D, axis=1, keepdims=True)
    return G1 - np.sum(G1, axis=1, keepdims=True) / n - D * c / n


def forward_backward(p):
    """One forward pass, backward pass and step; returns a dict named as klayer names them."""
    X, Y, lam, eta, eps, alpha = p["X"], p["Y"], p["lam"], p["eta"], p["eps"], p["bn_alpha"]
    n = X.shape[1]
    k = sum(1 for name in p if name[0] == "W")
    out = {}
    Hs, S, mu, var, S_hat = [X], {}, {}, {}, {}
    for l in range(1, k):
        S[l] = p[f"W{l}"] @ Hs[-1] + p[f"b{l}"]
        mu[l] = np.mean(S[l], axis=1, keepdims=True)
        var[l] = np.var(S[l], axis=1, keepdims=True)
        S_hat[l] = (S[l] - mu[l]) / np.sqrt(var[l] + eps)
        S_tilde = p[f"gamma{l}"] * S_hat[l] + p[f"beta{l}"]
        Hs.append(np.maximum(0, S_tilde))
        out.update({f"S{l}": S[l], f"mu{l}": mu[l], f"var{l}": var[l], f"S_hat{l}": S_hat[l]})
        out.update({f"S_tilde{l}": S_tilde, f"H{l}": Hs[-1]})
    S[k] = p[f"W{k}"] @ Hs[-1] + p[f"b{k}"]
    P = np.exp(S[k] - S[k].max(axis=0)) / np.exp(S[k] - S[k].max(axis=0)).sum(axis=0)
    loss = -np.mean(np.log(np.sum(Y * P, axis=0)))
    cost = loss + lam * sum(np.sum(p[f"W{l}"] ** 2) for l in range(1, k + 1))
    out.update({f"S{k}": S[k], "P": P, "loss": loss, "cost": cost})

    G = -(Y - P)  # G_batch: klayer accepts it as it is (n times its G)
    grads = {}
    for l in range(k, 0, -1):
        if l < k:
            G = G * (Hs[l] > 0)
            grads[f"gamma{l}"] = np.sum(G * S_hat[l], axis=1, keepdims=True) / n
            grads[f"beta{l}"] = np.sum(G, axis=1, keepdims=True) / n
            G = batch_norm_back_pass(G * p[f"gamma{l}"], S[l], mu[l], var[l], eps)
        out[f"G{l}"] = G
        grads[f"W{l}"] = G @ Hs[l - 1].T / n + 2 * lam * p[f"W{l}"]
        grads[f"b{l}"] = np.sum(G, axis=1, keepdims=True) / n
        G = p[f"W{l}"].T @ G
    out.update({f"grad_{name}": g for name, g in grads.items()})
    for l in range(1, k):
        out[f"mu_av{l}"] = alpha * p[f"mu_av{l}_init"] + (1 - alpha) * mu[l]
        out[f"var_av{l}"] = alpha * p[f"var_av{l}_init"] + (1 - alpha) * var[l]
    out.update({f"{name}_next": p[name] - eta * g for name, g in grads.items()})
    return out
