"""Rewrite query placeholders to the style a driver needs, and bind parameters to them.

Users write ``?``, ``$1``, ``%s`` or ``:name`` on any backend. :func:`rewrite` scans the text
once per (query, target) and caches the result; :func:`bind` orders the parameters on every
call and is the only part on the hot path.

The scanner lexes the text the way the *target* server will, since the server decides what
is a string or a comment:

* ``'...'`` with ``''`` doubling. A backslash escapes the next character only inside
  ``E'...'`` (PostgreSQL's escape strings; ``standard_conforming_strings`` is on by default
  and SQLite has no escapes), except for MySQL, whose default ``sql_mode`` has backslash
  escapes in every ``'...'`` and ``"..."``: there ``'it\\'s ?'`` is one string.
* ``"..."`` and backtick identifiers with doubling; ``$$...$$`` and ``$tag$...$tag$`` (a
  tag never starts with a digit, so ``$1`` is a placeholder).
* ``--`` comments (for MySQL only ``--`` followed by whitespace, as MySQL requires),
  ``#`` comments for MySQL only, ``/* */`` comments, nested for PostgreSQL only.
* ``:name`` is a placeholder only when the colon follows neither ``:`` nor a word character
  (``x::int`` and ``arr[lo:hi]`` are not), like SQLAlchemy's ``text()``.
* ``?|`` and ``?&`` are JSONB operators; next to ``$n`` placeholders a bare ``?`` is too.

``session_state`` over-approximates: a false positive costs a reset, a false negative leaks
session state to the next caller. Besides the leading keywords and calls in
``_SESSION_KEYWORDS`` and ``_SESSION_WORDS`` it is set by ``CREATE [GLOBAL|LOCAL]
TEMP[ORARY]``, ``INTO TEMP``, any ``@user_variable``, ``@@session.``/``@@local.`` (a plain
``@@version`` read is not) and MySQL's executable ``/*! ... */`` comments; the calls also
count when written as quoted identifiers (``"set_config"(...)``). Routines are opaque, so
``CALL`` and ``DO`` count; ``SELECT my_function()`` does not here (on PostgreSQL the pool
also marks a call of a function that is not a known builtin, ``classify.calls_routines``,
and compares the identity the server reports on release).

The same scan refuses, once per distinct text, what must never be sent:
:class:`~kailash_nodes.errors.InvalidQueryText` for a NUL character or a lone surrogate in
the text (the message gives its index), and
:class:`~kailash_nodes.errors.UnsupportedStatement` for PostgreSQL's ``COPY ... FROM
STDIN`` / ``TO STDOUT``, which need the copy sub-protocol.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, cast

from kailash_nodes.errors import InvalidQueryText, ParameterError, UnsupportedStatement

__all__ = ["FORMAT", "NUMERIC", "QMARK", "RewrittenQuery", "bind", "check_text", "rewrite"]

NUMERIC: Final = "numeric"
FORMAT: Final = "format"
QMARK: Final = "qmark"
_NAMED: Final = "named"
_TARGETS: Final = (NUMERIC, FORMAT, QMARK)
_MARK: Final = {FORMAT: "%s", QMARK: "?"}
_SHOW: Final = {QMARK: "'?'", NUMERIC: "'$1'", FORMAT: "'%s'", _NAMED: "':name'"}

# fmt: off
_SESSION_KEYWORDS: Final = frozenset({
    "SET", "RESET", "LISTEN", "UNLISTEN", "DECLARE", "PREPARE", "DEALLOCATE", "DISCARD",
    "LOCK", "USE", "PRAGMA", "ATTACH", "DETACH", "LOAD", "DO", "CALL", "HANDLER", "FLUSH",
    "XA",
})
_SESSION_WORDS: Final = frozenset({  # calls of these, or the pg_temp schema
    "SET_CONFIG", "PG_ADVISORY_LOCK", "PG_ADVISORY_LOCK_SHARED", "PG_TRY_ADVISORY_LOCK",
    "PG_TRY_ADVISORY_LOCK_SHARED", "GET_LOCK", "LOAD_EXTENSION", "DBLINK_CONNECT", "PG_TEMP",
})
# fmt: on
_TEMP: Final = frozenset({"TEMP", "TEMPORARY"})
_COPY_STREAMS: Final = frozenset({"STDIN", "STDOUT"})
_PAREN_SPACE: Final = "( \t\r\n\f\v"
_BLOCK_EDGE: Final = re.compile(r"/\*|\*/")

Part = str | tuple[str, int | str]  # literal text, or (style, key) for one placeholder


def _pattern(target: str) -> re.Pattern[str]:
    """Compile the token alternation for ``target``; the group name is the token kind."""
    escaped = r"[^{q}\\]*(?:(?:{q}{q}|\\.)[^{q}\\]*)*{q}?"
    plain = r"[^{q}]*(?:{q}{q}[^{q}]*)*{q}?"
    mysql = target == FORMAT
    tokens = {
        "opaque": "|".join(
            (
                r"(?<![\w$])[Ee]'" + escaped.format(q="'"),
                "'" + (escaped if mysql else plain).format(q="'"),
                '"' + (escaped if mysql else plain).format(q='"'),
                "`" + plain.format(q="`"),
            )
        ),
        "comment": r"--(?=\s|\Z)[^\n]*|\#[^\n]*" if mysql else r"--[^\n]*",
        "block": r"/\*",
        "dollar": r"(?<![\w$])\$(?:[^\W\d]\w*)?\$",
        NUMERIC: r"(?<![\w$])\$\d+",
        QMARK: r"\?(?![|&])",
        FORMAT: r"%s",
        "percent": r"%%",
        _NAMED: r"(?<![:\w]):[A-Za-z_][A-Za-z0-9_]*",
        "word": r"[^\W\d][\w$]*",
        "at": r"@@(?i:session|local)\.|(?<!@)@(?=[\w$'\"`])",
        "semi": ";",
    }
    return re.compile("|".join(f"(?P<{k}>{v})" for k, v in tokens.items()), re.DOTALL)


_PATTERNS: Final = {target: _pattern(target) for target in _TARGETS}


@dataclass(frozen=True, slots=True)
class RewrittenQuery:
    """A query in a driver's placeholder style, with what is needed to bind parameters.

    ``order`` lists the driver's positional arguments: for each one, the index into
    positional params or the name into dict params. For the numeric target that is one
    entry per ``$k``; for qmark and format one per placeholder occurrence.
    """

    text: str
    style: str
    order: tuple[int | str, ...]
    param_count: int
    names: tuple[str, ...]
    passthrough: bool
    statements: int
    leading_keyword: str
    session_state: bool


class _Scanner:
    """One pass over a query: literal parts, placeholders, statements and session hints."""

    def __init__(self, query: str, target: str) -> None:
        self.query = query
        self.target = target
        self.parts: list[Part] = []
        self.statements = 0
        self.leading = ""
        self.session = False
        self.copy_stream = False
        self._start_statement()

    def _start_statement(self) -> None:
        self._content = False
        self._keyword: str | None = None  # undecided while only parens have been seen
        self._words = 0
        self._prev = ("", "")

    def run(self) -> _Scanner:
        """Scan the whole query."""
        query, pos = self.query, 0
        search = _PATTERNS[self.target].search
        while (m := search(query, pos)) is not None:
            if m.start() > pos:
                self._code(query[pos : m.start()])
            pos = _HANDLERS[m.lastgroup or ""](self, m)
        if pos < len(query):
            self._code(query[pos:])
        self._end_statement()
        return self

    def _touch(self, word: str = "") -> None:
        self._content = True
        if self._keyword is None:
            self._keyword = word
            self.session |= word in _SESSION_KEYWORDS

    def _end_statement(self) -> None:
        if self._content:
            self.statements += 1
            if self.statements == 1:
                self.leading = self._keyword or ""
        self._start_statement()

    def _code(self, text: str) -> None:
        self.parts.append(text)
        if text.strip(_PAREN_SPACE):
            self._touch()
        elif "(" in text:
            self._content = True

    def _comment(self, m: re.Match[str]) -> int:
        self.parts.append(m.group())
        return m.end()

    def _opaque(self, m: re.Match[str]) -> int:
        self._touch()
        text = m.group()
        self.parts.append(text)
        if text[0] in _IDENTIFIER_QUOTES[self.target] and text[1:-1].upper() in _SESSION_WORDS:
            self.session = True  # "set_config"(...) is the same call
        return m.end()

    def _at(self, m: re.Match[str]) -> int:
        self.session = True
        return self._opaque(m)

    def _percent(self, m: re.Match[str]) -> int:
        self._touch()
        self.parts.append("%")  # a literal percent; format output doubles it back
        return m.end()

    def _semi(self, m: re.Match[str]) -> int:
        self.parts.append(";")
        self._end_statement()
        return m.end()

    def _placeholder(self, m: re.Match[str]) -> int:
        self._touch()
        kind, text = m.lastgroup or "", m.group()
        self.parts.append((kind, int(text[1:]) if kind == NUMERIC else text[1:]))
        return m.end()

    def _word(self, m: re.Match[str]) -> int:
        word = m.group()
        self.parts.append(word)
        upper = word.upper()
        self._touch(upper)
        if upper in _SESSION_WORDS or (upper in _TEMP and self._temp_context()):
            self.session = True
        elif upper in _COPY_STREAMS and self._keyword == "COPY":
            self.copy_stream = True
        self._words += 1
        self._prev = (self._prev[1], upper)
        return m.end()

    def _temp_context(self) -> bool:
        """Tell whether a TEMP word here makes a temp table (CREATE ... or SELECT ... INTO)."""
        before, last = self._prev
        if last == "INTO" or (before == "INTO" and last in ("GLOBAL", "LOCAL")):
            return True
        return self._keyword == "CREATE" and self._words < 5

    def _block(self, m: re.Match[str]) -> int:
        query, start = self.query, m.start()
        if self.target == NUMERIC:
            end = _nested_comment_end(query, m.end())
        else:
            close = query.find("*/", m.end())
            end = len(query) if close < 0 else close + 2
        self.parts.append(query[start:end])
        if self.target == FORMAT and query.startswith("/*!", start):
            self.session = True  # MySQL runs the body of /*! ... */
            self._touch()
        return end

    def _dollar(self, m: re.Match[str]) -> int:
        tag = m.group()
        close = self.query.find(tag, m.end())
        end = len(self.query) if close < 0 else close + len(tag)
        self._touch()
        self.parts.append(self.query[m.start() : end])
        return end


# The quote characters that make an identifier (not a string) on each target.
_IDENTIFIER_QUOTES: Final = {NUMERIC: '"', QMARK: '"`', FORMAT: "`"}

_HANDLERS: Final[dict[str, Callable[[_Scanner, re.Match[str]], int]]] = {
    "opaque": _Scanner._opaque,
    "comment": _Scanner._comment,
    "block": _Scanner._block,
    "dollar": _Scanner._dollar,
    NUMERIC: _Scanner._placeholder,
    QMARK: _Scanner._placeholder,
    FORMAT: _Scanner._placeholder,
    _NAMED: _Scanner._placeholder,
    "percent": _Scanner._percent,
    "word": _Scanner._word,
    "at": _Scanner._at,
    "semi": _Scanner._semi,
}


def _nested_comment_end(query: str, pos: int) -> int:
    """Return the end of a PostgreSQL block comment opened just before ``pos``."""
    depth = 1
    for m in _BLOCK_EDGE.finditer(query, pos):
        depth += 1 if m.group() == "/*" else -1
        if depth == 0:
            return m.end()
    return len(query)


def _style_of(parts: list[Part]) -> str:
    """Return the one placeholder style in ``parts``; turn JSONB ``?`` into text."""
    styles = dict.fromkeys(p[0] for p in parts if isinstance(p, tuple))
    if NUMERIC in styles and QMARK in styles:
        del styles[QMARK]
        parts[:] = ["?" if p == (QMARK, "") else p for p in parts]
    if len(styles) > 1:
        first, second = list(styles)[:2]
        raise ParameterError(
            f"query mixes placeholder styles {first} ({_SHOW[first]}) and {second}"
            f" ({_SHOW[second]}); use one style per query"
        )
    return next(iter(styles), "none")


def _numeric_count(keys: list[int]) -> int:
    """Return n for placeholders that use exactly $1..$n; raise if one is missing."""
    used = set(keys)
    if 0 in used:
        raise ParameterError("numeric placeholders start at $1 (got $0)")
    count = max(used)
    missing = next((i for i in range(1, count + 1) if i not in used), None)
    if missing is not None:
        raise ParameterError(
            f"numeric placeholders must run $1..${count} without gaps (missing ${missing})"
        )
    return count


def _plan(style: str, keys: list[Any], target: str) -> tuple[list[str], tuple[Any, ...], int]:
    """Return the output marker per placeholder, the driver argument order and the count."""
    mark = _MARK.get(target, "")
    if style == _NAMED:
        names = tuple(dict.fromkeys(keys))
        if target == NUMERIC:
            slot = {name: i for i, name in enumerate(names, 1)}
            return [f"${slot[k]}" for k in keys], names, len(names)
        return [mark] * len(keys), tuple(keys), len(names)
    if style == NUMERIC:
        count = _numeric_count(keys)
        if target == NUMERIC:
            return [f"${k}" for k in keys], tuple(range(count)), count
        return [mark] * len(keys), tuple(k - 1 for k in keys), count
    n = len(keys)
    marks = [f"${i}" for i in range(1, n + 1)] if target == NUMERIC else [mark] * n
    return marks, tuple(range(n)), n


def _render(parts: list[Part], marks: list[str], target: str) -> str:
    """Join literal parts and output markers; double every literal ``%`` for format."""
    out: list[str] = []
    next_mark = iter(marks).__next__
    double = target == FORMAT
    for part in parts:
        if isinstance(part, tuple):
            out.append(next_mark())
        else:
            out.append(part.replace("%", "%%") if double and "%" in part else part)
    return "".join(out)


def check_text(query: str) -> None:
    """Raise InvalidQueryText if ``query`` has a character no server takes in query text.

    A NUL ends a C string (PostgreSQL and SQLite would see another statement, or refuse
    it as a broken connection would); a lone surrogate cannot be encoded as UTF-8.

    >>> check_text("SELECT 1")
    >>> check_text("SELECT 1\\x00")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kailash_nodes.errors.InvalidQueryText: query text contains a NUL character (U+0000) ...
    """
    nul = query.find("\x00")
    if nul >= 0:
        raise InvalidQueryText(
            f"query text contains a NUL character (U+0000) at index {nul}; "
            "pass such values as parameters, never in the text"
        )
    if not query.isascii():
        try:
            query.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidQueryText(
                f"query text contains a lone surrogate (U+{ord(query[exc.start]):04X}) at "
                f"index {exc.start}, which is not valid Unicode and cannot be sent"
            ) from None


def rewrite(query: str, target: str) -> RewrittenQuery:
    """Rewrite ``query`` to the ``target`` placeholder style ("numeric", "format", "qmark").

    Results, and the ParameterErrors of a text, are cached per (query, target). Raises
    ParameterError for mixed placeholder styles or gaps in ``$n``, InvalidQueryText for a
    NUL or lone surrogate in the text, UnsupportedStatement for ``COPY ... FROM STDIN`` /
    ``TO STDOUT``, TypeError for a non-str query, ValueError for a bad target.

    >>> rq = rewrite("SELECT * FROM t WHERE a = :a AND b = :b OR a = :a", "numeric")
    >>> rq.text, rq.order, rq.style
    ('SELECT * FROM t WHERE a = $1 AND b = $2 OR a = $1', ('a', 'b'), 'named')
    >>> rewrite("SELECT ?, '100%', '?' -- ?", "format").text
    "SELECT %s, '100%%', '?' -- ?"
    >>> rewrite("SELECT $2, $1, $2", "qmark").order
    (1, 0, 1)
    """
    try:
        rq = _rewrite(query, target)
    except TypeError:
        if isinstance(query, str) and isinstance(target, str):
            raise
        kinds = f"{type(query).__name__}, {type(target).__name__}"
        raise TypeError(f"query and target must be str (got {kinds})") from None
    if isinstance(rq, RewrittenQuery):
        return rq
    raise type(rq)(*rq.args)  # a fresh exception each time: no shared traceback


@lru_cache(maxsize=8192)
def _rewrite(query: str, target: str) -> RewrittenQuery | ParameterError:
    if not isinstance(query, str) or not isinstance(target, str):
        raise TypeError("query and target must be str")
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS} (got {target!r})")
    try:
        return _scan(query, target)
    except ParameterError as exc:
        return exc


def _scan(query: str, target: str) -> RewrittenQuery:
    check_text(query)
    scan = _Scanner(query, target).run()
    if scan.copy_stream and target == NUMERIC:
        raise UnsupportedStatement(
            f"{scan.leading or 'COPY'} ... FROM STDIN / TO STDOUT needs PostgreSQL's copy "
            "protocol, which execute does not speak (it would hang the connection); use "
            "INSERT ... VALUES with parameters, or SELECT to read the rows"
        )
    style = _style_of(scan.parts)
    keys: list[Any] = [p[1] for p in scan.parts if isinstance(p, tuple)]
    marks, order, count = _plan(style, keys, target)
    return RewrittenQuery(
        text=_render(scan.parts, marks, target),
        style=style,
        order=order,
        param_count=count,
        names=tuple(dict.fromkeys(keys)) if style == _NAMED else (),
        passthrough=style != _NAMED and order == tuple(range(count)),
        statements=scan.statements,
        leading_keyword=scan.leading,
        session_state=scan.session,
    )


def bind(rq: RewrittenQuery, params: object) -> tuple[Any, ...]:
    """Return the positional argument tuple the driver needs for ``rq`` and ``params``.

    ``params`` is None, a sequence, a mapping (named style) or a scalar (one parameter;
    str and bytes are scalars). Raises ParameterError when they do not fit the query; the
    message gives counts, names and styles, never parameter values.

    >>> bind(rewrite("SELECT $2, $1", "qmark"), ["a", "b"])
    ('b', 'a')
    >>> bind(rewrite("SELECT :x, :y, :x", "numeric"), {"x": 1, "y": 2, "z": 3})
    (1, 2)
    >>> bind(rewrite("SELECT ?", "numeric"), 42)
    (42,)
    """
    if rq.passthrough and type(params) is list and len(params) == rq.param_count:
        return tuple(params)
    if rq.passthrough and type(params) is tuple and len(params) == rq.param_count:
        return params
    return _bind_general(rq, params)


def _bind_general(rq: RewrittenQuery, params: object) -> tuple[Any, ...]:
    if rq.style == _NAMED:
        return _bind_named(rq, params)
    values = _as_sequence(rq, params)
    if len(values) != rq.param_count:
        raise _count_error(rq.param_count, len(values))
    if rq.passthrough:
        return tuple(values)
    return tuple([values[i] for i in cast(tuple[int, ...], rq.order)])


def _as_sequence(rq: RewrittenQuery, params: object) -> Sequence[Any]:
    if type(params) is list or type(params) is tuple:
        return params
    if params is None:
        return ()
    if isinstance(params, Mapping):
        if not params and rq.param_count == 0:
            return ()
        if rq.style == "none":
            raise _count_error(0, len(params))
        raise ParameterError(
            f"query uses {rq.style} placeholders ({_SHOW[rq.style]}), which take a sequence"
            f" of parameters, not a {type(params).__name__}"
        )
    if isinstance(params, str | bytes | bytearray | memoryview):
        return (params,)
    return params if isinstance(params, Sequence) else (params,)


def _bind_named(rq: RewrittenQuery, params: object) -> tuple[Any, ...]:
    if params is None:
        params = {}
    if type(params) is not dict and not isinstance(params, Mapping):
        raise ParameterError(
            f"query uses named placeholders ({_SHOW[_NAMED]}), which take a mapping of"
            f" parameters, not a {type(params).__name__}"
        )
    missing = [name for name in rq.names if name not in params]
    if missing:
        raise ParameterError(f"missing named parameters: {', '.join(missing)}")
    return tuple([params[name] for name in rq.order])


def _count_error(expected: int, got: int) -> ParameterError:
    if expected == 0:
        return ParameterError(f"query has no placeholders but got {got} parameters")
    plural = "" if expected == 1 else "s"
    return ParameterError(f"query expects {expected} parameter{plural}, got {got}")
