"""A third student: assignments 2 and 3 translated line by line from the MATLAB starter code.

Column-major data (``X`` is d x n, ``Y`` one-hot K x n), the parameters in Python lists (the
MATLAB cell arrays ``NetParams.W{l}``, 0-based here), ``b`` as m x 1 columns, float64, and the
assignments' functions: ``EvaluateClassifier``, ``ComputeCost``, ``ComputeGradients`` (with
``G_batch`` and ``BatchNormBackPass``: sigma1, sigma2, D, c, 1_n), ``MiniBatchGD`` with the
cyclical learning rate ``eta_t``. It shares no code with klayer nor with the other students.

``bugs`` switches on mistakes a real student makes that are not written the way the catalogue's
(see ``BUGS``).
"""

import numpy as np

BUGS = {
    "dW_no_1_over_n",  # 1/n forgotten in grad_W only (grad_b has it)
    "db_no_1_over_n",  # 1/n forgotten in grad_b only
    "var_unbiased_forward_only",  # np.var(ddof=1) in the forward pass; the back pass with 1/n
    "var_unbiased_backward_only",  # BatchNormBackPass's var recomputed with 1/(n-1)
    "last_hidden_no_bn_back",  # the last hidden layer's gradient taken w.r.t. the un-normalized S
    "running_var_alpha_swapped",  # var_av = (1 - alpha) var_av + alpha var; mu_av right
    "bn_back_running_stats",  # mu, var overwritten by the running averages before the backward pass
    "inplace_center",  # S -= mu in place: S (and D in the back pass) centred twice
    "softmax_sum_all",  # exp(S) / np.sum(exp(S)): MATLAB's sum(.) is per column, numpy's is of everything
    "loss_labels_fancy_index",  # -log(P[y]) (an n x K matrix) instead of P[y, range(n)]
    "grad_W_wrong_input",  # grad_W{l} = G X{l}^T with the layer's output instead of its input (off by one)
    "c_wrong_axis",  # c = (G2 .* D)' 1_m: summed over the units
    "mean_term_wrong_axis",  # (G1 1_n) summed over the units
    "grad_gamma_after_gamma",  # grad_gamma computed from G already multiplied by gamma
    "grad_gamma_beta_before_mask",  # grad_gamma, grad_beta from G before the ReLU mask
    "grad_gamma_with_S",  # grad_gamma = (1/n) (G .* S) 1_n with the un-normalized S
    "cost_eval_mode",  # ComputeCost with the running averages (the evaluation path) during training
    "eps_outside_sqrt_backward",  # sigma1 = 1 / (sqrt(var) + eps) in the back pass only
    "lam_penalty_on_last_only",  # 2 lam W in the last layer's gradient only
    "b_row",  # b as a 1 x m row vector: W X + b' fails to broadcast (or silently, when m == n)
    "mu_av_init_unused",  # mu_av = (1 - alpha) mu: the old average dropped
    "int_division",  # scale = 1 // n (integer division: 0) in the hidden layers' gradients
    "cost_penalty_over_n",  # J = (sum_i l_i + lam ||W||^2) / n: the penalty divided by n too
    "eval_old_bn_params",  # evaluation mode with the new W, b but gamma, beta from before the step
    "running_init_wrong_layer",  # mu_av_init[l - 1], var_av_init[l - 1] with 0-based lists: the layer before's
    "eval_var_av_sqrt",  # evaluation mode divides by sqrt(sqrt(var_av) + eps)
    "sigma2_power",  # sigma2 = (var + eps) ** -3 / 2 (operator precedence)
    "update_uses_eta_squared",  # W - eta * eta * grad (eta_t applied twice)
    "X_inplace_standardize",  # the input X is modified in place (X -= mean), X is returned
}


def relu(S):
    return np.maximum(0, S)


def softmax(S, bugs=()):
    E = np.exp(S - np.max(S, axis=0, keepdims=True))
    if "softmax_sum_all" in bugs:
        return E / np.sum(E)
    return E / np.sum(E, axis=0, keepdims=True)


