"""An independent, student-style implementation of assignment 3's k-layer network, for the zoo.

Written the way students write it: the assignments' column layout (``X: (d, n)``, ``S = W X + b``
with ``b: (m, 1)``), plain NumPy, the assignments' formulas taken literally (``G_batch = -(Y - P)``
not divided by n until the gradients are formed, ``BatchNormBackPass`` with sigma1, sigma2, D and
c). It shares no code with klayer. Each name in ``bugs`` switches on one deliberate mistake.
"""

import numpy as np

# Mistakes the checker's catalogue knows, and ones it does not (located, with a pattern only).
CATALOGUED = {
    "var_unbiased",
    "eps_outside_sqrt",
    "eps_missing",
    "var_not_sqrt",
    "gamma_before_norm",
    "bn_stats_wrong_axis",
    "weight_transposed_forward",
    "softmax_wrong_axis",
    "loss_not_mean",
    "cost_no_reg",
    "reg_grad_no_2",
    "reg_grad_doubled",
    "reg_grad_missing",
    "reg_biases",
    "reg_gamma_beta",
    "grad_not_divided_by_n",
    "relu_grad_at_zero",
    "relu_grad_missing",
    "relu_grad_before_bn",
    "bn_back_no_mean_term",
    "bn_back_no_var_term",
    "bn_back_sigma1_in_c",
    "bn_back_no_gamma",
    "weight_transposed_backward",
    "running_alpha_swapped",
    "running_init_batch",
    "running_var_unbiased",
    "running_var_std_eps",
    "eval_batch_stats",
    "update_wrong_sign",
    "bias_missing",
    "bn_on_scores",
    "relu_on_scores",
    "grad_divided_twice",
    "grad_gamma_beta_swapped",
    "eval_before_step",
    "grad_b_wrong_axis",
    "gamma_before_norm_batch_stats",
    "softmax_wrong_sum_axis",
    "loss_mean_over_classes",
    "G_wrt_S_tilde",
    "G_wrt_H",
    "G_sign_flipped",
    "bias_missing_last",
    "bn_back_stats_constant",
    "bn_back_mean_term_sign",
    "bn_back_var_term_sign",
    "bn_back_var_term_doubled",
    "bn_train_running_stats",
    "bn_train_running_init",
    "relu_before_bn",
    "eval_running_before_update",
    "eval_eps_missing",
    "onehot_shifted",
    "onehot_shifted_up",
    "reg_half_in_cost",
    "log10_loss",
    "log2_loss",
    "loss_eps_in_log",
    "bias_not_updated",
}
OUTSIDE = {"relu_scaled", "leaky_relu", "gamma_update_uses_grad_beta"}


