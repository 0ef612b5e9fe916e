"""Mutation testing, one module at a time, with that module's fast tests (mutmut 3).

    python tools/mutate.py schedules              # mutate src/klayer/training/schedules.py
    python tools/mutate.py gradcheck -j 2         # two workers (default: every core)
    python tools/mutate.py prepare --survivors    # then print the diff of every survivor
    python tools/mutate.py prepare show NAME      # any mutmut command, in that module's work folder
    python tools/mutate.py prepare --by-hand      # the mutants mutmut cannot make (see HAND)
    python tools/mutate.py check --only FILE      # only the mutants named in FILE (e.g. last run's survivors)

Each module runs in its own work folder, ``.mutation/<module>/`` (git-ignored, recreated on every
run): a copy of the project's files (tracked or new, not ignored), its ``pyproject.toml`` with a
``[tool.mutmut]`` table that mutates that one file and selects its tests. mutmut copies it again
into ``mutants/`` there, records which selected tests call each function, then runs every mutant
against only those tests (``-x``). The last line is ``module: killed/total``.

The selection is the module's fast tests: ``-m "not slow"``, no real CIFAR-10 (``KLAYER_DATA`` is
pointed at nothing) and, for ``prepare``, not the 2000-example fuzzers of the file readers and
config files (a minute each; tests/test_prepare.py checks what they reach of this module).
Hypothesis runs with a fixed seed, so a verdict does not depend on the draw. Needs
``pip install -e '.[test,dev]'``.

mutmut 3 mutates the bodies of undecorated functions only: not properties, not pydantic validators,
not module constants. ``--by-hand`` applies the mutations listed in ``HAND`` for those, one at a
time, and runs the same tests (in ``.mutation/<module>-by-hand/``, without mutmut).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tests that run ``python -m klayer`` in a child process: the child imports the installed klayer,
# not the mutant, and their signal timing fails under load.
CHILD_K = "not sigkill and not ctrl_c and not cli_train_evaluate_predict"
CHILD = f"-k '{CHILD_K}'"

# module -> (file to mutate, its tests: pytest arguments, files or node ids)
MODULES = {
    "schedules": (
        "src/klayer/training/schedules.py",
        f"tests/test_schedules.py tests/test_train.py tests/test_techniques.py {CHILD}",
    ),
    "gradcheck": ("src/klayer/gradcheck.py", "tests/test_gradcheck.py"),
    "prepare": (
        "src/klayer/data/prepare.py",
        "tests/test_prepare.py tests/test_data.py tests/test_config.py tests/test_images.py -k 'not fuzz'",
    ),
    # round 2 (layers, network, optim): each module's behaviour is tested in test_layers.py,
    # test_network.py and the optimizer section of test_techniques.py; the rest of a selection
    # checks the module through its callers
    "layers": ("src/klayer/layers.py", "tests/test_layers.py tests/test_network.py"),
    "network": ("src/klayer/network.py", "tests/test_network.py tests/test_layers.py tests/test_techniques.py"),
    "optim": ("src/klayer/training/optim.py", f"tests/test_techniques.py tests/test_train.py {CHILD}"),
    # round 3: the learner's kit (its tests in tests/learn/), metrics, augmentation, ZCA whitening
    "check": ("src/klayer/learn/check.py", "tests/learn"),
    "mistakes": ("src/klayer/learn/mistakes.py", "tests/learn"),
    "metrics": ("src/klayer/metrics.py", "tests/test_metrics.py tests/test_inference.py -k 'not subprocess'"),
    "augment": ("src/klayer/training/augment.py", f"tests/test_techniques.py tests/test_config.py {CHILD}"),
    "whiten": (
        "src/klayer/data/whiten.py",
        f"tests/test_techniques.py tests/test_prepare.py tests/test_hostile_inputs.py -k 'not fuzz and {CHILD_K}'",
    ),
}

# What mutmut 3 skips (decorated functions, module constants): (original, mutant), each original
# found exactly once in the module.
HAND = {
    "schedules": [
        ('CYCLIC_SCHEDULES = ("cyclic", "triangular2", "exp_range")', 'CYCLIC_SCHEDULES = ("cyclic", "triangular2")'),
        ('CYCLIC_SCHEDULES = ("cyclic", "triangular2", "exp_range")', 'CYCLIC_SCHEDULES = ("cyclic", "exp_range")'),
    ],
    "gradcheck": [
        ('"float64": (1e-7, 1e-6, 1e-5', '"float64": (1e-6, 1e-5'),
        ('"float32": (1e-4, 1e-3, 1e-2, 1e-1)}', '"float32": (1e-3, 1e-2, 1e-1)}'),
        ('DEFAULT_TOL = {"float64": 1e-7,', 'DEFAULT_TOL = {"float64": 1e-6,'),
        ('"float32": 1e-3}', '"float32": 1e-2}'),
        ("NOISE_FACTOR = 2.0", "NOISE_FACTOR = 1.0"),
        ("NOISE_FACTOR = 2.0", "NOISE_FACTOR = 3.0"),
        ("ROUNDOFF_UNITS = 100.0", "ROUNDOFF_UNITS = 10.0"),
        ("ROUNDOFF_UNITS = 100.0", "ROUNDOFF_UNITS = 1000.0"),
        ('return self.status == "ok"', 'return self.status != "ok"'),
        ('if r.status == "refused":', 'if r.status != "refused":'),
        ("{r.bound * r.unit:.1e}", "{r.bound:.1e}"),
        ("return all(r.passed for r in self.rows)", "return any(r.passed for r in self.rows)"),
        ("                )\n        return None\n", "                )\n        return ''\n"),
    ],
    "prepare": [
        ('if self.dataset != "cifar10" and', 'if self.dataset == "cifar10" and'),
        ('if self.dataset != "cifar10" and', 'if self.dataset != "cifar10" or'),
        ('and self.split != "all":', 'and self.split == "all":'),
        ("if self.image_shape is not None:", "if self.image_shape is None:"),
        ('if self.dataset != "images":', 'if self.dataset == "images":'),
        ("len(self.image_shape) != 3 or", "len(self.image_shape) != 4 or"),
        ("len(self.image_shape) != 3 or", "len(self.image_shape) != 3 and"),
        ("self.image_shape[0] not in (1, 3)", "self.image_shape[0] in (1, 3)"),
        ("self.image_shape[0] not in (1, 3)", "self.image_shape[0] not in (1, 4)"),
        ("self.image_shape[0] not in (1, 3)", "self.image_shape[0] not in (2, 3)"),
        ("self.image_shape[0] not in (1, 3)", "self.image_shape[1] not in (1, 3)"),
        ("{self.dataset} data takes split = 'all'", "{self.dataset} data takes split = 'XX'"),
        ("got `dataset` = {self.dataset!r}", "got `dataset` = XX"),
        ("got {list(self.image_shape)}", "got {self.image_shape}"),
        ("        return self\n\n    def to_dict", "        return None\n\n    def to_dict"),
        ("return self.X_train.shape[1]", "return self.X_train.shape[0]"),
    ],
    "network": [
        ('INITS = ("he", "xavier", "normal")', 'INITS = ("he", "xavier")'),
        ('INITS = ("he", "xavier", "normal")', 'INITS = ("he", "normal")'),
        ('INITS = ("he", "xavier", "normal")', 'INITS = ("xavier", "normal")'),
        ('DTYPES = ("float32", "float64")', 'DTYPES = ("float64",)'),
        ('DTYPES = ("float32", "float64")', 'DTYPES = ("float32",)'),
        ("input_size: int = 3072", "input_size: int = 3073"),
        ("hidden: tuple[int, ...] = (50, 50)", "hidden: tuple[int, ...] = (50,)"),
        ("n_classes: int = 10", "n_classes: int = 11"),
        ("batch_norm: bool = False", "batch_norm: bool = True"),
        ('init: str = "he"', 'init: str = "xavier"'),
        ("sigma: float = 1e-1", "sigma: float = 1e-2"),
        ("eps: float = 1e-10", "eps: float = 1e-5"),
        ('dtype: str = "float64"', 'dtype: str = "float32"'),
        ("\n    dropout: float = 0.0", "\n    dropout: float = 0.5"),
        ("input_dropout: float = 0.0", "input_dropout: float = 0.5"),
        ("return len(self.hidden) + 1", "return len(self.hidden) + 2"),
        ("return len(self.hidden) + 1", "return len(self.hidden)"),
        ("return [self.input_size, *self.hidden, self.n_classes]", "return [self.input_size, *self.hidden]"),
        ("return [self.input_size, *self.hidden, self.n_classes]", "return [*self.hidden, self.n_classes]"),
        ("return W.shape[0] if W.ndim == 3 else None", "return W.shape[0] if W.ndim != 3 else None"),
        ("return W.shape[0] if W.ndim == 3 else None", "return W.shape[1] if W.ndim == 3 else None"),
        ("return W.shape[0] if W.ndim == 3 else None", "return W.shape[0] if W.ndim == 3 else 1"),
        ("init_params(config, rng), init_bn_state(config))", "init_params(config, rng))"),
        ("init_params(config, rng), init_bn_state(config))", "init_params(config, rng), init_bn_state(config, 1))"),
    ],
    "optim": [
        ("    prescaled = True", "    prescaled = False"),
        ("    prescaled = False", "    prescaled = True"),
        ("    momentum: float = 0.0", "    momentum: float = 0.5"),
        ("    nesterov: bool = False", "    nesterov: bool = True"),
        ("    beta1: float = 0.9", "    beta1: float = 0.8"),
        ("    beta2: float = 0.999", "    beta2: float = 0.99"),
        ("    eps: float = 1e-8", "    eps: float = 1e-7"),
        ("    weight_decay: float = 0.0", "    weight_decay: float = 0.01"),
    ],
    # round 3
    "check": [
        ("DEFAULT_TOL = 1e-4", "DEFAULT_TOL = 1e-3"),
        ("DEFAULT_TOL = 1e-4", "DEFAULT_TOL = 1e-5"),
        ("MATCH_FACTOR = 10 ", "MATCH_FACTOR = 1 "),
        ("MATCH_FACTOR = 10 ", "MATCH_FACTOR = 100 "),
        ("INPUT_TOL_FACTOR = 0.1 ", "INPUT_TOL_FACTOR = 1.0 "),
        ("INPUT_TOL_FACTOR = 0.1 ", "INPUT_TOL_FACTOR = 0.01 "),
        ("return self.first_wrong is None", "return self.first_wrong is not None"),
        ("return 0 if self.passed else 1", "return 0 if self.passed else 2"),
        ("else self.mistake.id", "else self.mistake.summary"),
        ("else describe_name(self.first_wrong)", "else self.first_wrong"),
        ('BN_BASES = {"gamma", "beta", "mu", "var",', 'BN_BASES = {"gamma", "beta", "mu",'),
    ],
    # catalogued() runs when the module is imported, before mutmut's forked workers switch a mutant on
    "mistakes": [
        ("(*m.computations, cls)", "(cls,)"),
        ("(*m.computations, cls)", "m.computations"),
        (
            "Mistake(id, summary, formula, (cls,), batch_norm, square)",
            "Mistake(id, summary, formula, (cls,), None, square)",
        ),
    ],
    "augment": [
        (
            '_PAD_MODES = {"zero": "constant", "reflect": "reflect", "edge": "edge"}',
            '_PAD_MODES = {"zero": "constant", "reflect": "symmetric", "edge": "edge"}',
        ),
    ],
    "whiten": [
        ("MIN_MEAN_VARIANCE = 1e-12", "MIN_MEAN_VARIANCE = 0.0"),
        ("MIN_MEAN_VARIANCE = 1e-12", "MIN_MEAN_VARIANCE = 0.5"),
    ],
}

KILLED = {1, 3}  # pytest exit codes: tests failed, internal error
NAMES = {0: "survived", 33: "no tests", 5: "no tests", 34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout",
         152: "timeout", 255: "timeout", -9: "segfault", -11: "segfault", None: "not checked"}  # fmt: skip


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def prepare_folder(module: str, folder: str | None = None) -> Path:
    target, tests = MODULES[module]
    work = ROOT / ".mutation" / (folder or module)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # the project's files, tracked or new (not ignored), as the tests expect them (experiments/, docs/ ...)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    also_copy = sorted({Path(n).parts[0] for n in filter(None, listed.stdout.decode().split("\0"))} - {"src"})
    config = f"""
