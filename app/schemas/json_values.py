"""Values a JSON body may parse into but that no database or JSON consumer can store.

Python's ``json`` module accepts ``Infinity`` and ``NaN`` (not JSON: SQLite then stores
non-standard JSON and reads it back as null; PostgreSQL refuses it) and ``\\ud800`` escapes that
decode to lone UTF-16 surrogates (not encodable as UTF-8). PostgreSQL also refuses NUL
characters in text and JSON. :func:`first_unsafe` finds the first such value, keys included,
so the spec can refuse it with a 422 naming the field instead of failing with a 500 on write.
"""

from __future__ import annotations

import math
from typing import Any


def unsafe_text(text: str) -> str | None:
    """Why ``text`` cannot be stored (a NUL or a lone surrogate), or None when it can."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (it holds a lone UTF-16 surrogate)"
    return None


def first_unsafe(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str, str] | None:
    """(dotted path, reason) of the first non-finite number or unstorable string, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".".join(map(str, path)), "must be a finite number (not NaN or Infinity)"
    if isinstance(value, str):
        reason = unsafe_text(value)
        return (".".join(map(str, path)), reason) if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (reason := unsafe_text(key)):
                return ".".join(map(str, path)) or "body", f"keys {reason}"
            found = first_unsafe(item, (*path, str(key)))
            if found:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = first_unsafe(item, (*path, index))
            if found:
                return found
    return None