def run(inputs, bugs=(), dtype=np.float64, g_batch=False):
    """All quantities of one forward pass, backward pass and step, in the assignments' layout.

    Parameters
    ----------
    inputs : dict in the assignment layout (``X (d, n)``, ``Y (C, n)``, ``W1 (m, d)``, ``b1 (m, 1)``, ...).
    bugs : names from CATALOGUED or OUTSIDE.
    dtype : the precision to compute in (float32 is checked too).
    g_batch : store ``G{l}`` as the assignments' ``G_batch`` (not divided by n).
    """
    bugs = set(bugs)
    unknown = bugs - CATALOGUED - OUTSIDE
    assert not unknown, unknown

    def f(a):
        a = np.asarray(a, dtype)
        return a.reshape(-1, 1) if a.ndim == 1 else a

    X, Y = f(inputs["X"]), f(inputs["Y"])
    n = X.shape[1]
    if {"onehot_shifted", "onehot_shifted_up"} & bugs:  # Y built from the labels, shifted
        shifted = (np.asarray(inputs["y"]).ravel().astype(int) + (1 if "onehot_shifted_up" in bugs else -1)) % len(Y)
        Y = np.eye(len(Y), dtype=dtype)[:, shifted]
    k = sum(1 for key in inputs if key.startswith("W") and key[1:].isdigit())
    bn = "gamma1" in inputs
    lam, eta, eps, alpha = (dtype(np.asarray(inputs[s]).item()) for s in ("lam", "eta", "eps", "bn_alpha"))
    W = {l: f(inputs[f"W{l}"]) for l in range(1, k + 1)}
    b = {l: f(inputs[f"b{l}"]) for l in range(1, k + 1)}
    gamma = {l: f(inputs[f"gamma{l}"]) for l in range(1, k)} if bn else {}
    beta = {l: f(inputs[f"beta{l}"]) for l in range(1, k)} if bn else {}
    out = {}

    def normalize(S, mu, var, mode="train"):
        if mode == "eval" and "eval_eps_missing" in bugs:
            return (S - mu) / np.sqrt(var)
        if mode == "eval":
            return (S - mu) / np.sqrt(var + eps)
        if "eps_outside_sqrt" in bugs:
            return (S - mu) / (np.sqrt(var) + eps)
        if "eps_missing" in bugs:
            return (S - mu) / np.sqrt(var)
        if "var_not_sqrt" in bugs:
            return (S - mu) / (var + eps)
        return (S - mu) / np.sqrt(var + eps)

    def affine(l, H):
        bias = 0 if "bias_missing" in bugs or ("bias_missing_last" in bugs and l == k) else b[l]
        if "weight_transposed_forward" in bugs and W[l].shape[0] == W[l].shape[1]:
            return W[l].T @ H + bias
        return W[l] @ H + bias

    def relu(Z):
        if "relu_scaled" in bugs:
            return 0.8 * np.maximum(0, Z)
        if "leaky_relu" in bugs:
            return np.where(Z > 0, Z, dtype(0.01) * Z)
        return np.maximum(0, Z)

    def softmax(S):
        axis = 1 if "softmax_wrong_axis" in bugs else 0
        E = np.exp(S - S.max(axis=axis, keepdims=True))
        return E / E.sum(axis=1 if "softmax_wrong_sum_axis" in bugs else axis, keepdims=True)

    # ---- forward
    H = {0: X}
    S, mu, var, S_hat, S_tilde = {}, {}, {}, {}, {}
    for l in range(1, k):
        S[l] = affine(l, H[l - 1])
        Z = S[l]
        if bn:
            src = gamma[l] * S[l] + beta[l] if "gamma_before_norm" in bugs else S[l]
            src = np.maximum(0, src) if "relu_before_bn" in bugs else src
            axis = 0 if "bn_stats_wrong_axis" in bugs else 1
            mu[l] = src.mean(axis=axis, keepdims=True)
            var[l] = src.var(axis=axis, ddof=1 if "var_unbiased" in bugs else 0, keepdims=True)
            m0, v0 = f(inputs[f"mu_av{l}_init"]), f(inputs[f"var_av{l}_init"])
            if "bn_train_running_stats" in bugs:
                S_hat[l] = normalize(src, alpha * m0 + (1 - alpha) * mu[l], alpha * v0 + (1 - alpha) * var[l])
            elif "bn_train_running_init" in bugs:
                S_hat[l] = normalize(src, m0, v0)
            else:
                S_hat[l] = normalize(src, mu[l], var[l])
            if "gamma_before_norm" in bugs:
                S_tilde[l], Z = src, S_hat[l]
            elif "gamma_before_norm_batch_stats" in bugs:
                S_tilde[l] = Z = normalize(gamma[l] * S[l] + beta[l], mu[l], var[l])
            else:
                S_tilde[l] = Z = gamma[l] * S_hat[l] + beta[l]
            out.update({f"mu{l}": mu[l], f"var{l}": var[l], f"S_hat{l}": S_hat[l], f"S_tilde{l}": S_tilde[l]})
        H[l] = Z if "relu_before_bn" in bugs else relu(Z)
        out.update({f"S{l}": S[l], f"H{l}": H[l]})
        S_tilde.setdefault(l, Z)
    S[k] = affine(k, H[k - 1])
    scores = S[k]
    if "bn_on_scores" in bugs:
        mu_k, var_k = scores.mean(axis=1, keepdims=True), scores.var(axis=1, keepdims=True)
        scores = normalize(scores, mu_k, var_k)
    if "relu_on_scores" in bugs:
        scores = np.maximum(0, scores)
    P = softmax(scores)
    log = np.log10 if "log10_loss" in bugs else np.log2 if "log2_loss" in bugs else np.log
    ce = -log(np.sum(Y * P, axis=0) + (dtype(1e-3) if "loss_eps_in_log" in bugs else 0))
    loss = ce.sum() if "loss_not_mean" in bugs else ce.mean()
    if "loss_mean_over_classes" in bugs:
        loss = -np.mean(Y * log(P))
    penalty = sum(np.sum(W[l] ** 2) for l in W)
    cost = loss if "cost_no_reg" in bugs else loss + (lam / 2 if "reg_half_in_cost" in bugs else lam) * penalty
    out.update({f"S{k}": S[k], "P": P, "loss": loss, "cost": cost})

    # ---- backward, the assignments' way
    scale = 1 if "grad_not_divided_by_n" in bugs else 1 / n**2 if "grad_divided_twice" in bugs else 1 / n
    reg = (
        0 if "reg_grad_missing" in bugs else (1 if "reg_grad_no_2" in bugs else 4 if "reg_grad_doubled" in bugs else 2)
    )
    grad_W, grad_b, grad_gamma, grad_beta = {}, {}, {}, {}
    G = Y - P if "G_sign_flipped" in bugs else -(Y - P)
    if "relu_on_scores" in bugs:
        G = G * (S[k] > 0)
    if "bn_on_scores" in bugs:
        G = batch_norm_back_pass(G, S[k], mu_k, var_k, eps, bugs)
    for l in range(k, 0, -1):
        if l < k:
            G_H = G
            if "relu_grad_missing" not in bugs:
                if "relu_grad_at_zero" in bugs:
                    mask = S_tilde[l] >= 0
                elif "relu_grad_before_bn" in bugs:
                    mask = S[l] > 0
                else:
                    mask = H[l] > 0
                G = G * mask
            G_Z = G
            if bn:
                grad_gamma[l] = scale * np.sum(G * S_hat[l], axis=1, keepdims=True)
                grad_beta[l] = scale * np.sum(G, axis=1, keepdims=True)
                if "grad_gamma_beta_swapped" in bugs:
                    grad_gamma[l], grad_beta[l] = grad_beta[l], grad_gamma[l]
                if "reg_gamma_beta" in bugs:
                    grad_gamma[l] = grad_gamma[l] + 2 * lam * gamma[l]
                    grad_beta[l] = grad_beta[l] + 2 * lam * beta[l]
                if "bn_back_no_gamma" not in bugs:
                    G = G * gamma[l]
                G = batch_norm_back_pass(G, S[l], mu[l], var[l], eps, bugs)
        shown = G_Z if "G_wrt_S_tilde" in bugs and l < k else G_H if "G_wrt_H" in bugs and l < k else G
        out[f"G{l}"] = shown if g_batch else shown / n
        grad_W[l] = scale * G @ H[l - 1].T + reg * lam * W[l]
        grad_b[l] = scale * np.sum(G, axis=0 if "grad_b_wrong_axis" in bugs else 1, keepdims=True)
        if "reg_biases" in bugs:
            grad_b[l] = grad_b[l] + 2 * lam * b[l]
        if l > 1:
            Wl = W[l] if "weight_transposed_backward" in bugs and W[l].shape[0] == W[l].shape[1] else W[l].T
            G = Wl @ G
    for l in W:
        out.update({f"grad_W{l}": grad_W[l], f"grad_b{l}": grad_b[l]})
    for l in grad_gamma:
        out.update({f"grad_gamma{l}": grad_gamma[l], f"grad_beta{l}": grad_beta[l]})

    # ---- one step
    mu_av, var_av = {}, {}
    for l in range(1, k if bn else 1):
        m0, v0 = f(inputs[f"mu_av{l}_init"]), f(inputs[f"var_av{l}_init"])
        if "running_init_batch" in bugs:
            m0, v0 = mu[l], var[l]
        a = 1 - alpha if "running_alpha_swapped" in bugs else alpha
        batch_var = var[l] * n / (n - 1) if "running_var_unbiased" in bugs else var[l]
        if "running_var_std_eps" in bugs:  # sigma, as the forward pass divides by it
            batch_var = np.sqrt(var[l] + eps)
        mu_av[l] = a * m0 + (1 - a) * mu[l]
        var_av[l] = a * v0 + (1 - a) * batch_var
        out.update({f"mu_av{l}": mu_av[l], f"var_av{l}": var_av[l]})
    sign = 1 if "update_wrong_sign" in bugs else -1
    W2 = {l: W[l] + sign * eta * grad_W[l] for l in W}
    b2 = {l: b[l] if "bias_not_updated" in bugs else b[l] + sign * eta * grad_b[l] for l in b}
    gamma_step = grad_beta if "gamma_update_uses_grad_beta" in bugs else grad_gamma
    g2 = {l: gamma[l] + sign * eta * gamma_step[l] for l in gamma}
    be2 = {l: beta[l] + sign * eta * grad_beta[l] for l in beta}
    for l in W:
        out.update({f"W{l}_next": W2[l], f"b{l}_next": b2[l]})
    for l in gamma:
        out.update({f"gamma{l}_next": g2[l], f"beta{l}_next": be2[l]})

    # ---- evaluation mode, after the step
    if "eval_before_step" in bugs:
        W2, b2, g2, be2 = W, b, gamma, beta
    Hc = X
    for l in range(1, k):
        Sc = W2[l] @ Hc + b2[l]
        if bn:
            if "eval_batch_stats" in bugs:
                m, v = Sc.mean(axis=1, keepdims=True), Sc.var(axis=1, keepdims=True)
            elif "eval_running_before_update" in bugs:
                m, v = f(inputs[f"mu_av{l}_init"]), f(inputs[f"var_av{l}_init"])
            else:
                m, v = mu_av[l], var_av[l]
            out[f"S_eval{l}"], out[f"S_hat_eval{l}"] = Sc, normalize(Sc, m, v, "eval")
            Sc = g2[l] * out[f"S_hat_eval{l}"] + be2[l]
        Hc = np.maximum(0, Sc)
    out["P_eval"] = softmax(W2[k] @ Hc + b2[k])
    return out


