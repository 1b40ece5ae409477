"""Classify SQL for routing: category, replica safety, tables touched and a fingerprint.

:func:`classify` fails closed: ``replica_safe`` is True only for a statement proven to be a
plain read. The text is scanned by :mod:`~kailash_nodes.sql.placeholders` (placeholders of
every style then reach sqlglot in a form its dialect parses; the scanner's statement count
and session-state flag are reused) and tokenized once; each statement's leading keyword
picks a rule. Reads, DML and DDL are judged on sqlglot's tree; statements it cannot parse
(``RESET``, ``VACUUM``, ``SAVEPOINT``...) by keyword from a whitelist; anything else, and any
parse failure, is ``UNKNOWN``. Decisions where the rules could go either way:

* A read has no row lock, no DML inside (data-modifying CTE), no ``SELECT INTO`` and only
  calls known to be read-only: builtins sqlglot types itself (``COUNT``, ``CAST``...) and
  the names in :data:`SAFE_FUNCTIONS` (extend per :class:`Classifier`). Known side effects
  get their category (``nextval`` writes; advisory locks, ``currval``, ``last_insert_id``
  are session state); any other call, or a schema-qualified one, is ``UNKNOWN``, and only
  that a ``/* route:replica */`` hint may vouch for. ``route:primary`` always holds.
* sqlglot is lenient (``SELECT DELETE FROM t`` parses), so a read whose tokens hold a
  write keyword outside strings and comments is not trusted either.
* Read categories go only to replica-safe statements, apart from a ``route:primary`` hint
  and multi-statement strings (never safe; the most consequential statement names the
  category: transaction > session_state > unknown > ddl > write_bulk > write_simple >
  reads). ``FOR UPDATE/SHARE`` reads are ``write_simple``; ``SELECT INTO`` is ``ddl``.
* ``write_bulk``: ``VALUES`` with two rows or more, ``INSERT ... SELECT``, ``LOAD DATA``,
  ``COPY`` either way (``COPY ... TO`` reads but streams over one session: primary).
  ``UPDATE``/``DELETE``/``MERGE`` are ``write_simple``: their row counts are unknowable.
* ``ddl`` includes ``GRANT``, ``VACUUM``, ``ANALYZE``, ``REINDEX``, ``CLUSTER``; ``CREATE
  TEMP`` and ``SELECT INTO TEMP`` are ``session_state`` (they must pin the session).
* ``EXPLAIN`` takes its inner statement's verdict, with or without ``ANALYZE``. MySQL
  ``SHOW`` of catalog objects and ``DESCRIBE`` are reads; other ``SHOW`` forms (settings,
  ``WARNINGS``, ``PROCESSLIST``) depend on the server or session: ``session_state``.
* The scanner's session flag (``@variable``, ``pg_temp``, MySQL ``/*! */``) demotes a read.
* Out of reach of a text classifier: views or operators that call writing functions, and
  SQLite functions an application overrides.

sqlglot logs a warning when it falls back to an opaque Command; the classifier handles that
outcome, so those records are dropped while (and only while) it parses.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Final, NamedTuple

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokenizer_core import Token, TokenType

from kailash_nodes.sql.fingerprint import (
    ENGINES,
    SAFE_FUNCTIONS,
    dialect_name,
    explain_target,
    fingerprint_tokens,
    listed_tables,
    opaque_fingerprint,
    parseable_text,
    route_hint,
    show_subject,
    split_statements,
    statement_head,
    tokenize,
    word,
    word_set,
)

__all__ = [
    "SAFE_FUNCTIONS",
    "Category",
    "Classification",
    "Classifier",
    "calls_routines",
    "classify",
]

log = logging.getLogger("kailash_nodes.sql")


class Category(StrEnum):
    """What a statement does, as far as routing cares; least to most consequential."""

    READ_SIMPLE = "read_simple"
    READ_COMPLEX = "read_complex"
    WRITE_SIMPLE = "write_simple"
    WRITE_BULK = "write_bulk"
    DDL = "ddl"
    UNKNOWN = "unknown"
    SESSION_STATE = "session_state"
    TRANSACTION = "transaction"


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one query string; ``replica_safe`` only for a provably plain read.

    ``tables`` are lower-cased and schema-qualified as written; ``fingerprint`` is the
    normalised shape; ``statement`` the leading keyword(s) (``"SELECT"``, ``"BEGIN"``,
    ``"START TRANSACTION"``...); ``transaction_op`` one of "begin", "commit", "rollback",
    "savepoint", "release", "rollback_to", "prepare_transaction", "commit_prepared",
    "rollback_prepared" or None (for several statements, their net effect); ``hint`` the
    ``route:`` comment; ``reason`` why. ``parts`` holds the category of every statement
    in the string and ``ops`` every transaction op in it, so that a string is acted on
    for its most dangerous part (``writes``, ``ddl``) whatever its overall category.
    """

    category: Category
    replica_safe: bool
    tables: frozenset[str]
    fingerprint: str
    statement: str
    transaction_op: str | None
    hint: str | None
    reason: str
    parts: frozenset[Category]
    ops: frozenset[str]

    @property
    def writes(self) -> bool:
        """Return whether some statement in the text may change data or schema (a write,
        DDL or an unknown statement): what read-your-writes tracks.

        >>> classify("SET a = 1; DELETE FROM t").writes, classify("SET a = 1").writes
        (True, False)
        """
        return not self.parts.isdisjoint(_CHANGES)

    @property
    def ddl(self) -> bool:
        """Return whether some statement in the text is DDL (its tables' prepared
        statements are dropped before it runs)."""
        return _C.DDL in self.parts


