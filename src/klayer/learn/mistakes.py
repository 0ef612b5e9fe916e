"""The catalogue of known mistakes: each is the reference computation with one step done wrong.

A mistake is a subclass of :class:`klayer.learn.vectors.Computation` that overrides one step,
mostly by calling :mod:`klayer.layers` with the wrong statistics, axis or input; the checker runs
every applicable one on the case and keeps those that reproduce the student's first wrong quantity.
Mistakes recognized from a shape or a comparison alone have no computation (``computations=()``).

The formulas are those of the assignments (column layout: ``X`` is ``d x n``, ``S = W X + b``,
``1_n`` a column of n ones); equation numbers are left out because they differ between the
assignments' yearly versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import layers
from .vectors import BatchNormOut, Computation

__all__ = ["Mistake", "CATALOGUE", "PREPROCESSING", "catalogued", "applicable_mistakes", "normalized_with"]


@dataclass(frozen=True)
class Mistake:
    """One catalogued mistake.

    Attributes
    ----------
    id : str, stable identifier (tests and course material rely on it).
    summary : str, what the student's code does.
    formula : str, the assignments' formula it concerns.
    computations : the reference computation with the mistake in it, one class per common way of
        making it (empty for a mistake recognized from a shape).
    batch_norm : True if it needs batch norm, False if it needs none, None if either.
    square : the mistake is only possible when some weight matrix is square (shapes agree).
    """

    id: str
    summary: str
    formula: str
    computations: tuple = ()
    batch_norm: bool | None = None
    square: bool = False

    def applies_to(self, case) -> bool:
        if not self.computations:
            return False
        if self.batch_norm is not None and self.batch_norm != case.batch_norm:
            return False
        sizes = case.sizes
        return not self.square or any(sizes[l] == sizes[l + 1] for l in range(len(sizes) - 1))


def normalized_with(S, gamma, beta, mu, var, eps, shown_var=None) -> BatchNormOut:
    """Batch norm of ``S`` with the given statistics (through
    :func:`klayer.layers.batchnorm_eval_forward`), reporting ``shown_var`` (default ``var``)."""
    S_hat = layers.batchnorm_eval_forward(S, np.ones_like(gamma), np.zeros_like(beta), mu, var, eps)
    S_tilde = layers.batchnorm_eval_forward(S, gamma, beta, mu, var, eps)
    cache = (S_hat, 1.0 / np.sqrt(var + eps), gamma)
    return BatchNormOut(mu, var if shown_var is None else shown_var, S_hat, S_tilde, S_tilde, cache)


def _square(W) -> bool:
    return W.shape[0] == W.shape[1]


CATALOGUE: dict[str, Mistake] = {}
BN_FORWARD = "assignment 3, batch-norm forward pass"
BN_BACKWARD = (
    "assignment 3, BatchNormBackPass: G1 = G .* (sigma1 1_n^T), G2 = G .* (sigma2 1_n^T), D = S - mu 1_n^T,"
    " c = (G2 .* D) 1_n, G = G1 - (1/n) (G1 1_n) 1_n^T - (1/n) D .* (c 1_n^T),"
    " with sigma1 = (var + eps)^(-1/2), sigma2 = (var + eps)^(-3/2) (G1, G2: the assignment's intermediates)"
)


def catalogued(id: str, summary: str = "", formula: str = "", batch_norm: bool | None = None, square: bool = False):
    """Class decorator: enter the computation in :data:`CATALOGUE` as the mistake ``id``, or (given
    the id alone) as one more way of making a mistake already entered."""

    def register(cls):
        if id in CATALOGUE and not summary:
            m = CATALOGUE[id]
            CATALOGUE[id] = Mistake(id, m.summary, m.formula, (*m.computations, cls), m.batch_norm, m.square)
        else:
            CATALOGUE[id] = Mistake(id, summary, formula, (cls,), batch_norm, square)
        return cls

    return register


# -- batch norm, forward ----------------------------------------------------------------------
@catalogued(
    "var_unbiased",
    summary="the batch variance divides by n-1 (np.var(S, ddof=1), MATLAB var(S, 0, 2)), in the forward pass or in "
    "BatchNormBackPass only; batch norm uses 1/n",
    formula=f"{BN_FORWARD}: var_j = (1/n) sum_i (s_ij - mu_j)^2",
    batch_norm=True,
)
class VarUnbiased(Computation):
    def batchnorm(self, S, gamma, beta, eps):
        n = S.shape[0]
        r = super().batchnorm(S, gamma, beta, eps)
        return normalized_with(S, gamma, beta, r.mu, r.var * n / (n - 1), eps)


@catalogued(
    "eps_outside_sqrt",
    summary="eps is added outside the square root: (S - mu) / (sqrt(var) + eps), or sigma1 = 1 / (sqrt(var) + eps) "
    "in BatchNormBackPass only",
    formula=f"{BN_FORWARD}: S_hat = diag(var + eps)^(-1/2) (S - mu 1_n^T), eps inside the root",
    batch_norm=True,
)
class EpsOutsideSqrt(Computation):
    def batchnorm(self, S, gamma, beta, eps):  # (S - mu) / (sqrt(var) + eps): a "variance" (sqrt(var) + eps)^2
        r = super().batchnorm(S, gamma, beta, eps)
        return normalized_with(S, gamma, beta, r.mu, (np.sqrt(r.var) + eps) ** 2, 0.0, shown_var=r.var)


@catalogued(
    "eps_missing",
    summary="eps is missing from the normalization (or is much smaller than the case's eps), in the forward pass "
    "or in BatchNormBackPass only",
    formula=f"{BN_FORWARD}: S_hat = diag(var + eps)^(-1/2) (S - mu 1_n^T), with the case's eps",
    batch_norm=True,
)
class EpsMissing(Computation):
    def batchnorm(self, S, gamma, beta, eps):
        return super().batchnorm(S, gamma, beta, 0.0)


@catalogued(
    "var_not_sqrt",
    summary="S - mu is divided by the variance, not by its square root (the standard deviation)",
    formula=f"{BN_FORWARD}: S_hat = diag(var + eps)^(-1/2) (S - mu 1_n^T), power -1/2",
    batch_norm=True,
)
class VarNotSqrt(Computation):
    def batchnorm(self, S, gamma, beta, eps):  # (S - mu) / (var + eps): a "variance" (var + eps)^2
        r = super().batchnorm(S, gamma, beta, eps)
        return normalized_with(S, gamma, beta, r.mu, (r.var + eps) ** 2, 0.0, shown_var=r.var)


@catalogued(
    "gamma_before_norm",
    summary="gamma and beta are applied before normalizing (normalize(gamma .* S + beta)); they come after",
    formula=f"{BN_FORWARD}: S_hat = BatchNormalize(S, mu, var), then S_tilde = gamma .* S_hat + beta",
    batch_norm=True,
)
class GammaBeforeNorm(Computation):
    def batchnorm(self, S, gamma, beta, eps):  # normalize(gamma * S + beta)
        T = gamma * S + beta
        r = super().batchnorm(T, np.ones_like(gamma), np.zeros_like(beta), eps)
        return BatchNormOut(r.mu, r.var, r.S_hat, T, r.S_hat, (r.S_hat, r.cache[1], gamma))


@catalogued("gamma_before_norm")
class GammaBeforeNormBatchStats(Computation):
    def batchnorm(self, S, gamma, beta, eps):  # (gamma * S + beta - mu) / sqrt(var + eps), mu and var of S
        r = super().batchnorm(S, gamma, beta, eps)
        ones, zeros = np.ones_like(gamma), np.zeros_like(beta)
        S_tilde = layers.batchnorm_eval_forward(gamma * S + beta, ones, zeros, r.mu, r.var, eps)
        return BatchNormOut(r.mu, r.var, r.S_hat, S_tilde, S_tilde, r.cache)


@catalogued(
    "bn_stats_wrong_axis",
    summary="the batch mean and variance are taken over the units of each sample instead of over the batch",
    formula=f"{BN_FORWARD}: mu = (1/n) sum_i s_i, one value per unit, averaged over the n samples",
    batch_norm=True,
)
class BnStatsWrongAxis(Computation):
    def batchnorm(self, S, gamma, beta, eps):  # statistics of each sample over the units
        r = super().batchnorm(S.T, np.ones(len(S)), np.zeros(len(S)), eps)
        S_hat = r.S_hat.T
        S_tilde = gamma * S + beta
        right = super().batchnorm(S, gamma, beta, eps)
        return BatchNormOut(r.mu, r.var, S_hat, gamma * S_hat + beta, S_tilde, right.cache)

    def running(self, avg, stat, alpha, n, is_var):
        return np.full_like(avg, np.nan)  # the shapes do not fit: undefined


@catalogued(
    "bn_train_running_stats",
    summary="training mode normalizes with the running averages mu_av, var_av (updated or not) instead of "
    "the batch's mean and variance",
    formula=f"{BN_FORWARD}: in training S_hat = diag(var + eps)^(-1/2) (S - mu 1_n^T), mu and var of this batch",
    batch_norm=True,
)
class BnTrainRunningStats(Computation):
    def statistics(self, mu, var):
        """The averages the normalization uses: updated with this batch's ``mu, var``."""
        l, alpha = self.layer, float(self.inputs["bn_alpha"])
        return self.running(self.inputs[f"mu_av{l}_init"], mu, alpha, 0, False), self.running(
            self.inputs[f"var_av{l}_init"], var, alpha, 0, True
        )

    def batchnorm(self, S, gamma, beta, eps):
        r = super().batchnorm(S, gamma, beta, eps)
        used = normalized_with(S, gamma, beta, *self.statistics(r.mu, r.var), eps)
        return BatchNormOut(r.mu, r.var, used.S_hat, used.S_tilde, used.out, used.cache)


