"""Mutation testing, one module at a time, with that module's fast tests (mutmut 3).

    python tools/mutate.py schedules              # mutate src/klayer/training/schedules.py
    python tools/mutate.py gradcheck -j 2         # two workers (default: every core)
    python tools/mutate.py prepare --survivors    # then print the diff of every survivor
    python tools/mutate.py prepare show NAME      # any mutmut command, in that module's work folder

Each module runs in its own work folder, ``.mutation/<module>/`` (git-ignored, recreated on every
run): a copy of ``src/`` and ``tests/`` and this project's ``pyproject.toml`` with a
``[tool.mutmut]`` table that mutates that one file and selects its tests. mutmut copies it again
into ``mutants/`` there, records which selected tests call each function, then runs every mutant
against only those tests (``-x``). The last line is ``module: killed/total``.

The selection is the module's fast tests: ``-m "not slow"``, no real CIFAR-10 (``KLAYER_DATA`` is
pointed at nothing) and, for ``prepare``, not the hypothesis fuzzers of the file readers and config
files (they never reach the mutated code). Needs ``pip install -e '.[test,dev]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (file to mutate, test selection). The tests are pytest arguments (files or node ids).
MODULES = {
    "schedules": (
        "src/klayer/training/schedules.py",
        ["tests/test_schedules.py", "tests/test_train.py", "tests/test_techniques.py"],
    ),
    "gradcheck": ("src/klayer/gradcheck.py", ["tests/test_gradcheck.py"]),
    "prepare": (
        "src/klayer/data/prepare.py",
        ["tests/test_prepare.py", "tests/test_data.py", "tests/test_config.py", "-k", "not fuzz"],
    ),
    "layers": ("src/klayer/layers.py", ["tests/test_layers.py", "tests/test_network.py"]),
    "network": ("src/klayer/network.py", ["tests/test_network.py", "tests/test_layers.py", "tests/test_techniques.py"]),
    "optim": ("src/klayer/training/optim.py", ["tests/test_techniques.py", "tests/test_train.py"]),
}

KILLED = {1, 3}  # pytest exit codes: tests failed, internal error
NAMES = {0: "survived", 33: "no tests", 5: "no tests", 34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout",
         152: "timeout", 255: "timeout", -9: "segfault", -11: "segfault", None: "not checked"}  # fmt: skip


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def prepare_folder(module: str) -> Path:
    target, tests = MODULES[module]
    work = ROOT / ".mutation" / module
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    config = f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = [{json.dumps(target)}]
pytest_add_cli_args_test_selection = {toml_list(tests)}
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider"]
use_git_change_detection = false
"""
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + config)
    return work


def environment() -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env["KLAYER_DATA"] = str(ROOT / ".mutation" / "no-data")  # the real-CIFAR tests skip
    env.pop("PYTHONPATH", None)  # mutmut puts its mutated copy of src/ first
    return env


def mutmut() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    return [str(exe)] if exe.exists() else ["mutmut"]


def results(module: str) -> tuple[Counter, dict]:
    target, _ = MODULES[module]
    meta = json.loads((ROOT / ".mutation" / module / "mutants" / (target + ".meta")).read_text())
    return Counter(meta["exit_code_by_key"].values()), meta["exit_code_by_key"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", choices=sorted(MODULES))
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel mutants (default: all cores)")
    p.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    p.add_argument(
        "command", nargs="*", help="a mutmut command (show NAME, results) to run in the module's folder instead"
    )
    args = p.parse_intermixed_args(argv)
    work = ROOT / ".mutation" / args.module
    if args.command:
        return subprocess.call(mutmut() + args.command, cwd=work, env=environment())

    work = prepare_folder(args.module)
    start = time.perf_counter()
    code = subprocess.call(mutmut() + ["run", "--max-children", str(args.jobs)], cwd=work, env=environment())
    seconds = time.perf_counter() - start
    if code:
        return code
    counts, by_key = results(args.module)
    killed = sum(n for c, n in counts.items() if c in KILLED)
    other = ", ".join(f"{n} {NAMES.get(c, f'exit {c}')}" for c, n in sorted(counts.items(), key=str) if c not in KILLED)
    survivors = sorted(k for k, c in by_key.items() if c not in KILLED)
    if args.survivors:
        for name in survivors:
            subprocess.call(mutmut() + ["show", name], cwd=work, env=environment())
    else:
        print("\n".join(survivors))
    total = sum(counts.values())
    print(f"{args.module}: {killed}/{total} killed ({other or 'no survivors'}) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