def batch_norm_back_pass(G, S, mu, var, eps, bugs):
    """The assignments' BatchNormBackPass, literally (column layout)."""
    n = S.shape[1]
    sigma1 = (var + eps) ** -0.5
    sigma2 = (var + eps) ** -1.5
    if "bn_back_sigma1_in_c" in bugs:
        sigma2 = sigma1
    G1 = G * sigma1
    G2 = G * sigma2
    D = S - mu
    c = np.sum(G2 * D, axis=1, keepdims=True)
    out = G1
    if "bn_back_stats_constant" in bugs:  # mu and var held constant: G1 alone
        return out
    mean_sign = 1 if "bn_back_mean_term_sign" in bugs else -1
    var_sign = 1 if "bn_back_var_term_sign" in bugs else -1
    if "bn_back_no_mean_term" not in bugs:
        out = out + mean_sign * np.sum(G1, axis=1, keepdims=True) / n
    if "bn_back_no_var_term" not in bugs:
        out = out + var_sign * (2 if "bn_back_var_term_doubled" in bugs else 1) * D * c / n
    return out


def inputs_of(values):
    """The inputs among a dict of reference vectors (what a student reads from the case's file)."""
    keep = {"X", "Y", "y", "lam", "eta", "eps", "bn_alpha"}
    return {
        name: a
        for name, a in values.items()
        if name in keep
        or name.endswith("_init")
        or (name[:1] in "Wb" and name[1:].isdigit())
        or (name.startswith(("gamma", "beta")) and name.rstrip("0123456789") in ("gamma", "beta"))
    }
