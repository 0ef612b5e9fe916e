"""The checker: a student's quantities against the reference, in the order of computation.

It stops its verdict at the first wrong quantity, then names the likely mistake by running every
catalogued mistake (:mod:`klayer.learn.mistakes`) on the case and keeping those that reproduce the
student's value there; an unmatched mismatch is described by its error pattern.

Error measure: for a quantity with reference ``r`` and student's value ``a`` (both in klayer's
layout), ``max |a - r| / scale``, where ``scale = max |r|`` (the largest entry), except for a bias
gradient, whose scale is the largest ``sum_i |G_ij|`` over the units (the sum it is made of: in
front of batch norm it is exactly 0 and only round-off remains). A quantity is right when the
error is at most ``tol`` (default 1e-4: float32 round-off stays below about 1e-6 on these cases,
and every catalogued mistake changes its first wrong quantity by 4e-4 or more).

``G{l}`` equal to ``n`` times the reference is accepted: it is the assignments' ``G_batch``, not
yet divided by n (the gradients formed from it are checked as they are).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
import sysconfig
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, KlayerError
from .cases import CASES, Case, case_inputs, cifar_preprocessing_variants, get_case
from .mistakes import CATALOGUE, Mistake, applicable_mistakes
from .vectors import (
    LAYOUTS,
    META,
    ROW_BASES,
    SCALARS,
    compute,
    describe_name,
    kind_of,
    quantity_names,
    read_values,
    split_name,
    to_layout,
)

__all__ = ["DEFAULT_TOL", "Row", "CheckResult", "check", "check_function", "load_function", "check_tol"]

BN_BASES = {"gamma", "beta", "mu", "var", "S_hat", "S_tilde", "mu_av", "var_av", "S_eval", "S_hat_eval"}

DEFAULT_TOL = 1e-4
MATCH_FACTOR = 10  # a mistake reproduces a value when within MATCH_FACTOR * tol of it
INPUT_TOL_FACTOR = 0.1  # inputs are read, not computed: right within tol / 10 (CIFAR's std with 1/(N-1) is 5e-5 off)
INPUTS_HINT = "it is an input of the case: read it from the vectors file (klayer vectors --case {case} --out FILE)"
CIFAR_X_HINT = (
    "X is each of the 3072 features standardized with its mean and standard deviation (1/N) over all 10000 "
    "images of data_batch_1, then the first n images; or read it from the vectors file "
    "(klayer vectors --case {case} --out FILE)"
)


@dataclass
class Row:
    """One compared quantity: its name, the student's shape, the error and the verdict."""

    name: str
    shape: tuple
    error: float | None
    ok: bool
    note: str = ""


@dataclass
class CheckResult:
    """What :func:`check` found.

    Attributes
    ----------
    case : str; layout : ``"klayer"`` or ``"assignment"`` (the student's); tol : float.
    rows : list of :class:`Row`, in the order of computation.
    first_wrong : name of the first wrong quantity, or None.
    pattern : one sentence describing how the first wrong quantity is wrong.
    mistake : the catalogued :class:`Mistake` that reproduces it, or None.
    also : ids of other catalogued mistakes that reproduce it as well.
    missing : names of the case not in the student's values.
    ignored : names in the student's values that the case does not have (with a suggestion).
    notes : conventions accepted (``G`` not divided by n, 1-based labels, ...).
    """

    case: str
    layout: str
    tol: float
    rows: list[Row]
    first_wrong: str | None = None
    pattern: str | None = None
    mistake: Mistake | None = None
    also: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every quantity given is right."""
        return self.first_wrong is None

    @property
    def exit_code(self) -> int:
        """``klayer check``'s exit status: 0 right, 1 wrong."""
        return 0 if self.passed else 1

    @property
    def mistake_id(self) -> str | None:
        """The likely mistake's id, or None."""
        return None if self.mistake is None else self.mistake.id

    @property
    def first_wrong_label(self) -> str | None:
        """``"S_hat in layer 2"`` for ``S_hat2``."""
        return None if self.first_wrong is None else describe_name(self.first_wrong)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mistake"] = (
            None
            if self.mistake is None
            else {"id": self.mistake.id, "summary": self.mistake.summary, "formula": self.mistake.formula}
        )
        d["passed"] = self.passed
        d["first_wrong_label"] = self.first_wrong_label
        for r in d["rows"]:
            r["shape"] = list(r["shape"])
            r["error"] = r["error"] if r["error"] is not None and np.isfinite(r["error"]) else None
        return d

    def format(self) -> str:
        """The report ``klayer check`` prints: a table, then the verdict on lines of their own."""
        case = CASES.get(self.case)
        lines = [
            f"case {self.case}" + (f": {case.description}" if case else ""),
            f"your layout: {self.layout}; tolerance {self.tol:.0e} on max |yours - reference| / scale",
            "",
            f"  {'quantity':<15} {'your shape':<13} {'rel. error':>10}  verdict",
        ]
        for r in self.rows:
            err = "-" if r.error is None else f"{r.error:.1e}"
            verdict = "OK" if r.ok else "WRONG"
            mark = "  <- first wrong" if r.name == self.first_wrong else ""
            note = f"  ({r.note})" if r.note else ""
            lines.append(f"  {r.name:<15} {str(r.shape):<13} {err:>10}  {verdict}{mark}{note}")
        lines.append("")
        n_wrong = sum(not r.ok for r in self.rows)
        inputs = case_inputs_names(case) if case else set()
        n_in = sum(q in inputs for q in self.missing)
        absent = [f"{n_in} of the case's inputs (given, so nothing to check)"] if n_in else []
        if len(self.missing) > n_in:
            absent.append(f"{_count(len(self.missing) - n_in, 'computed quantity')} (not checked)")
        lines.append(
            f"{_count(len(self.rows), 'quantity')} compared, {n_wrong} wrong"
            + (f"; not in your values: {', '.join(absent)}" if absent else "")
        )
        if self.ignored:
            lines.append(f"ignored (not names of this case): {', '.join(self.ignored)}")
        lines += [f"note: {n}" for n in self.notes]
        if self.passed:
            lines.append(
                "the 1 quantity you gave is right"
                if len(self.rows) == 1
                else f"all {len(self.rows)} quantities you gave are right"
            )
            return "\n".join(lines)
        lines.append(f"first wrong: {self.first_wrong} ({self.first_wrong_label})")
        if self.pattern:
            lines.append(f"pattern: {self.pattern}")
        if self.mistake is not None:
            lines.append(f"likely mistake: {self.mistake.id}: {self.mistake.summary}")
            lines.append(f"  the formula: {self.mistake.formula}")
            if self.also:
                lines.append(f"  (also consistent with: {', '.join(self.also)})")
        elif (formula := definition(self.first_wrong)) is not None:
            lines.append("no catalogued mistake reproduces it; compare your code with its definition:")
            lines.append(f"  {formula}")
        else:
            lines.append("no catalogued mistake reproduces it")
        return "\n".join(lines)


