"""A fourth student, object-oriented (one class per layer, a batch-norm backward pass derived stage by
stage through d_var and d_mu), in the assignments' column layout: it passes when correct, in float64
and float32, and each of its mistakes, written its own way, is located at its first wrong quantity
and named (or honestly left unnamed) through the files and commands the docs give a student."""

import numpy as np
import pytest

from klayer.cli import main
from klayer.learn import CASES, case_inputs, check, check_function, reference_vectors
from klayer.learn.vectors import read_values, to_layout

from .student_layers import BUGS, run

SMALL = [name for name, c in CASES.items() if c.source == "random"]

# (bugs, case) -> (first wrong, catalogued mistake or None)
EXPECTED = {
    ("grad_no_1_over_n", "3layer_bn"): ("grad_W3", "grad_not_divided_by_n"),
    ("bn_grads_mean", "3layer_bn"): ("grad_gamma2", "grad_divided_twice"),
    ("G_saved_wrt_S_hat", "3layer_bn"): ("G2", "G_wrt_S_tilde"),
    ("reg_lam_W", "3layer"): ("grad_W3", "reg_grad_no_2"),
    ("reg_on_b", "3layer"): ("grad_b3", "reg_biases"),
    ("reg_on_gamma_beta", "3layer_bn"): ("grad_gamma2", "reg_gamma_beta"),
    ("unbiased_var", "3layer_bn"): ("var1", "var_unbiased"),
    ("eps_outside_sqrt", "3layer_bn"): ("S_hat1", "eps_outside_sqrt"),
    ("no_d_mu", "3layer_bn"): ("G2", "bn_back_no_mean_term"),
    ("no_d_var", "3layer_bn"): ("G2", "bn_back_no_var_term"),
    ("eps_missing_backward", "3layer_bn"): ("G2", "eps_missing"),
    ("eps_missing_backward", "2layer_bn"): ("G1", "eps_missing"),
    ("relu_mask_from_S", "3layer_bn"): ("grad_gamma2", "relu_grad_before_bn"),
    ("relu_mask_from_S_hat", "3layer_bn"): ("grad_gamma2", "relu_grad_before_bn"),
    ("relu_mask_from_S_hat", "2layer_bn"): ("grad_gamma1", "relu_grad_before_bn"),
    ("softmax_over_samples", "3layer"): ("P", "softmax_wrong_axis"),
    ("gamma_beta_grads_swapped", "3layer_bn"): ("grad_gamma2", "grad_gamma_beta_swapped"),
    ("gamma_grad_over_units", "3layer_bn"): ("grad_gamma2", "reduced_wrong_axis"),
    ("running_alpha_swapped", "3layer_bn"): ("mu_av1", "running_alpha_swapped"),
    ("running_from_zeros", "3layer_bn"): ("mu_av1", "running_init_zero"),
    ("running_from_zeros", "2layer_bn"): ("mu_av1", "running_init_zero"),
    ("update_wrong_sign", "3layer_bn"): ("W1_next", "update_wrong_sign"),
    ("update_during_backward", "3layer"): ("G2", "update_during_backward"),
    ("update_during_backward", "2layer"): ("G1", "update_during_backward"),
    ("update_during_backward", "3layer_bn"): ("grad_gamma2", "update_during_backward"),
    ("bias_after_bn", "3layer_bn"): ("S1", "bias_missing"),
    ("loss_mean_over_classes", "3layer_bn"): ("loss", "loss_mean_over_classes"),
    ("eval_with_batch_stats", "3layer_bn"): ("S_hat_eval1", "eval_batch_stats"),
    ("cost_norm_not_squared", "3layer"): ("cost", "reg_wrong_norm"),
    ("cost_norm_not_squared", "2layer_bn"): ("cost", "reg_wrong_norm"),
    ("relu_in_place", "3layer"): ("S1", "relu_in_place"),
    ("relu_in_place", "3layer_bn"): ("S_tilde1", "relu_in_place"),
    ("params_in_place", "3layer"): ("W1", "step_in_place"),
    ("params_in_place", "2layer_bn"): ("W1", "step_in_place"),
    ("d_var_no_half", "3layer_bn"): ("G2", "bn_back_var_term_doubled"),
    ("d_var_no_half", "2layer_bn"): ("G1", "bn_back_var_term_doubled"),
    ("running_var_std", "3layer_bn"): ("var_av1", "running_var_std"),
    ("running_var_std", "2layer_bn"): ("var_av1", "running_var_std"),
    # outside the catalogue: located, and not misnamed
    ("relu_mask_next_layer", "3layer"): ("G1", None),
    ("shuffle_X_only", "3layer"): ("S1", None),
    # two mistakes: the first one named, or none when both change the same quantity
    ("no_d_mu+no_d_var", "3layer_bn"): ("G2", "bn_back_stats_constant"),
    ("no_d_mu+unbiased_var", "3layer_bn"): ("var1", "var_unbiased"),
    ("grad_no_1_over_n+no_d_var", "3layer_bn"): ("grad_W3", "grad_not_divided_by_n"),
    ("reg_on_b+running_from_zeros", "3layer_bn"): ("grad_b3", "reg_biases"),
    ("running_from_zeros+update_during_backward", "3layer_bn"): ("grad_gamma2", "update_during_backward"),
    ("update_during_backward+update_wrong_sign", "3layer"): ("G2", None),
    ("grad_no_1_over_n+reg_lam_W", "3layer_bn"): ("grad_W3", None),
}


