"""The learner's kit: reference vectors of small fixed cases, and a checker that compares a
student's own implementation with them and names the first wrong quantity and the likely bug.

>>> import klayer
>>> v = klayer.reference_vectors("3layer_bn", layout="assignment")   # every quantity, as arrays
>>> result = klayer.check({"S1": v["S1"], "mu1": v["mu1"]}, case="3layer_bn")
>>> result.passed, result.first_wrong
(True, None)

See docs/learn.md for the names, the layouts and a worked example.
"""

from .cases import CASES, Case, case_inputs, get_case
from .check import DEFAULT_TOL, CheckResult, Row, check, check_function, load_function
from .mistakes import CATALOGUE, Mistake
from .vectors import compute, quantity_names, read_values, reference_vectors, write_vectors

__all__ = [
    "CASES",
    "Case",
    "case_inputs",
    "get_case",
    "reference_vectors",
    "write_vectors",
    "read_values",
    "compute",
    "quantity_names",
    "check",
    "check_function",
    "load_function",
    "CheckResult",
    "Row",
    "DEFAULT_TOL",
    "CATALOGUE",
    "Mistake",
]