def _count(k: int, word: str) -> str:
    """``"1 quantity"``, ``"2 quantities"``."""
    return f"{k} {word}" if k == 1 else f"{k} {word[:-1]}ies" if word.endswith("y") else f"{k} {word}s"


DEFINITIONS = {  # base name -> its definition in the assignments' notation (column layout)
    "S": "S_l = W_l X_(l-1) + b_l 1_n^T, with X_0 = X and X_l = H_l",
    "mu": "mu_l = (1/n) S_l 1_n",
    "var": "var_l = (1/n) ((S_l - mu_l 1_n^T) .^ 2) 1_n",
    "S_hat": "S_hat_l = diag(var_l + eps)^(-1/2) (S_l - mu_l 1_n^T)",
    "S_tilde": "S_tilde_l = gamma_l .* S_hat_l + beta_l",
    "H": "H_l = max(0, S_tilde_l) (without batch norm max(0, S_l))",
    "P": "P = softmax(S_k): exp(s) / (1^T exp(s)) for each sample (column)",
    "loss": "loss = (1/n) sum_i -log(y_i^T p_i)",
    "cost": "cost = loss + lam sum_l ||W_l||^2",
    "G": "G_k = (P - Y) / n; G_l = dJ/dS_l: W_(l+1)^T G_(l+1), times Ind(H_l > 0), then gamma_l and BatchNormBackPass",
    "grad_W": "grad_W_l = G_l X_(l-1)^T + 2 lam W_l (G_l holding the 1/n)",
    "grad_b": "grad_b_l = G_l 1_n",
    "grad_gamma": "grad_gamma_l = (1/n) (G_batch .* S_hat_l) 1_n, G_batch after the ReLU mask",
    "grad_beta": "grad_beta_l = (1/n) G_batch 1_n, G_batch after the ReLU mask",
    "mu_av": "mu_av_l = alpha mu_av_l_init + (1 - alpha) mu_l",
    "var_av": "var_av_l = alpha var_av_l_init + (1 - alpha) var_l",
    "S_eval": "S_eval_l = W_l_next X_(l-1) + b_l_next 1_n^T, with X_0 = X and X_l = max(0, gamma_l_next .* "
    "S_hat_eval_l + beta_l_next): evaluation mode, the network after the step",
    "S_hat_eval": "S_hat_eval_l = diag(var_av_l + eps)^(-1/2) (S_eval_l - mu_av_l 1_n^T): the running averages "
    "after the step, and the case's eps",
    "P_eval": "P_eval: the network after the step, batch norm with diag(var_av + eps)^(-1/2) (S - mu_av 1_n^T)",
}


def definition(name: str | None) -> str | None:
    """The definition of a computed quantity (None for an input)."""
    if name is None:
        return None
    base, _, suffix = split_name(name)
    if suffix == "_next":
        return f"{name} = {name[: -len(suffix)]} - eta grad_{name[: -len(suffix)]}"
    return DEFINITIONS.get(base)


# -- comparing -----------------------------------------------------------------------------------
def _scales(ref: dict, case: Case) -> dict:
    """The scale each quantity's error is measured against (see the module docstring)."""
    scales = {name: float(np.max(np.abs(a))) if np.size(a) and name != "y" else 1.0 for name, a in ref.items()}
    for l in range(1, case.n_layers + 1):
        terms = float(np.max(np.abs(ref[f"G{l}"]).sum(axis=0)))
        scales[f"grad_b{l}"] = max(scales[f"grad_b{l}"], terms)
    return {name: max(s, 1e-12) for name, s in scales.items()}


def _error(a, r, scale) -> float:
    if a.shape != r.shape:
        return float("inf")
    if np.isnan(a).any():
        return float("nan")
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - r), initial=0.0) / scale)


def _g_error(name, a, r, scale, n):
    """Error of ``a``, and whether it holds the reference or (for ``G{l}``) n times it.

    The convention is the one nearer the best factor ``c`` in ``a ~ c r`` (nearer n than 1: above
    sqrt(n) in size), so that ``-r`` is a sign flip of klayer's ``G``, not a wrong ``G_batch``.
    """
    err = _error(a, r, scale)
    if name.startswith("G") and name[1:].isdigit() and a.shape == r.shape and np.all(np.isfinite(a)):
        rr = float(np.sum(r * r))
        if rr > 0 and abs(float(np.sum(a * r)) / rr) > np.sqrt(n):
            return _error(a, n * r, n * scale), True
    return err, False