_C = Category
_TX, _SS = _C.TRANSACTION, _C.SESSION_STATE
_RANK: Final = {c: i for i, c in enumerate(Category)}  # a multi-statement string: max
_READS: Final = frozenset({_C.READ_SIMPLE, _C.READ_COMPLEX})
_CHANGES: Final = frozenset({_C.WRITE_SIMPLE, _C.WRITE_BULK, _C.DDL, _C.UNKNOWN})


def _deny(category: Category, reason: str, names: str) -> dict[str, tuple[Category, str]]:
    return dict.fromkeys(names.split(), (category, reason))


_DENIED: Final = {
    **_deny(_C.WRITE_SIMPLE, "{}() advances a sequence", "nextval setval next_value_for"),
    **_deny(_C.WRITE_SIMPLE, "{}() assigns a transaction id", "txid_current pg_current_xact_id"),
    **_deny(_SS, "{}() changes session state", "set_config setseed pg_notify"),
    **_deny(_SS, "{}() takes or frees a lock", "get_lock release_lock release_all_locks"),
    **_deny(
        _SS,
        "{}() reads this session's state",
        "currval lastval last_insert_id found_rows row_count connection_id pg_backend_pid"
        " last_insert_rowid changes total_changes",
    ),
}
_NO_REASONS: Final[Mapping[str, str]] = MappingProxyType({})
_DENIED_PREFIXES: Final = (
    ("pg_advisory_", _SS, "{}() takes or frees an advisory lock"),
    ("pg_try_advisory_", _SS, "{}() takes or frees an advisory lock"),
    ("dblink", _C.UNKNOWN, "{}() runs SQL on another server"),
    ("lo_", _C.WRITE_SIMPLE, "{}() is a large-object function"),
)
# Builtins that read server or session state (not all may run on a standby, so routing
# still sends them to the primary); none can change who the session runs as.
_BUILTIN_READERS: Final = word_set(
    "current_setting has_database_privilege has_schema_privilege has_table_privilege"
    " inet_client_addr inet_client_port inet_server_addr inet_server_port"
    " txid_current_snapshot txid_snapshot_xmin txid_snapshot_xmax"
)
# No plain read holds these outside strings and comments (a column named "lock" pays with a
# trip to the primary); sqlglot's leniency lets "SELECT DELETE FROM t" parse as a read.
_NOT_IN_READS: Final = word_set(
    "INSERT UPDATE DELETE MERGE INTO COPY CREATE DROP ALTER TRUNCATE GRANT REVOKE LOCK"
    " COMMIT ROLLBACK BEGIN SAVEPOINT RELEASE CALL EXECUTE"
)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """One statement's verdict; ``vouch`` is the read category a replica hint may grant."""

    category: Category
    statement: str
    reason: str
    safe: bool = False
    op: str | None = None
    tables: frozenset[str] = frozenset()
    vouch: Category | None = None
    parts: frozenset[Category] = frozenset()  # set for several statements (else: category)
    ops: frozenset[str] = frozenset()


class _Ctx(NamedTuple):
    text: str
    dialect: str
    engine: Dialect
    safe_functions: frozenset[str]
    unsafe_functions: Mapping[str, str]  # name -> why a catalog says a replica may not run it
    on_unknown: Callable[[str], None] | None = None  # told of a name neither list knows


