"""The README's promises: its two set-up commands come first, and CI runs its test command."""

import re

from .conftest import ROOT


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_starts_with_the_two_setup_commands():
    install_and_train, install_and_test = readme_commands()[:2]
    assert re.search(r"pip install -e '?\.", install_and_train)
    assert "klayer train experiments/a3_3layer_bn.toml" in install_and_train
    assert "pytest" in install_and_test and "[test]" in install_and_test


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'README_TEST_COMMAND="(.+)"', ci).group(1)
    assert command == readme_commands()[1]


def test_readme_experiments_exist():
    text = (ROOT / "README.md").read_text()
    for name in set(re.findall(r"`(a[23]_\w+)\.toml`", text)):
        assert (ROOT / "experiments" / f"{name}.toml").is_file(), name
