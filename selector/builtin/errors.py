"""Errors of the built-in case, a branch of the selector's one error tree (``selector.errors``).

``SelectorError``
 └── ``BuiltinError``
      ├── ``UnknownChoiceError`` (also ``ConfigError``, hence ``ValueError``): a case, shift,
      │    severity or model that does not exist; the message repeats the bad value and lists
      │    the valid ones.
      └── ``CacheEntryError``: a cached source model that is missing, partial or corrupt. Never
           escapes ``load_source_model``, which logs it and rebuilds the entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from selector.errors import ConfigError, SelectorError


class BuiltinError(SelectorError):
    """Base class of the built-in case's errors."""


class UnknownChoiceError(BuiltinError, ConfigError):
    """A value outside a fixed set of choices; ``choices`` holds the valid ones."""

    def __init__(self, what: str, value: object, choices: Iterable[object],
                 hint: str = "") -> None:
        self.what = what
        self.value = value
        self.choices = tuple(choices)
        listed = ", ".join(repr(c) for c in self.choices)
        message = f"unknown {what} {value!r}; valid choices: {listed}"
        super().__init__(f"{message}. {hint}" if hint else message)


class CacheEntryError(BuiltinError):
    """A cache entry failed verification (missing manifest, checksum mismatch, unreadable)."""
