"""The suite's commands: ``klayer reproduce`` and ``klayer report``."""

from __future__ import annotations

from pathlib import Path

from ..cliargs import positive_int
from .runner import reproduce

__all__ = ["add_commands"]


def cmd_reproduce(args) -> int:
    reproduce(
        args.studies or None, args.out, args.quick, args.seeds, args.data, args.jobs, args.scheduler,
        all_studies=args.all,
    )  # fmt: skip
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    md, html = build_report([Path(p) for p in args.paths], Path(args.out) if args.out else None, args.data)
    print(f"{md}\n{html}")
    return 0


def add_commands(sub, data_arg) -> None:
    r = sub.add_parser("reproduce", help="run the reports' experiment suite and write the report")
    r.add_argument("studies", nargs="*", help="study files (default: every study in experiments/)")
    r.add_argument("--quick", action="store_true", help="every experiment at reduced size (a few minutes)")
    r.add_argument("--all", action="store_true", help="also the optional studies (the bonus ablation: about 80 min)")
    r.add_argument(
        "--seeds", type=positive_int, metavar="N", help="seeds per headline number (default 3; 2 with --quick)"
    )
    r.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    r.add_argument("--jobs", type=positive_int, metavar="N", help="worker processes (default: every core)")
    r.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask scheduler (tcp://host:8786)")
    data_arg(r)
    r.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="build report.md and report.html from saved runs (no training)")
    p.add_argument("paths", nargs="+", help="a reproduce folder, study folders or run folders")
    p.add_argument("--out", help="folder for the report (default: the first path)")
    data_arg(p)  # the headline run's test images, for its confusion matrix and gallery
    p.set_defaults(func=cmd_report)
