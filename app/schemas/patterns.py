"""Which layer-group regexes a job may carry: ones Python's backtracking ``re`` matches fast.

Workers ``re.fullmatch`` every custom group's regex against every module name of the model, in
``re``'s backtracking engine, with no time limit. A pattern such as ``(a+)+`` or ``(.|.|.)*!``
makes that exponential in the name's length (catastrophic backtracking, "ReDoS"), so the spec
refuses, before anything is stored, the shapes that cause it:

* a nested quantifier: a repeat that can match more than once around a variable-length repeat
  (``(a+)+``, ``(a*)*``, ``(\\.\\d+)*``);
* ambiguous alternation under a repeat: alternatives that can start with the same character
  (``(.|a)*``, ``(a|a)*``, ``(.|.|.)*``), which gives the engine the same choices at each step;
* backreferences (not needed to name layers, and matching them is NP-hard in general);
* more than :data:`MAX_VARIABLE_REPEATS` variable-length repeats in one pattern: even without
  nesting, ``.*.*.*.*.*!`` costs ``len(name) ** repeats`` steps on a name that fails to match.

The analysis walks the parse tree of ``re._parser`` (the parser ``re.compile`` uses) and is
conservative: it may refuse a pattern that would have been fast; a list of module-name suffixes
or a simpler regex always works. Names are short (tens of characters), so what is left is
polynomial with a small degree.
"""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse
from typing import Any

MAX_PATTERN_LENGTH = 500
MAX_VARIABLE_REPEATS = 4

_ANY = "any"  # a first-character set that may hold any character
_EMPTY = "empty"  # an alternative that can match the empty string
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def _first_chars(items: list[tuple[Any, Any]]) -> set[object]:
    """What the first character matched by a sequence can be (conservatively widened)."""
    for op, av in items:
        if op is sre.AT:  # anchors match no character: look at what follows
            continue
        if op is sre.LITERAL:
            return {av}
        if op is sre.IN and all(kind is sre.LITERAL for kind, _ in av):
            return {value for _, value in av}
        if op is sre.SUBPATTERN:
            return _first_chars(list(av[-1]))
        if op is sre.BRANCH:
            return set().union(*(_first_chars(list(alt)) for alt in av[1]))
        if op in _REPEATS and av[0] >= 1:
            return _first_chars(list(av[2]))
        return {_ANY}
    return {_EMPTY}


def _ambiguous(alternatives: list[Any]) -> bool:
    seen: set[object] = set()
    for alternative in alternatives:
        first = _first_chars(list(alternative))
        solid_first, solid_seen = first - {_EMPTY}, seen - {_EMPTY}
        if first & seen or (_ANY in first and solid_seen) or (_ANY in seen and solid_first):
            return True
        seen |= first
    return False


def _walk(items: Any, under_repeat: bool, problems: list[str], counter: list[int]) -> None:
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            variable = high != low
            if variable:
                counter[0] += 1
                if under_repeat:
                    problems.append("a nested quantifier (a repeat inside a repeat)")
            _walk(body, under_repeat or high > 1, problems, counter)
        elif op is sre.BRANCH:
            if under_repeat and _ambiguous(av[1]):
                problems.append(
                    "alternatives under a repeat that can start with the same character"
                )
            for alternative in av[1]:
                _walk(alternative, under_repeat, problems, counter)
        elif op is sre.SUBPATTERN:
            _walk(av[-1], under_repeat, problems, counter)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            _walk(av[1], under_repeat, problems, counter)
        elif op is sre.ATOMIC_GROUP:
            _walk(av, under_repeat, problems, counter)
        elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            problems.append("a backreference")


def check_group_pattern(pattern: str) -> None:
    """Raise ValueError (a message for the client) unless ``pattern`` is a safe regex."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"a regex may have at most {MAX_PATTERN_LENGTH} characters")
    try:
        re.compile(pattern)
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"invalid regex ({exc})") from None
    problems: list[str] = []
    counter = [0]
    _walk(parsed.data, False, problems, counter)
    if counter[0] > MAX_VARIABLE_REPEATS:
        problems.append(f"more than {MAX_VARIABLE_REPEATS} variable-length repeats")
    if problems:
        raise ValueError(
            f"regex {pattern!r} could backtrack catastrophically ({problems[0]}); "
            "simplify it or give a list of module-name suffixes"
        )
