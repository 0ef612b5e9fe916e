"""A fourth student: object-oriented, one class per layer with ``forward`` and ``backward``
(Keras/PyTorch-module style), the assignments' column layout (``X`` is d x n, ``S = W X + b``),
and a batch-norm backward pass derived stage by stage from the computational graph
(``d_var``, ``d_mu``, then ``dS``), which is neither the assignments' BatchNormBackPass nor
CS231n's compact formula. Gradients carry the ``1/n`` from the loss's gradient on, as an
autograd would. It shares no code with klayer nor with the other students.

``run(inputs, bugs, dtype)`` takes the case's inputs in the assignment layout and returns the
quantities in the same layout; ``bugs`` switches on the mistakes of ``BUGS``, each written the
way this style of code makes it.
"""

import numpy as np

BUGS = {
    "grad_no_1_over_n",  # dL/dS = P - Y at the head (an autograd-style loss summed, not averaged)
    "reg_lam_W",  # the penalty's gradient lam W
    "reg_on_b",  # weight decay on every parameter of the Dense layer, b included
    "reg_on_gamma_beta",  # weight decay on the batch-norm parameters too
    "unbiased_var",  # np.var(ddof=1) in the forward pass (the backward from the cache)
    "eps_outside_sqrt",  # std = sqrt(var) + eps, forward and backward
    "no_d_mu",  # the d_mu contribution left out of dS
    "no_d_var",  # the d_var contribution left out of dS
    "d_var_no_half",  # d_var without its factor -1/2
    "relu_mask_from_S_hat",  # the ReLU mask from S_hat (gamma and beta forgotten)
    "relu_mask_from_S",  # the ReLU mask from S (before batch norm)
    "softmax_over_samples",  # np.sum(..., axis=1) in the column layout
    "gamma_beta_grads_swapped",
    "gamma_grad_over_units",  # d_gamma summed over axis 0 (the units) in the column layout
    "running_alpha_swapped",  # (1 - alpha) avg + alpha batch
    "running_from_zeros",  # the module's running averages start at zeros, the case's init ignored
    "update_wrong_sign",  # p += eta * grad
    "update_during_backward",  # each layer steps as soon as its gradient is known (the layer below sees the new W)
    "bias_after_bn",  # S = W X, the bias added after batch norm: gamma S_hat + beta + b
    "loss_mean_over_classes",  # -np.mean(Y * log(P))
    "eval_with_batch_stats",  # evaluation mode left in training mode
    "cost_norm_not_squared",  # lam * ||W||_F (np.linalg.norm) instead of lam * ||W||_F^2
    "relu_in_place",  # H = Z; H[H < 0] = 0: the ReLU's input (S or S_tilde) is clipped too
    "shuffle_X_only",  # the samples (columns of X) shuffled, Y not
    "relu_mask_next_layer",  # the mask of layer l taken from the layer above's input (an index off by one)
    "running_var_std",  # var_av updated with the standard deviation
    "params_in_place",  # W -= eta * dW on the case's own arrays: the inputs saved are the stepped ones
    "bn_grads_mean",  # d_gamma, d_beta with np.mean over the samples (dZ already holds the 1/n)
    "G_saved_wrt_S_hat",  # the G saved is d_S_hat, the gradient with respect to S_hat (the back pass is right)
    "eps_missing_backward",  # std = sqrt(var) in the backward pass only
}


class Dense:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, X, bugs):
        self.X = X
        if "bias_after_bn" in bugs and getattr(self, "bn_follows", False):
            return self.W @ X
        return self.W @ X + self.b

    def backward(self, dS, lam, bugs, step=None):
        self.dW = dS @ self.X.T + (1 if "reg_lam_W" in bugs else 2) * lam * self.W
        self.db = np.sum(dS, axis=1, keepdims=True)
        if "reg_on_b" in bugs:
            self.db = self.db + 2 * lam * self.b
        if step is not None:  # update_during_backward: the step before W is used to propagate
            step(self, "W", "dW")
            step(self, "b", "db")
        return self.W.T @ dS

    def params(self):
        return {"W": ("W", "dW"), "b": ("b", "db")}


