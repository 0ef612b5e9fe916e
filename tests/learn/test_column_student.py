"""A third student, translated line by line from the assignments' MATLAB code (column-major data,
the parameters in lists, G_batch and BatchNormBackPass with sigma1, sigma2, D, c, 1_n): it passes
when correct, in float64 and float32, through a file and through a function, and each of its own
mistakes is located at its first wrong quantity and, where the catalogue has it, named."""

import numpy as np
import pytest
import scipy.io

from klayer.cli import main
from klayer.errors import KlayerError
from klayer.learn import CASES, check, check_function, reference_vectors

from .student_columns import BUGS, EXPECTED, forward_backward, make

SMALL = [name for name, c in CASES.items() if c.source == "random"]
INPUTS = {"X", "Y", "y", "lam", "eta", "eps", "bn_alpha"}


def file_inputs(values):
    """What the student reads from the case's .mat: the inputs, as loadmat gives them (1 x 1 scalars)."""
    return {
        q: a
        for q, a in values.items()
        if q in INPUTS or q.endswith("_init") or q.rstrip("0123456789") in ("W", "b", "gamma", "beta")
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SMALL)
def test_the_column_student_passes_as_a_function(case, dtype):
    result = check_function(make((), dtype), case, layout="assignment")
    assert result.passed, result.format()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_column_student_passes_the_cifar_case(dtype, cifar_dir):
    result = check_function(make((), dtype), "cifar_3layer_bn", layout="assignment", data_root=cifar_dir)
    assert result.passed, result.format()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_column_student_passes_through_a_mat_file(tmp_path, capsys, dtype):
    # klayer vectors --layout assignment, scipy.io.loadmat, the student's code, scipy.io.savemat, klayer check
    assert main(["vectors", "--case", "3layer_bn", "--layout", "assignment", "--out", str(tmp_path / "ref.mat")]) == 0
    ref = scipy.io.loadmat(tmp_path / "ref.mat")
    scipy.io.savemat(tmp_path / "mine.mat", forward_backward(file_inputs(ref), (), np.dtype(dtype)))
    capsys.readouterr()
    assert main(["check", str(tmp_path / "mine.mat"), "--case", "3layer_bn"]) == 0, capsys.readouterr().out


def test_every_bug_has_an_expectation():
    assert set(EXPECTED) | {"b_row"} == BUGS


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bug", sorted(EXPECTED))
def test_the_column_students_bugs(bug, dtype):
    case, first, mistake = EXPECTED[bug]
    result = check_function(make({bug}, dtype), case, layout="assignment")
    assert (result.first_wrong, result.mistake_id) == (first, mistake), result.format()


def test_the_column_students_bugs_through_values_too():
    # the same values given as a dict (what a saved file holds) are diagnosed the same
    for bug, (case, first, mistake) in EXPECTED.items():
        values = forward_backward(file_inputs(reference_vectors(case, "assignment")), {bug})
        result = check(values, case)
        assert (result.layout, result.first_wrong, result.mistake_id) == ("assignment", first, mistake), bug


def test_a_bias_made_a_row_is_not_blamed_on_the_layout():
    # W X + b' with b' 1 x m fails in both layouts: the hint says so, instead of "use --layout klayer"
    with pytest.raises(KlayerError) as e:
        check_function(make({"b_row"}), "3layer_bn", layout="assignment")
    msg = str(e.value)
    assert "broadcast" in msg and "student_columns.py:" in msg
    assert "use --layout klayer" not in msg and "add --layout assignment" not in msg
    assert "b1 is 8 x 1; your function fails in the other layout too, so the layout is not the problem" in msg


def test_a_column_function_given_klayers_layout_still_gets_the_layout_hint():
    with pytest.raises(KlayerError) as e:
        check_function(make(), "3layer_bn", layout="klayer")
    assert str(e.value).endswith("add --layout assignment")