@catalogued("bn_train_running_stats")
class BnTrainRunningInit(BnTrainRunningStats):
    def statistics(self, mu, var):  # the averages before the update
        return self.inputs[f"mu_av{self.layer}_init"], self.inputs[f"var_av{self.layer}_init"]


@catalogued(
    "relu_before_bn",
    summary="ReLU is applied to S before batch norm (batch norm of max(0, S)); it comes after: max(0, S_tilde)",
    formula=f"{BN_FORWARD}: S_hat = BatchNormalize(S), S_tilde = gamma .* S_hat + beta, then X_l = max(0, S_tilde)",
    batch_norm=True,
)
class ReluBeforeBn(Computation):
    def batchnorm(self, S, gamma, beta, eps):
        return super().batchnorm(np.maximum(S, 0), gamma, beta, eps)

    def relu(self, Z):
        return Z

    def relu_back(self, dH, layer):
        return dH


@catalogued(
    "bn_centred_in_place",
    summary="S is centred in place (S -= mu, or S_hat = S; S_hat -= mu: the same array), so the S kept for "
    "later (and shown) is S - mu",
    formula=f"{BN_FORWARD}: S_hat = diag(var + eps)^(-1/2) (S - mu 1_n^T) into a new array; S itself stays "
    "W X + b (the back pass needs it: D = S - mu 1_n^T)",
    batch_norm=True,
)
class BnCentredInPlace(Computation):
    def batchnorm(self, S, gamma, beta, eps):
        r = super().batchnorm(S.copy(), gamma, beta, eps)
        S -= r.mu  # the array compute() keeps as S{l}
        return r


@catalogued(
    "relu_in_place",
    summary="the ReLU clips its input in place (H = S; H[H < 0] = 0: the same numpy array, or "
    "np.maximum(S, 0, out=S)), so the S (or S_tilde) kept and shown is max(0, S)",
    formula="forward pass: X_l = max(0, S_l) (with batch norm max(0, S_tilde_l)) into a new array; S_l and S_tilde_l "
    "keep their negative entries",
)
class ReluInPlace(Computation):
    def relu(self, Z):
        H = super().relu(Z)
        Z[...] = H  # the array compute() keeps as S{l} (S_tilde{l} with batch norm)
        return H


# -- linear layers, softmax, cost -------------------------------------------------------------
@catalogued(
    "weight_transposed_forward",
    summary="a square weight matrix is used transposed in the forward pass (W' X instead of W X)",
    formula="forward pass: S_l = W_l X_(l-1) + b_l, with W_l of size m_l x m_(l-1)",
    square=True,
)
class WeightTransposedForward(Computation):
    def linear(self, H, W, b):
        return super().linear(H, W.T if _square(W) else W, b)


