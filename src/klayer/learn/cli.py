"""``klayer vectors`` and ``klayer check``: thin commands over :mod:`klayer.learn`.

``klayer check`` exits 0 when every quantity given is right, 1 when one is wrong, and 2 when the
input is unusable (unreadable file, unknown case, no quantity of the case, a student's function
that cannot be imported or raises); errors are one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import KlayerError, one_line
from .cases import CASES
from .check import DEFAULT_TOL, check, check_function, load_function
from .vectors import FORMATS, LAYOUTS, write_vectors

__all__ = ["add_commands", "cmd_vectors", "cmd_check"]


def _data_root(args):
    return Path(args.data) if getattr(args, "data", None) else None


def cmd_vectors(args) -> int:
    if args.list:
        width = max(map(len, CASES))
        for case in CASES.values():
            print(f"{case.name:<{width}}  {case.description}")
        return 0
    if not args.case or not args.out:
        args.parser.error("give --case NAME and --out FILE (or --list)")
    values = write_vectors(args.case, args.out, args.layout, _data_root(args))
    print(f"wrote case {args.case} ({len(values)} quantities, {args.layout} layout) to {args.out}")
    return 0


def cmd_check(args) -> int:
    if (args.file is None) == (args.python is None):
        args.parser.error("give a FILE of your values, or --python MODULE:FUNCTION (one of them)")
    try:
        if args.python:
            if not args.case:
                args.parser.error("--python needs --case NAME")
            layout = "klayer" if args.layout == "auto" else args.layout
            fn = load_function(args.python)
            result = check_function(fn, args.case, layout=layout, tol=args.tol, data_root=_data_root(args))
        else:
            result = check(args.file, args.case, layout=args.layout, tol=args.tol, data_root=_data_root(args))
    except KlayerError as e:  # unusable input: exit 2, not main()'s 1
        print(f"klayer: error: {one_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.format())
    return result.exit_code


def add_commands(sub, data_arg=None) -> None:
    """Register ``vectors`` and ``check`` on the ``klayer`` command's subparsers."""
    v = sub.add_parser("vectors", help="write every quantity of a small fixed case (the learner's reference)")
    v.add_argument("--case", metavar="NAME", help="the case (see --list)")
    v.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="klayer",
        help="klayer: one row per sample (default); assignment: one column per sample, S = W X + b",
    )
    v.add_argument(
        "--out", metavar="FILE", help=f"output file; the format follows its extension ({', '.join(FORMATS)})"
    )
    v.add_argument("--list", action="store_true", help="list the cases")
    v.set_defaults(func=cmd_vectors, parser=v)

    c = sub.add_parser("check", help="compare your implementation's quantities with a case's reference")
    c.add_argument("file", nargs="?", metavar="FILE", help="your values (.npz, .mat or .json; any subset of the names)")
    c.add_argument("--case", metavar="NAME", help="the case (default: the file's case_name, else the one that fits)")
    c.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="your layout (default: from the shapes; with --python: klayer)",
    )
    c.add_argument(
        "--python",
        metavar="MODULE:FUNCTION",
        help="call FUNCTION(inputs) -> dict of quantities (also path/to/file.py:FUNCTION)",
    )
    c.add_argument(
        "--tol", type=float, default=DEFAULT_TOL, help=f"largest relative error counted as right ({DEFAULT_TOL:g})"
    )
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_check, parser=c)
    for p in (v, c):
        if data_arg is not None:
            data_arg(p)
        else:
            p.add_argument("--data", metavar="DIR", help="where CIFAR-10 is (the CIFAR case only)")