def student(bugs, case, dtype=np.float64):
    """The student's values (with the parameters they hold, as a saved dict of everything has them)."""
    bugs = set(bugs.split("+")) if bugs else set()
    return run(to_layout(case_inputs(case), "assignment"), bugs, dtype, with_params="params_in_place" in bugs)


def test_every_bug_has_an_expectation():
    assert {b for bugs, _ in EXPECTED for b in bugs.split("+")} == BUGS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SMALL)
def test_the_layer_student_passes_when_correct(case, dtype):
    result = check_function(lambda inputs: run(inputs, (), dtype, with_params=True), case, layout="assignment")
    assert result.passed and not result.notes, result.format()


def test_the_layer_student_passes_the_cifar_case(cifar_dir):
    values = run(to_layout(case_inputs("cifar_3layer_bn", cifar_dir), "assignment"), (), np.float32)
    result = check(values, "cifar_3layer_bn", data_root=cifar_dir)
    assert result.passed and result.layout == "assignment", result.format()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("bugs", "case"), sorted(EXPECTED))
def test_the_layer_students_bugs(bugs, case, dtype):
    first, mistake = EXPECTED[bugs, case]
    result = check(student(bugs, case, dtype), case)
    assert (result.first_wrong, result.mistake_id) == (first, mistake), result.format()
    text = result.format()
    assert f"\nfirst wrong: {first} (" in text
    assert (f"\nlikely mistake: {mistake}: " in text) == (mistake is not None)
    assert ("no catalogued mistake reproduces it" in text) == (mistake is None)


THROUGH_THE_COMMANDS = [
    ("no_d_var", "3layer_bn"),
    ("relu_in_place", "3layer_bn"),
    ("update_during_backward", "3layer_bn"),
    ("params_in_place", "3layer"),
]


@pytest.mark.parametrize(("bugs", "case"), THROUGH_THE_COMMANDS)
def test_through_the_commands_the_docs_give(bugs, case, tmp_path, capsys):
    # klayer vectors --layout assignment, the student's code on the file's inputs, np.savez, klayer check
    ref = tmp_path / "ref.npz"
    assert main(["vectors", "--case", case, "--layout", "assignment", "--out", str(ref)]) == 0
    given = {q: v for q, v in read_values(ref).items() if q in case_inputs(case)}
    np.savez(tmp_path / "mine.npz", **run(given, set(bugs.split("+")), np.float32, with_params=True))
    capsys.readouterr()
    assert main(["check", str(tmp_path / "mine.npz"), "--case", case]) == 1
    out = capsys.readouterr().out
    first, mistake = EXPECTED[bugs, case]
    assert f"\nfirst wrong: {first} (" in out and f"\nlikely mistake: {mistake}: " in out, out
    assert "Traceback" not in out


def test_an_input_stepped_in_place_is_not_sent_back_to_the_vectors_file():
    text = check(student("params_in_place", "3layer"), "3layer").format()
    assert "pattern: yours is W1_next, its value after the step\n" in text
    assert "read it from the vectors file" not in text