# -- reading the student's values --------------------------------------------------------------
def _numeric(value):
    """``(float64 array, None)``, or ``(None, why it is not numbers)``; text is never parsed."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except ValueError:  # nested lists of different lengths
        return None, "rows of different lengths (a ragged nested list): every row needs the same length"
    if a.dtype.kind in "USO" and any(isinstance(x, str | bytes) for x in np.ravel(a).tolist()):
        return None, "text, not numbers (save the numbers themselves, not strings)"
    try:
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None, "not a numeric array"
    if np.iscomplexobj(a):
        return None, "not a numeric array (complex)"
    return a.astype(np.float64), None


def _as_array(value):
    """A numeric float64 array, or None."""
    return _numeric(value)[0]


def _refuse_unusable(raw: dict, path) -> None:
    """Raise for a file entry named like a quantity (of any case) that does not hold numbers."""
    known = {q for c in CASES.values() if c.source == "random" for q in quantity_names(c)}
    for name, value in raw.items():
        if name in known:
            why = _numeric(value)[1]
            if why is not None:
                raise DataError(path, f"{name}: {why}")


def _meta(raw: dict, key: str):
    """``case_name`` or ``layout`` as a str (a 0-d text array read from a .npz included), or None."""
    x = raw.get(key)
    if isinstance(x, np.ndarray) and x.dtype.kind in "US" and x.size == 1:
        x = str(x.ravel()[0])
    return x if isinstance(x, str) else None


def _infer_case(raw: dict) -> Case:
    """The case a student's values belong to: their ``case_name``, else the one whose shapes fit."""
    name = _meta(raw, "case_name")
    if name is not None:
        if name not in CASES:
            raise KlayerError(f"the values' case_name {name!r} is not a case; the cases are {', '.join(CASES)}")
        return CASES[name]
    fits = []
    for case in CASES.values():
        names = set(quantity_names(case))
        given = [q for q in raw if q in names]
        if not given or any(q.startswith(("gamma", "S_hat", "S_eval", "mu", "var")) for q in raw if q not in names):
            continue
        shapes = _expected_shapes(case)
        if all(_as_array(raw[q]) is not None and np.size(raw[q]) == np.prod(shapes[q], dtype=int) for q in given):
            fits.append((len(given), case))
    if not fits:
        every = {q: None for c in CASES.values() for q in quantity_names(c)}
        if not any(q in every for q in raw):
            got = ", ".join(_suggest(q, every) for q in raw if q not in META) or "nothing"
            raise KlayerError(f"none of the values is a quantity of any case (got {got})")
        raise KlayerError("cannot tell which case these values are for; give the case (--case NAME)")
    best = max(k for k, _ in fits)
    top = [c for k, c in fits if k == best]
    if len(top) > 1:  # the same shapes: keep the case whose reference the values agree with most
        agree = {c.name: _agreement(raw, c) for c in top if c.source != "cifar"}
        most = max(agree.values(), default=0)
        top = [c for c in top if agree.get(c.name) == most] if most else top
    if len(top) > 1:
        raise KlayerError(f"these values fit the cases {', '.join(c.name for c in top)}; give one with --case NAME")
    return top[0]


def _agreement(raw, case) -> int:
    """How many of the values are right for ``case`` (a small case: computed in a moment)."""
    ref = compute(case)
    rows = _compare(raw, ref, case, _detect_layout(raw, ref, None), DEFAULT_TOL)[0]
    return sum(row.ok for row in rows)


def _expected_shapes(case: Case) -> dict:
    """Every name's shape in klayer's layout, without computing anything (nor loading data)."""
    sizes, n = case.sizes, case.n
    shapes = {}
    for name in quantity_names(case):
        base, l, _ = split_name(name)
        if name in ("loss", "cost") or name in SCALARS:
            shapes[name] = ()
        elif name == "y":
            shapes[name] = (n,)
        elif base in ("W", "grad_W"):
            shapes[name] = (sizes[l], sizes[l - 1])
        elif base in ROW_BASES:
            shapes[name] = (n, sizes[l] if l else case.d if name == "X" else case.C)
        else:
            shapes[name] = (sizes[l],)
    return shapes


def _detect_layout(raw: dict, ref: dict, declared) -> str:
    """``"assignment"`` when the data matrices have one column per sample, else ``"klayer"``."""
    if isinstance(declared, str) and declared in LAYOUTS:
        return declared
    votes = {"klayer": 0, "assignment": 0}
    for name, r in ref.items():
        if name in raw and kind_of(name, r) == "rows" and r.shape[0] != r.shape[1]:
            shape = np.shape(a) if (a := _as_array(raw[name])) is not None else None
            if shape == r.shape:
                votes["klayer"] += 1
            elif shape == r.shape[::-1]:
                votes["assignment"] += 1
    return "assignment" if votes["assignment"] > votes["klayer"] else "klayer"


def _to_klayer(a: np.ndarray, shape: tuple, kind: str, layout: str):
    """``a`` as an array of klayer's ``shape``, or None when its shape does not say so."""
    if kind == "rows":
        a = a.T if layout == "assignment" and a.ndim == 2 else a
        return a if a.shape == shape else None
    if kind == "matrix":
        return a if a.shape == shape else None
    if a.size == int(np.prod(shape)) and sum(s > 1 for s in a.shape) <= 1:  # vectors in any orientation
        return a.reshape(shape)
    return None


def _layout_words(layout):
    return "one row per sample" if layout == "klayer" else "one column per sample"


def _shape_problem(name, a_shape, ref_shape, kind, layout, n) -> tuple[str, str | None]:
    """A one-line explanation of a shape that does not fit, and a catalogued mistake id if one fits."""
    expected = ref_shape[::-1] if kind == "rows" and layout == "assignment" else ref_shape
    size = int(np.prod(a_shape))
    head = f"shape {a_shape}, expected {expected}"
    if kind == "scalar":
        return f"{head}: a single number", None
    if kind == "labels":
        return f"{head}: one label per sample", None
    if kind == "rows":
        width = ref_shape[1]
        if a_shape == expected[::-1]:
            return f"{head} in {layout} layout ({_layout_words(layout)}): it is transposed", None
        if size == width:
            return f"{head}: the batch axis is missing (one value per unit, not one per sample and unit)", None
        if size == n and width != n:
            return f"{head}: one value per sample: reduced over the units", "reduced_wrong_axis"
        if size == n * width:
            return f"{head}: the right number of entries in the wrong shape (flattened or reshaped?)", None
        return f"{head} ({_layout_words(layout)})", None
    if kind == "matrix":
        if a_shape == ref_shape[::-1]:
            return (
                f"{head}: it is transposed (a weight matrix is m x d, one row per output unit, in both layouts: "
                "S = X W^T + b in klayer's, S = W X + b in the assignments')"
            ), None
        return f"{head} (m x d: one row per output unit)", None
    m = ref_shape[0]
    if size == n and m != n:
        return (
            f"{head}: one value per sample instead of one per unit: summed or averaged over the wrong axis",
            "reduced_wrong_axis",
        )
    if len(a_shape) == 2 and size == n * m:
        return f"{head}: one value per sample and unit: the sum or mean over the samples is missing", None
    return f"{head} (one value per unit)", None


