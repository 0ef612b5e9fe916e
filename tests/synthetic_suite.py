"""A tiny reproduce folder for report tests: two IDX experiments (8x8 grey images) with and
without batch norm over two seeds, and a gradient-check study; a few seconds to build."""

from pathlib import Path

from .conftest import write_idx_data

EXPERIMENT = """
name = "{name}"
[model]
hidden = [16]
batch_norm = {bn}
[data]
dataset = "idx"
n_val = 100
[train]
lam = 0.001
batch_size = 20
n_s = 30
n_cycles = 1
eta_min = 1e-4
eta_max = 0.05
evals_per_cycle = 4
checkpoint_every = 0
"""

RUNS = """
name = "idx_networks"
description = "Two small networks on 8x8 images, without and with batch norm."
[study]
kind = "runs"
experiments = ["idx_plain", "idx_bn"]
"""

GRADCHECK = """
name = "gradcheck"
[study]
kind = "gradcheck"
depths = [2, 3]
batch_sizes = [4]
lams = [0.0]
hs = [1e-6, 1e-5]
features = 10
max_entries = 5
"""


def synthetic_reproduce(root: Path, rng) -> tuple[Path, Path]:
    """Run the two studies with ``klayer.suite.reproduce``; return (output folder, data folder)."""
    from klayer.suite import reproduce

    data = write_idx_data(root / "data", rng)
    exp = root / "exp"
    exp.mkdir(parents=True)
    (exp / "idx_plain.toml").write_text(EXPERIMENT.format(name="idx_plain", bn="false"))
    (exp / "idx_bn.toml").write_text(EXPERIMENT.format(name="idx_bn", bn="true"))
    (exp / "suite_runs.toml").write_text(RUNS)
    (exp / "suite_grad.toml").write_text(GRADCHECK)
    out = reproduce(
        [exp / "suite_grad.toml", exp / "suite_runs.toml"], root / "out", seeds=2, data_root=data, n_jobs=1,
        log=lambda *a: None,
    )  # fmt: skip
    return out, data