@catalogued(
    "bias_missing",
    summary="the bias is not added in the forward pass (or only after batch norm, gamma .* S_hat + beta + b: "
    "S lacks it)",
    formula="forward pass: S_l = W_l X_(l-1) + b_l 1_n^T, before batch norm (which cancels b_l; beta_l is its shift)",
)
class BiasMissing(Computation):
    def linear(self, H, W, b):
        return super().linear(H, W, np.zeros_like(b))


@catalogued("bias_missing")
class BiasMissingLast(Computation):
    def linear(self, H, W, b):  # in the last layer only
        return super().linear(H, W, np.zeros_like(b) if self.layer == self.case.n_layers else b)


@catalogued(
    "softmax_wrong_axis",
    summary="softmax normalizes over the samples instead of over the classes of each sample",
    formula="P = softmax(S), each column (one sample) sums to 1: exp(s) / (1^T exp(s))",
)
class SoftmaxWrongAxis(Computation):
    def probs(self, S):
        return layers.softmax(S.T).T  # normalized over the samples

    def head(self, S, y, Y):
        P = self.probs(S)
        n = len(y)
        return P, float(-np.log(P[np.arange(n), y]).mean()), (P - Y) / n


@catalogued("softmax_wrong_axis")
class SoftmaxWrongSumAxis(SoftmaxWrongAxis):
    def probs(self, S):  # exp(S - max over the classes), summed over the samples
        E = np.exp(S - S.max(axis=1, keepdims=True))
        return E / E.sum(axis=0)


@catalogued(
    "softmax_sum_all",
    summary="softmax divides by the sum of the whole matrix (np.sum(np.exp(S)) without an axis: MATLAB's sum "
    "sums each column, numpy's sums every entry)",
    formula="P = softmax(S), each column (one sample) sums to 1: exp(s) / (1^T exp(s)), np.sum(..., axis=0)",
)
class SoftmaxSumAll(SoftmaxWrongAxis):
    def probs(self, S):  # exp(S) / sum of all entries (a global max subtracted or none: the same)
        E = np.exp(S - S.max())
        return E / E.sum()


@catalogued("softmax_sum_all")
class SoftmaxSumAllSampleMax(SoftmaxWrongAxis):
    def probs(self, S):  # each sample's max subtracted, then the sum of all entries
        E = np.exp(S - S.max(axis=1, keepdims=True))
        return E / E.sum()


@catalogued(
    "bn_on_scores",
    summary="batch normalization is applied to the last layer's scores too",
    formula="assignment 3: batch norm on hidden layers 1..k-1 only; s_k = W_k x_(k-1) + b_k goes to the softmax",
    batch_norm=True,
)
class BnOnScores(Computation):
    def head(self, S, y, Y):  # batch norm (gamma = 1, beta = 0) on the last layer's scores too
        out, cache, _ = layers.batchnorm_train_forward(S, np.ones(S.shape[1]), np.zeros(S.shape[1]), self.eps)
        P, loss, dout = super().head(out, y, Y)
        return P, loss, layers.batchnorm_backward(dout, cache)[0]


@catalogued(
    "relu_on_scores",
    summary="ReLU is applied to the last layer's scores before the softmax",
    formula="P = softmax(W_k X_(k-1) + b_k): no ReLU after the last layer",
)
class ReluOnScores(Computation):
    def head(self, S, y, Y):
        P, loss, dout = super().head(layers.relu_forward(S)[0], y, Y)
        return P, loss, np.where(S > 0, dout, 0.0)


@catalogued(
    "loss_not_mean",
    summary="the loss sums the cross-entropy over the batch instead of averaging it (missing 1/n)",
    formula="J = (1/n) sum_i l_cross(x_i, y_i) + lam sum_l ||W_l||^2",
)
class LossNotMean(Computation):
    def head(self, S, y, Y):
        P, loss, dS = super().head(S, y, Y)
        return P, loss * len(y), dS


@catalogued(
    "loss_mean_over_classes",
    summary="the cross-entropy is averaged over all n x C entries of Y .* log(P) (np.mean), so divided by C too",
    formula="J = (1/n) sum_i -log(y_i^T p_i) + lam sum_l ||W_l||^2: a sum over the classes, a mean over the samples",
)
class LossMeanOverClasses(Computation):
    def head(self, S, y, Y):
        P, loss, dS = super().head(S, y, Y)
        return P, loss / Y.shape[1], dS


@catalogued(
    "loss_wrong_log",
    summary="the cross-entropy takes log2 or log10 (a factor 1/ln 2 or 1/ln 10); it is the natural log",
    formula="J = (1/n) sum_i -log(y_i^T p_i) + lam sum_l ||W_l||^2, log the natural logarithm (MATLAB log, np.log)",
)
class LossLog2(Computation):
    def head(self, S, y, Y):
        P, loss, dS = super().head(S, y, Y)
        return P, loss / np.log(2), dS


@catalogued("loss_wrong_log")
class LossLog10(Computation):
    def head(self, S, y, Y):
        P, loss, dS = super().head(S, y, Y)
        return P, loss / np.log(10), dS


@catalogued(
    "loss_eps_in_log",
    summary="a small number is added inside the log (log(p + 1e-k)); the loss is -log(p), exactly",
    formula="J = (1/n) sum_i -log(y_i^T p_i) + lam sum_l ||W_l||^2",
)
class LossEpsInLog(Computation):
    """``-log(p + e)``; a student's "safe log" with one of the common epsilons (the invisible ones,
    which change no quantity of a case, drop out of the match)."""

    e = 1e-3

    def head(self, S, y, Y):
        P, _, dS = super().head(S, y, Y)
        return P, float(-np.log(P[np.arange(len(y)), y] + self.e).mean()), dS


for _e in (1e-2, 1e-4, 1e-5, 1e-6):
    catalogued("loss_eps_in_log")(type(f"LossEpsInLog{_e:.0e}", (LossEpsInLog,), {"e": _e}))


@catalogued(
    "onehot_shifted",
    summary="the one-hot Y is built from shifted labels (y - 1 or y + 1: 0- and 1-based labels mixed up), "
    "so each sample's 1 sits in the neighbouring class",
    formula="Y(:, i) = e_(y_i), the one-hot column of sample i's own class",
)
class OnehotShiftedDown(Computation):
    shift = -1

    def head(self, S, y, Y):
        shifted = (y + self.shift) % Y.shape[1]
        return super().head(S, shifted, np.eye(Y.shape[1])[shifted])


