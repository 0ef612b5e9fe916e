"""The checker: no false alarm on a correct implementation; for every bug of the zoo, the exact
first wrong quantity and, for a catalogued one, the exact mistake; patterns and shape messages."""

import importlib
import json
import re
import sys

import numpy as np
import pytest

import klayer
from klayer.errors import DataError, KlayerError
from klayer.learn import CASES, CATALOGUE, check, reference_vectors
from klayer.learn.check import DEFAULT_TOL
from klayer.learn.mistakes import PREPROCESSING, applicable_mistakes
from klayer.learn.vectors import kind_of, quantity_names

from .student import CATALOGUED, OUTSIDE, inputs_of, run
from .student_columns import EXPECTED as COLUMN_EXPECTED
from .test_layer_student import EXPECTED as LAYER_EXPECTED

SMALL = [name for name, c in CASES.items() if c.source == "random"]


def student(case, bugs=(), dtype=np.float64, g_batch=False, layout="assignment", data_root=None):
    """The independent implementation's values for a case, in the assignment layout or klayer's."""
    out = run(inputs_of(reference_vectors(case, "assignment", data_root)), bugs, dtype, g_batch)
    if layout == "klayer":
        ref = reference_vectors(case)
        out = {q: a.T if kind_of(q, ref[q]) == "rows" else a for q, a in out.items()}
    return out