def batch_normalize(S, mu, var, eps, bugs=()):
    return (S - mu) / np.sqrt(var + eps)


def evaluate_classifier(X, net, mu=None, var=None, bugs=()):
    """EvaluateClassifier(X, NetParams, varargin): P and every intermediate, as in assignment 3.

    ``net`` holds lists ``W, b, gammas, betas`` and ``use_bn``; ``mu``, ``var`` given: evaluation mode.
    """
    k = len(net["W"])
    Xs, Ss, S_hats, S_tildes, mus, vs = [X], [], [], [], [], []
    for l in range(k - 1):
        b = net["b"][l].T if "b_row" in bugs else net["b"][l]
        S = net["W"][l] @ Xs[-1] + b
        Ss.append(S.copy() if "inplace_center" not in bugs else S)
        if net["use_bn"]:
            if mu is None:
                m = np.mean(S, axis=1, keepdims=True)
                ddof = 1 if "var_unbiased_forward_only" in bugs else 0
                v = np.var(S, axis=1, ddof=ddof, keepdims=True)
            else:
                m, v = mu[l], var[l]
            mus.append(m)
            vs.append(v)
            if "inplace_center" in bugs and mu is None:
                S -= m  # in place: Ss[l] is centred too
                S_hat = S / np.sqrt(v + net["eps"])
            elif mu is not None and "eval_var_av_sqrt" in bugs:
                S_hat = (S - m) / np.sqrt(np.sqrt(v) + net["eps"])
            else:
                S_hat = batch_normalize(S, m, v, net["eps"])
            S_tilde = net["gammas"][l] * S_hat + net["betas"][l]
            S_hats.append(S_hat)
            S_tildes.append(S_tilde)
            Xs.append(relu(S_tilde))
        else:
            Xs.append(relu(S))
    s = net["W"][k - 1] @ Xs[-1] + net["b"][k - 1]
    Ss.append(s)
    P = softmax(s, bugs)
    return {"P": P, "X": Xs, "S": Ss, "S_hat": S_hats, "S_tilde": S_tildes, "mu": mus, "var": vs}


def compute_cost(X, Y, net, lam, mu=None, var=None, bugs=(), y=None):
    """ComputeCost: (1/n) sum_i -log(y_i^T p_i) + lam sum_l ||W_l||^2."""
    P = evaluate_classifier(X, net, mu, var, bugs)["P"]
    n = X.shape[1]
    if "loss_labels_fancy_index" in bugs:
        loss = -np.mean(np.log(P[y]))  # P[y] picks rows (classes) for every sample: n x n
    else:
        loss = -np.sum(np.log(np.sum(Y * P, axis=0))) / n
    penalty = lam * sum(np.sum(W * W) for W in net["W"])
    if "cost_penalty_over_n" in bugs:
        return loss, (loss * n + penalty) / n
    return loss, loss + penalty


def batch_norm_back_pass(G, S, mu, var, eps, bugs=()):
    """BatchNormBackPass of assignment 3, with its notation."""
    n = S.shape[1]
    ones = np.ones((n, 1))
    if "var_unbiased_backward_only" in bugs:
        var = np.var(S, axis=1, ddof=1, keepdims=True)
    if "eps_outside_sqrt_backward" in bugs:
        sigma1 = 1 / (np.sqrt(var) + eps)
        sigma2 = sigma1**3
    else:
        sigma1 = (var + eps) ** -0.5
        sigma2 = (var + eps) ** -3 / 2 if "sigma2_power" in bugs else (var + eps) ** -1.5
    G1 = G * (sigma1 @ ones.T)
    G2 = G * (sigma2 @ ones.T)
    D = S - mu @ ones.T
    if "c_wrong_axis" in bugs:
        c = np.sum(G2 * D, axis=0, keepdims=True)  # (G2 .* D)' 1_m: 1 x n
        return G1 - (G1 @ ones) @ ones.T / n - D * c / n
    c = (G2 * D) @ ones
    if "mean_term_wrong_axis" in bugs:
        return G1 - np.sum(G1, axis=0, keepdims=True) / n - D * (c @ ones.T) / n
    return G1 - (G1 @ ones) @ ones.T / n - D * (c @ ones.T) / n


