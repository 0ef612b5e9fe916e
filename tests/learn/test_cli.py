"""``klayer vectors`` and ``klayer check`` from the command line: files, exit codes, the verdict
lines, the .mat round trip in the assignments' layout, and ``--python``."""

import json
import re

import numpy as np
import pytest
import scipy.io

from klayer.cli import main
from klayer.errors import KlayerError
from klayer.learn import CASES, check

from .student import run


def test_vectors_list(capsys):
    assert main(["vectors", "--list"]) == 0
    out = capsys.readouterr().out
    for name, case in CASES.items():
        assert re.search(rf"^{name}\s+{re.escape(case.description)}$", out, re.M)


def test_vectors_writes_each_format(tmp_path, capsys):
    for ext in ("npz", "mat", "json"):
        assert main(["vectors", "--case", "2layer", "--out", str(tmp_path / f"v.{ext}")]) == 0
        assert (tmp_path / f"v.{ext}").stat().st_size > 1000
    assert "wrote case 2layer (28 quantities, klayer layout)" in capsys.readouterr().out


@pytest.mark.parametrize("ext", ["npz", "mat", "json"])
def test_vectors_are_written_whole_or_not_at_all(tmp_path, capsys, monkeypatch, ext):
    """A disk that fills up while the file is written: one line naming it, exit 1, the previous
    file untouched and no temporary file left (never a truncated file under the final name)."""
    import os

    out = tmp_path / f"v.{ext}"
    out.write_text("previous")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["vectors", "--case", "2layer", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "No space left" in err
    assert out.read_text() == "previous" and sorted(tmp_path.iterdir()) == [out]


def test_vectors_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["vectors", "--out", str(tmp_path / "v.npz")])
    assert e.value.code == 2
    assert "give --case NAME and --out FILE" in capsys.readouterr().err
    assert main(["vectors", "--case", "2layer", "--out", str(tmp_path / "v.csv")]) == 1
    assert capsys.readouterr().err.startswith("klayer: error: ")


def student_mat(tmp_path, bugs=(), case="3layer_bn"):
    """klayer writes the case in the assignment layout; scipy reads it back as a MATLAB user's
    code would; the student's implementation computes; scipy saves the student's values."""
    assert main(["vectors", "--case", case, "--layout", "assignment", "--out", str(tmp_path / "ref.mat")]) == 0
    m = {k: v for k, v in scipy.io.loadmat(tmp_path / "ref.mat").items() if not k.startswith("__")}
    assert m["X"].shape == (10, 5) and m["b1"].shape == (8, 1)
    inputs = {
        k: v
        for k, v in m.items()
        if k in {"X", "Y", "lam", "eta", "eps", "bn_alpha"} or re.fullmatch(r"(W|b|gamma|beta)\d|\w+_init", k)
    }
    out = run(inputs, bugs)
    out["y"] = m["y"] + 1  # MATLAB's 1-based labels
    path = tmp_path / "mine.mat"
    scipy.io.savemat(path, out)
    return path


def test_mat_round_trip_in_assignment_layout(tmp_path, capsys):
    path = student_mat(tmp_path)
    assert main(["check", str(path), "--case", "3layer_bn"]) == 0
    out = capsys.readouterr().out
    assert "your layout: assignment" in out and "first wrong" not in out
    assert re.search(r"^  b1\s+\(8, 1\)\s+\S+\s+OK", out, re.M) is None  # b1 is an input, not in the student's file
    assert re.search(r"^  mu1\s+\(8, 1\)\s+\S+\s+OK$", out, re.M)
    assert "y holds 1-based labels" in out
    assert out.rstrip().endswith("quantities you gave are right")