# -- patterns ----------------------------------------------------------------------------------
def _axis_words(name, kind):
    """What the rows and columns of a quantity are, in klayer's layout."""
    if kind == "labels":
        return "sample", None
    if kind == "rows":
        cols = "feature" if name == "X" else "class" if name in ("Y", "P", "P_eval") else "unit"
        return "sample", cols
    if kind == "matrix":
        return "output unit", "input"
    return "unit", None


def _factor_words(c, n):
    special = (
        (n, f"a factor n = {n}: a missing 1/n?"),
        (1 / n, f"a factor 1/n = 1/{n}: 1/n applied twice?"),
        (2, "a factor 2"),
        (0.5, "a factor 1/2"),
        (-1, "a factor -1: the sign flipped"),
        (1 / np.log(2), "a factor 1/ln 2 = 1.443: log2 instead of the natural log?"),
        (1 / np.log(10), "a factor 1/ln 10 = 0.4343: log10 instead of the natural log?"),
    )
    for value, words in special:
        if abs(c - value) <= 1e-6 * abs(value):
            return words
    if c < 0:
        return f"a constant factor {c:.4g}: the sign flipped, and a factor {-c:.4g}"
    return f"a constant factor {c:.4g}"


def _special_factor(c, n) -> bool:
    return not _factor_words(c, n).startswith("a constant factor")


def _pattern(name, a, r, scale, tol, kind, n, layout="klayer") -> str:
    """One sentence describing how ``a`` differs from the reference ``r`` (same shape, klayer's
    layout); rows and columns are named as they are in the student's ``layout``."""
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        return f"{bad} of {a.size} entries are NaN or infinite (a division by zero, or log of 0?)"

    def close(b):
        return _error(a, b, scale) <= tol

    if a.size == 1:  # two numbers always differ by some factor: name it only when it means something
        yours, theirs = float(a.ravel()[0]), float(r.ravel()[0])
        if theirs and _special_factor(yours / theirs, n):
            return f"yours {yours:.6g}, reference {theirs:.6g}: off by {_factor_words(yours / theirs, n)}"
        ratio = f", yours / reference = {yours / theirs:.4g}" if theirs else ""
        return f"yours {yours:.6g}, reference {theirs:.6g} (yours - reference = {yours - theirs:.4g}{ratio})"

    if a.ndim == 2 and a.shape[0] == a.shape[1] and close(r.T):
        return "it is the reference transposed"
    rr = float(np.sum(r * r))
    if rr > 0:
        c = float(np.sum(a * r)) / rr
        if close(c * r):
            return f"off by {_factor_words(c, n)} (yours = {c:.4g} x reference)"
    if a.size > 1:
        d = float(np.mean(a - r))
        if close(r + d):
            return f"off by a constant offset {d:.4g} (yours = reference + {d:.4g})"
    words = ("columns", "rows") if kind == "rows" and layout == "assignment" else ("rows", "columns")
    bad = np.abs(a - r) > tol * scale
    if a.ndim == 2:  # one offset per column (axis 0 averaged), then per row, in more than one of them
        for axis in (0, 1):
            if bad.any(axis=axis).sum() > 1 and close(r + np.mean(a - r, axis=axis, keepdims=True)):
                what = _axis_words(name, kind)[1 - axis]
                bias = ": a bias added or left out?" if split_name(name)[0] == "S" and what == "unit" else ""
                return f"off by an offset per {what} (yours = reference + one value per {what}{bias})"
        for axis, word in ((0, words[0]), (1, words[1])):
            A, R = (a, r) if axis == 0 else (a.T, r.T)
            if len(A) > 64:
                continue
            dist = np.abs(A[:, None, :] - R[None, :, :]).max(axis=2) / scale  # dist[i, j]: row i of yours, j of ref
            match = [int(np.argmin(d)) if d.min() <= tol else None for d in dist]
            if None not in match and match != list(range(len(A))) and sorted(match) == list(range(len(A))):
                what = _axis_words(name, kind)[axis]
                return f"the right values in a different order of {what}s ({word} permuted)"
    if a.size > 1 and not bad.all():
        row_word, col_word = _axis_words(name, kind)
        if a.ndim == 2:
            rows, cols = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
            if len(cols) < a.shape[1] and col_word:
                return (
                    f"wrong only for {_plural(col_word)} {_list1(cols)} of {a.shape[1]} (1-based); the others are right"
                )
            if len(rows) < a.shape[0]:
                return (
                    f"wrong only for {_plural(row_word)} {_list1(rows)} of {a.shape[0]} (1-based); the others are right"
                )
        elif a.ndim == 1:
            return f"wrong only for {_plural(row_word)} {_list1(np.flatnonzero(bad))} of {a.size} (1-based)"
        return f"wrong in {int(bad.sum())} of {a.size} entries"
    return "wrong everywhere, with no simple pattern (not a factor, offset, transposition or permutation)"


def _plural(word):
    """``"unit(s)"``, ``"class(es)"``."""
    return f"{word}(es)" if word.endswith("s") else f"{word}(s)"


def _list1(idx):
    idx = [int(i) + 1 for i in idx]
    return ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")