def compute_gradients(X, Y, net, lam, bugs=(), fwd=None, mu_av=None, var_av=None):
    """ComputeGradients with batch norm, the assignment 3 way: G_batch = -(Y - P), not divided by n."""
    k = len(net["W"])
    n = X.shape[1]
    ones = np.ones((n, 1))
    fwd = evaluate_classifier(X, net, bugs=bugs) if fwd is None else fwd
    Xs, Ss, S_hats = fwd["X"], fwd["S"], fwd["S_hat"]
    mus, vs = fwd["mu"], fwd["var"]
    if "bn_back_running_stats" in bugs:  # mu = alpha mu_av + (1 - alpha) mu, the name reused
        mus, vs = mu_av, var_av
    grad_W, grad_b = [None] * k, [None] * k
    m_bn = k - 1 if net["use_bn"] else 0
    grad_gamma, grad_beta = [None] * m_bn, [None] * m_bn
    Gs = [None] * k
    G = -(Y - fwd["P"])
    Gs[k - 1] = G
    grad_W[k - 1] = G @ Xs[k - 1].T / n + 2 * lam * net["W"][k - 1]
    grad_b[k - 1] = G @ ones / n
    G = net["W"][k - 1].T @ G
    G = G * (Xs[k - 1] > 0)
    for l in range(k - 2, -1, -1):
        if net["use_bn"]:
            if "grad_gamma_after_gamma" in bugs:
                G = G * (net["gammas"][l] @ ones.T)
            G_mask = G
            if "grad_gamma_beta_before_mask" in bugs:
                G_mask = net["W"][l + 1].T @ Gs[l + 1]
            S_for_gamma = Ss[l] if "grad_gamma_with_S" in bugs else S_hats[l]
            grad_gamma[l] = (G_mask * S_for_gamma) @ ones / n
            grad_beta[l] = G_mask @ ones / n
            if "grad_gamma_after_gamma" not in bugs:
                G = G * (net["gammas"][l] @ ones.T)
            if not ("last_hidden_no_bn_back" in bugs and l == k - 2):
                G = batch_norm_back_pass(G, Ss[l], mus[l], vs[l], net["eps"], bugs)
        Gs[l] = G
        X_in = Xs[l + 1] if "grad_W_wrong_input" in bugs and Xs[l + 1].shape == Xs[l].shape else Xs[l]
        scale_W = 1 if "dW_no_1_over_n" in bugs else 1 // n if "int_division" in bugs else 1 / n
        scale_b = 1 if "db_no_1_over_n" in bugs else 1 / n
        reg = 0 if "lam_penalty_on_last_only" in bugs else 2 * lam
        grad_W[l] = scale_W * G @ X_in.T + reg * net["W"][l]
        grad_b[l] = scale_b * G @ ones
        if l > 0:
            G = net["W"][l].T @ G
            G = G * (Xs[l] > 0)
    if "dW_no_1_over_n" in bugs:  # the last layer, coded like the others
        grad_W[k - 1] = Gs[k - 1] @ Xs[k - 1].T + 2 * lam * net["W"][k - 1]
    if "db_no_1_over_n" in bugs:
        grad_b[k - 1] = Gs[k - 1] @ ones
    return {"W": grad_W, "b": grad_b, "gammas": grad_gamma, "betas": grad_beta, "G": Gs}


def eta_t(t, eta_min, eta_max, n_s, bugs=()):
    """The cyclical learning rate of assignment 2 (triangular), t = 0, 1, 2, ..."""
    l = t // (2 * n_s)
    if "cycle_off_by_one" in bugs:
        l = t // (2 * n_s) + 1
    top = n_s + 1 if "peak_n_s_plus_1" in bugs else n_s
    if 2 * l * n_s <= t <= (2 * l + 1) * n_s:
        return eta_min + (t - 2 * l * n_s) / top * (eta_max - eta_min)
    return eta_max - (t - (2 * l + 1) * n_s) / n_s * (eta_max - eta_min)