_QUIET: Final = contextvars.ContextVar("kailash_nodes_sql_quiet", default=False)


class _CommandFallbackFilter(logging.Filter):
    """Drop sqlglot's "Falling back to parsing as a 'Command'" while the classifier parses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_QUIET.get() and "parsing as a 'Command'" in record.getMessage())


logging.getLogger("sqlglot").addFilter(_CommandFallbackFilter())


def _parse(tokens: Sequence[Token], ctx: _Ctx) -> exp.Expr:
    """Parse one statement's tokens; raise if sqlglot fails or finds other than one."""
    quiet = _QUIET.set(True)
    try:
        trees = ctx.engine.parser().parse(list(tokens), ctx.text)
    finally:
        _QUIET.reset(quiet)
    if len(trees) != 1 or trees[0] is None:
        raise ValueError("expected exactly one statement")
    return trees[0]


def _parsed(tokens: Sequence[Token], ctx: _Ctx, statement: str = "") -> _Verdict:
    """Judge a read, DML or DESCRIBE statement on its parse tree."""
    head = word(tokens[0])
    try:
        node = _parse(tokens, ctx)
    except Exception as exc:  # sqlglot raises more than ParseError on odd input
        log.debug("parse failed (%s) for a %s statement", type(exc).__name__, head)
        return _Verdict(_C.UNKNOWN, statement or head, "parse failed")
    if not statement:
        statement = "SELECT" if head in ("(", "WITH", "TABLE") else head
        if head == "WITH" and not isinstance(node, exp.Query):
            statement = node.key.upper()
    verdict = _tree(node, ctx, statement)
    if verdict.safe or verdict.vouch:
        stray = next((w for t in tokens if (w := word(t)) in _NOT_IN_READS), None)
        if stray is not None:
            reason = f"{stray} in a read is not trusted"
            return replace(verdict, category=_C.UNKNOWN, safe=False, vouch=None, reason=reason)
    return verdict


def _ddl_parsed(tokens: Sequence[Token], ctx: _Ctx) -> _Verdict:
    """Judge CREATE/ALTER/DROP/TRUNCATE/COMMENT: parsed for tables, DDL by keyword if not."""
    head = word(tokens[0])
    try:
        node: exp.Expr | None = _parse(tokens, ctx)
    except Exception:
        node = None
    if isinstance(node, _DDL_NODES):
        return _tree(node, ctx, head)
    if any(word(t) in ("TEMP", "TEMPORARY") for t in tokens[1:4]):
        return _Verdict(_C.SESSION_STATE, head, "temporary object lives in the session")
    return _Verdict(_C.DDL, head, f"{head} (DDL by keyword)")


class _Facts:
    """What one walk over a tree finds: one pass, keyed by node type, so a miss stays cheap."""

    __slots__ = ("ctes", "dml", "feature", "funcs", "into", "lock", "selects", "tables")

    def __init__(self, node: exp.Expr) -> None:
        self.dml: exp.Expr | None = None
        self.lock: exp.Expr | None = None
        self.into: exp.Expr | None = None
        self.feature = ""
        self.selects = 0
        self.funcs: list[exp.Func] = []
        self.tables: list[exp.Expr] = []
        self.ctes: set[str] = set()
        for n in node.walk():
            tag = _TAGS.get(type(n))
            if tag is None:
                if isinstance(n, exp.Func):
                    self.funcs.append(n)
            elif tag == "table":
                self.tables.append(n)
            elif tag == "dml":
                self.dml = self.dml or n
            elif tag == "lock":
                self.lock = self.lock or n
            elif tag == "into":
                self.into = n
            elif tag == "select":
                self.selects += 1
            else:
                self.feature = self.feature or tag
                if tag == "CTE":
                    self.ctes.add(n.alias_or_name.lower())

    def table_names(self) -> frozenset[str]:
        """Return the tables, lower-cased and qualified as written, without CTE names."""
        names = set()
        for t in self.tables:
            if isinstance(t.this, exp.Identifier):
                name = ".".join(p for p in (t.text("catalog"), t.text("db"), t.name) if p)
                names.add(name.lower())
        return frozenset(names - self.ctes)