class BatchNorm:
    def __init__(self, gamma, beta, mu_av, var_av, eps, alpha, bias=None):
        self.gamma, self.beta, self.eps, self.alpha = gamma, beta, eps, alpha
        self.mu_av, self.var_av, self.bias = mu_av, var_av, bias

    def forward(self, S, bugs, train=True):
        n = S.shape[1]
        if train:
            self.S, self.mu = S, np.mean(S, axis=1, keepdims=True)
            self.var = np.var(S, axis=1, ddof=1 if "unbiased_var" in bugs else 0, keepdims=True)
            mu, var = self.mu, self.var
        else:
            mu, var = self.mu_av, self.var_av
        std = np.sqrt(var) + self.eps if "eps_outside_sqrt" in bugs else np.sqrt(var + self.eps)
        S_hat = (S - mu) / std
        S_tilde = self.gamma * S_hat + self.beta
        if self.bias is not None:
            S_tilde = S_tilde + self.bias
        if train:
            self.std, self.S_hat, self.S_tilde, self.n = std, S_hat, S_tilde, n
        return S_hat, S_tilde

    def update_running(self, bugs):
        a = 1 - self.alpha if "running_alpha_swapped" in bugs else self.alpha
        self.mu_av = a * self.mu_av + (1 - a) * self.mu
        self.var_av = a * self.var_av + (1 - a) * (np.sqrt(self.var) if "running_var_std" in bugs else self.var)

    def backward(self, dZ, lam, bugs, step=None):
        axis = 0 if "gamma_grad_over_units" in bugs else 1
        self.dgamma = np.sum(dZ * self.S_hat, axis=axis, keepdims=True)
        self.dbeta = np.sum(dZ, axis=1, keepdims=True)
        if "bn_grads_mean" in bugs:
            self.dgamma, self.dbeta = self.dgamma / dZ.shape[1], self.dbeta / dZ.shape[1]
        if "gamma_beta_grads_swapped" in bugs:
            self.dgamma, self.dbeta = self.dbeta, self.dgamma
        if "reg_on_gamma_beta" in bugs:
            self.dgamma = self.dgamma + 2 * lam * self.gamma
            self.dbeta = self.dbeta + 2 * lam * self.beta
        if self.bias is not None:
            self.dbias = np.sum(dZ, axis=1, keepdims=True)
        if step is not None:  # update_during_backward: gamma steps before it scales the gradient
            step(self, "gamma", "dgamma")
            step(self, "beta", "dbeta")
        n, D = self.n, self.S - self.mu
        std = self.std
        if "eps_missing_backward" in bugs:
            self.std = np.sqrt(self.var)
        d_S_hat = dZ * self.gamma
        if "eps_outside_sqrt" in bugs:  # d std / d var = 1 / (2 sqrt(var))
            d_std = np.sum(d_S_hat * D, axis=1, keepdims=True) * -(self.std**-2)
            d_var = d_std / (2 * np.sqrt(self.var))
        else:
            half = 1.0 if "d_var_no_half" in bugs else 0.5
            d_var = np.sum(d_S_hat * D, axis=1, keepdims=True) * -half * self.std**-3
        d_mu = np.sum(-d_S_hat / self.std, axis=1, keepdims=True) + d_var * np.mean(-2 * D, axis=1, keepdims=True)
        ddof = 1 if "unbiased_var" in bugs else 0
        dS = d_S_hat / self.std
        if "no_d_var" not in bugs:
            dS = dS + d_var * 2 * D / (n - ddof)
        if "no_d_mu" not in bugs:
            dS = dS + d_mu / n
        self.std = std
        return dS

    def params(self):
        p = {"gamma": ("gamma", "dgamma"), "beta": ("beta", "dbeta")}
        return p


class ReLU:
    def forward(self, Z, bugs, bn=None):
        self.Z, self.bn = Z, bn
        if "relu_in_place" in bugs:
            Z[Z < 0] = 0
            return Z
        return np.maximum(0, Z)

    def backward(self, dH, lam, bugs):
        if self.bn is not None and "relu_mask_from_S_hat" in bugs:
            return dH * (self.bn.S_hat > 0)
        if self.bn is not None and "relu_mask_from_S" in bugs:
            return dH * (self.bn.S > 0)
        if "relu_mask_next_layer" in bugs and self.above is not None and self.above.Z.shape == self.Z.shape:
            return dH * (self.above.Z > 0)
        return dH * (self.Z > 0)


class SoftmaxCrossEntropy:
    def forward(self, S, Y, bugs):
        axis = 1 if "softmax_over_samples" in bugs else 0
        E = np.exp(S - np.max(S, axis=axis, keepdims=True))
        self.P, self.Y = E / np.sum(E, axis=axis, keepdims=True), Y
        if "loss_mean_over_classes" in bugs:
            return self.P, -np.mean(Y * np.log(self.P))
        return self.P, -np.sum(Y * np.log(self.P)) / Y.shape[1]

    def backward(self, bugs):
        n = 1 if "grad_no_1_over_n" in bugs else self.Y.shape[1]
        return (self.P - self.Y) / n