def forward_backward(p, bugs=(), dtype=np.float64):
    """One forward pass, backward pass and step on a case's inputs (assignment layout), in ``dtype``."""
    bugs = set(bugs)
    assert not bugs - BUGS, bugs - BUGS
    p = {name: v if name == "y" else np.asarray(v, dtype) for name, v in p.items()}
    X, Y = p["X"], p["Y"]
    k = sum(1 for name in p if name[0] == "W" and name[1:].isdigit())
    use_bn = "gamma1" in p
    net = {
        "W": [p[f"W{l}"] for l in range(1, k + 1)],
        "b": [p[f"b{l}"] for l in range(1, k + 1)],
        "gammas": [p[f"gamma{l}"] for l in range(1, k)] if use_bn else [],
        "betas": [p[f"beta{l}"] for l in range(1, k)] if use_bn else [],
        "use_bn": use_bn,
        "eps": p["eps"],
    }
    lam, eta, alpha = p["lam"], p["eta"], p["bn_alpha"]
    y = np.asarray(p["y"]).astype(int).ravel()
    if "X_inplace_standardize" in bugs:
        X -= np.mean(X, axis=1, keepdims=True)  # "centre the batch again", in place
    fwd = evaluate_classifier(X, net, bugs=bugs)
    out = {}
    for l in range(1, k):
        out[f"S{l}"], out[f"H{l}"] = fwd["S"][l - 1], fwd["X"][l]
        if use_bn:
            out.update({f"mu{l}": fwd["mu"][l - 1], f"var{l}": fwd["var"][l - 1]})
            out.update({f"S_hat{l}": fwd["S_hat"][l - 1], f"S_tilde{l}": fwd["S_tilde"][l - 1]})
    out[f"S{k}"], out["P"] = fwd["S"][k - 1], fwd["P"]
    mu_av, var_av = [], []
    if use_bn:
        for l in range(k - 1):
            m0, v0 = p[f"mu_av{l + 1}_init"], p[f"var_av{l + 1}_init"]
            if "running_init_wrong_layer" in bugs:  # index l - 1 of a 0-based list: -1 is the last layer
                m0, v0 = p[f"mu_av{(l - 1) % (k - 1) + 1}_init"], p[f"var_av{(l - 1) % (k - 1) + 1}_init"]
            if "mu_av_init_unused" in bugs:
                mu_av.append((1 - alpha) * fwd["mu"][l])
            else:
                mu_av.append(alpha * m0 + (1 - alpha) * fwd["mu"][l])
            if "running_var_alpha_swapped" in bugs:
                var_av.append((1 - alpha) * v0 + alpha * fwd["var"][l])
            else:
                var_av.append(alpha * v0 + (1 - alpha) * fwd["var"][l])
    if "cost_eval_mode" in bugs:
        init_mu = [p[f"mu_av{l}_init"] for l in range(1, k)]
        init_var = [p[f"var_av{l}_init"] for l in range(1, k)]
        out["loss"], out["cost"] = compute_cost(X, Y, net, lam, init_mu, init_var, bugs, y)
    else:
        out["loss"], out["cost"] = compute_cost(X, Y, net, lam, bugs=bugs, y=y)
    grads = compute_gradients(X, Y, net, lam, bugs, fwd, mu_av, var_av)
    for l in range(1, k + 1):
        out[f"G{l}"] = grads["G"][l - 1]  # G_batch, as the assignment has it
        out[f"grad_W{l}"], out[f"grad_b{l}"] = grads["W"][l - 1], grads["b"][l - 1]
    for l in range(1, k if use_bn else 1):
        out[f"grad_gamma{l}"], out[f"grad_beta{l}"] = grads["gammas"][l - 1], grads["betas"][l - 1]
        out[f"mu_av{l}"], out[f"var_av{l}"] = mu_av[l - 1], var_av[l - 1]
    step = eta * eta if "update_uses_eta_squared" in bugs else eta
    new = {
        key: [P_ - step * g for P_, g in zip(net[key], grads[key], strict=True)]
        for key in ("W", "b", "gammas", "betas")
    }
    for l in range(1, k + 1):
        out[f"W{l}_next"], out[f"b{l}_next"] = new["W"][l - 1], new["b"][l - 1]
    for l in range(1, k if use_bn else 1):
        out[f"gamma{l}_next"], out[f"beta{l}_next"] = new["gammas"][l - 1], new["betas"][l - 1]
    net_next = {**net, **new}
    if "eval_old_bn_params" in bugs:
        net_next = {**net_next, "gammas": net["gammas"], "betas": net["betas"]}
    ev = evaluate_classifier(X, net_next, mu_av, var_av, bugs) if use_bn else evaluate_classifier(X, net_next)
    for l in range(1, k if use_bn else 1):
        out[f"S_eval{l}"], out[f"S_hat_eval{l}"] = ev["S"][l - 1], ev["S_hat"][l - 1]
    out["P_eval"] = ev["P"]
    if "X_inplace_standardize" in bugs:
        out["X"] = X
    return out