_TAGS: Final[dict[type, str]] = {
    exp.Table: "table",
    **dict.fromkeys((exp.Insert, exp.Update, exp.Delete, exp.Merge), "dml"),
    exp.Lock: "lock",
    exp.Into: "into",
    exp.Select: "select",
    exp.CTE: "CTE",
    **dict.fromkeys((exp.Union, exp.Intersect, exp.Except), "set operation"),
    exp.Join: "join",
    **dict.fromkeys((exp.Subquery, exp.Exists), "subquery"),
    exp.Group: "GROUP BY",
    exp.Having: "HAVING",
    exp.Window: "window function",
    exp.Lateral: "LATERAL",
}
_DDL_NODES: Final = (exp.Create, exp.Alter, exp.Drop, exp.TruncateTable, exp.Comment)
_DDL_KINDS: Final = frozenset({"TABLE", "VIEW", "INDEX"})


def _tree(node: exp.Expr, ctx: _Ctx, statement: str) -> _Verdict:
    """Judge a parsed statement."""
    facts = _Facts(node)
    tables = facts.table_names()
    if isinstance(node, exp.Query | exp.Values):
        verdict = _read(facts, ctx, statement)
    elif isinstance(node, exp.Insert):
        verdict = _insert(node, statement)
    elif isinstance(node, exp.Update | exp.Delete | exp.Merge):
        verdict = _Verdict(_C.WRITE_SIMPLE, statement, f"{node.key.upper()} writes rows")
    elif isinstance(node, exp.Copy):
        why = "COPY FROM loads rows" if node.args.get("kind") else "COPY TO streams a session"
        verdict = _Verdict(_C.WRITE_BULK, statement, why)
    elif isinstance(node, exp.Create) and node.find(exp.TemporaryProperty):
        verdict = _Verdict(_C.SESSION_STATE, statement, "temporary object lives in the session")
    elif isinstance(node, _DDL_NODES):
        kind = str(node.args.get("kind") or "TABLE").upper()
        verdict = _Verdict(_C.DDL, statement, f"{statement} {kind} is DDL")
        tables = tables if kind in _DDL_KINDS else frozenset()
    elif isinstance(node, exp.Describe):
        verdict = _Verdict(_C.READ_SIMPLE, statement, "DESCRIBE reads the catalog", safe=True)
    else:
        verdict = _Verdict(_C.UNKNOWN, statement, f"unsupported statement ({node.key})")
    return replace(verdict, tables=tables)


def _insert(node: exp.Expr, statement: str) -> _Verdict:
    """Judge INSERT/REPLACE: bulk from two VALUES rows or from a query."""
    source = node.expression
    upsert = " (upsert)" if node.args.get("conflict") or statement == "REPLACE" else ""
    if isinstance(source, exp.Values) and len(source.expressions) >= 2:
        reason = f"{statement} of {len(source.expressions)} rows{upsert}"
        return _Verdict(_C.WRITE_BULK, statement, reason)
    if isinstance(source, exp.Query):
        return _Verdict(_C.WRITE_BULK, statement, f"{statement} ... SELECT{upsert}")
    return _Verdict(_C.WRITE_SIMPLE, statement, f"{statement} of one row{upsert}")


def _read(facts: _Facts, ctx: _Ctx, statement: str) -> _Verdict:
    """Judge a query: a plain read unless something in it writes, locks or escapes."""
    if facts.dml is not None:
        inner = _tree(facts.dml, ctx, facts.dml.key.upper())
        return _Verdict(inner.category, statement, f"data-modifying CTE ({inner.statement})")
    if facts.into is not None:
        into = facts.into
        if into.args.get("temporary") or not isinstance(into.this.this, exp.Identifier):
            return _Verdict(_C.SESSION_STATE, statement, "SELECT INTO a temp table or variable")
        return _Verdict(_C.DDL, statement, "SELECT INTO creates a table")
    if facts.lock is not None:
        return _Verdict(_C.WRITE_SIMPLE, statement, f"{_lock_text(facts.lock)} locks rows")
    if ctx.dialect == "mysql" and "SQL_CALC_FOUND_ROWS" in ctx.text.upper():
        return _Verdict(_C.SESSION_STATE, statement, "SQL_CALC_FOUND_ROWS feeds FOUND_ROWS()")
    feature = facts.feature or ("subquery" if facts.selects > 1 else "")
    category = _C.READ_COMPLEX if feature else _C.READ_SIMPLE
    problem = _function_problem(facts.funcs, ctx)
    if problem is not None:
        cat, reason, vouchable = problem
        return _Verdict(cat, statement, reason, vouch=category if vouchable else None)
    reason = f"plain read ({feature})" if feature else "plain read"
    return _Verdict(category, statement, reason, safe=True)


