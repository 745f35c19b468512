"""Helpers to pull code blocks out of README.md, so the tests run what the README shows."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(after_heading: str) -> str:
    """The first ```python block under the given ``## `` heading."""
    text = README.read_text()
    start = text.index(f"## {after_heading}")
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert match, f"no python block under {after_heading!r}"
    return match.group(1)