def make(bugs=(), dtype=np.float64):
    """A function of the inputs alone (for ``check --python`` / ``check_function``)."""

    def fb(p):
        return forward_backward(p, bugs, dtype)

    return fb


# bug -> (case, first wrong quantity, the catalogued mistake named, or None: located, no mistake named)
EXPECTED = {
    "dW_no_1_over_n": ("3layer_bn", "grad_W3", "grad_not_divided_by_n"),
    "db_no_1_over_n": ("3layer", "grad_b3", "grad_not_divided_by_n"),
    "var_unbiased_forward_only": ("3layer_bn", "var1", "var_unbiased"),
    "var_unbiased_backward_only": ("3layer_bn", "G2", "var_unbiased"),
    "last_hidden_no_bn_back": ("3layer_bn", "G2", "bn_back_skipped"),
    "running_var_alpha_swapped": ("3layer_bn", "var_av1", "running_alpha_swapped"),
    "bn_back_running_stats": ("3layer_bn", "G2", "bn_back_running_stats"),
    "inplace_center": ("3layer_bn", "S1", "bn_centred_in_place"),
    "softmax_sum_all": ("3layer", "P", "softmax_sum_all"),
    "loss_labels_fancy_index": ("3layer", "loss", None),
    "grad_W_wrong_input": ("3layer", "grad_W2", "grad_W_wrong_input"),
    "c_wrong_axis": ("3layer_bn", "G2", "bn_back_sum_wrong_axis"),
    "mean_term_wrong_axis": ("2layer_bn", "G1", "bn_back_sum_wrong_axis"),
    "grad_gamma_after_gamma": ("3layer_bn", "grad_gamma2", "grad_gamma_times_gamma"),
    "grad_gamma_beta_before_mask": ("3layer_bn", "grad_gamma2", "relu_grad_missing"),
    "grad_gamma_with_S": ("3layer_bn", "grad_gamma2", None),
    "cost_eval_mode": ("3layer_bn", "loss", None),
    "eps_outside_sqrt_backward": ("3layer_bn", "G2", "eps_outside_sqrt"),
    "lam_penalty_on_last_only": ("3layer", "grad_W2", "reg_grad_missing"),
    "eval_var_av_sqrt": ("3layer_bn", "S_hat_eval1", None),
    "sigma2_power": ("3layer_bn", "G2", None),
    "update_uses_eta_squared": ("3layer", "W1_next", None),
    "X_inplace_standardize": ("3layer", "X", None),
    "mu_av_init_unused": ("2layer_bn", "mu_av1", "running_init_zero"),
    "running_init_wrong_layer": ("3layer_bn", "mu_av1", None),
    "int_division": ("3layer_bn", "grad_W2", None),
    "cost_penalty_over_n": ("3layer", "cost", "reg_over_n"),
    "eval_old_bn_params": ("3layer_bn", "S_eval2", None),
}