def test_a_running_average_updated_in_place_is_named_at_its_init():
    values = reference_vectors("2layer_bn")
    values["mu_av1_init"] = values["mu_av1"]  # mu_av *= alpha; mu_av += (1 - alpha) * mu on the file's array
    result = check(values, "2layer_bn")
    assert (result.first_wrong, result.mistake_id) == ("mu_av1_init", "step_in_place"), result.format()
    assert result.pattern == "yours is mu_av1, its value after the step"


@pytest.mark.parametrize(("before", "after"), [("gamma1", "gamma1_next"), ("var_av1_init", "var_av1")])
def test_a_parameter_or_running_average_left_unchanged_is_named(before, after):
    values = reference_vectors("2layer_bn")
    values[after] = values[before]  # its update left out
    result = check(values, "2layer_bn")
    assert (result.first_wrong, result.mistake_id) == (after, "step_missing"), result.format()
    assert result.pattern == f"yours is {before}, its value before the step"


def test_a_bias_added_after_batch_norm_is_told_where_it_belongs():
    text = check(student("bias_after_bn", "3layer_bn"), "3layer_bn").format()
    assert "likely mistake: bias_missing: the bias is not added in the forward pass (or only after batch norm" in text


def test_an_input_stepped_in_place_by_a_function_is_named():
    result = check_function(
        lambda inputs: run(inputs, {"params_in_place"}, with_params=True), "3layer", layout="assignment"
    )
    assert (result.first_wrong, result.mistake_id) == ("W1", "step_in_place"), result.format()
    assert "passed to your function" in result.format()


def test_batch_norm_gradients_without_their_1_over_n_are_named():
    values = reference_vectors("3layer_bn")
    for q in ("grad_gamma2", "grad_beta2", "grad_gamma1", "grad_beta1"):
        values[q] = values[q] * 5  # (G_batch .* S_hat) 1_n, the 1/n left out (grad_W, grad_b have it)
    result = check(values, "3layer_bn")
    assert (result.first_wrong, result.mistake_id) == ("grad_gamma2", "grad_not_divided_by_n"), result.format()


@pytest.mark.parametrize(
    ("case", "saved", "as_", "label"),
    [
        ("3layer", "cost", "loss", ""),
        ("3layer", "S2", "S1", " (S in layer 2)"),
        ("3layer_bn", "var_av1", "mu_av1", " (var_av in layer 1)"),
        ("3layer_bn", "S_tilde1", "S_hat1", " (S_tilde in layer 1)"),
    ],
)
def test_a_value_saved_under_another_name_is_said_to_be_the_other(case, saved, as_, label):
    pattern = f"yours is {saved}{label}, not {as_}: saved under another name, or computed as {saved} is?"
    values = reference_vectors(case)
    values[as_] = values[saved]
    result = check(values, case)
    assert (result.first_wrong, result.mistake_id, result.pattern) == (as_, None, pattern), result.format()


def test_a_per_sample_gradient_broadcast_into_the_step_is_a_sum_over_the_wrong_axis():
    # d_gamma summed over the units (1 x n), then gamma - eta * d_gamma: m x n by broadcasting
    values = {q: v for q, v in student("gamma_grad_over_units", "3layer_bn").items() if q.endswith("_next")}
    result = check(values, "3layer_bn")
    assert (result.first_wrong, result.mistake_id) == ("gamma1_next", "reduced_wrong_axis"), result.format()
    assert "one value per unit plus one per sample" in result.pattern


def test_a_per_unit_and_sample_value_is_still_a_missing_sum():
    values = reference_vectors("3layer_bn")
    values["grad_gamma2"] = values["S_hat2"] * values["G2"]  # n x m: the sum over the samples left out
    result = check(values, "3layer_bn")
    assert result.first_wrong == "grad_gamma2" and result.mistake_id is None, result.format()
    assert result.pattern.endswith("one value per sample and unit: the sum or mean over the samples is missing")


def test_names_counting_the_layers_from_0_are_told_to_count_from_1():
    # a Python student's lists, W[0] .. W[k-1], saved as W0 .. W2
    values = {f"{q[:-1]}{int(q[-1]) - 1}": a for q, a in reference_vectors("3layer").items() if q[-1:].isdigit()}
    result = check(values, "3layer")
    assert result.notes[0].startswith("your names number the layers from 0 (")
    assert "add 1 to each layer number" in result.notes[0]
    assert "W0 (layers are numbered from 1: W1?)" in result.ignored
    assert result.first_wrong == "W1"