def _lock_text(lock: exp.Expr) -> str:
    update, key = lock.args.get("update"), lock.args.get("key")
    if update:
        return "FOR NO KEY UPDATE" if key else "FOR UPDATE"
    return "FOR KEY SHARE" if key else "FOR SHARE"


def _function_name(func: exp.Func) -> str:
    """Return the call's name, lower-cased; qualified (``s.f``) unless in pg_catalog."""
    name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
    parent = func.parent
    if isinstance(parent, exp.Dot) and parent.expression is func:
        qualifier = parent.this.sql().lower()
        return name if qualifier == "pg_catalog" else f"{qualifier}.{name}"
    return name


@lru_cache(maxsize=4096)
def calls_routines(query: str, dialect: str = "postgres") -> bool:
    """Return whether ``query`` calls a function that is not a known builtin.

    A user function may change the session where the text shows nothing (``SET ROLE`` or
    ``set_config`` inside it), so the pool resets a connection that ran one. Fails closed:
    a text with a call that does not parse counts. Cached per (query, dialect).

    >>> calls_routines("SELECT my_fn($1)"), calls_routines("SELECT s.f()")
    (True, True)
    >>> calls_routines("SELECT count(*) FROM t WHERE id IN ($1, $2)")
    False
    >>> calls_routines("INSERT INTO t (a, b) VALUES ($1, lower($2))")
    False
    >>> calls_routines("SELECT pg_last_wal_replay_lsn(), current_setting('x'), nextval('s')")
    False
    """
    if "(" not in query:
        return False
    name = dialect_name(dialect)
    text = parseable_text(query, name)[1]
    ctx = _Ctx(text, name, ENGINES[name], SAFE_FUNCTIONS, _NO_REASONS)
    try:
        trees = [_parse(s, ctx) for s in split_statements(tokenize(text, name))]
    except Exception:  # sqlglot raises more than ParseError on odd input
        return True
    return any(
        _user_routine(_function_name(func))
        for tree in trees
        for func in tree.find_all(exp.Anonymous, exp.AnonymousAggFunc)
    )


def _user_routine(name: str) -> bool:
    """Tell whether a call of ``name`` (lower-cased, qualified unless pg_catalog) may be a
    user-defined routine rather than a builtin, whose effects are known (listed here or
    in the text scan: ``set_config`` and the like mark a connection dirty by themselves).
    A user function named ``pg_*`` passes for a builtin."""
    if "." in name:
        return True
    known = name in SAFE_FUNCTIONS or name in _BUILTIN_READERS or name.startswith("pg_")
    return not known and _known_effect(name) is None


def _known_effect(name: str) -> tuple[Category, str] | None:
    """Return (category, reason) of a builtin with a known side effect, else None."""
    return _DENIED.get(name) or next(
        ((c, r) for p, c, r in _DENIED_PREFIXES if name.startswith(p)), None
    )


def _function_problem(funcs: Iterable[exp.Func], ctx: _Ctx) -> tuple[Category, str, bool] | None:
    """Return (category, reason, hint may vouch) for a call not known to be read-only.

    A call with a known side effect wins over one that is merely unknown; the context's
    ``unsafe_functions`` hold a catalog's reason for names it knows are not safe
    (``"pg_proc: volatile"``), and ``on_unknown`` hears of a name neither list knows.
    """
    safe, why = ctx.safe_functions, ctx.unsafe_functions
    unknown = ""
    for func in funcs:
        name = _function_name(func)
        denied = _known_effect(name)
        if denied is not None:
            return denied[0], denied[1].format(name), False
        opaque = isinstance(func, exp.Anonymous | exp.AnonymousAggFunc) or "." in name
        if opaque and name not in safe and not unknown:
            unknown = name
    if unknown:
        because = why.get(unknown)
        if because is None and ctx.on_unknown is not None:
            ctx.on_unknown(unknown)
        detail = f" ({because})" if because else ""
        return _C.UNKNOWN, f"{unknown}() is not known to be read-only{detail}", True
    return None