# -- no false alarm ----------------------------------------------------------------------------
@pytest.mark.parametrize("g_batch", [False, True])
@pytest.mark.parametrize("layout", ["assignment", "klayer"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SMALL)
def test_a_correct_implementation_passes(case, dtype, layout, g_batch):
    result = check(student(case, dtype=dtype, layout=layout, g_batch=g_batch), case)
    assert result.passed, result.format()
    assert result.exit_code == 0 and result.layout == layout
    assert max(r.error for r in result.rows) < DEFAULT_TOL / 30  # float32 round-off is far below the tolerance
    assert any("G_batch" in n for n in result.notes) == g_batch
    assert len(result.rows) == len(quantity_names(case)) - len(inputs_of(reference_vectors(case)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_correct_implementation_passes_the_cifar_case(dtype, cifar_dir):
    result = check(student("cifar_3layer_bn", dtype=dtype, data_root=cifar_dir), "cifar_3layer_bn", data_root=cifar_dir)
    assert result.passed, result.format()


def test_the_reference_itself_and_its_float32_rounding_pass():
    for case in SMALL:
        ref = reference_vectors(case)
        assert check(ref, case).passed
        assert check({q: np.asarray(a, np.float32) for q, a in ref.items()}, case).passed


# -- the zoo -----------------------------------------------------------------------------------
# bug -> (case, the exact first wrong quantity, the catalogued mistake or None)
ZOO = {
    "var_unbiased": ("3layer_bn", "var1", "var_unbiased"),
    "eps_outside_sqrt": ("3layer_bn", "S_hat1", "eps_outside_sqrt"),
    "eps_missing": ("3layer_bn", "S_hat1", "eps_missing"),
    "var_not_sqrt": ("3layer_bn", "S_hat1", "var_not_sqrt"),
    "gamma_before_norm": ("3layer_bn", "mu1", "gamma_before_norm"),
    "gamma_before_norm_batch_stats": ("3layer_bn", "S_tilde1", "gamma_before_norm"),
    "bn_stats_wrong_axis": ("3layer_bn", "mu1", "bn_stats_wrong_axis"),
    "weight_transposed_forward": ("3layer", "S2", "weight_transposed_forward"),
    "bias_missing": ("3layer_bn", "S1", "bias_missing"),
    "softmax_wrong_axis": ("3layer_bn", "P", "softmax_wrong_axis"),
    "softmax_wrong_sum_axis": ("3layer", "P", "softmax_wrong_axis"),
    "bn_on_scores": ("2layer_bn", "P", "bn_on_scores"),
    "relu_on_scores": ("3layer", "P", "relu_on_scores"),
    "loss_not_mean": ("3layer_bn", "loss", "loss_not_mean"),
    "loss_mean_over_classes": ("2layer", "loss", "loss_mean_over_classes"),
    "cost_no_reg": ("3layer", "cost", "cost_no_reg"),
    "reg_biases": ("3layer_bn", "grad_b3", "reg_biases"),
    "reg_gamma_beta": ("3layer_bn", "grad_gamma2", "reg_gamma_beta"),
    "reg_grad_no_2": ("3layer_bn", "grad_W3", "reg_grad_no_2"),
    "reg_grad_doubled": ("3layer", "grad_W3", "reg_grad_doubled"),
    "reg_grad_missing": ("2layer", "grad_W2", "reg_grad_missing"),
    "grad_not_divided_by_n": ("3layer_bn", "grad_W3", "grad_not_divided_by_n"),
    "grad_divided_twice": ("3layer", "grad_W3", "grad_divided_twice"),
    "grad_b_wrong_axis": ("3layer_bn", "grad_b3", "reduced_wrong_axis"),
    "relu_grad_at_zero": ("3layer_bn", "grad_gamma1", "relu_grad_at_zero"),
    "relu_grad_missing": ("3layer", "G2", "relu_grad_missing"),
    "relu_grad_before_bn": ("3layer_bn", "grad_gamma2", "relu_grad_before_bn"),
    "bn_back_no_mean_term": ("3layer_bn", "G2", "bn_back_no_mean_term"),
    "bn_back_no_var_term": ("3layer_bn", "G2", "bn_back_no_var_term"),
    "bn_back_sigma1_in_c": ("3layer_bn", "G2", "bn_back_sigma1_in_c"),
    "bn_back_no_gamma": ("2layer_bn", "G1", "bn_back_no_gamma"),
    "grad_gamma_beta_swapped": ("3layer_bn", "grad_gamma2", "grad_gamma_beta_swapped"),
    "weight_transposed_backward": ("3layer", "G1", "weight_transposed_backward"),
    "G_wrt_S_tilde": ("3layer_bn", "G2", "G_wrt_S_tilde"),
    "G_wrt_H": ("3layer", "G2", "G_wrt_H"),
    "running_alpha_swapped": ("3layer_bn", "mu_av1", "running_alpha_swapped"),
    "running_init_batch": ("2layer_bn", "mu_av1", "running_init_batch"),
    "running_var_unbiased": ("3layer_bn", "var_av1", "running_var_unbiased"),
    "running_var_std_eps": ("3layer_bn", "var_av1", "running_var_std"),
    "eval_batch_stats": ("3layer_bn", "S_hat_eval1", "eval_batch_stats"),
    "eval_before_step": ("3layer", "P_eval", "eval_before_step"),
    "update_wrong_sign": ("2layer_bn", "W1_next", "update_wrong_sign"),
    "G_sign_flipped": ("3layer_bn", "G3", "G_sign_flipped"),
    "bias_missing_last": ("3layer_bn", "S3", "bias_missing"),
    "bn_back_stats_constant": ("3layer_bn", "G2", "bn_back_stats_constant"),
    "bn_back_mean_term_sign": ("3layer_bn", "G2", "bn_back_mean_term_sign"),
    "bn_back_var_term_sign": ("2layer_bn", "G1", "bn_back_var_term_sign"),
    "bn_back_var_term_doubled": ("3layer_bn", "G2", "bn_back_var_term_doubled"),
    "bn_train_running_stats": ("3layer_bn", "S_hat1", "bn_train_running_stats"),
    "bn_train_running_init": ("2layer_bn", "S_hat1", "bn_train_running_stats"),
    "relu_before_bn": ("3layer_bn", "mu1", "relu_before_bn"),
    "eval_running_before_update": ("3layer_bn", "S_hat_eval1", "eval_running_before_update"),
    "eval_eps_missing": ("3layer_bn", "S_hat_eval1", "eval_eps_missing"),
    "onehot_shifted": ("3layer_bn", "loss", "onehot_shifted"),
    "onehot_shifted_up": ("3layer", "loss", "onehot_shifted"),
    "reg_half_in_cost": ("3layer_bn", "cost", "reg_half_in_cost"),
    "log10_loss": ("3layer_bn", "loss", "loss_wrong_log"),
    "log2_loss": ("2layer", "loss", "loss_wrong_log"),
    "loss_eps_in_log": ("3layer_bn", "loss", "loss_eps_in_log"),
    "bias_not_updated": ("3layer_bn", "b3_next", "step_missing"),
    # outside the catalogue: located, described, and not misnamed
    "relu_scaled": ("3layer", "H1", None),
    "leaky_relu": ("3layer_bn", "H1", None),
    "gamma_update_uses_grad_beta": ("3layer_bn", "gamma1_next", None),
}


def test_the_zoo_covers_the_catalogue_and_beyond():
    assert set(ZOO) == CATALOGUED | OUTSIDE
    assert len(ZOO) >= 15 and len(OUTSIDE) >= 3
    # every catalogued mistake has its bug, here or in the column or layer students' zoos (preprocessing
    # mistakes: in the CIFAR case, below)
    found = {v[2] for v in ZOO.values()} | {v[2] for v in COLUMN_EXPECTED.values()}
    found |= {v[1] for v in LAYER_EXPECTED.values()}
    assert found - {None} == set(CATALOGUE) - set(PREPROCESSING)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bug", sorted(ZOO))
def test_the_zoo(bug, dtype):
    case, first, mistake = ZOO[bug]
    result = check(student(case, {bug}, dtype), case)
    assert result.first_wrong == first, result.format()
    assert result.mistake_id == mistake, result.format()
    assert result.exit_code == 1 and not result.passed
    text = result.format()
    assert f"\nfirst wrong: {first} (" in text
    assert (f"\nlikely mistake: {mistake}: " in text) == (mistake is not None)


OUTSIDE_PATTERNS = {
    "relu_scaled": "off by a constant factor 0.8 ",
    "leaky_relu": "wrong only for unit(s) 2, 3, 4, 5, 6, 7, 8 of 8",
    "gamma_update_uses_grad_beta": "wrong only for unit(s)",
}


@pytest.mark.parametrize("bug", sorted(OUTSIDE_PATTERNS))
def test_unmatched_mismatches_are_described(bug):
    case = ZOO[bug][0]
    result = check(student(case, {bug}), case)
    assert OUTSIDE_PATTERNS[bug] in result.pattern
    assert "no catalogued mistake reproduces it" in result.format()


def first_difference(values, ref, n):
    """The first quantity of ``values`` (klayer layout) that differs from ``ref``, by plain NumPy."""
    for q in ref:
        if q not in values:
            continue
        a, r = np.asarray(values[q], float), ref[q]
        if a.size != r.size:
            return q
        a = a.reshape(r.shape)
        ok = np.allclose(a, r, rtol=1e-6, atol=1e-9) or (q.startswith("G") and np.allclose(a, n * r, rtol=1e-6))
        if not ok:
            return q
    return None


@pytest.mark.parametrize("case", SMALL)
def test_every_applicable_bug_is_named_in_every_case(case):
    """Beyond the table: in every small case, each catalogued bug that shows is found where it first
    shows and named."""
    ref = reference_vectors(case)
    applicable = {m.id for m in applicable_mistakes(CASES[case])}
    named = 0
    for bug, (_, _, mistake) in ZOO.items():
        if mistake is None or (mistake not in applicable and mistake != "reduced_wrong_axis"):
            continue
        values = student(case, {bug}, layout="klayer")
        first = first_difference(values, ref, CASES[case].n)
        if first is None:  # this bug leaves no trace in this case (e.g. no square weight matrix)
            continue
        result = check(values, case)
        assert (result.first_wrong, result.mistake_id) == (first, mistake), result.format()
        named += 1
    assert named >= 15 if CASES[case].batch_norm else named >= 12


@pytest.mark.parametrize(
    "bug", ["eps_outside_sqrt", "bn_back_no_mean_term", "relu_grad_at_zero", "running_alpha_swapped"]
)
def test_the_zoo_in_the_cifar_case(bug, cifar_dir):
    first = {
        "eps_outside_sqrt": "S_hat1",
        "bn_back_no_mean_term": "G2",
        "relu_grad_at_zero": "grad_gamma1",
        "running_alpha_swapped": "mu_av1",
    }[bug]
    result = check(
        student("cifar_3layer_bn", {bug}, np.float32, data_root=cifar_dir), "cifar_3layer_bn", data_root=cifar_dir
    )
    assert (result.first_wrong, result.mistake_id) == (first, bug)


@pytest.mark.parametrize(
    "bug, drop, first",
    [
        ("gamma_before_norm", ("mu", "var"), "S_hat1"),
        ("var_unbiased", ("mu", "var"), "S_hat1"),
        ("bn_back_no_var_term", ("G",), "grad_W2"),
        ("relu_grad_at_zero", ("grad_gamma", "grad_beta"), "gamma1_next"),  # G1: gamma1 = 0 for the dead unit
    ],
)
def test_missing_quantities_are_allowed_and_the_mistake_still_named(bug, drop, first):
    values = {q: a for q, a in student("3layer_bn", {bug}).items() if q.rstrip("0123456789") not in drop}
    result = check(values, "3layer_bn")
    assert (result.first_wrong, result.mistake_id) == (first, bug)
    assert set(result.missing) == set(quantity_names("3layer_bn")) - set(values)
    assert {f"{d}1" for d in drop} <= set(result.missing)


def test_a_bug_made_in_one_of_two_places_is_still_named():
    # biases penalized in the cost only: the gradients are right
    values = student("3layer")
    values["cost"] = values["cost"] + 0.1 * sum(
        np.sum(values_b**2) for values_b in (reference_vectors("3layer")[f"b{l}"] for l in (1, 2, 3))
    )
    result = check(values, "3layer")
    assert (result.first_wrong, result.mistake_id) == ("cost", "reg_biases")


def test_two_bugs_the_first_one_is_reported():
    result = check(student("3layer_bn", {"bn_back_no_mean_term", "update_wrong_sign"}), "3layer_bn")
    assert (result.first_wrong, result.mistake_id) == ("G2", "bn_back_no_mean_term")
    assert sum(not r.ok for r in result.rows) > 5  # later quantities are wrong too, and shown


# -- patterns ----------------------------------------------------------------------------------
def test_patterns_of_unmatched_mismatches():
    ref = reference_vectors("3layer_bn")

    def pattern(name, value):
        r = check({name: value}, "3layer_bn")
        assert r.first_wrong == name and r.mistake is None
        return r.pattern

    S = ref["S_hat1"]
    assert "constant factor 0.8 " in pattern("S_hat1", 0.8 * S)
    assert "the sign flipped" in pattern("S_hat1", -S)
    assert "constant offset 0.25" in pattern("S_hat1", S + 0.25)
    assert "factor n = 5" in pattern("grad_W2", 5 * ref["grad_W2"])
    assert "transposed" in pattern("grad_W2", ref["grad_W2"].T)
    assert "rows permuted" in pattern("S_hat1", S[[1, 0, 2, 3, 4]])
    assert "columns permuted" in pattern("S_hat1", S[:, [0, 1, 2, 3, 4, 5, 7, 6]])
    T = S.copy()
    T[:, 3] += 1
    assert "wrong only for unit(s) 4 of 8" in pattern("S_hat1", T)
    T = S.copy()
    T[2] += 1
    assert "wrong only for sample(s) 3 of 5" in pattern("S_hat1", T)
    T = S.copy()
    T[0, 1] = np.nan
    assert "1 of 40 entries are NaN or infinite" in pattern("S_hat1", T)
    assert "yours 3, reference" in pattern("loss", 3.0)
    assert "no simple pattern" in pattern("S_hat1", S + np.linspace(0.1, 1, S.size).reshape(S.shape) ** 2)


def test_wrong_inputs_say_they_are_inputs():
    ref = reference_vectors("2layer")
    result = check({"X": ref["X"] / 255}, "2layer")
    assert result.first_wrong == "X" and "input of the case" in result.pattern and "klayer vectors" in result.pattern


# -- shapes ------------------------------------------------------------------------------------
def test_shape_mistakes_get_one_line_explanations():
    ref = reference_vectors("3layer_bn")
    asg = reference_vectors("3layer_bn", "assignment")

    def note(values, name):
        r = check(values, "3layer_bn")
        assert r.first_wrong == name and not r.passed
        assert "\n" not in r.pattern
        return r.pattern, r.mistake_id

    # klayer layout (X is n x d), one matrix transposed
    text, _ = note({"X": ref["X"], "S1": ref["S1"].T}, "S1")
    assert "shape (8, 5), expected (5, 8)" in text and "transposed" in text and "one row per sample" in text
    # assignment layout, one matrix in rows
    text, _ = note({"X": asg["X"], "P": asg["P"], "S2": asg["S2"].T}, "S2")
    assert "expected (8, 5) in assignment layout" in text and "transposed" in text
    text, _ = note({"W1": ref["W1"].T}, "W1")
    assert "transposed" in text and "one row per output unit" in text
    text, _ = note({"S1": ref["S1"][0]}, "S1")
    assert "the batch axis is missing" in text
    text, mistake = note({"grad_b1": ref["G1"].sum(axis=1)}, "grad_b1")
    assert "over the wrong axis" in text and mistake == "reduced_wrong_axis"
    text, _ = note({"mu1": np.ones((8, 5))}, "mu1")
    assert "the sum or mean over the samples is missing" in text
    text, _ = note({"loss": np.ones(3)}, "loss")
    assert "a single number" in text
    text, _ = note({"P": ref["P"].ravel()}, "P")
    assert "flattened" in text


def test_vectors_are_accepted_in_any_orientation_and_scalars_as_1x1():
    ref = reference_vectors("2layer_bn")
    values = {
        "b1": ref["b1"][None, :],
        "mu1": ref["mu1"][:, None],
        "gamma1": ref["gamma1"],
        "loss": ref["loss"].reshape(1, 1),
    }
    assert check(values, "2layer_bn").passed


def test_labels_zero_or_one_based():
    ref = reference_vectors("3layer")
    assert check({"y": ref["y"]}, "3layer").passed
    r = check({"y": (ref["y"] + 1.0)[None, :]}, "3layer")
    assert r.passed and any("1-based" in n for n in r.notes)
    r = check({"y": ref["y"][::-1]}, "3layer")
    assert r.first_wrong == "y"


def test_G_times_n_is_accepted_anything_else_is_not():
    ref = reference_vectors("3layer")
    assert check({"G3": 5 * ref["G3"], "G2": 5 * ref["G2"]}, "3layer").passed
    assert check({"G3": 2 * ref["G3"]}, "3layer").first_wrong == "G3"
    assert check({"grad_W3": 5 * ref["grad_W3"]}, "3layer").first_wrong == "grad_W3"  # only G has the convention


def test_a_mistake_made_slightly_differently_is_still_named():
    # eps left out, but the student's own 1e-5 instead of 0: within 10 x the tolerance of the mistake
    values = student("3layer_bn", {"eps_missing"})
    asg = reference_vectors("3layer_bn", "assignment")
    S, mu, var = asg["S1"], asg["mu1"], asg["var1"]
    values["S_hat1"] = (S - mu) / np.sqrt(var + 1e-5)
    result = check(values, "3layer_bn")
    assert (result.first_wrong, result.mistake_id) == ("S_hat1", "eps_missing")


def test_all_zero_quantities_compare(monkeypatch):
    # no quantity of the cases is all zero (mu_av{l}_init no longer is): make one
    module = importlib.import_module("klayer.learn.check")  # the module, not klayer.learn's check()
    compute = module.compute

    def zero_mu_av1_init(case, *args, **kwargs):
        return {**compute(case, *args, **kwargs), "mu_av1_init": np.zeros(8)}

    monkeypatch.setattr(module, "compute", zero_mu_av1_init)
    ref = reference_vectors("3layer_bn")
    assert check({"mu_av1_init": np.zeros(8), "var_av1_init": ref["var_av1_init"]}, "3layer_bn").passed
    assert check({"mu_av1_init": np.full(8, 1e-3)}, "3layer_bn").first_wrong == "mu_av1_init"


def test_the_tolerance_and_the_bias_gradients_scale():
    ref = reference_vectors("3layer_bn")
    S = ref["S_hat1"]
    assert check({"S_hat1": S * (1 + 0.3 * DEFAULT_TOL)}, "3layer_bn").passed
    assert not check({"S_hat1": S * (1 + 3 * DEFAULT_TOL)}, "3layer_bn").passed
    assert check({"S_hat1": S * (1 + 3 * DEFAULT_TOL)}, "3layer_bn", tol=1e-3).passed
    # in front of batch norm the bias gradient is exactly 0: round-off of its terms is right, 2 lam b is not
    g = ref["G1"]
    assert check({"grad_b1": np.abs(g).sum(axis=0) * 1e-7}, "3layer_bn").passed
    assert not check({"grad_b1": 2 * 0.1 * ref["b1"]}, "3layer_bn").passed


# -- values, names, cases ----------------------------------------------------------------------
def test_unknown_names_are_ignored_with_a_suggestion():
    ref = reference_vectors("2layer_bn")
    r = check({"S1": ref["S1"], "Shat1": ref["S_hat1"], "foo": 1.0}, "2layer_bn")
    assert r.passed and r.ignored == ["Shat1 (did you mean S_hat1?)", "foo"]
    assert "ignored (not names of this case): Shat1 (did you mean S_hat1?), foo" in r.format()


def test_unusable_values_raise():
    with pytest.raises(KlayerError, match="none of the values"):
        check({"foo": 1.0}, "2layer")
    with pytest.raises(KlayerError, match="unknown case"):
        check({"S1": 1.0}, "nope")
    with pytest.raises(KlayerError, match="cannot tell which case"):
        check({"S1": np.ones((3, 3))})
    with pytest.raises(KlayerError, match="layout"):
        check({"S1": 1.0}, "2layer", layout="rows")


def test_non_numeric_values_are_wrong_not_fatal():
    r = check({"S1": "hello", "X": reference_vectors("2layer")["X"]}, "2layer")
    assert r.first_wrong == "S1" and "text, not numbers" in r.pattern  # never parsed as numbers
    r = check({"S1": reference_vectors("2layer")["S1"].astype(str)}, "2layer")
    assert r.first_wrong == "S1" and "text, not numbers" in r.pattern
    r = check({"S1": reference_vectors("2layer")["S1"] + 0j}, "2layer")
    assert r.first_wrong == "S1" and "not a numeric array" in r.pattern


def test_the_case_is_inferred():
    ref = reference_vectors("3layer_bn", "assignment")
    assert check({"X": ref["X"], "S_hat1": ref["S_hat1"]}).case == "3layer_bn"
    assert check({**ref, "case_name": "3layer_bn"}).case == "3layer_bn"
    r2 = reference_vectors("2layer")
    assert check({"S1": r2["S1"], "P": r2["P"]}).case == "2layer"  # 2layer_bn has the same shapes, other values


def test_lists_and_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    ref = reference_vectors("2layer")
    r = check({"S1": ref["S1"].tolist(), "P": torch.tensor(ref["P"], requires_grad=True)}, "2layer")
    assert r.passed


def test_result_is_structured_and_serializable():
    r = klayer.check(student("3layer_bn", {"eps_outside_sqrt"}), case="3layer_bn")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["first_wrong"] == "S_hat1" and d["first_wrong_label"] == "S_hat in layer 1"
    assert d["mistake"]["id"] == "eps_outside_sqrt" and "diag(var + eps)^(-1/2)" in d["mistake"]["formula"]
    assert d["passed"] is False and d["layout"] == "assignment"
    assert [row["name"] for row in d["rows"]][:2] == ["S1", "mu1"]
    assert r.mistake.formula in r.format() and r.first_wrong_label == "S_hat in layer 1"


def test_the_layout_given_wins_over_the_shapes():
    asg = reference_vectors("3layer", "assignment")
    assert check({"S1": asg["S1"], "P": asg["P"]}, "3layer").layout == "assignment"
    r = check({"S1": asg["S1"], "P": asg["P"]}, "3layer", layout="klayer")
    assert r.layout == "klayer" and r.first_wrong == "S1" and "transposed" in r.pattern
    r = check({"S1": asg["S1"], "layout": "klayer"}, "3layer")  # a file's own layout entry
    assert r.layout == "klayer" and not r.passed


# -- the QA review's findings ------------------------------------------------------------------
def test_a_sign_flipped_G_is_a_sign_flip_not_a_G_batch():
    ref = reference_vectors("3layer_bn")
    for G in (-ref["G3"], -5 * ref["G3"]):  # klayer's G, or the assignments' G_batch, with the sign flipped
        r = check({"G3": G}, "3layer_bn")
        assert r.first_wrong == "G3" and "the sign flipped" in r.pattern, r.pattern
    assert "G_batch" not in check({"G3": -ref["G3"]}, "3layer_bn").rows[0].note
    assert "G_batch" in check({"G3": -5 * ref["G3"]}, "3layer_bn").rows[0].note


def test_offsets_per_unit_and_per_sample():
    ref = reference_vectors("3layer_bn")
    rng = np.random.default_rng(0)
    S = ref["S3"]
    r = check({"S3": S + rng.standard_normal(S.shape[1])}, "3layer_bn")
    assert "offset per unit" in r.pattern and "bias" in r.pattern
    r = check({"S3": S + rng.standard_normal((S.shape[0], 1))}, "3layer_bn")
    assert "offset per sample" in r.pattern and "bias" not in r.pattern


def test_pattern_words_follow_the_students_layout():
    asg = reference_vectors("3layer_bn", "assignment")
    S = asg["S_hat1"]  # units x samples
    r = check({"X": asg["X"], "S_hat1": S[:, [1, 0, 2, 3, 4]]}, "3layer_bn")
    assert r.layout == "assignment" and "order of samples (columns permuted)" in r.pattern
    r = check({"X": asg["X"], "S_hat1": S[[1, 0, 2, 3, 4, 5, 6, 7]]}, "3layer_bn")
    assert "order of units (rows permuted)" in r.pattern
    y = asg["y"].copy()
    y[[0, 2]] = (y[[0, 2]] + 1) % 10
    assert "wrong only for sample(s) 1, 3 of 5" in check({"y": y}, "3layer_bn").pattern


def test_a_wrong_number_is_not_called_a_constant_factor():
    ref = reference_vectors("3layer_bn")
    p = check({"loss": ref["loss"] + 0.1}, "3layer_bn").pattern
    assert "yours - reference = 0.1" in p and "factor" not in p
    assert "a factor 2" in check({"loss": 2 * ref["loss"]}, "3layer_bn").pattern


def test_nan_entries_show_nan_not_inf():
    ref = reference_vectors("3layer_bn")
    S = ref["S1"].copy()
    S[0, 0] = np.nan
    r = check({"S1": S}, "3layer_bn")
    assert np.isnan(r.rows[0].error) and re.search(r"^  S1 .* nan  WRONG", r.format(), re.M)
    S[0, 0] = np.inf
    assert check({"S1": S}, "3layer_bn").rows[0].error == np.inf


def test_a_wrong_evaluation_path_is_located_at_its_first_layer():
    r = check(student("3layer_bn", {"eval_eps_missing"}), "3layer_bn")
    assert (r.first_wrong, r.first_wrong_label) == ("S_hat_eval1", "S_hat_eval in layer 1")
    assert next(row.ok for row in r.rows if row.name == "S_eval1")  # the layer's input was right
    r = check(student("3layer_bn", {"eval_before_step"}), "3layer_bn")
    assert (r.first_wrong, r.mistake_id) == ("S_eval1", "eval_before_step")
    values = student("3layer_bn")  # layer 1 right, layer 2 normalized with the running averages before the step
    ref = reference_vectors("3layer_bn", "assignment")
    values["S_hat_eval2"] = (values["S_eval2"] - ref["mu_av2_init"]) / np.sqrt(ref["var_av2_init"] + ref["eps"])
    r = check(values, "3layer_bn")
    assert r.first_wrong == "S_hat_eval2" and r.first_wrong_label == "S_hat_eval in layer 2"


def test_the_summary_lines_count_and_explain():
    ref = reference_vectors("3layer_bn")
    text = check({"S1": ref["S1"]}, "3layer_bn").format()
    assert "1 quantity compared, 0 wrong" in text and text.endswith("the 1 quantity you gave is right")
    n_inputs = len(inputs_of(ref))
    assert f"not in your values: {n_inputs} of the case's inputs (given, so nothing to check)" in text
    outputs = {q: a for q, a in ref.items() if q not in inputs_of(ref)}
    text = check(outputs, "3layer_bn").format()
    assert f"{n_inputs} of the case's inputs" in text and "computed" not in text
    del outputs["P_eval"]
    assert "1 computed quantity (not checked)" in check(outputs, "3layer_bn").format()


def test_without_a_catalogued_mistake_the_definition_is_shown():
    ref = reference_vectors("3layer_bn")
    text = check({"var_av1": ref["var_av1"] * 1.1}, "3layer_bn").format()
    assert "compare your code with its definition:\n  var_av_l = alpha var_av_l_init + (1 - alpha) var_l" in text
    text = check({"W2_next": ref["W2_next"] * 1.1}, "3layer_bn").format()
    assert "\n  W2_next = W2 - eta grad_W2" in text
    text = check({"X": ref["X"] * 2}, "3layer_bn").format()
    assert text.endswith("no catalogued mistake reproduces it")  # an input: no formula to compare with


def test_unknown_names_get_suggestions_when_nothing_is_known():
    ref = reference_vectors("3layer_bn")
    with pytest.raises(KlayerError) as e:
        check({"Shat1": ref["S_hat1"], "gradW1": ref["grad_W1"], "dW1": 1.0, "grad_w1": 1.0}, "3layer_bn")
    for got in ("Shat1 (did you mean S_hat1?)", "gradW1 (did you mean grad_W1?)", "dW1 (did you mean grad_W1?)"):
        assert got in str(e.value)
    assert "grad_w1 (did you mean grad_W1?)" in str(e.value)
    with pytest.raises(KlayerError, match=r"of any case \(got Shat1 \(did you mean S_hat1\?\)\)"):
        check({"Shat1": ref["S_hat1"]})
    r = check({"S1": reference_vectors("3layer")["S1"], "beta1": ref["beta1"], "grad_gamma1": 1.0}, "3layer")
    assert r.ignored == ["beta1 (batch norm: case 3layer has none)", "grad_gamma1 (batch norm: case 3layer has none)"]


def test_more_unknown_names_get_the_reason_not_a_far_fetched_name():
    ref = reference_vectors("3layer")
    r = check({"S1": ref["S1"], "gradbeta1": 1.0, "dbeta1": 1.0, "Shat1": 1.0, "S4": 1.0, "dS2": 1.0}, "3layer")
    assert r.ignored == [
        "gradbeta1 (batch norm: case 3layer has none)",  # not grad_b1
        "dbeta1 (batch norm: case 3layer has none)",
        "Shat1 (batch norm: case 3layer has none)",
        "S4 (case 3layer has 3 layers)",
        "dS2 (did you mean G2? it is the gradient of the cost with respect to S2)",  # not S2
    ]
    r = check({"S1": reference_vectors("3layer_bn")["S1"], "gamma3": 1.0, "grad_beta3": 1.0}, "3layer_bn")
    assert r.ignored == [  # not gamma2 and grad_beta2
        "gamma3 (case 3layer_bn has batch norm in the hidden layers 1 to 2 only)",
        "grad_beta3 (case 3layer_bn has batch norm in the hidden layers 1 to 2 only)",
    ]


def other_case_notes(result):
    return [n for n in result.notes if "did you mean --case" in n]


def test_values_of_another_case_say_which_case():
    right = student("3layer")  # a correct implementation, checked against the wrong case
    r = check(right, "3layer_bn")
    n_given = len([q for q in right if q in reference_vectors("3layer")])
    assert not r.passed and other_case_notes(r) == [
        f"these values are right for case 3layer (all {n_given} of its quantities you gave): did you mean --case 3layer?"
    ]
    assert f"\nnote: these values are right for case 3layer (all {n_given}" in r.format()
    bn = {**reference_vectors("3layer_bn"), "case_name": "3layer_bn"}
    (note,) = other_case_notes(check(bn, "3layer"))
    assert note.startswith("these values are right for case 3layer_bn, the case_name in your values (all ")
    r = check(student("2layer"), "3layer")  # other shapes: S2 is 10 wide in 2layer, 8 in 3layer
    assert other_case_notes(r) == [other_case_notes(r)[0]] and "right for case 2layer" in other_case_notes(r)[0]


def test_a_buggy_implementation_checked_with_another_case_is_told_so_with_counts():
    values = student("3layer", {"reg_grad_no_2"})
    r = check(values, "3layer_bn")
    right = sum(row.ok for row in check(values, "3layer").rows)
    (note,) = other_case_notes(r)
    assert (
        note
        == f"{right} of your {len(values)} values are right for case 3layer (0 for 3layer_bn): did you mean --case 3layer?"
    )


def test_no_other_case_is_suggested_for_a_bug_in_the_right_case():
    for case, bug in (("3layer_bn", "eps_missing"), ("3layer", "bias_missing"), ("2layer_bn", "var_unbiased")):
        values = student(case, {bug})
        assert other_case_notes(check(values, case)) == []
        assert other_case_notes(check({**values, **inputs_of(reference_vectors(case, "assignment"))}, case)) == []


def test_the_shapes_of_another_case_are_enough_to_say_so():
    rng = np.random.default_rng(0)  # wrong values of the CIFAR case's shapes: 3072 features, 50 units
    values = {"S1": rng.standard_normal((50, 5)), "H1": rng.standard_normal((50, 5))}
    r = check(values, "3layer_bn")
    assert other_case_notes(r) == [
        "these values fit case cifar_3layer_bn (its names and shapes): did you mean --case cifar_3layer_bn?"
    ]
    ref = reference_vectors("3layer_bn")  # only batch-norm names, checked with a case without it
    with pytest.raises(KlayerError, match=r"of case 3layer \(got mu1 .*\); these values are right for case 3layer_bn"):
        check({"mu1": ref["mu1"], "S_hat1": ref["S_hat1"]}, "3layer")


def test_case_name_and_layout_as_numpy_strings_are_used(tmp_path):
    ref = reference_vectors("3layer")
    values = {"S1": ref["S1"], "P": ref["P"]}  # shapes of 3layer and 3layer_bn alike
    np.savez(tmp_path / "v.npz", **values, case_name="3layer", layout="klayer")
    r = check(tmp_path / "v.npz")
    assert r.case == "3layer" and r.passed
    r = check({**values, "case_name": np.array("3layer"), "layout": np.array("assignment")})
    assert r.case == "3layer" and r.layout == "assignment"
    with pytest.raises(KlayerError, match="case_name 'nosuchcase' is not a case"):
        check({**values, "case_name": np.array("nosuchcase")})


def test_unusable_entries_of_a_file_are_one_error_naming_file_and_quantity(tmp_path):
    ref = reference_vectors("3layer_bn", "assignment")
    doc = {q: ref[q].tolist() for q in ("S1", "mu1")}
    doc["S1"][2] = doc["S1"][2][:3]
    (tmp_path / "ragged.json").write_text(json.dumps(doc))
    for case in ("3layer_bn", None):
        with pytest.raises(DataError, match=r"ragged\.json: S1: rows of different lengths"):
            check(tmp_path / "ragged.json", case)
    np.savez(tmp_path / "text.npz", S1=ref["S1"].astype(str))
    with pytest.raises(DataError, match=r"text\.npz: S1: text, not numbers"):
        check(tmp_path / "text.npz", "3layer_bn")
    (tmp_path / "text.json").write_text(json.dumps({"S1": ref["S1"].tolist(), "loss": str(float(ref["loss"]))}))
    with pytest.raises(DataError, match=r"text\.json: loss: text, not numbers"):
        check(tmp_path / "text.json", "3layer_bn")
    r = check({"S1": doc["S1"], "mu1": ref["mu1"]}, "3layer_bn")  # a dict: the row says it, no crash
    assert r.first_wrong == "S1" and "rows of different lengths" in r.pattern


@pytest.mark.parametrize("tol", [0, -1, float("nan"), float("inf"), "x"])
def test_the_tolerance_is_range_checked(tol):
    ref = reference_vectors("2layer")
    with pytest.raises(KlayerError, match="tolerance"):
        check({"S1": ref["S1"]}, "2layer", tol=tol)


# -- the CIFAR case: evaluation mode and preprocessing -----------------------------------------
@pytest.mark.parametrize(
    "bug, first",
    [("eval_eps_missing", "S_hat_eval1"), ("bn_back_stats_constant", "G2"), ("bn_train_running_stats", "S_hat1")],
)
def test_more_of_the_zoo_in_the_cifar_case(bug, first, cifar_dir):
    result = check(
        student("cifar_3layer_bn", {bug}, np.float32, data_root=cifar_dir), "cifar_3layer_bn", data_root=cifar_dir
    )
    assert (result.first_wrong, result.mistake_id) == (first, bug), result.format()
    assert next(r.error for r in result.rows if r.name == first) > 10 * DEFAULT_TOL


def preprocessing_verdicts(X, root):
    """Check the usual preprocessing slips of the CIFAR case on data_batch_1's rows ``X`` (uint8)
    read from ``root``; returns the verdict function and the rows as the student scales them."""
    Xf = X.astype(np.float64) / 255  # the student's own preprocessing, as assignment 2 has it
    first = Xf[:5]

    def verdict(X5):
        r = check({"X": X5.T}, "cifar_3layer_bn", data_root=root, layout="assignment")
        return r.passed, r.mistake_id, r.pattern

    assert verdict((first - Xf.mean(0)) / Xf.std(0))[0]
    assert verdict((first - Xf.mean(0)) / Xf.std(0, ddof=1))[:2] == (False, "prep_std_unbiased")
    assert verdict((first - Xf.mean()) / Xf.std())[:2] == (False, "prep_global_stats")
    assert verdict((first - first.mean(0)) / first.std(0))[:2] == (False, "prep_stats_of_the_batch")
    assert verdict(first)[:2] == (False, "prep_not_standardized")
    passed, mistake, pattern = verdict((first - Xf.mean(0)) / Xf.std(0) * 1.01)
    assert (passed, mistake) == (False, None) and "standardized with its mean and standard deviation (1/N)" in pattern
    return verdict, Xf, pattern


def test_the_cifar_preprocessing_is_checked(cifar_raw, cifar_dir):
    preprocessing_verdicts(cifar_raw.batches["data_batch_1"][0], cifar_dir)


# -- mutation round 3: what the tests above left open ---------------------------------------------
def small_cifar(root, seed=0, n=300):
    """A python-layout data_batch_1 of ``n`` random images (the official has 10000): enough for the
    CIFAR case's first 5 images and their preprocessing, without the real data set."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    X, y = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": X, b"labels": [int(v) for v in y]}, protocol=2))
    return root, X


def test_the_cifar_preprocessing_is_checked_on_a_small_copy(tmp_path):
    root, X = small_cifar(tmp_path)
    verdict, Xf, pattern = preprocessing_verdicts(X, root)
    first = Xf[:5]
    assert pattern.endswith("(klayer vectors --case cifar_3layer_bn --out FILE)")
    unbiased = (first - Xf.mean(0)) / Xf.std(0, ddof=1)  # a variant is named only within a tenth of the tolerance
    assert verdict(unbiased * (1 + 3 * DEFAULT_TOL))[:2] == (False, None)


def test_a_student_function_gets_the_cifar_case_from_its_data_root(tmp_path, monkeypatch):
    from klayer.learn.check import check_function

    monkeypatch.setenv("KLAYER_DATA", str(tmp_path / "nothing"))  # only data_root has the data
    root, _ = small_cifar(tmp_path)
    ref = reference_vectors("cifar_3layer_bn", data_root=root)
    seen = []

    def fn(inputs):
        seen.append(inputs["X"])
        return {"S1": inputs["X"] @ inputs["W1"].T + inputs["b1"]}

    r = check_function(fn, "cifar_3layer_bn", data_root=root)
    assert r.passed and r.rows[0].name == "S1" and np.array_equal(seen[0], ref["X"])

    def fails_in_klayer_layout(inputs):  # runs in the assignments' layout only
        return {"S1": inputs["W1"] @ inputs["X"] + inputs["b1"].reshape(-1, 1)}

    with pytest.raises(KlayerError, match="add --layout assignment"):
        check_function(fails_in_klayer_layout, "cifar_3layer_bn", data_root=root)


def test_the_result_as_json_names_the_mistake_and_keeps_only_finite_errors():
    r = check(student("3layer_bn", {"eps_outside_sqrt"}), "3layer_bn")
    m = CATALOGUE["eps_outside_sqrt"]
    d = json.loads(json.dumps(r.to_dict()))
    assert d["mistake"] == {"id": m.id, "summary": m.summary, "formula": m.formula}
    assert [row["error"] for row in d["rows"]] == [row.error for row in r.rows]  # all finite here
    assert json.loads(json.dumps(check(reference_vectors("3layer_bn"), "3layer_bn").to_dict()))["mistake"] is None
    ref = reference_vectors("3layer_bn")
    S, H = ref["S1"].copy(), ref["H1"].copy()
    S[0, 0], H[0, 0] = np.nan, np.inf
    r = check({"S1": S, "mu1": np.ones((8, 5)), "H1": H, "P": ref["P"]}, "3layer_bn")
    d = json.loads(json.dumps(r.to_dict()))
    assert {row["name"]: row["error"] for row in d["rows"]} == {"S1": None, "mu1": None, "H1": None, "P": 0.0}
    assert {row["name"]: row["shape"] for row in d["rows"]} == {"S1": [5, 8], "mu1": [8, 5], "H1": [5, 8], "P": [5, 10]}
    assert re.search(r"^  mu1 +\(8, 5\) +-  WRONG", r.format(), re.M)  # no error to show: a dash


def test_the_report_starts_with_the_case_and_its_description():
    text = check({"S1": reference_vectors("3layer")["S1"]}, "3layer").format()
    assert text.startswith(f"case 3layer: {CASES['3layer'].description}\n")
    from klayer.learn.check import CheckResult

    assert CheckResult("my_case", "klayer", 1e-4, []).format().startswith("case my_case\n")  # not a case of klayer


def test_the_definition_of_an_updated_parameter_names_its_own_gradient():
    ref = reference_vectors("3layer_bn")
    for name, grad in (("W2_next", "grad_W2"), ("gamma1_next", "grad_gamma1")):
        text = check({name: ref[name] * 1.1}, "3layer_bn").format()
        assert text.endswith(f"\n  {name} = {name[: -len('_next')]} - eta {grad}")


def test_the_case_cannot_be_told_from_wrong_sized_batch_norm_values():
    """Batch-norm names rule out the cases without batch norm, even when their sizes fit no case."""
    S1 = reference_vectors("2layer")["S1"]
    for name, value in (
        ("gamma1", np.ones(3)),
        ("S_hat1", np.ones((2, 2))),
        ("S_eval1", np.ones((2, 2))),
        ("mu1", np.ones(3)),
        ("var1", np.ones(3)),
    ):
        with pytest.raises(KlayerError) as e:
            check({"S1": S1, name: value})
        assert str(e.value) == "cannot tell which case these values are for; give the case (--case NAME)", name


def test_ambiguous_values_list_the_cases_they_fit():
    with pytest.raises(KlayerError) as e:
        check({"loss": 123.0})  # a number: every case has a loss, and none agrees
    assert str(e.value) == f"these values fit the cases {', '.join(CASES)}; give one with --case NAME"
    with pytest.raises(KlayerError) as e:
        check({"S2": np.random.default_rng(1).standard_normal((5, 10))})  # the scores of both 2-layer cases
    assert str(e.value) == "these values fit the cases 2layer, 2layer_bn; give one with --case NAME"
    with pytest.raises(KlayerError) as e:
        check({"case_name": "nope", "S1": 1.0})
    assert str(e.value) == f"the values' case_name 'nope' is not a case; the cases are {', '.join(CASES)}"
    with pytest.raises(KlayerError) as e:
        check({"layout": "klayer"})
    assert str(e.value) == "none of the values is a quantity of any case (got nothing)"
    with pytest.raises(KlayerError) as e:
        check({"Shat1": 1.0, "foo7": 1.0})  # no case: the suggestions need none
    assert str(e.value) == "none of the values is a quantity of any case (got Shat1 (did you mean S_hat1?), foo7)"


def test_shape_notes_say_the_students_layout():
    ref, asg = reference_vectors("3layer_bn"), reference_vectors("3layer_bn", "assignment")
    r = check({"X": ref["X"], "S1": np.ones((3, 7))}, "3layer_bn")
    assert r.pattern == "shape (3, 7), expected (5, 8) (one row per sample)"
    r = check({"X": asg["X"], "S1": np.ones((7, 3))}, "3layer_bn")
    assert r.pattern == "shape (7, 3), expected (8, 5) (one column per sample)"
    r = check({"X": asg["X"], "P": asg["P"], "S2": asg["S2"].T}, "3layer_bn")
    assert r.pattern == "shape (5, 8), expected (8, 5) in assignment layout (one column per sample): it is transposed"


def test_more_unknown_names_are_left_alone_rather_than_misnamed():
    ref = reference_vectors("3layer")
    r = check({"S1": ref["S1"], "grad_gamma12": 1.0, "W": 1.0, "H3": 1.0, "foo1": 1.0}, "3layer")
    assert r.ignored == ["grad_gamma12 (batch norm: case 3layer has none)", "W", "H3", "foo1"]
    r = check({"S1": reference_vectors("3layer_bn")["S1"], "gamma": 1.0}, "3layer_bn")
    assert r.ignored in (["gamma (did you mean gamma1?)"], ["gamma (did you mean gamma2?)"])  # no crash on no layer


def test_student_files_and_modules_load_by_path_or_name(tmp_path, monkeypatch):
    from klayer.learn.check import load_function

    colon = tmp_path / "course:2024"  # a colon in the folder: the function is after the last one
    colon.mkdir()
    (colon / "mine.py").write_text("def forward(inputs):\n    return {}\n")
    assert load_function(f"{colon / 'mine.py'}:forward")({}) == {}
    monkeypatch.chdir(colon)
    assert load_function("mine.py:forward")({}) == {}  # a file of the current folder, no slash
    with pytest.raises(KlayerError) as e:
        load_function("mine.py")
    assert str(e.value) == "--python takes module:function or path/to/file.py:function, got 'mine.py'"
    with pytest.raises(KlayerError) as e:
        load_function("other.py:forward")
    assert str(e.value) == "other.py: no such file"
    (colon / "broken_student.py").write_text("x = 1 / 0\n")
    with pytest.raises(KlayerError) as e:
        load_function("broken_student:forward")
    assert str(e.value) == "cannot import broken_student: ZeroDivisionError: division by zero"
    # a module of the current folder wins over one of the same name elsewhere on the path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "same_name_student.py").write_text("def forward(inputs):\n    return 'elsewhere'\n")
    (colon / "same_name_student.py").write_text("def forward(inputs):\n    return 'here'\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    monkeypatch.delitem(sys.modules, "same_name_student", raising=False)
    assert load_function("same_name_student:forward")({}) == "here"
    monkeypatch.delitem(sys.modules, "same_name_student", raising=False)


def test_a_student_function_is_called_in_klayers_layout_and_checked_with_the_tolerance_given():
    from klayer.learn.check import check_function

    ref = reference_vectors("2layer")
    got = check_function(lambda v: {"S1": v["X"] @ v["W1"].T + v["b1"]}, "2layer")  # X is n x d by default
    assert got.passed and got.layout == "klayer"
    off = {"S1": ref["S1"] * (1 + 1e-3)}
    assert not check_function(lambda v: off, "2layer").passed
    assert check_function(lambda v: off, "2layer", tol=1e-2).passed
    # nothing in the returned values says the layout: the one asked for is the one reported
    r = check_function(
        lambda v: {"b1_next": v["b1"] - v["eta"] * ref["grad_b1"].reshape(v["b1"].shape)}, "2layer", layout="assignment"
    )
    assert r.layout == "assignment" and r.passed
    with pytest.raises(KlayerError) as e:
        check_function(lambda v: {}, "2layer", layout="rows")
    assert str(e.value) == "unknown layout 'rows'; use klayer or assignment"


def test_a_student_functions_error_is_one_line_with_its_place(tmp_path, monkeypatch):
    from klayer.learn.check import check_function

    monkeypatch.chdir(tmp_path)
    (tmp_path / "raising.py").write_text("def forward(inputs):\n    x = 1\n    raise KeyError('W9')\n")
    from klayer.learn.check import load_function

    with pytest.raises(KlayerError) as e:
        check_function(load_function("raising.py:forward"), "2layer")
    assert str(e.value) == "your function forward raised KeyError: 'W9' (at raising.py:3, in forward)"  # relative
    (tmp_path / "importing.py").write_text("def forward(inputs):\n    import no_such_module_of_the_student\n")
    with pytest.raises(KlayerError) as e:  # raised inside <frozen importlib...>: the student's line is named
        check_function(load_function("importing.py:forward"), "2layer")
    assert str(e.value).endswith("(at importing.py:2, in forward)")
    (tmp_path / "evaluating.py").write_text("def forward(inputs):\n    return eval('1 / 0')\n")
    with pytest.raises(KlayerError) as e:  # raised in code compiled from a string: the student's line is named
        check_function(load_function("evaluating.py:forward"), "2layer")
    assert str(e.value).endswith("(at evaluating.py:2, in forward)")
    code = compile("def f(inputs):\n    raise ValueError('no luck here\\n')\n", "<student>", "exec")
    space = {}
    exec(code, space)  # a function without a file (a notebook cell): its own frame is still named
    with pytest.raises(KlayerError) as e:
        check_function(space["f"], "2layer")
    assert str(e.value) == "your function f raised ValueError: no luck here (at <student>:2, in f)"  # no layout hint
    with pytest.raises(KlayerError) as e:
        check_function(int, "2layer")  # no frame of the student's, no shape words: nothing added
    assert str(e.value).startswith("your function int raised TypeError: int() argument must be")
    assert str(e.value).endswith("not 'dict'")

    class Net:  # a callable object has no __qualname__: its repr names it
        def __call__(self, inputs):
            raise RuntimeError("boom")

        def __repr__(self):
            return "<Net>"

    with pytest.raises(KlayerError, match=r"^your function <Net> raised RuntimeError: boom \(at "):
        check_function(Net(), "2layer")


def test_a_shape_error_in_both_layouts_blames_the_students_own_array_quietly():
    import warnings

    from klayer.learn.check import check_function

    def fn(v):
        if v["X"].shape[0] == 5:  # klayer's layout: a shape error
            raise ValueError("operands could not be broadcast together")
        np.ones(3) / np.zeros(3)  # the other layout: runs, with a division by zero
        return {}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KlayerError, match="add --layout assignment"):
            check_function(fn, "2layer")

    def bad(v):
        raise ValueError("shapes (5,10) and (8,1) not aligned")

    with pytest.raises(KlayerError) as e:
        check_function(bad, "2layer")
    assert str(e.value).endswith(
        "; the inputs were in klayer's layout, one row per sample (X is 5 x 10), b1 has 8 entries; your function "
        "fails in the other layout too, so the layout is not the problem: the shape of one of your own arrays is "
        "(a bias or mean made a row, a vector without its second axis, a transposed matrix?)"
    )


def test_each_meaningful_factor_is_named_in_the_pattern():
    ref = reference_vectors("3layer_bn")  # n = 5
    S = ref["S_hat1"]

    def pattern(c):
        r = check({"S_hat1": c * S}, "3layer_bn")
        assert r.first_wrong == "S_hat1"
        return r.pattern

    assert pattern(5) == "off by a factor n = 5: a missing 1/n? (yours = 5 x reference)"
    assert pattern(5 * (1 + 5e-7)).startswith("off by a factor n = 5: ")  # within 1e-6 of it: the same factor
    assert pattern(1 / 5) == "off by a factor 1/n = 1/5: 1/n applied twice? (yours = 0.2 x reference)"
    assert pattern(2) == "off by a factor 2 (yours = 2 x reference)"
    assert pattern(0.5) == "off by a factor 1/2 (yours = 0.5 x reference)"
    assert pattern(-1) == "off by a factor -1: the sign flipped (yours = -1 x reference)"
    assert pattern(1 / np.log(2)).startswith("off by a factor 1/ln 2 = 1.443: log2 instead of the natural log? ")
    assert pattern(1 / np.log(10)).startswith("off by a factor 1/ln 10 = 0.4343: log10 instead of the natural log? ")
    assert (
        pattern(-0.8) == "off by a constant factor -0.8: the sign flipped, and a factor 0.8 (yours = -0.8 x reference)"
    )
    assert pattern(0) == "off by a constant factor 0 (yours = 0 x reference)"


def test_wrong_entries_are_listed_up_to_eight():
    ref = reference_vectors("3layer_bn")
    b = ref["b3_next"]  # 10 entries
    rng = np.random.default_rng(8)

    def pattern(k):
        a = b.copy()
        a[:k] += rng.uniform(0.5, 1.5, k)
        return check({"b3_next": a}, "3layer_bn").pattern

    assert pattern(8) == "wrong only for unit(s) 1, 2, 3, 4, 5, 6, 7, 8 of 10 (1-based)"
    assert pattern(9) == "wrong only for unit(s) 1, 2, 3, 4, 5, 6, 7, 8, ... of 10 (1-based)"
    X = ref["X"].copy()
    X[:, 2] += 1 + rng.random(5)
    assert check({"X": X}, "3layer_bn").pattern.startswith(
        "wrong only for feature(s) 3 of 10 (1-based); the others are right; it is an input of the case"
    )


def test_more_shape_notes_word_for_word():
    ref = reference_vectors("3layer_bn")

    def note(name, value):
        r = check({name: value}, "3layer_bn")
        assert r.first_wrong == name
        return r.pattern, r.mistake_id

    assert note("y", ref["y"][:3]) == ("shape (3,), expected (5,): one label per sample", None)
    assert note("S1", ref["S1"].sum(axis=1)) == (
        "shape (5,), expected (5, 8): one value per sample: reduced over the units",
        "reduced_wrong_axis",
    )
    assert note("W3", ref["W3"].T)[0] == (
        "shape (8, 10), expected (10, 8): it is transposed (a weight matrix is m x d, one row per output unit, in "
        "both layouts: S = X W^T + b in klayer's, S = W X + b in the assignments')"
    )
    assert note("mu1", np.ones(40))[0] == "shape (40,), expected (8,) (one value per unit)"


def test_every_mistake_that_fits_equally_well_is_listed():
    values = student("3layer_bn", {"G_wrt_S_tilde"})
    r = check({"G2": values["G2"]}, "3layer_bn")  # nothing after G2 tells the two apart
    assert (r.first_wrong, r.mistake_id, r.also) == ("G2", "G_wrt_S_tilde", ["bn_back_skipped"])
    assert "\n  (also consistent with: bn_back_skipped)" in r.format()


def test_the_count_line_leaves_out_what_was_given():
    ref = reference_vectors("3layer_bn")
    text = check(ref, "3layer_bn").format()
    assert f"\n{len(ref)} quantities compared, 0 wrong\n" in text  # nothing left out: no "not in your values"


def test_a_wrong_number_shows_the_difference_and_the_ratio():
    ref = reference_vectors("3layer_bn")
    loss = float(ref["loss"])
    p = check({"loss": loss + 0.1}, "3layer_bn").pattern
    assert (
        p
        == f"yours {loss + 0.1:.6g}, reference {loss:.6g} (yours - reference = 0.1, yours / reference = {(loss + 0.1) / loss:.4g})"
    )


def test_values_without_a_name_of_the_case_are_read_in_the_layout_they_declare():
    S3 = reference_vectors("3layer")["S3"]  # klayer's shape, declared as the assignments' layout: transposed there
    with pytest.raises(KlayerError) as e:
        check({"S3": S3, "layout": "assignment"}, "2layer")
    assert str(e.value).endswith("; these values fit case 3layer (its names and shapes): did you mean --case 3layer?")
    with pytest.raises(KlayerError) as e:
        check({"S3": S3}, "2layer")
    assert str(e.value).endswith(
        "; these values are right for case 3layer (all 1 of its quantities you gave): did you mean --case 3layer?"
    )
    with pytest.raises(KlayerError) as e:
        check({"layout": "klayer"}, "2layer")
    assert str(e.value) == "none of the values is a quantity of case 2layer (got nothing)"


def test_a_normalization_mistake_keeps_the_batch_variance_and_back_propagates_its_own_forward():
    from klayer.learn.cases import case_inputs
    from klayer.learn.vectors import compute

    ref, inputs = reference_vectors("3layer_bn"), case_inputs("3layer_bn")
    for m in ("eps_outside_sqrt", "var_not_sqrt"):  # the variance is right, S_hat is not
        computation = CATALOGUE[m].computations[0]  # the forward pass's (eps_outside_sqrt has a back-pass-only one)
        v = compute("3layer_bn", inputs, computation)
        np.testing.assert_allclose(v["var1"], ref["var1"], rtol=1e-12)
        assert not np.allclose(v["S_hat1"], ref["S_hat1"], rtol=1e-3)
    # n/(n-1) in the variance: the student's whole back pass goes through their own statistics
    values = student("3layer_bn", {"var_unbiased"}, layout="klayer")
    computation = CATALOGUE["var_unbiased"].computations[0]  # the forward pass's
    v = compute("3layer_bn", inputs, computation)
    for q in ("var1", "S_hat1", "G1", "G2", "grad_W1", "grad_W2"):
        np.testing.assert_allclose(np.reshape(values[q], v[q].shape), v[q], rtol=1e-9, atol=1e-12, err_msg=q)


def test_the_dict_form_has_list_shapes_and_the_report_lists_every_other_mistake():
    from klayer.learn.check import CheckResult, Row

    r = check({"S1": reference_vectors("3layer")["S1"], "P": np.ones((5, 3))}, "3layer")
    rows = r.to_dict()["rows"]  # JSON-ready as it is, before any serialization
    assert [row["shape"] for row in rows] == [[5, 8], [5, 3]] and all(
        set(row) == {"name", "shape", "error", "ok", "note"} for row in rows
    )
    also = CheckResult(
        "3layer_bn",
        "klayer",
        1e-4,
        [Row("G2", (5, 8), 0.5, False)],
        first_wrong="G2",
        mistake=CATALOGUE["G_wrt_S_tilde"],
        also=["bn_back_skipped", "relu_grad_missing"],
    )
    assert "\n  (also consistent with: bn_back_skipped, relu_grad_missing)" in also.format()


def test_inputs_are_read_so_they_must_be_right_to_a_tenth_of_the_tolerance():
    ref = reference_vectors("2layer")
    assert check({"X": ref["X"] * (1 + 0.05 * DEFAULT_TOL)}, "2layer").passed
    assert check({"X": ref["X"] * (1 + 0.5 * DEFAULT_TOL)}, "2layer").first_wrong == "X"  # a computed one would pass
    assert check({"S1": ref["S1"] * (1 + 0.5 * DEFAULT_TOL)}, "2layer").passed


def test_wrong_classes_are_class_es_not_class_s():
    P = reference_vectors("3layer_bn")["P"].copy()
    P[:, 4] += 0.5
    assert check({"P": P}, "3layer_bn").pattern.startswith("wrong only for class(es) 5 of 10 (1-based)")


def test_wrong_entries_are_named_by_what_the_axes_hold():
    ref = reference_vectors("3layer_bn")
    rng = np.random.default_rng(9)

    def pattern(name, index):
        a = ref[name].copy()
        a[index] += 1 + rng.random(a[index].shape)
        return check({name: a}, "3layer_bn").pattern

    assert pattern("grad_W2", (slice(None), 2)).startswith("wrong only for input(s) 3 of 8 (1-based)")
    assert pattern("grad_W2", 1).startswith("wrong only for output unit(s) 2 of 8 (1-based)")
    for name in ("Y", "P", "P_eval"):  # one column per class
        assert pattern(name, (slice(None), 4)).startswith("wrong only for class(es) 5 of 10 (1-based)"), name
    assert pattern("S_hat1", (slice(None), 4)).startswith("wrong only for unit(s) 5 of 8 (1-based)")
    assert pattern("P", 3).startswith("wrong only for sample(s) 4 of 5 (1-based)")