# -- the check ---------------------------------------------------------------------------------
def _compare(raw, ref, case, layout, tol):
    """Rows of the table, the student's values in klayer's layout, notes, and shape problems."""
    scales, n, inputs = _scales(ref, case), case.n, case_inputs_names(case)
    rows, student, notes, shape_hints = [], {}, [], {}
    g_factor = False
    for name in (q for q in ref if q in raw):
        r = ref[name]
        kind = kind_of(name, r)
        a, why = _numeric(raw[name])
        if a is None:
            rows.append(Row(name, (), None, False, why))
            continue
        k = _to_klayer(a, r.shape, kind, layout)
        if k is None:
            note, hint = _shape_problem(name, a.shape, r.shape, kind, layout, n)
            rows.append(Row(name, a.shape, None, False, note))
            shape_hints[name] = (a, hint)
            continue
        student[name] = k
        if kind == "labels":
            ok = np.array_equal(k, r)
            if not ok and np.array_equal(k, r + 1):
                ok = True
                notes.append("y holds 1-based labels (MATLAB's); accepted")
            rows.append(Row(name, a.shape, float(np.mean(k != r)), ok, "" if ok else "labels differ"))
            continue
        err, times_n = _g_error(name, k, r, scales[name], n)
        ok = err <= (tol * INPUT_TOL_FACTOR if name in inputs else tol)
        g_factor |= times_n and ok
        note = ("n x reference: G_batch, accepted" if ok else "compared as G_batch, n x reference") if times_n else ""
        rows.append(Row(name, a.shape, err, ok, note))
    if g_factor:
        notes.append(
            f"G holds the assignments' G_batch, n = {n} times the gradient of the cost with respect to S "
            "(klayer's G); accepted"
        )
    return rows, student, notes, shape_hints


def check(values, case=None, *, layout: str = "auto", tol: float = DEFAULT_TOL, data_root=None) -> CheckResult:
    """Compare a student's quantities with the reference of a case.

    Parameters
    ----------
    values : dict name -> array-like (the names of :mod:`klayer.learn.vectors`; any subset), or
        the path of a ``.npz``, ``.mat`` or ``.json`` file holding them.
    case : the case's name (default: the file's ``case_name``, else the case whose shapes fit).
    layout : ``"auto"`` (from the data matrices' shapes), ``"klayer"`` or ``"assignment"``.
    tol : float, the largest error counted as right (see the module docstring).
    data_root : where CIFAR-10 is (the CIFAR case only).

    Returns
    -------
    CheckResult; its ``first_wrong``, ``mistake`` and ``pattern`` say what is wrong.

    Raises
    ------
    KlayerError
        Unreadable values, an unknown case, or no quantity of the case among the values.
    """
    check_tol(tol)
    if isinstance(values, str | os.PathLike):
        raw = read_values(values)
        _refuse_unusable(raw, values)
    else:
        raw = dict(values)
        keys = [k for k in raw if not isinstance(k, str)]
        if keys:
            raise KlayerError(f"the values' key {keys[0]!r} is not a quantity name (str)")
    if layout not in ("auto", *LAYOUTS):
        raise KlayerError(f"unknown layout {layout!r}; use auto, klayer or assignment")
    case = get_case(case) if case is not None else _infer_case(raw)
    ref = compute(case, data_root=data_root)
    names = [q for q in ref if q in raw]
    ignored = [_suggest(q, ref, case) for q in raw if q not in ref and q not in META]
    given_layout = _meta(raw, "layout") if layout == "auto" else layout
    if not names:
        other = _other_case(raw, case, given_layout, tol, [])
        raise KlayerError(
            f"none of the values is a quantity of case {case.name} (got {', '.join(ignored) or 'nothing'})"
            + (f"; {other}" if other else "")
        )
    layout = _detect_layout(raw, ref, given_layout)
    rows, student, notes, shape_hints = _compare(raw, ref, case, layout, tol)
    zero = [q for q in raw if q not in ref and split_name(q)[1] == 0 and f"{_layer_moved(q, 1)}" in ref]
    if zero:
        notes.insert(
            0,
            f"your names number the layers from 0 ({', '.join(zero[:3])}{', ...' if len(zero) > 3 else ''}); the "
            f"case's number them from 1 to {case.n_layers}, as the assignments do: add 1 to each layer number "
            "(your values named for layer 1 are compared with the case's layer 1, which is your second)",
        )
    scales, n = _scales(ref, case), case.n
    result = CheckResult(
        case.name, layout, tol, rows, missing=[q for q in ref if q not in raw], ignored=ignored, notes=notes
    )
    first = next((row for row in rows if not row.ok), None)
    if first is None:
        return result
    if other := _other_case(raw, case, given_layout, tol, rows):
        notes.insert(0, other)
    q = first.name
    result.first_wrong = q
    if q in shape_hints:
        a, hint = shape_hints[q]
        if kind_of(q, ref[q]) == "vector" and _unit_plus_sample(a, ref[q].size, n, tol):
            first.note = (
                f"{first.note.split(':')[0]}: one value per unit plus one per sample: a sum or mean taken over the "
                "units (one value per sample), broadcast against a vector of the units"
            )
            hint = "reduced_wrong_axis"
        result.pattern = first.note
        found = _match(case, ref, raw, student, rows, q, tol, layout, shape=a)
        if not found and hint:
            found = [CATALOGUE[hint]]
    elif q not in student:
        result.pattern = first.note
        found = []
    else:
        kind = kind_of(q, ref[q])
        times = n if "G_batch" in first.note else 1  # the assignments' G_batch: compare with n x reference
        result.pattern = _pattern(q, student[q], times * ref[q], times * scales[q], tol, kind, n, layout)
        if q == "X" and case.source == "cifar":  # the student's own preprocessing: say what differs
            found = _preprocessing_match(case, student[q], scales[q], tol, data_root)
            if not found:
                result.pattern += "; " + CIFAR_X_HINT.format(case=case.name)
        elif (other := _other_side_of_step(q, student, ref, scales, tol, n)) is not None:
            given = q in case_inputs_names(case)
            result.pattern = f"yours is {other}, its value {'after' if given else 'before'} the step"
            found = [CATALOGUE["step_in_place" if given else "step_missing"]]
        elif q in case_inputs_names(case):
            result.pattern += "; " + INPUTS_HINT.format(case=case.name)
            found = _match(case, ref, raw, student, rows, q, tol, layout)
        else:
            found = _match(case, ref, raw, student, rows, q, tol, layout)
            if not found and (same := _same_as(q, student, ref, case, scales, tol)) is not None:
                label = "" if describe_name(same) == same else f" ({describe_name(same)})"
                result.pattern = f"yours is {same}{label}, not {q}: saved under another name, or computed as {same} is?"
    if found:
        result.mistake, result.also = found[0], [m.id for m in found[1:]]
    return result