@catalogued("onehot_shifted")
class OnehotShiftedUp(OnehotShiftedDown):
    shift = 1


@catalogued(
    "reg_half_in_cost",
    summary="the cost's penalty is (lam/2) sum_l ||W_l||^2 (another course's convention); here it is "
    "lam sum_l ||W_l||^2, whose gradient is 2 lam W",
    formula="J = (1/n) sum_i l_cross(x_i, y_i) + lam sum_l ||W_l||^2",
)
class RegHalfInCost(Computation):
    def cost(self, loss, params, lam):
        return super().cost(loss, params, lam / 2)


@catalogued(
    "reg_wrong_norm",
    summary="the cost's penalty takes another norm: ||W_l|| without its square (np.linalg.norm(W)), or MATLAB's "
    "norm(W), the largest singular value, not the Frobenius norm; it is lam sum_l sum_ij W_l,ij^2",
    formula="J = (1/n) sum_i l_cross(x_i, y_i) + lam sum_l ||W_l||^2, ||W||^2 = sum_ij W_ij^2 (MATLAB sum(W(:).^2), "
    "norm(W, 'fro')^2)",
)
class RegFrobeniusNotSquared(Computation):
    def norm(self, W):
        return np.linalg.norm(W)

    def cost(self, loss, params, lam):
        return loss + lam * sum(self.norm(p) for name, p in params.items() if name.startswith("W"))


@catalogued("reg_wrong_norm")
class RegSpectralSquared(RegFrobeniusNotSquared):
    def norm(self, W):
        return np.linalg.norm(W, 2) ** 2


@catalogued("reg_wrong_norm")
class RegSpectral(RegFrobeniusNotSquared):
    def norm(self, W):
        return np.linalg.norm(W, 2)


@catalogued(
    "reg_over_n",
    summary="the penalty is divided by n too: J = (1/n) (sum_i l_cross + lam sum_l ||W_l||^2) (and its gradient "
    "2 lam W / n); only the cross-entropy is averaged",
    formula="J = (1/n) sum_i l_cross(x_i, y_i) + lam sum_l ||W_l||^2, grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l",
)
class RegOverN(Computation):
    def cost(self, loss, params, lam):
        return super().cost(loss, params, lam / self.case.n)

    def penalize(self, grads, params, lam):
        super().penalize(grads, params, lam / self.case.n)


@catalogued(
    "cost_no_reg",
    summary="the cost is missing the penalty lam * sum_l ||W_l||^2",
    formula="J = (1/n) sum_i l_cross(x_i, y_i) + lam sum_l ||W_l||^2",
)
class CostNoReg(Computation):
    def cost(self, loss, params, lam):
        return loss


def _sum_sq(params, prefixes):
    return sum(np.sum(p**2) for name, p in params.items() if name.rstrip("0123456789") in prefixes)


@catalogued(
    "reg_biases",
    summary="the biases are regularized too (2 lam b in grad_b, or lam ||b||^2 in the cost)",
    formula="J = (1/n) sum_i l_cross + lam sum_l ||W_l||^2: the penalty is on the weight matrices only",
)
class RegBiases(Computation):
    def cost(self, loss, params, lam):
        return super().cost(loss, params, lam) + lam * _sum_sq(params, ("b",))

    def penalize(self, grads, params, lam):
        super().penalize(grads, params, lam)
        for name in params:
            if name.rstrip("0123456789") == "b":
                grads[name] = grads[name] + 2 * lam * params[name]


@catalogued(
    "reg_gamma_beta",
    summary="gamma and beta are regularized (2 lam gamma in grad_gamma, or their squares in the cost)",
    formula="J = (1/n) sum_i l_cross + lam sum_l ||W_l||^2: the penalty is on the weight matrices only",
    batch_norm=True,
)
class RegGammaBeta(Computation):
    def cost(self, loss, params, lam):
        return super().cost(loss, params, lam) + lam * _sum_sq(params, ("gamma", "beta"))

    def penalize(self, grads, params, lam):
        super().penalize(grads, params, lam)
        for name in params:
            if name.rstrip("0123456789") in ("gamma", "beta"):
                grads[name] = grads[name] + 2 * lam * params[name]


@catalogued(
    "reg_grad_no_2",
    summary="the penalty's gradient is lam W; the gradient of lam ||W||^2 is 2 lam W",
    formula="grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l",
)
class RegGradNo2(Computation):
    def penalize(self, grads, params, lam):
        super().penalize(grads, params, lam / 2)


@catalogued(
    "reg_grad_doubled",
    summary="the penalty's gradient is 4 lam W: 2 lam W added twice (once where the gradient is formed, "
    "again before the step), or the derivative of lam ||W||^2 taken as 2 * 2 lam W",
    formula="grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l",
)
class RegGradDoubled(Computation):
    def penalize(self, grads, params, lam):
        super().penalize(grads, params, 2 * lam)


@catalogued(
    "reg_grad_missing",
    summary="the penalty's gradient 2 lam W is missing from grad_W",
    formula="grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l",
)
class RegGradMissing(Computation):
    def penalize(self, grads, params, lam):
        pass


# -- backward ---------------------------------------------------------------------------------
@catalogued(
    "G_sign_flipped",
    summary="the gradient of the loss with respect to the scores has the wrong sign: Y - P instead of -(Y - P) = P - Y",
    formula="backward pass: G_batch = -(Y - P), then grad_W_k = (1/n) G_batch X_(k-1)^T + 2 lam W_k",
)
class GSignFlipped(Computation):
    def head(self, S, y, Y):
        P, loss, dS = super().head(S, y, Y)
        return P, loss, -dS


class _ScaledGrads(Computation):
    """Parameter gradients (their data terms) multiplied by ``factor(n)``, those of ``W`` and ``b`` too unless
    ``all_grads`` is False (the batch-norm parameters' only); ``G`` unchanged."""

    all_grads = True

    def factor(self, n):
        raise NotImplementedError

    def linear_back(self, G, cache, need_dX):
        dH, dW, db = super().linear_back(G, cache, need_dX)
        f = self.factor(len(G)) if self.all_grads else 1
        return dH, dW * f, db * f

    def bn_back(self, dZ, cache):
        dS, dgamma, dbeta = super().bn_back(dZ, cache)
        f = self.factor(len(dZ))
        return dS, dgamma * f, dbeta * f