def _replace_into(tokens: Sequence[Token], ctx: _Ctx) -> _Verdict:
    """Judge MySQL/SQLite ``REPLACE INTO`` as the INSERT it is (sqlglot lacks the verb)."""
    if ctx.dialect == "postgres":
        return _Verdict(_C.UNKNOWN, "REPLACE", "REPLACE is not a PostgreSQL statement")
    first = tokens[0]
    verb = Token(TokenType.INSERT, "INSERT", first.line, first.col, first.start, first.end)
    return _parsed([verb, *tokens[1:]], ctx, "REPLACE")


def _explain(tokens: Sequence[Token], ctx: _Ctx) -> _Verdict:
    """Judge EXPLAIN by its inner statement, whether ANALYZE runs it or it is only planned."""
    start, analyze = explain_target(tokens, ctx.dialect)
    if start >= len(tokens) or word(tokens[start]) not in _EXPLAINABLE:
        return _Verdict(_C.UNKNOWN, "EXPLAIN", "EXPLAIN form not recognised")
    inner = _statement(tokens[start:], ctx)
    verb = "EXPLAIN ANALYZE" if analyze else "EXPLAIN"
    return replace(inner, statement="EXPLAIN", reason=f"{verb} {inner.statement}: {inner.reason}")


def _show(tokens: Sequence[Token], ctx: _Ctx) -> _Verdict:
    """Judge SHOW: MySQL catalog listings are reads; settings and server state are not."""
    subject = show_subject(tokens)
    if ctx.dialect == "mysql" and subject in _SHOW_CATALOG:
        return _Verdict(_C.READ_SIMPLE, "SHOW", f"SHOW {subject} reads the catalog", safe=True)
    return _Verdict(_C.SESSION_STATE, "SHOW", "SHOW reads server or session state")


_Rule = Callable[[Sequence[Token], _Ctx], _Verdict]
_RULES: Final[dict[str, _Rule]] = {
    **dict.fromkeys(word_set("SELECT WITH VALUES TABLE ( INSERT UPDATE DELETE MERGE"), _parsed),
    **dict.fromkeys(word_set("COPY DESCRIBE DESC"), _parsed),
    **dict.fromkeys(word_set("CREATE ALTER DROP TRUNCATE COMMENT"), _ddl_parsed),
    "REPLACE": _replace_into,
    "EXPLAIN": _explain,
    "SHOW": _show,
}
_EXPLAINABLE: Final = word_set("SELECT WITH VALUES TABLE ( INSERT UPDATE DELETE MERGE REPLACE")
_SHOW_CATALOG: Final = word_set(
    "TABLES COLUMNS FIELDS INDEX INDEXES KEYS CREATE DATABASES SCHEMAS TABLE TRIGGERS EVENTS"
    " CHARACTER CHARSET COLLATION ENGINES PLUGINS PRIVILEGES FUNCTION PROCEDURE"
)
# Statements judged by name alone; "{}" in a reason is the statement's name.
_BY_NAME: Final[dict[str, tuple[Category, str]]] = {
    **dict.fromkeys(
        word_set("BEGIN COMMIT END ROLLBACK ABORT SAVEPOINT RELEASE XA")
        | {"START TRANSACTION", "PREPARE TRANSACTION"},
        (_TX, "transaction control"),
    ),
    **dict.fromkeys(("COMMIT PREPARED", "ROLLBACK PREPARED"), (_TX, "two-phase commit")),
    **dict.fromkeys(
        word_set("GRANT REVOKE VACUUM ANALYZE ANALYSE REINDEX CLUSTER REFRESH RENAME OPTIMIZE")
        | word_set("REPAIR CHECKPOINT SECURITY IMPORT REASSIGN"),
        (_C.DDL, "{} is DDL or maintenance"),
    ),
    **dict.fromkeys(("LOAD DATA", "LOAD XML"), (_C.WRITE_BULK, "{} loads rows")),
    **dict.fromkeys(word_set("SET RESET DISCARD"), (_SS, "{} changes session state")),
    **dict.fromkeys(word_set("LISTEN UNLISTEN NOTIFY"), (_SS, "{} is session messaging")),
    **dict.fromkeys(word_set("DECLARE FETCH MOVE CLOSE"), (_SS, "{} uses a session cursor")),
    **dict.fromkeys(
        word_set("PREPARE EXECUTE DEALLOCATE"), (_SS, "{} uses a session prepared statement")
    ),
    **dict.fromkeys(word_set("LOCK UNLOCK HANDLER FLUSH"), (_SS, "{} holds locks or state")),
    **dict.fromkeys(word_set("USE ATTACH DETACH"), (_SS, "{} changes the session's databases")),
    "PRAGMA": (_SS, "PRAGMA reads or changes connection settings"),
    "LOAD": (_SS, "LOAD loads a library into the session"),
    **dict.fromkeys(word_set("CALL DO"), (_C.UNKNOWN, "{} runs an opaque routine")),
}