[tool.mutmut]
source_paths = ["src"]
only_mutate = [{json.dumps(target)}]
pytest_add_cli_args_test_selection = {toml_list(shlex.split(tests))}
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "--hypothesis-seed", "0"]
use_git_change_detection = false
also_copy = {toml_list(also_copy)}
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


def by_hand(module: str) -> int:
    """Apply each of ``HAND[module]`` alone and run the module's tests; print each verdict."""
    target, tests = MODULES[module]
    work = prepare_folder(module, f"{module}-by-hand")  # mutmut's results in .mutation/<module>/ stay
    path = work / target
    original = path.read_text()
    env = dict(environment(), PYTHONPATH=str(work / "src"), PYTHONDONTWRITEBYTECODE="1")
    pytest = [
        sys.executable,
        "-m",
        "pytest",
        *shlex.split("-x -q -p no:cacheprovider -m 'not slow' --hypothesis-seed 0"),
    ]
    start, killed = time.perf_counter(), 0
    for old, new in HAND[module]:
        if original.count(old) != 1:
            raise SystemExit(f"{target}: {old!r} occurs {original.count(old)} times, expected once")
        path.write_text(original.replace(old, new))
        code = subprocess.call(pytest + shlex.split(tests), cwd=work, env=env, stdout=subprocess.DEVNULL)
        killed += code in KILLED
        print(f"{'killed' if code in KILLED else NAMES.get(code, f'exit {code}')}: {old!r} -> {new!r}", flush=True)
    path.write_text(original)
    seconds = time.perf_counter() - start
    print(f"{module} by hand: {killed}/{len(HAND[module])} killed in {seconds:.0f} s")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", choices=sorted(MODULES))
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel mutants (default: all cores)")
    p.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    p.add_argument("--by-hand", action="store_true", help="run the HAND mutants (what mutmut cannot mutate) instead")
    p.add_argument(
        "--only", type=Path, metavar="FILE", help="run only the mutants named in FILE, one a line (a fresh folder)"
    )
    p.add_argument(
        "command", nargs="*", help="a mutmut command (show NAME, results) to run in the module's folder instead"
    )
    args = p.parse_intermixed_args(argv)
    work = ROOT / ".mutation" / args.module
    if args.command:
        return subprocess.call(mutmut() + args.command, cwd=work, env=environment())

    if args.by_hand:
        return by_hand(args.module)
    work = prepare_folder(args.module)
    start = time.perf_counter()
    names = args.only.read_text().split() if args.only else []
    code = subprocess.call(mutmut() + ["run", "--max-children", str(args.jobs), *names], cwd=work, env=environment())
    seconds = time.perf_counter() - start
    if code:
        return code
    counts, by_key = results(args.module)
    if names:
        by_key = {k: c for k, c in by_key.items() if k in set(names)}
        counts = Counter(by_key.values())
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
