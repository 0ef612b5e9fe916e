"""The reports' experiment suite: studies in TOML (:mod:`.studies`), ``klayer reproduce``
(:mod:`.runner`), and the report built from saved runs (:mod:`.report`, :mod:`.parts`)."""

from .report import build_report, reported_values
from .runner import estimate_seconds, reproduce
from .studies import load_study, run_study, suite_files

__all__ = ["load_study", "run_study", "suite_files", "reproduce", "estimate_seconds", "build_report", "reported_values"]