def _same_as(q, student, ref, case, scales, tol) -> str | None:
    """The first other computed quantity whose reference the student's ``q`` holds (and ``q``'s reference does
    not): a value saved under another name, or a layer's index off by one; else None."""
    inputs, a = case_inputs_names(case), student[q]
    for other, r in ref.items():
        if other == q or other in inputs or r.shape != a.shape:
            continue
        if _close(other, a, r, scales, tol, case.n) and not _close(other, ref[q], r, scales, tol, case.n):
            return other
    return None


def _unit_plus_sample(a, m, n, tol) -> bool:
    """Whether ``a`` (m x n or n x m) is a column plus a row, ``u_i + v_j`` (not constant along either axis): a
    value of one per sample broadcast against one of one per unit (MATLAB's implicit expansion, numpy's
    broadcasting), as ``gamma - eta * sum(G .* S_hat)`` with the sum over the units gives."""
    if a.ndim != 2 or sorted(a.shape) != sorted((m, n)) or m == 1 or n == 1 or not np.all(np.isfinite(a)):
        return False
    scale = max(float(np.max(np.abs(a))), 1e-12)
    rows, cols = a - a[:, :1], a - a[:1, :]
    separable = np.max(np.abs(rows - rows[:1]), initial=0.0) <= tol * scale
    return bool(separable and np.ptp(rows) > tol * scale and np.ptp(cols) > tol * scale)


def _step_names(q):
    """``(before, after)``: the input the step updates and its value after the step, when ``q`` is either
    (``W1``, ``W1_next``; ``mu_av1_init``, ``mu_av1``); else None."""
    base, l, suffix = split_name(q)
    if base in ("W", "b", "gamma", "beta") and suffix in ("", "_next"):
        return f"{base}{l}", f"{base}{l}_next"
    if base in ("mu_av", "var_av") and suffix in ("", "_init"):
        return f"{base}{l}_init", f"{base}{l}"
    return None


def _other_side_of_step(q, student, ref, scales, tol, n) -> str | None:
    """The other side of the step when the student's ``q`` holds it and the step changes it: an input that holds
    its value after the step (the reference's or the student's own: updated in place), or a value after the step
    that holds the input (not updated); else None."""
    names = _step_names(q)
    if names is None or any(x not in ref for x in names):
        return None
    before, after = names
    if _close(after, ref[before], ref[after], scales, tol, n):
        return None
    other = after if q == before else before
    sources = (ref, student) if q == before else (ref,)
    return other if any(other in v and _close(after, student[q], v[other], scales, tol, n) for v in sources) else None


def _other_case(raw, case, layout, tol, rows) -> str | None:
    """``"these values ...: did you mean --case NAME?"`` when the values fit another case better.

    Another case fits better when its reference agrees with more of the values than ``case``'s does
    (``rows``: the comparison with ``case``), or, when none agrees, when the values have its
    shapes and not those of ``case``, or hold more of its names. The CIFAR case is judged by shapes
    only (its reference needs the data set).
    """
    right_here = sum(row.ok for row in rows)
    here_names = set(quantity_names(case))
    fits_here = _shapes_fit(raw, case)
    declared = _meta(raw, "case_name")
    best = None
    for other in CASES.values():
        names = set(quantity_names(other))
        given = [q for q in raw if q in names]
        if other is case or not given or not _shapes_fit(raw, other):
            continue
        right = None
        if other.source != "cifar":
            ref = compute(other)
            right = sum(row.ok for row in _compare(raw, ref, other, _detect_layout(raw, ref, layout), tol)[0])
        more_names = len(given) > len(here_names.intersection(raw))
        if right is not None and right > right_here:
            rank = (2 if right == len(given) else 1, right, other.name == declared)
        elif right_here == 0 and (not fits_here or more_names):
            rank = (0, len(given), other.name == declared)
        else:
            continue
        if best is None or rank > best[0]:
            best = (rank, other, right, len(given))
    if best is None:
        return None
    (kind, *_), other, right, n_given = best
    yours = ", the case_name in your values" if other.name == declared else ""
    if kind == 2:
        what = f"these values are right for case {other.name}{yours} (all {n_given} of its quantities you gave)"
    elif kind == 1:
        what = f"{right} of your {n_given} values are right for case {other.name}{yours} ({right_here} for {case.name})"
    else:
        what = f"these values fit case {other.name}{yours} (its names and shapes)"
    return f"{what}: did you mean --case {other.name}?"


def _shapes_fit(raw, case) -> bool:
    """Whether every value named like a quantity of ``case`` has that quantity's number of entries."""
    shapes = _expected_shapes(case)
    given = [q for q in raw if q in shapes]
    return bool(given) and all(
        (a := _as_array(raw[q])) is not None and a.size == np.prod(shapes[q], dtype=int) for q in given
    )