def _statement(tokens: Sequence[Token], ctx: _Ctx) -> _Verdict:
    """Judge one statement by the rule for its leading keyword; no rule means UNKNOWN."""
    name, op = statement_head(tokens)
    rule = _RULES.get(name)
    if rule is not None:
        return rule(tokens, ctx)
    known = _BY_NAME.get(name)
    if known is None:
        return _Verdict(_C.UNKNOWN, name, f"{name or 'text'} is not a recognised statement")
    category, reason = known
    return _Verdict(category, name, reason.format(name), op=op, tables=listed_tables(tokens))


def _combine(verdicts: list[_Verdict]) -> _Verdict:
    """Merge a multi-statement string: the most consequential verdict, never safe."""
    worst = max(verdicts, key=lambda v: _RANK[v.category])
    if len(verdicts) == 1:
        return worst
    tables = frozenset().union(*(v.tables for v in verdicts))
    reason = f"{len(verdicts)} statements in one string; {worst.statement}: {worst.reason}"
    ops = [v.op for v in verdicts if v.op is not None]
    parts = frozenset(v.category for v in verdicts)
    return replace(
        worst, safe=False, vouch=None, tables=tables, reason=reason, op=_net_op(ops),
        parts=parts, ops=frozenset(ops),
    )  # fmt: skip


def _net_op(ops: list[str]) -> str | None:
    """Return what a string's transaction statements leave behind, as one op.

    "begin" if a transaction is left open, None if the string opens and closes one
    (``BEGIN; ...; COMMIT``), else its last ending op, else its last op.
    """
    begins = [i for i, op in enumerate(ops) if op == "begin"]
    ends = [i for i, op in enumerate(ops) if op in ("commit", "rollback", "prepare_transaction")]
    if begins and (not ends or begins[-1] > ends[-1]):
        return "begin"
    if ends:
        return None if begins else ops[ends[-1]]
    return ops[-1] if ops else None


def _analyse(
    query: str,
    dialect: str,
    safe_functions: frozenset[str],
    why: Mapping[str, str] = _NO_REASONS,
    on_unknown: Callable[[str], None] | None = None,
) -> Classification:
    """Classify ``query`` (uncached); ``why``, ``on_unknown`` as in :func:`_function_problem`."""
    if not isinstance(query, str):
        raise TypeError(f"query must be str (got {type(query).__name__})")
    name = dialect_name(dialect)
    scan, text = parseable_text(query, name)
    ctx = _Ctx(text, name, ENGINES[name], safe_functions, why, on_unknown)
    try:
        tokens = tokenize(text, name)
    except Exception:
        fingerprint = opaque_fingerprint(query)  # no literal of a broken text may leak
        return Classification(
            _C.UNKNOWN, False, frozenset(), fingerprint, "", None, None, "parse failed",
            frozenset({_C.UNKNOWN}), frozenset(),
        )  # fmt: skip
    statements = split_statements(tokens)
    if not statements:
        verdict = _Verdict(_C.UNKNOWN, "", "empty query")
    elif scan is not None and scan.statements != len(statements):
        verdict = _Verdict(_C.UNKNOWN, "", "statement boundaries are ambiguous")
    else:
        verdict = _combine([_statement(s, ctx) for s in statements])
    if verdict.category in _READS and scan is not None and scan.session_state:
        reason = "reads session state (@variable, pg_temp or /*! */ comment)"
        parts = verdict.parts and (verdict.parts - _READS) | {_SS}
        verdict = replace(verdict, category=_SS, safe=False, vouch=None, reason=reason, parts=parts)
    return _finish(verdict, route_hint(tokens), fingerprint_tokens(statements))


