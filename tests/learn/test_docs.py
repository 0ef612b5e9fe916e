"""docs/learn.md: its output is real, its tables list every name and every catalogued mistake."""

import re

from klayer.cli import main
from klayer.learn import CATALOGUE, check_function, load_function, quantity_names
from klayer.learn.vectors import split_name

from ..conftest import ROOT

DOC = ROOT / "docs" / "learn.md"
EXAMPLE = ROOT / "docs" / "examples" / "my_network.py"


def tiny(text):
    """Round-off digits (errors below 1e-10, or exactly 0) differ between BLAS builds: blank them."""
    return re.sub(r"\d\.\de-(1[0-9]|[2-9][0-9])\b|\b0\.0e\+00\b", "~0", text)


def test_the_real_diagnosis_is_what_klayer_prints(capsys, monkeypatch):
    text = DOC.read_text()
    command = re.search(r"```\n(klayer check --python .+)\n```", text).group(1)
    shown = re.search(r"<!-- the output below.*?-->\n```\n(.*?)\n```", text, re.S).group(1)
    monkeypatch.chdir(ROOT)
    assert main(command.split()[1:]) == 1
    assert tiny(capsys.readouterr().out.rstrip("\n")) == tiny(shown)
    assert "first wrong: G2 (G in layer 2)" in shown and "likely mistake: bn_back_sigma1_in_c:" in shown


def test_the_fix_the_tutorial_names_makes_the_example_pass(tmp_path):
    source = EXAMPLE.read_text()
    assert source.count("sigma2 = (var + eps) ** -0.5") == 1
    fixed = tmp_path / "fixed.py"
    fixed.write_text(source.replace("sigma2 = (var + eps) ** -0.5", "sigma2 = (var + eps) ** -1.5"))
    assert check_function(load_function(f"{fixed}:forward_backward"), "3layer_bn", layout="assignment").passed


def test_the_catalogue_table_lists_every_mistake():
    table = DOC.read_text().split("## The catalogue of mistakes")[1]
    assert re.findall(r"^\| `(\w+)` \|", table, re.M) == list(CATALOGUE)


def test_the_names_table_lists_every_name():
    table = DOC.read_text().split("## The names")[1].split("## Conventions")[0]
    for name in quantity_names("3layer_bn"):
        base, l, suffix = split_name(name)
        spelled = name if l is None else f"{base}{{l}}{suffix}"
        assert f"`{spelled}`" in table, spelled