@catalogued(
    "grad_not_divided_by_n",
    summary="the parameter gradients are not divided by n (G_batch X^T instead of (1/n) G_batch X^T), all of them "
    "or grad_gamma and grad_beta only",
    formula="grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l, grad_b_l = (1/n) G_batch 1_n, "
    "grad_gamma_l = (1/n) (G_batch .* S_hat_l) 1_n, grad_beta_l = (1/n) G_batch 1_n",
)
class GradNotDividedByN(_ScaledGrads):
    def factor(self, n):
        return n


@catalogued("grad_not_divided_by_n")
class GradNotDividedByNBnOnly(GradNotDividedByN):
    all_grads = False


@catalogued(
    "grad_divided_twice",
    summary="the parameter gradients are divided by n twice (G already holds the 1/n, and it is applied again: "
    "np.mean over the samples of a G that holds it), all of them or grad_gamma and grad_beta only",
    formula="grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l, grad_gamma_l = (1/n) (G_batch .* S_hat_l) 1_n, with "
    "G_batch = -(Y - P) not yet divided by n",
)
class GradDividedTwice(_ScaledGrads):
    def factor(self, n):
        return 1 / n


@catalogued("grad_divided_twice")
class GradDividedTwiceBnOnly(GradDividedTwice):
    all_grads = False


@catalogued(
    "relu_grad_at_zero",
    summary="the ReLU derivative is taken as 1 at 0 (mask S >= 0); it is 0 there: Ind(S > 0)",
    formula="backward pass: G_batch = G_batch .* Ind(X_l > 0), strictly greater",
)
class ReluGradAtZero(Computation):
    def relu_back(self, dH, layer):
        return np.where(layer["Z"] >= 0, dH, 0.0)


@catalogued(
    "relu_grad_missing",
    summary="the gradient is not masked by the ReLU derivative (or by Ind(H >= 0), which is always true)",
    formula="backward pass: G_batch = G_batch .* Ind(X_l > 0)",
)
class ReluGradMissing(Computation):
    def relu_back(self, dH, layer):
        return dH


@catalogued(
    "relu_grad_before_bn",
    summary="the ReLU mask is taken from S (before batch norm) or S_hat (before gamma and beta) instead of "
    "S_tilde, the ReLU's input",
    formula="backward pass: G_batch = G_batch .* Ind(X_l > 0), X_l = max(0, S_tilde_l)",
    batch_norm=True,
)
class ReluGradBeforeBn(Computation):
    def relu_back(self, dH, layer):
        return np.where(layer["S"] > 0, dH, 0.0)


@catalogued("relu_grad_before_bn")
class ReluGradFromSHat(Computation):
    def relu_back(self, dH, layer):
        return np.where(layer["bn"][0] > 0, dH, 0.0)


class _BnBackTerms(Computation):
    """Batch-norm backward with its two terms scaled, G1 - mean_term (1/n) (G1 1_n) 1_n^T
    - var_term (1/n) D .* (c 1_n^T): 1 and 1 is the formula, a mistake sets other factors."""

    mean_term = 1
    var_term = 1

    def bn_back(self, dZ, cache):
        S_hat, inv_std, gamma = cache
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        G = dZ * gamma
        # factors 0, +-1 and 2 are exact: the terms are those of the formula, bit for bit
        mean, var = G.mean(axis=0), S_hat * (G * S_hat).mean(axis=0)
        return inv_std * (G - self.mean_term * mean - self.var_term * var), dgamma, dbeta