def _finish(verdict: _Verdict, hint: str | None, fingerprint: str) -> Classification:
    """Apply a route hint: primary always holds; replica only vouches for an unknown call."""
    category, safe, reason = verdict.category, verdict.safe, verdict.reason
    parts = verdict.parts or frozenset({category})
    if hint == "primary":
        safe, reason = False, f"{reason}; route:primary hint"
    elif hint == "replica" and not safe:
        if verdict.vouch is not None:
            category, safe = verdict.vouch, True
            parts = frozenset({category})  # one statement: the hint vouches for its call
            reason = f"{reason}; route:replica hint accepted"
        else:
            reason = f"{reason}; route:replica hint refused"
    ops = verdict.ops or frozenset({verdict.op} if verdict.op else ())
    return Classification(
        category, safe, verdict.tables, fingerprint, verdict.statement, verdict.op, hint, reason,
        parts, ops,
    )  # fmt: skip


class Classifier:
    """Classify SQL with your own additions to the function whitelist; LRU-cached per instance.

    ``safe_functions`` adds names (``schema.fn`` for a qualified call) of functions you know
    to be read-only, so reads calling them may go to a replica. ``unsafe_functions`` maps
    names a replica may not run to why (a catalog's verdict, e.g. ``"pg_proc: volatile"``):
    they leave the whitelist, builtins included, and the reason shows in the verdict.
    ``on_unknown(name)`` is called, when a text is first classified, with each function
    name neither list knows (it must not raise).
    ``cache_size`` bounds the cache of results per (query, dialect). ``lookup(query,
    dialect)`` is the cache itself: what :meth:`classify` calls, a call frame cheaper.

    >>> Classifier(safe_functions=["price_with_tax"]).classify(
    ...     "SELECT price_with_tax(p) FROM items").replica_safe
    True
    >>> Classifier(unsafe_functions={"app.total": "pg_proc: volatile"}).classify(
    ...     "SELECT app.total(a) FROM t").reason
    'app.total() is not known to be read-only (pg_proc: volatile)'
    """

    __slots__ = ("lookup", "on_unknown", "safe_functions", "unsafe_functions")

    def __init__(
        self,
        *,
        safe_functions: Iterable[str] = (),
        unsafe_functions: Mapping[str, str] | None = None,
        on_unknown: Callable[[str], None] | None = None,
        cache_size: int = 8192,
    ) -> None:
        if isinstance(safe_functions, str):
            raise TypeError("safe_functions must be an iterable of names, not one str")
        if not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be an int >= 1 (got {cache_size!r})")
        unsafe = {n.lower(): str(why) for n, why in (unsafe_functions or {}).items()}
        self.unsafe_functions: Mapping[str, str] = MappingProxyType(unsafe)
        named = SAFE_FUNCTIONS | {n.lower() for n in safe_functions}
        self.safe_functions = named.difference(unsafe)
        self.on_unknown = on_unknown
        self.lookup = lru_cache(maxsize=cache_size)(self._miss)

    def _miss(self, query: str, dialect: str) -> Classification:
        return _analyse(query, dialect, self.safe_functions, self.unsafe_functions, self.on_unknown)

    def classify(self, query: str, dialect: str = "postgres") -> Classification:
        """Classify ``query`` for ``dialect``; see :func:`classify`."""
        return self.lookup(query, dialect)

    def cache_info(self) -> tuple[int, int, int | None, int]:
        """Return (hits, misses, maxsize, currsize) of this classifier's cache."""
        return self.lookup.cache_info()

    def cache_clear(self) -> None:
        """Empty this classifier's cache."""
        self.lookup.cache_clear()


_default_cached: Final = Classifier().lookup


def classify(query: str, dialect: str = "postgres") -> Classification:
    """Classify ``query`` for routing; cached per (query, dialect), so a repeat costs ~1 µs.

    ``dialect`` is "postgres" (or "postgresql"), "mysql" (or "mariadb") or "sqlite".
    Placeholders of every style are accepted. Only a provably plain read is
    ``replica_safe``. Raises TypeError for a non-str query, ValueError for a bad dialect.

    >>> c = classify("WITH gone AS (DELETE FROM jobs WHERE id = $1 RETURNING *) "
    ...              "SELECT * FROM gone")
    >>> c.category.value, c.replica_safe, c.reason, sorted(c.tables)
    ('write_simple', False, 'data-modifying CTE (DELETE)', ['jobs'])
    >>> c = classify("SELECT name FROM Public.Users WHERE id IN (1, 2, 3) FOR UPDATE")
    >>> c.reason, c.fingerprint
    ('FOR UPDATE locks rows', 'SELECT name FROM public.users WHERE id IN (?) FOR UPDATE')
    >>> classify("/* route:replica */ SELECT * FROM users WHERE id = %s", "mysql").replica_safe
    True
    """
    return _default_cached(query, dialect)