def check_tol(tol) -> float:
    """``tol`` as a float, or a :class:`KlayerError` unless it is a finite number above 0."""
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise KlayerError(f"the tolerance must be a number, got {tol!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise KlayerError(f"the tolerance must be a finite number above 0 (e.g. {DEFAULT_TOL:g}), got {tol!r}")
    return value


def case_inputs_names(case) -> set:
    """The names of a case's inputs."""
    case = get_case(case)
    names = {"X", "Y", "y", "lam", "eta", "eps", "bn_alpha", *case.param_names()}
    if case.batch_norm:
        names |= {f"{s}_av{l}_init" for l in range(1, case.n_layers) for s in ("mu", "var")}
    return names


def _squash(name: str) -> str:
    """``"Shat1"``, ``"S_hat1"`` and ``"s_hat1"`` alike; ``dW1`` and ``gradW1`` as ``grad_W1``."""
    key = name.lower().replace("_", "")
    for prefix in ("grad", "d"):
        if key.startswith(prefix) and key[len(prefix) :][:1].isalpha():
            return "grad" + key[len(prefix) :]
    return key


_BN_SQUASHED = {  # every batch-norm name of any layer up to 9, squashed
    _squash(f"{prefix}{base}{l}{suffix}")
    for base in BN_BASES
    for prefix in ("", "grad_")
    for l in range(1, 10)
    for suffix in ("", "_next", "_init")
}


def _layer_moved(name: str, by: int) -> str:
    """``name`` with its layer number plus ``by``: ``"W0_next"``, 1 -> ``"W1_next"``."""
    base, l, suffix = split_name(name)
    return name if l is None else f"{base}{l + by}{suffix}"


def _suggest(name, ref, case=None):
    """``name``, with the name of ``ref`` it was probably meant to be, or why it is not one."""
    if split_name(name)[1] == 0 and _layer_moved(name, 1) in ref:
        return f"{name} (layers are numbered from 1: {_layer_moved(name, 1)}?)"
    squashed = {}
    for q in ref:
        squashed.setdefault(_squash(q), q)
    close = [squashed[_squash(name)]] if _squash(name) in squashed else []
    if case is not None and not close:
        bn_name = _squash(name) in _BN_SQUASHED  # Shat1, dbeta1, muav1 as well as S_hat1, grad_beta1, mu_av1
        base, l, _ = split_name(name)
        if bn_name or base.removeprefix("grad_") in BN_BASES:
            if not case.batch_norm:
                return f"{name} (batch norm: case {case.name} has none)"
            if l is not None and l >= case.n_layers:
                return f"{name} (case {case.name} has batch norm in the hidden layers 1 to {case.n_layers - 1} only)"
        if l is not None and l > case.n_layers and f"{base}1" in squashed.values():
            return f"{name} (case {case.name} has {case.n_layers} layers)"
        if re.fullmatch(r"grads\d+", _squash(name)) and f"G{l}" in ref:
            return f"{name} (did you mean G{l}? it is the gradient of the cost with respect to S{l})"
        if name in {q for c in CASES.values() for q in quantity_names(c)}:
            return f"{name} (not a quantity of case {case.name}: another case's?)"
    close = close or difflib.get_close_matches(name, list(ref), n=1, cutoff=0.7)
    return f"{name} (did you mean {close[0]}?)" if close else name


def _preprocessing_match(case, X, scale, tol, data_root) -> list[Mistake]:
    """The catalogued preprocessing mistakes whose ``X`` is the student's."""
    variants = cifar_preprocessing_variants(case, data_root)
    return [
        CATALOGUE[m] for m, Xs in variants.items() if any(_error(X, V, scale) <= tol * INPUT_TOL_FACTOR for V in Xs)
    ]


def _match(case, ref, raw, student, rows, q, tol, layout, shape=None) -> list[Mistake]:
    """Catalogued mistakes reproducing the student's value of ``q``, best first.

    A mistake qualifies when it changes ``q`` by more than ``tol`` to the student's value (within
    ``MATCH_FACTOR * tol``, and within half its change: nearer it than the reference) and disagrees with at most
    one of the quantities the student had right before ``q`` (a mistake made in one place of two,
    e.g. a penalty on the biases in their gradient but not in the cost). Best: the fewest such
    disagreements, then the most later quantities reproduced.
    """
    inputs = {name: ref[name] for name in case_inputs_names(case)}
    order = [row.name for row in rows]
    before = [row.name for row in rows[: order.index(q)] if row.ok and row.name in student]
    after = [name for name in order[order.index(q) + 1 :] if name in student]
    scales, n, mtol = _scales(ref, case), case.n, tol * MATCH_FACTOR
    ranked = []
    for m, computation in ((mistake, c) for mistake in applicable_mistakes(case) for c in mistake.computations):
        try:
            with np.errstate(all="ignore"):
                v = compute(case, inputs, computation)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        target = v[q]
        if shape is not None:  # the student's shape differs from the reference's: does the mistake's fit?
            got = None if target.shape == ref[q].shape else _to_klayer(shape, target.shape, kind_of(q, target), layout)
            if got is None or not _close(q, got, target, scales, mtol, n):
                continue
        else:  # the mistake changes q beyond tol, and the student's value is near it: nearer than the reference
            change = (
                _g_error(q, target, ref[q], scales[q], n)[0]
                if q != "y"
                else float(not _close(q, ref[q], target, scales, tol, n))
            )
            if not (change > tol and _close(q, student[q], target, scales, min(mtol, change / 2), n)):
                continue
        disagree = sum(not _close(p, student[p], v[p], scales, mtol, n) for p in before)
        if disagree <= 1:
            reproduced = sum(_close(p, student[p], v[p], scales, mtol, n) for p in after)
            ranked.append((disagree, -reproduced, len(ranked), m))
    ranked.sort(key=lambda t: t[:3])
    return list(dict.fromkeys(t[3] for t in ranked if t[:2] == ranked[0][:2]))


def _close(name, a, b, scales, tol, n) -> bool:
    if np.shape(a) != np.shape(b):
        return False
    if name == "y":
        return bool(np.array_equal(a, b))
    return _g_error(name, np.asarray(a, float), np.asarray(b, float), scales[name], n)[0] <= tol


# -- a student's function ----------------------------------------------------------------------
def load_function(spec: str):
    """The function named by ``"module:function"`` or ``"path/to/file.py:function"``.

    A module name is imported with the current directory first on the path.
    """
    if ":" not in spec:
        raise KlayerError(f"--python takes module:function or path/to/file.py:function, got {spec!r}")
    module_name, func_name = spec.rsplit(":", 1)
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise KlayerError(f"{path}: no such file")
            spec_ = importlib.util.spec_from_file_location(f"klayer_student_{path.stem}", path)
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(module_name)
            finally:
                sys.path.remove(os.getcwd())
    except KlayerError:
        raise
    except BaseException as e:  # a student's module may raise anything, SystemExit included
        raise KlayerError(f"cannot import {module_name}: {type(e).__name__}: {e}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise KlayerError(f"{module_name} has no function {func_name!r}")
    return fn


def check_function(fn, case, *, layout: str = "klayer", tol: float = DEFAULT_TOL, data_root=None) -> CheckResult:
    """Call a student's function on a case's inputs and check what it returns.

    The contract: ``fn(inputs)`` receives a dict of the case's inputs in ``layout`` (fresh copies:
    ``X, Y, y, W{l}, b{l}, gamma{l}, beta{l}, mu_av{l}_init, var_av{l}_init`` as arrays, ``lam,
    eta, eps, bn_alpha`` as floats) and returns a dict with any of the quantity names, in the same
    layout.
    """
    case = get_case(case)
    check_tol(tol)
    if layout not in LAYOUTS:
        raise KlayerError(f"unknown layout {layout!r}; use klayer or assignment")
    inputs = _fresh_inputs(case, layout, data_root)
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        out = fn(inputs)
    except BaseException as e:  # the student's code may raise anything
        where = _student_frame(e.__traceback__, fn)
        shapes = _looks_like_shapes(e)
        hint = _layout_hint(case, layout, _runs_in_other_layout(fn, case, layout, data_root)) if shapes else None
        raise KlayerError(
            f"your function {name} raised {type(e).__name__}: {str(e).rstrip()}"
            + (f" (at {where})" if where else "")
            + (f"; {hint}" if hint else "")
        ) from None
    if not isinstance(out, dict):
        raise KlayerError(f"your function {name} returned {type(out).__name__}; it must return a dict of quantities")
    keys = [k for k in out if not isinstance(k, str)]
    if keys:
        raise KlayerError(f"your function {name} returned the key {keys[0]!r}; the keys must be quantity names (str)")
    return check(out, case, layout=layout, tol=tol, data_root=data_root)


_LIBRARY_DIRS = tuple(
    os.path.join(os.path.realpath(d), "")
    for d in {
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
        str(Path(__file__).resolve().parents[1]),  # klayer itself
    }
)
_SHAPE_WORDS = re.compile(r"shape|broadcast|dimension|align|mismatch|out of bounds|size \d|matmul|reshape", re.I)


def _student_frame(tb, fn) -> str | None:
    """``"file.py:LINE, in FUNCTION"`` for the innermost frame of the student's code in traceback ``tb``.

    The student's code is any file outside klayer, the standard library and the installed packages
    (their function's module may call their other modules); failing that, their function's file.
    """
    frames = traceback.extract_tb(tb)
    own = [f for f in frames if not f.filename.startswith("<") and not _in_library(f.filename)]
    if not own:
        file = getattr(getattr(fn, "__code__", None), "co_filename", None)
        own = [f for f in frames if f.filename == file]
    if not own:
        return None
    frame = own[-1]
    path = frame.filename
    try:
        path = os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path
    except ValueError:  # another drive on Windows
        pass
    return f"{path}:{frame.lineno}, in {frame.name}"


def _in_library(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_LIBRARY_DIRS)


def _looks_like_shapes(e: BaseException) -> bool:
    """Whether an exception reads like arrays of shapes that do not fit together."""
    return isinstance(e, ValueError | IndexError | TypeError) and bool(_SHAPE_WORDS.search(str(e)))


def _fresh_inputs(case: Case, layout: str, data_root) -> dict:
    """Fresh copies of a case's inputs in ``layout``: arrays, and floats for the scalars."""
    given = to_layout(case_inputs(case, data_root), layout)
    return {q: float(a) if a.ndim == 0 else a.copy() for q, a in given.items()}


def _runs_in_other_layout(fn, case: Case, layout: str, data_root) -> bool:
    """Whether the student's function, which raised a shape error in ``layout``, runs in the other one."""
    other = LAYOUTS[1 - LAYOUTS.index(layout)]
    try:
        with np.errstate(all="ignore"):
            fn(_fresh_inputs(case, other, data_root))
    except BaseException:  # the student's code may raise anything, again
        return False
    return True


def _layout_hint(case: Case, layout: str, other_runs: bool = True) -> str:
    """What layout the inputs were in and how to ask for the other one, when the function runs there;
    when it fails in both layouts, that the shape of one of the student's own arrays does not fit."""
    n, d, m = case.n, case.d, case.sizes[1]
    if layout == "klayer":
        given = f"the inputs were in klayer's layout, one row per sample (X is {n} x {d})"
        switch = f"if your code takes one column per sample (X is {d} x {n}, S = W X + b), add --layout assignment"
        vector = f"b1 has {m} entries"
    else:
        given = f"the inputs were in the assignments' layout, one column per sample (X is {d} x {n})"
        switch = f"if your code takes one row per sample (X is {n} x {d}, S = X W^T + b), use --layout klayer"
        vector = f"b1 is {m} x 1"
    if other_runs:
        return f"{given}; {switch}"
    return (
        f"{given}, {vector}; your function fails in the other layout too, so the layout is not the problem: "
        "the shape of one of your own arrays is (a bias or mean made a row, a vector without its second axis, "
        "a transposed matrix?)"
    )
