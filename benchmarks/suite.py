"""The reports' whole suite (``klayer reproduce``, 3 seeds, both cores), with the machine's speed.

This machine's matrix-product speed moves 1.5-2x between days (and within an hour), so the wall
time is printed beside the sgemm peak measured just before and just after the suite, and beside
the wall time scaled to a reference peak (``--ref-peak``, GFLOP/s on 2 threads; default: the peak
of 2026-11-24, the day the goal of 8 minutes was set against a 13.3-minute suite).

    python benchmarks/suite.py [--data DIR] [--seeds 3] [--ref-peak 257]

Writes benchmarks/results/suite.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import sgemm_peak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("KLAYER_DATA", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ref-peak", type=float, default=257.0, help="2-thread sgemm GFLOP/s to scale to")
    ap.add_argument("--quick", action="store_true", help="plumbing test: reproduce --quick")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/suite.txt"))
    args = ap.parse_args()

    def peaks():
        return [sgemm_peak(1) for _ in range(3)], [sgemm_peak(2) for _ in range(3)]

    before = peaks()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "klayer", "reproduce", "--out", tmp, "--seeds", str(args.seeds), "--data", args.data]
        t = time.perf_counter()
        p = subprocess.run(cmd + (["--quick"] if args.quick else []), capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if p.returncode:
            sys.exit(f"reproduce failed: {p.stderr[-2000:]}")
        suite = json.loads((Path(tmp) / "suite.json").read_text())
    after = peaks()
    p1 = statistics.median(before[0] + after[0])
    p2 = statistics.median(before[1] + after[1])
    scaled = wall * p2 / args.ref_peak
    lines = [
        f"klayer reproduce benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {args.seeds} seeds"
        f"{' (quick)' if args.quick else ''}, 2 workers",
        f"sgemm peak before: {statistics.median(before[0]):.0f} GFLOP/s (1 thread), "
        f"{statistics.median(before[1]):.0f} (2 threads); after: {statistics.median(after[0]):.0f}, "
        f"{statistics.median(after[1]):.0f}",
        f"reproduce wall time: {wall / 60:.1f} min (studies {suite['wall_seconds'] / 60:.1f} min, "
        f"its own estimate {suite['estimated_seconds'] / 60:.1f} min)",
        f"scaled to a 2-thread sgemm peak of {args.ref_peak:.0f} GFLOP/s (this run's: {p2:.0f}; 1 thread "
        f"{p1:.0f}): {scaled / 60:.1f} min",
        "",
        "reproduce's output:",
        *[f"  {x}" for x in p.stdout.strip().splitlines()],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
