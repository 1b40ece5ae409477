"""Plain checks of one value against a rule, with the message every config error uses.

No pydantic here: these run on request paths (an ``execute``'s ``fetch_size``, a live
toggle), where a model validation would cost more than an ``isinstance``. The models in
this package describe their rules with `rule_text`, so both say the same thing.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

from kailash_nodes.errors import ConfigError, KailashNodesError

__all__ = ["check_bool", "check_number", "check_str", "rule_text", "short_repr"]

_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = 4


def short_repr(value: Any) -> str:
    """Return ``repr(value)`` cut to a readable length, for an error message.

    >>> short_repr("x" * 100)[-6:], short_repr(list(range(9)))
    ("xxxxx'", '[0, 1, 2, 3, ...]')
    """
    return _SHOW.repr(value)


def rule_text(
    low: float | None = None,
    high: float | None = None,
    *,
    strict: bool = False,
    integer: bool = False,
    none_ok: bool = False,
) -> str:
    """Return the rule of a number option as the error messages state it.

    >>> rule_text(0, 100), rule_text(1, integer=True), rule_text(0, strict=True, none_ok=True)
    ('a number between 0 and 100', 'an integer >= 1', 'a number > 0, or None for no limit')
    """
    rule = "an integer" if integer else "a number"
    if low is not None and high is not None:
        rule += f" between {low:g} and {high:g}"
    elif low is not None:
        rule += f" {'>' if strict else '>='} {low:g}"
    elif high is not None:
        rule += f" <= {high:g}"
    return rule + (", or None for no limit" if none_ok else "")


def check_number(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    strict: bool = False,
    integer: bool = False,
    none_ok: bool = False,
    error: type[KailashNodesError] = ConfigError,
) -> Any:
    """Return ``value`` if it is a finite number (an int with ``integer``) within the rule.

    ``low``/``high`` bound it (``strict``: ``> low``); ``none_ok`` lets None through (the
    option's "no limit"). NaN, infinities and bools are refused. Raises ``error`` naming the
    option, the rule and the value. An int is returned as is, a float option as a float.

    >>> check_number("timeout", 5, low=0, strict=True)
    5.0
    >>> check_number("timeout", float("nan"), low=0, strict=True)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: timeout must be a number > 0 (got timeout=nan, not finite)
    >>> check_number("max_waiting", 2.0, low=0, integer=True)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: max_waiting must be an integer >= 0 (got 2.0 of type float)
    """
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        got = f"{short_repr(value)} of type {type(value).__name__}"
    elif not math.isfinite(value):
        got = f"{key}={value!r}, not finite"
    elif (low is not None and (value < low or (strict and value == low))) or (
        high is not None and value > high
    ):
        got = f"{key}={value!r}"
    else:  # valid: the rule's text is built only for an error (this runs on request paths)
        return value if integer else float(value)
    rule = rule_text(low, high, strict=strict, integer=integer, none_ok=none_ok)
    raise error(f"{key} must be {rule} (got {got})")


def check_bool(key: str, value: Any, *, error: type[KailashNodesError] = ConfigError) -> bool:
    """Return ``value`` if it is True or False; raise ``error`` naming the option otherwise.

    >>> check_bool("strict_fifo", 1)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: strict_fifo must be True or False (got 1 of type int)
    """
    if not isinstance(value, bool):
        raise error(
            f"{key} must be True or False (got {short_repr(value)} of type {type(value).__name__})"
        )
    return value


def check_str(
    key: str,
    value: Any,
    *,
    empty_ok: bool = False,
    none_ok: bool = True,
    error: type[KailashNodesError] = ConfigError,
) -> str | None:
    """Return ``value`` if it is a string (non-empty unless ``empty_ok``), or None if allowed.

    >>> check_str("host", 123)
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.ConfigError: host must be a non-empty string or None (got 123 of type int)
    """
    if value is None and none_ok:
        return None
    if not isinstance(value, str) or not (value or empty_ok):
        rule = "a string" if empty_ok else "a non-empty string"
        rule += " or None" if none_ok else ""
        raise error(
            f"{key} must be {rule} (got {short_repr(value)} of type {type(value).__name__})"
        )
    return value