def test_check_exit_1_and_the_verdict_lines(tmp_path, capsys):
    path = student_mat(tmp_path, {"bn_back_no_mean_term"})
    assert main(["check", str(path), "--case", "3layer_bn"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^first wrong: G2 \(G in layer 2\)$", out, re.M)
    assert re.search(r"^likely mistake: bn_back_no_mean_term: batch-norm backward is missing the mean term", out, re.M)
    assert re.search(r"^  G2 .* WRONG  <- first wrong$", out, re.M)


def test_check_infers_the_case_from_the_file(tmp_path, capsys):
    assert main(["vectors", "--case", "2layer_bn", "--out", str(tmp_path / "v.json")]) == 0
    assert main(["check", str(tmp_path / "v.json")]) == 0
    assert "case 2layer_bn" in capsys.readouterr().out


def test_check_exit_2_for_unusable_input(tmp_path, capsys):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "other.npz", foo=np.ones(3))
    for argv in (
        ["check", str(tmp_path / "missing.mat"), "--case", "2layer"],
        ["check", str(tmp_path / "junk.npz"), "--case", "2layer"],
        ["check", str(tmp_path / "other.npz"), "--case", "2layer"],
        ["check", str(tmp_path / "other.npz"), "--case", "nope"],
        ["check", str(tmp_path / "other.npz")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("klayer: error: ") and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["check"])
    assert e.value.code == 2


def test_check_json(tmp_path, capsys):
    path = student_mat(tmp_path, {"var_unbiased"})
    capsys.readouterr()
    assert main(["check", str(path), "--case", "3layer_bn", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["first_wrong"] == "var1" and d["mistake"]["id"] == "var_unbiased"


STUDENT_MODULE = """
from tests.learn.student import run

EXPECTED = {"X", "Y", "y", "lam", "eta", "eps", "bn_alpha", "W1", "b1", "gamma1", "beta1", "W2", "b2",
            "mu_av1_init", "var_av1_init"}


def correct(inputs):
    return run(inputs)


def buggy(inputs):
    return run(inputs, {"eps_outside_sqrt"})


def contract(inputs):
    assert set(inputs) == EXPECTED, sorted(inputs)
    assert isinstance(inputs["lam"], float) and inputs["X"].shape == (10, 5) and inputs["b1"].shape == (8, 1)
    inputs["X"][:] = 0  # a copy: changing it changes nothing in klayer
    return {"S1": inputs["W1"] @ inputs["X"] + inputs["b1"]}


def crash(inputs):
    return 1 / 0


def first_layer(W, X, b):
    return W @ X + b  # the assignments' S = W X + b: klayer's layout does not fit it


def columns(inputs):
    return {"S1": first_layer(inputs["W1"], inputs["X"], inputs["b1"])}


def not_a_dict(inputs):
    return [1, 2]
"""


@pytest.fixture
def student_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(STUDENT_MODULE)
    return path


def test_python_function_by_path(student_file, capsys):
    argv = ["check", "--python", f"{student_file}:correct", "--case", "2layer_bn", "--layout", "assignment"]
    assert main(argv) == 0
    argv[2] = f"{student_file}:buggy"
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "\nfirst wrong: S_hat1 (S_hat in layer 1)\n" in out and "\nlikely mistake: eps_outside_sqrt: " in out


def test_python_function_by_module_name_from_the_current_directory(student_file, monkeypatch, capsys):
    monkeypatch.chdir(student_file.parent)
    (student_file.parent / "my_net_by_name.py").write_text(STUDENT_MODULE)
    assert main(["check", "--python", "my_net_by_name:correct", "--case", "3layer_bn", "--layout", "assignment"]) == 0


def test_python_contract_inputs_are_fresh_copies_in_the_layout(student_file, capsys):
    # S1 computed from zeroed X is wrong: the function got the inputs, and klayer's were untouched
    assert main(["check", "--python", f"{student_file}:contract", "--case", "2layer_bn", "--layout", "assignment"]) == 1
    assert "first wrong: S1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "target, message",
    [
        ("crash", "your function crash raised ZeroDivisionError: division by zero"),
        ("not_a_dict", "your function not_a_dict returned list; it must return a dict"),
        ("nothing", "has no function 'nothing'"),
    ],
)
def test_python_function_failures_are_one_line_and_exit_2(student_file, capsys, target, message):
    assert main(["check", "--python", f"{student_file}:{target}", "--case", "2layer_bn"]) == 2
    err = capsys.readouterr().err
    assert err == f"klayer: error: {err.split('klayer: error: ')[1]}" and err.count("\n") == 1
    assert message in err


def line_of(text, source=STUDENT_MODULE):
    return source.splitlines().index(next(x for x in source.splitlines() if text in x)) + 1


def test_a_raising_function_is_located_in_the_students_code(student_file, capsys):
    # the innermost frame of the student's file: not klayer's, not NumPy's, and not the function called
    assert main(["check", "--python", f"{student_file}:columns", "--case", "2layer_bn"]) == 2
    err = one_error_line(capsys)
    assert err.startswith("klayer: error: your function columns raised ValueError: matmul: ")
    assert f"my_net.py:{line_of('return W @ X + b')}, in first_layer)" in err
    assert "the inputs were in klayer's layout, one row per sample (X is 5 x 10)" in err
    assert err.rstrip().endswith("add --layout assignment")
    assert main(["check", "--python", f"{student_file}:columns", "--case", "2layer_bn", "--layout", "assignment"]) == 0
    capsys.readouterr()
    assert main(["check", "--python", f"{student_file}:crash", "--case", "2layer_bn"]) == 2
    err = one_error_line(capsys)
    assert f"ZeroDivisionError: division by zero (at {student_file}:{line_of('1 / 0')}, in crash)" in err
    assert "layout" not in err  # not a shape problem: no layout hint


def test_a_shape_error_in_the_assignment_layout_points_to_klayers_layout(tmp_path, capsys):
    (tmp_path / "rows.py").write_text("def f(inputs):\n    return {'S1': inputs['X'] @ inputs['W1'].T}\n")
    assert main(["check", "--python", f"{tmp_path / 'rows.py'}:f", "--case", "3layer", "--layout", "assignment"]) == 2
    err = one_error_line(capsys)
    assert "rows.py:2, in f);" in err
    assert "the inputs were in the assignments' layout, one column per sample (X is 10 x 5)" in err
    assert err.rstrip().endswith("use --layout klayer")


def test_odd_returns_and_multi_line_messages_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "odd.py").write_text(
        "def int_key(inputs):\n    return {1: inputs['X']}\n"
        "def two_lines(inputs):\n    raise RuntimeError('first line\\nsecond line')\n"
    )
    for target, message in (
        ("int_key", "returned the key 1; the keys must be quantity names (str)"),
        ("two_lines", "raised RuntimeError: first line second line"),
    ):
        assert main(["check", "--python", f"{tmp_path / 'odd.py'}:{target}", "--case", "3layer"]) == 2
        assert message in one_error_line(capsys)
    with pytest.raises(KlayerError, match="key 1 is not a quantity name"):
        check({1: np.zeros(3), "S1": np.zeros((5, 10))}, case="3layer")


def test_python_import_failures_exit_2(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("def f(:\n")
    for spec in (f"{tmp_path / 'broken.py'}:f", f"{tmp_path / 'absent.py'}:f", "no_such_module_xyz:f", "no_colon"):
        assert main(["check", "--python", spec, "--case", "2layer"]) == 2, spec
        err = capsys.readouterr().err
        assert err.startswith("klayer: error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["check", "--python", "x:f"])  # --case is required with --python


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("klayer: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_ragged_or_text_file_is_one_line_naming_file_and_quantity(tmp_path, capsys):
    assert main(["vectors", "--case", "3layer_bn", "--out", str(tmp_path / "v.json")]) == 0
    doc = json.loads((tmp_path / "v.json").read_text())
    doc["S1"][1] = doc["S1"][1][:3]
    (tmp_path / "ragged.json").write_text(json.dumps(doc))
    capsys.readouterr()
    for argv in (
        ["check", str(tmp_path / "ragged.json"), "--case", "3layer_bn"],
        ["check", str(tmp_path / "ragged.json")],
    ):
        assert main(argv) == 2
        assert "ragged.json: S1: rows of different lengths" in one_error_line(capsys)
    np.savez(tmp_path / "text.npz", S1=np.array(doc["S1"][0], dtype=str), case_name="3layer_bn")
    assert main(["check", str(tmp_path / "text.npz")]) == 2
    assert "text.npz: S1: text, not numbers" in one_error_line(capsys)


@pytest.mark.parametrize("tol", ["-1", "0", "nan", "inf"])
def test_tol_is_range_checked(tmp_path, capsys, tol):
    assert main(["vectors", "--case", "2layer", "--out", str(tmp_path / "v.npz")]) == 0
    capsys.readouterr()
    assert main(["check", str(tmp_path / "v.npz"), "--tol", tol]) == 2
    assert "tolerance must be a finite number above 0" in one_error_line(capsys)


def test_missing_cifar_names_what_works(tmp_path, capsys):
    (tmp_path / "mine.json").write_text('{"loss": 2.3}')
    for argv in (
        ["vectors", "--case", "cifar_3layer_bn", "--out", str(tmp_path / "c.npz"), "--data", str(tmp_path)],
        ["check", str(tmp_path / "mine.json"), "--case", "cifar_3layer_bn", "--data", str(tmp_path)],
    ):
        assert main(argv) != 0
        err = one_error_line(capsys)
        assert "--data" in err and "KLAYER_DATA" in err and "--no-download" not in err