def run(p, bugs=(), dtype=np.float64, with_params=False):
    """Every quantity this student computes, in the assignment layout, from the case's inputs in that layout
    (``with_params``: with the parameter arrays it was given, as a student saving its whole dict does)."""
    bugs = set(bugs)
    assert bugs <= BUGS, bugs - BUGS
    f = {key: np.asarray(v, dtype) for key, v in p.items() if key != "y"}
    if "params_in_place" in bugs:  # the case's arrays themselves, as a student's dict of parameters
        f = {
            key: (v if isinstance(v, np.ndarray) and v.dtype == dtype else np.asarray(v, dtype)) for key, v in p.items()
        }
    X, Y = f["X"], f["Y"]
    if "shuffle_X_only" in bugs:
        X = X[:, np.random.default_rng(1).permutation(X.shape[1])]
    lam, eta, eps, alpha = (dtype(np.asarray(p[s]).item()) for s in ("lam", "eta", "eps", "bn_alpha"))
    k = sum(1 for key in p if key.startswith("W") and key[1:].isdigit())
    use_bn = "gamma1" in p
    dense, norms, relus = [], [], []
    for l in range(1, k + 1):
        own = "params_in_place" not in bugs
        dense.append(Dense(f[f"W{l}"].copy() if own else f[f"W{l}"], f[f"b{l}"].reshape(-1, 1).copy()))
        if l < k:
            relus.append(ReLU())
            if use_bn:
                m = len(f[f"gamma{l}"].reshape(-1))
                init = (
                    (np.zeros((m, 1), dtype), np.zeros((m, 1), dtype))
                    if "running_from_zeros" in bugs
                    else (
                        f[f"mu_av{l}_init"].reshape(-1, 1),
                        f[f"var_av{l}_init"].reshape(-1, 1),
                    )
                )
                bias = dense[-1].b if "bias_after_bn" in bugs else None
                dense[-1].bn_follows = True
                norms.append(
                    BatchNorm(
                        f[f"gamma{l}"].reshape(-1, 1).copy(),
                        f[f"beta{l}"].reshape(-1, 1).copy(),
                        *init,
                        eps,
                        alpha,
                        bias,
                    )
                )
    for low, high in zip(relus, relus[1:] + [None], strict=True):
        low.above = high
    head = SoftmaxCrossEntropy()
    out = {}

    # forward
    H = X
    for l in range(1, k + 1):
        S = dense[l - 1].forward(H, bugs)
        out[f"S{l}"] = S
        if l == k:
            break
        Z, bn = S, None
        if use_bn:
            bn = norms[l - 1]
            S_hat, Z = bn.forward(S, bugs)
            out.update({f"mu{l}": bn.mu, f"var{l}": bn.var, f"S_hat{l}": S_hat, f"S_tilde{l}": Z})
        H = relus[l - 1].forward(Z, bugs, bn)
        out[f"H{l}"] = H
    P, loss = head.forward(S, Y, bugs)
    if "cost_norm_not_squared" in bugs:
        penalty = sum(np.linalg.norm(d.W) for d in dense)
    else:
        penalty = sum(np.sum(d.W**2) for d in dense)
    out.update(P=P, loss=np.array(loss), cost=np.array(loss + lam * penalty))

    # backward
    def step(obj, attr, grad_attr):
        sign = 1 if "update_wrong_sign" in bugs else -1
        if "params_in_place" in bugs:
            getattr(obj, attr)[...] += sign * eta * getattr(obj, grad_attr)
        else:
            setattr(obj, attr, getattr(obj, attr) + sign * eta * getattr(obj, grad_attr))

    dS, dH = head.backward(bugs), None
    for l in range(k, 0, -1):
        if l < k:
            dZ = relus[l - 1].backward(dH, lam, bugs)
            if use_bn:
                bn = norms[l - 1]
                dS = bn.backward(dZ, lam, bugs, step if "update_during_backward" in bugs else None)
                out[f"grad_gamma{l}"], out[f"grad_beta{l}"] = bn.dgamma, bn.dbeta
            else:
                dS = dZ
        out[f"G{l}"] = dZ * norms[l - 1].gamma if "G_saved_wrt_S_hat" in bugs and use_bn and l < k else dS
        d = dense[l - 1]
        dH = d.backward(dS, lam, bugs, step if "update_during_backward" in bugs else None)
        out[f"grad_W{l}"] = d.dW
        out[f"grad_b{l}"] = norms[l - 1].dbias if use_bn and l < k and "bias_after_bn" in bugs else d.db

    # the step
    for l in range(1, k + 1):
        d = dense[l - 1]
        if "update_during_backward" not in bugs:
            if use_bn and l < k and "bias_after_bn" in bugs:
                d.db = norms[l - 1].dbias
            step(d, "W", "dW")
            step(d, "b", "db")
        out[f"W{l}_next"], out[f"b{l}_next"] = d.W, d.b
        if use_bn and l < k:
            bn = norms[l - 1]
            bn.update_running(bugs)
            if "update_during_backward" not in bugs:
                step(bn, "gamma", "dgamma")
                step(bn, "beta", "dbeta")
            out.update({f"mu_av{l}": bn.mu_av, f"var_av{l}": bn.var_av})
            out[f"gamma{l}_next"], out[f"beta{l}_next"] = bn.gamma, bn.beta
            if "bias_after_bn" in bugs:
                bn.bias = d.b

    # evaluation mode, the network after the step
    H = X
    for l in range(1, k + 1):
        S = dense[l - 1].forward(H, bugs)
        if l == k:
            break
        Z = S
        if use_bn:
            S_hat, Z = norms[l - 1].forward(S, bugs, train="eval_with_batch_stats" in bugs)
            out[f"S_eval{l}"], out[f"S_hat_eval{l}"] = S, S_hat
        H = np.maximum(0, Z)
    E = np.exp(S - np.max(S, axis=0, keepdims=True))
    out["P_eval"] = E / np.sum(E, axis=0, keepdims=True)
    if with_params:
        out.update({key: f[key] for key in f if key.rstrip("0123456789") in ("W", "b", "gamma", "beta")})
    return out