@catalogued(
    "bn_back_no_mean_term",
    summary="batch-norm backward is missing the mean term -(1/n) (G1 1_n) 1_n^T",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackNoMeanTerm(_BnBackTerms):
    mean_term = 0


@catalogued(
    "bn_back_no_var_term",
    summary="batch-norm backward is missing the variance term -(1/n) D .* (c 1_n^T)",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackNoVarTerm(_BnBackTerms):
    var_term = 0


@catalogued(
    "bn_back_stats_constant",
    summary="batch-norm backward treats mu and var as constants (G .* sigma1 only): both the mean term and the "
    "variance term are missing",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackStatsConstant(Computation):
    def bn_back(self, dZ, cache):
        S_hat, inv_std, gamma = cache
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        return inv_std * dZ * gamma, dgamma, dbeta


@catalogued(
    "bn_back_mean_term_sign",
    summary="batch-norm backward adds the mean term (1/n) (G1 1_n) 1_n^T instead of subtracting it",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackMeanTermSign(_BnBackTerms):
    mean_term = -1


@catalogued(
    "bn_back_var_term_sign",
    summary="batch-norm backward adds the variance term (1/n) D .* (c 1_n^T) instead of subtracting it",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackVarTermSign(_BnBackTerms):
    var_term = -1


@catalogued(
    "bn_back_var_term_doubled",
    summary="batch-norm backward subtracts the variance term twice: 2 (1/n) D .* (c 1_n^T), the derivative of "
    "(var + eps)^(-1/2) taken without its 1/2 (grad_var = -1/2 sum (G .* gamma .* D) (var + eps)^(-3/2))",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackVarTermDoubled(_BnBackTerms):
    var_term = 2


@catalogued(
    "bn_back_sigma1_in_c",
    summary="batch-norm backward computes c with sigma1 = (var + eps)^(-1/2) where sigma2 = (var + eps)^(-3/2) belongs",
    formula=BN_BACKWARD,
    batch_norm=True,
)
class BnBackSigma1InC(Computation):
    def bn_back(self, dZ, cache):  # c = (G * sigma1 * D) 1_n: the last term loses a factor sigma1^2
        S_hat, inv_std, gamma = cache
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        G = dZ * gamma
        return inv_std * (G - G.mean(axis=0)) - S_hat * (G * S_hat).mean(axis=0) / inv_std, dgamma, dbeta


@catalogued(
    "bn_back_no_gamma",
    summary="the gradient is not multiplied by gamma before the batch-norm backward pass",
    formula="assignment 3, backward pass: G_batch = G_batch .* (gamma_l 1_n^T), then BatchNormBackPass",
    batch_norm=True,
)
class BnBackNoGamma(Computation):
    def bn_back(self, dZ, cache):
        S_hat, inv_std, gamma = cache
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        return super().bn_back(dZ, (S_hat, inv_std, np.ones_like(gamma)))[0], dgamma, dbeta


@catalogued(
    "grad_gamma_beta_swapped",
    summary="grad_gamma and grad_beta are swapped",
    formula="grad_gamma_l = (1/n) (G_batch .* S_hat_l) 1_n, grad_beta_l = (1/n) G_batch 1_n",
    batch_norm=True,
)
class GradGammaBetaSwapped(Computation):
    def bn_back(self, dZ, cache):
        dS, dgamma, dbeta = super().bn_back(dZ, cache)
        return dS, dbeta, dgamma


@catalogued(
    "weight_transposed_backward",
    summary="the gradient is propagated with W instead of its transpose (W G instead of W' G)",
    formula="backward pass: G_batch = W_l^T G_batch",
    square=True,
)
class WeightTransposedBackward(Computation):
    def linear_back(self, G, cache, need_dX):
        dH, dW, db = super().linear_back(G, cache, need_dX)
        H, W = cache
        if need_dX and _square(W):
            dH = G @ W.T
        return dH, dW, db


@catalogued(
    "update_during_backward",
    summary="each layer is updated during the backward pass, before the gradient is propagated through it "
    "(W_l' G_batch with W_l already stepped, or gamma_l stepped before G_batch .* gamma_l): the whole backward "
    "pass uses the parameters before the step",
    formula="backward pass: G_batch = W_l^T G_batch with the W_l of the forward pass; the step p - eta grad_p "
    "comes after every gradient is computed",
)
class UpdateDuringBackward(Computation):
    def linear_back(self, G, cache, need_dX):
        dH, dW, db = super().linear_back(G, cache, need_dX)
        H, W = cache
        if need_dX:
            lam, eta = float(self.inputs["lam"]), float(self.inputs["eta"])
            dH = G @ (W - eta * (dW + 2 * lam * W))
        return dH, dW, db


@catalogued("update_during_backward")
class UpdateDuringBackwardGammaToo(UpdateDuringBackward):
    def bn_back(self, dZ, cache):
        S_hat, inv_std, gamma = cache
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        stepped = gamma - float(self.inputs["eta"]) * dgamma
        return super().bn_back(dZ, (S_hat, inv_std, stepped))[0], dgamma, dbeta


@catalogued(
    "G_wrt_S_tilde",
    summary="G{l} holds the gradient with respect to S_tilde{l} or S_hat{l} (after the ReLU mask, before the "
    "batch-norm backward pass: G_batch, or G_batch .* gamma); G{l} is the gradient with respect to S{l}, after "
    "BatchNormBackPass",
    formula="G{l} = dJ/dS_l, S_l = W_l X_(l-1) + b_l the scores before batch norm",
    batch_norm=True,
)
class GradWrtSTilde(Computation):
    def shown_G(self, dH, dZ, dS):
        return dZ


@catalogued("G_wrt_S_tilde")
class GradWrtSHat(Computation):
    def shown_G(self, dH, dZ, dS):
        return dZ * self.inputs[f"gamma{self.layer}"]


@catalogued(
    "G_wrt_H",
    summary="G{l} holds the gradient with respect to H{l}, before the ReLU mask; G{l} is the gradient with "
    "respect to S{l}, after the mask (and after BatchNormBackPass)",
    formula="backward pass: G_batch = W_(l+1)^T G_batch, then G_batch = G_batch .* Ind(X_l > 0): G{l} comes after",
)
class GradWrtH(Computation):
    def shown_G(self, dH, dZ, dS):
        return dH


def _bn_back_pass(G, S, mu, var, eps, c_axis=0, mean_axis=0):
    """The assignments' BatchNormBackPass of ``G`` (already times gamma), klayer's layout (samples in
    rows), its two sums over the samples (``axis=0``) or, by mistake, over the units (``axis=1``)."""
    n = len(G)
    G1, G2, D = G * (var + eps) ** -0.5, G * (var + eps) ** -1.5, S - mu
    c = (G2 * D).sum(axis=c_axis, keepdims=True)
    return G1 - G1.sum(axis=mean_axis, keepdims=True) / n - D * c / n


class _BnBackKeepsS(Computation):
    """Keeps each layer's ``S`` and batch statistics, for a back pass written from them."""

    def batchnorm(self, S, gamma, beta, eps):
        r = super().batchnorm(S, gamma, beta, eps)
        self.__dict__.setdefault("kept", {})[self.layer] = (S, r.mu, r.var)
        return r


@catalogued(
    "bn_back_sum_wrong_axis",
    summary="a sum of batch-norm backward is taken over the units instead of over the samples: c = (G2 .* D) 1_n "
    "or G1 1_n summed along the wrong axis (one value per sample, broadcast over the units)",
    formula=BN_BACKWARD + "; 1_n sums over the n samples (np.sum(..., axis=1, keepdims=True) with d x n matrices)",
    batch_norm=True,
)
class BnBackCWrongAxis(_BnBackKeepsS):
    axes = (1, 0)

    def bn_back(self, dZ, cache):
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        S, mu, var = self.kept[self.layer]
        c_axis, mean_axis = self.axes
        return _bn_back_pass(dZ * cache[2], S, mu, var, self.eps, c_axis, mean_axis), dgamma, dbeta


class _BnBackStats(_BnBackKeepsS):
    """The forward pass right, BatchNormBackPass with the variance and eps of ``back_stats``."""

    def back_stats(self, var, eps, n):
        raise NotImplementedError

    def bn_back(self, dZ, cache):
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        S, mu, var = self.kept[self.layer]
        return _bn_back_pass(dZ * cache[2], S, mu, *self.back_stats(var, self.eps, len(S))), dgamma, dbeta


@catalogued("var_unbiased")
class VarUnbiasedBackOnly(_BnBackStats):
    def back_stats(self, var, eps, n):  # var(S, 0, 2) recomputed in BatchNormBackPass
        return var * n / (n - 1), eps


@catalogued("eps_outside_sqrt")
class EpsOutsideSqrtBackOnly(_BnBackStats):
    def back_stats(self, var, eps, n):  # sigma1 = 1 / (sqrt(var) + eps), sigma2 = sigma1^3
        return (np.sqrt(var) + eps) ** 2, 0.0


@catalogued("eps_missing")
class EpsMissingBackOnly(_BnBackStats):
    def back_stats(self, var, eps, n):
        return var, 0.0


@catalogued("bn_back_sum_wrong_axis")
class BnBackMeanWrongAxis(BnBackCWrongAxis):
    axes = (0, 1)


@catalogued("bn_back_sum_wrong_axis")
class BnBackBothWrongAxis(BnBackCWrongAxis):
    axes = (1, 1)


@catalogued(
    "bn_back_skipped",
    summary="BatchNormBackPass is left out (in one layer or all): G_batch .* (gamma 1_n^T), or G_batch as it is, "
    "is used as the gradient with respect to S",
    formula="assignment 3, backward pass: G_batch = G_batch .* (gamma_l 1_n^T), then G_batch = "
    "BatchNormBackPass(G_batch, S_l, mu_l, v_l), then grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l",
    batch_norm=True,
)
class BnBackSkipped(Computation):
    times_gamma, last_only = True, False

    def bn_back(self, dZ, cache):
        dS, dgamma, dbeta = super().bn_back(dZ, cache)
        if self.last_only and self.layer != self.case.n_layers - 1:
            return dS, dgamma, dbeta
        return dZ * cache[2] if self.times_gamma else dZ.copy(), dgamma, dbeta


@catalogued("bn_back_skipped")
class BnBackSkippedLastHidden(BnBackSkipped):
    last_only = True


@catalogued("bn_back_skipped")
class BnBackSkippedNoGamma(BnBackSkipped):
    times_gamma = False


@catalogued("bn_back_skipped")
class BnBackSkippedNoGammaLastHidden(BnBackSkipped):
    times_gamma, last_only = False, True


@catalogued(
    "bn_back_running_stats",
    summary="BatchNormBackPass uses the running averages mu_av, var_av (a variable reused for them) instead of "
    "the batch's mean and variance",
    formula=BN_BACKWARD + "; mu and var are this batch's, those of the forward pass",
    batch_norm=True,
)
class BnBackRunningStats(_BnBackKeepsS):
    updated = True

    def bn_back(self, dZ, cache):
        _, dgamma, dbeta = super().bn_back(dZ, cache)
        l, alpha = self.layer, float(self.inputs["bn_alpha"])
        S, mu, var = self.kept[l]
        mu_av, var_av = self.inputs[f"mu_av{l}_init"], self.inputs[f"var_av{l}_init"]
        if self.updated:
            mu_av, var_av = alpha * mu_av + (1 - alpha) * mu, alpha * var_av + (1 - alpha) * var
        return _bn_back_pass(dZ * cache[2], S, mu_av, var_av, self.eps), dgamma, dbeta


@catalogued("bn_back_running_stats")
class BnBackRunningInit(BnBackRunningStats):
    updated = False


@catalogued(
    "grad_gamma_times_gamma",
    summary="grad_gamma (and grad_beta) are computed from G_batch after it is multiplied by gamma; they take "
    "G_batch before: the product with gamma is for BatchNormBackPass",
    formula="assignment 3: grad_gamma_l = (1/n) (G_batch .* S_hat_l) 1_n, grad_beta_l = (1/n) G_batch 1_n, "
    "then G_batch = G_batch .* (gamma_l 1_n^T)",
    batch_norm=True,
)
class GradGammaTimesGamma(Computation):
    def bn_back(self, dZ, cache):
        dS, dgamma, dbeta = super().bn_back(dZ, cache)
        return dS, dgamma * cache[2], dbeta * cache[2]


@catalogued("grad_gamma_times_gamma")
class GradGammaOnlyTimesGamma(Computation):
    def bn_back(self, dZ, cache):
        dS, dgamma, dbeta = super().bn_back(dZ, cache)
        return dS, dgamma * cache[2], dbeta


@catalogued(
    "grad_W_wrong_input",
    summary="grad_W is formed with the layer's output X_l instead of its input X_(l-1) (an index off by one, "
    "unnoticed where the two have the same size)",
    formula="grad_W_l = (1/n) G_batch X_(l-1)^T + 2 lam W_l, X_(l-1) the input of layer l (X_0 = X)",
    square=True,
)
class GradWWrongInput(Computation):
    def relu(self, Z):
        H = super().relu(Z)
        self.__dict__.setdefault("outputs", {})[self.layer] = H
        return H

    def linear_back(self, G, cache, need_dX):
        dH, dW, db = super().linear_back(G, cache, need_dX)
        H_out = getattr(self, "outputs", {}).get(self.layer)
        if H_out is not None and H_out.shape == cache[0].shape:
            dW = G.T @ H_out
        return dH, dW, db


# -- the step ---------------------------------------------------------------------------------
@catalogued(
    "running_alpha_swapped",
    summary="the running averages are weighted the wrong way round: (1 - alpha) mu_av + alpha mu",
    formula="assignment 3: mu_av = alpha mu_av + (1 - alpha) mu, var_av = alpha var_av + (1 - alpha) var",
    batch_norm=True,
)
class RunningAlphaSwapped(Computation):
    def running(self, avg, stat, alpha, n, is_var):
        return super().running(avg, stat, 1 - alpha, n, is_var)


@catalogued(
    "running_init_batch",
    summary="the running averages start from this batch's statistics; this case starts them at "
    "mu_av{l}_init and var_av{l}_init",
    formula="mu_av = alpha mu_av + (1 - alpha) mu, starting from the case's mu_av{l}_init and var_av{l}_init",
    batch_norm=True,
)
class RunningInitBatch(Computation):
    def running(self, avg, stat, alpha, n, is_var):
        return super().running(stat, stat, alpha, n, is_var)


@catalogued(
    "running_init_zero",
    summary="the running averages start from zeros (var_av from 0 or 1, a fresh buffer's), or the old average is "
    "dropped (mu_av = (1 - alpha) mu); this case starts them at mu_av{l}_init and var_av{l}_init",
    formula="mu_av = alpha mu_av + (1 - alpha) mu, starting from the case's mu_av{l}_init and var_av{l}_init",
    batch_norm=True,
)
class RunningInitZero(Computation):
    var_start = 0.0

    def running(self, avg, stat, alpha, n, is_var):
        start = np.full_like(avg, self.var_start if is_var else 0.0)
        return super().running(start, stat, alpha, n, is_var)


@catalogued("running_init_zero")
class RunningInitZeroVarOne(RunningInitZero):
    var_start = 1.0


@catalogued(
    "running_var_unbiased",
    summary="the running variance is fed the unbiased batch variance n/(n-1) var (PyTorch's convention)",
    formula="var_av = alpha var_av + (1 - alpha) var, with the batch variance var of the forward pass (1/n)",
    batch_norm=True,
)
class RunningVarUnbiased(Computation):
    def running(self, avg, stat, alpha, n, is_var):
        return super().running(avg, stat * n / (n - 1) if is_var else stat, alpha, n, is_var)


@catalogued(
    "running_var_std",
    summary="the running variance is fed the batch's standard deviation sqrt(var) (or sqrt(var + eps)), not its "
    "variance var",
    formula="var_av = alpha var_av + (1 - alpha) var, with the batch variance var of the forward pass (1/n)",
    batch_norm=True,
)
class RunningVarStd(Computation):
    def running(self, avg, stat, alpha, n, is_var):
        return super().running(avg, np.sqrt(stat) if is_var else stat, alpha, n, is_var)


@catalogued("running_var_std")
class RunningVarStdEps(Computation):
    def running(self, avg, stat, alpha, n, is_var):
        return super().running(avg, np.sqrt(stat + self.eps) if is_var else stat, alpha, n, is_var)


@catalogued(
    "eval_batch_stats",
    summary="evaluation mode normalizes with the batch's statistics instead of the running averages",
    formula="assignment 3, testing: S_hat = diag(var_av + eps)^(-1/2) (S - mu_av 1_n^T)",
    batch_norm=True,
)
class EvalBatchStats(Computation):
    def eval_probs(self, params, running, X, eps=None):
        return super().eval_probs(params, None, X, eps)


@catalogued(
    "eval_running_before_update",
    summary="evaluation mode uses the running averages from before the update (mu_av{l}_init, var_av{l}_init)",
    formula="P_eval: batch norm with the running averages after the step, mu_av = alpha mu_av + (1 - alpha) mu",
    batch_norm=True,
)
class EvalRunningBeforeUpdate(Computation):
    def eval_probs(self, params, running, X, eps=None):
        if running is None:
            return super().eval_probs(params, running, X, eps)
        before = {
            f"{s}{l}": self.inputs[f"{s}_av{l}_init"] for l in range(1, self.case.n_layers) for s in ("mu", "var")
        }
        return super().eval_probs(params, before, X, eps)


@catalogued(
    "eval_eps_missing",
    summary="evaluation mode normalizes without eps: (S - mu_av) / sqrt(var_av)",
    formula="assignment 3, testing: S_hat = diag(var_av + eps)^(-1/2) (S - mu_av 1_n^T), with the case's eps",
    batch_norm=True,
)
class EvalEpsMissing(Computation):
    def eval_probs(self, params, running, X, eps=None):
        return super().eval_probs(params, running, X, eps=0.0)


@catalogued(
    "eval_before_step",
    summary="P_eval is computed with the parameters before the step; it is the network after the step",
    formula="P_eval: the network after one step (W_next, b_next, ...) in evaluation mode",
)
class EvalBeforeStep(Computation):
    def eval_params(self, before, after):
        return before


@catalogued(
    "update_wrong_sign",
    summary="the step adds the gradient (p + eta grad); gradient descent subtracts it",
    formula="W_l <- W_l - eta grad_W_l (and likewise b, gamma, beta)",
)
class UpdateWrongSign(Computation):
    def step(self, p, grad, eta):
        return super().step(p, grad, -eta)


CATALOGUE["step_in_place"] = Mistake(
    "step_in_place",
    "the step updates the case's arrays in place (W -= eta * grad_W, or mu_av updated, on the array read from the "
    "file or passed to your function), so the input saved or returned with your values is its value after the step",
    "W_next = W - eta grad_W into a new array (or on a copy: W = W.copy() before W -= eta * grad_W); the inputs keep "
    "the values read from the file",
)
CATALOGUE["step_missing"] = Mistake(
    "step_missing",
    "a parameter or running average is not updated: its value after the step is the one before (its update left "
    "out, or made on a copy that is dropped)",
    "W_next = W - eta grad_W, and likewise b, gamma, beta; mu_av = alpha mu_av + (1 - alpha) mu, likewise var_av",
)
CATALOGUE["reduced_wrong_axis"] = Mistake(
    "reduced_wrong_axis",
    "a sum or mean is taken over the units instead of over the samples (one value per sample, not per unit)",
    "grad_b_l = (1/n) G_batch 1_n, mu = (1/n) S 1_n: sums over the n samples (along the rows of the d x n matrices)",
)


PREPROCESSING_FORMULA = (
    "assignment 2, preprocessing: X = (X - mean_X) ./ std_X, mean_X and std_X of each feature over all 10000 images "
    "of data_batch_1, std with 1/N (np.std, MATLAB std(X, 1, 2))"
)
PREPROCESSING = {  # recognized by comparing X with these preprocessings (klayer.learn.cases), not by a computation
    "prep_std_unbiased": "X is standardized with the unbiased standard deviation (1/(N-1): MATLAB std(X, 0, 2), "
    "np.std(ddof=1)); it is 1/N",
    "prep_global_stats": "X is standardized with one mean and one standard deviation over all pixels; each of the "
    "3072 features has its own",
    "prep_stats_of_the_batch": "X is standardized with the mean and standard deviation of the case's n images; they "
    "are those of all 10000 images of data_batch_1",
    "prep_not_standardized": "X is not standardized (raw, divided by 255, or centred only)",
}
CATALOGUE.update({id: Mistake(id, summary, PREPROCESSING_FORMULA) for id, summary in PREPROCESSING.items()})


def applicable_mistakes(case) -> list[Mistake]:
    """The catalogued mistakes that can be computed for ``case``, in catalogue order."""
    return [m for m in CATALOGUE.values() if m.applies_to(case)]
