"""A second, independent student (row layout, CS231n-style batch-norm backward, PyTorch-like
names): its mistakes, written its own way, are found and named the same."""

import numpy as np
import pytest

from klayer.learn import case_inputs, check

from .student_rows import BUGS, run

# bug -> (case, first wrong, catalogued mistake)
EXPECTED = {
    "var_unbiased": ("3layer_bn", "var1", "var_unbiased"),
    "eps_outside_sqrt": ("3layer_bn", "S_hat1", "eps_outside_sqrt"),
    "gamma_inside": ("3layer_bn", "S_tilde1", "gamma_before_norm"),
    "softmax_axis0": ("3layer_bn", "P", "softmax_wrong_axis"),
    "np_mean_loss": ("3layer_bn", "loss", "loss_mean_over_classes"),
    "dscores_not_divided": ("3layer_bn", "grad_W3", "grad_not_divided_by_n"),
    "half_reg": ("3layer_bn", "grad_W3", "reg_grad_no_2"),
    "bias_decay": ("3layer", "grad_b3", "reg_biases"),
    "db_axis1": ("3layer", "grad_b3", "reduced_wrong_axis"),
    "no_dxhat_sum": ("3layer_bn", "G2", "bn_back_no_mean_term"),
    "no_xhat_term": ("2layer_bn", "G1", "bn_back_no_var_term"),
    "relu_ge": ("3layer", "G1", "relu_grad_at_zero"),
    "dx_with_W_T": ("3layer_bn", "grad_gamma1", "weight_transposed_backward"),
    "momentum_convention": ("2layer_bn", "mu_av1", "running_alpha_swapped"),
    "eval_train_mode": ("3layer_bn", "P_eval", "eval_batch_stats"),
}


def test_every_bug_has_an_expectation():
    assert set(EXPECTED) == BUGS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", ["2layer", "3layer_bn", "cifar_3layer_bn"])
def test_the_second_student_passes_when_correct(case, dtype, cifar_dir):
    result = check(run(case_inputs(case, cifar_dir), (), dtype), case, data_root=cifar_dir)
    assert result.passed and result.layout == "klayer", result.format()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bug", sorted(BUGS))
def test_the_second_students_bugs(bug, dtype):
    case, first, mistake = EXPECTED[bug]
    result = check(run(case_inputs(case), {bug}, dtype), case)
    assert (result.first_wrong, result.mistake_id) == (first, mistake), result.format()
