"""The text side of classification: dialects, tokens, statement heads, hints, fingerprints.

Everything here works on text and sqlglot tokens, which cost about a fifth of a parse and
keep what a parse tree normalises away (placeholder spelling, comments) or cannot hold at
all (statements sqlglot only knows as opaque commands: ``VACUUM``, ``LOCK``, ``SAVEPOINT``).

A fingerprint is a statement's shape: literals, ``TRUE``/``FALSE``, signed numbers and
placeholders fold to ``?``; SQL keywords are upper-cased, other bare words lower-cased,
quoted identifiers keep their case; whitespace and comments go. An ``IN`` list of ``?``
collapses to ``IN (?)`` and a run of identical ``VALUES`` rows after the first to
``, ...``, so batch sizes do not multiply shapes while one row stays distinct from several.

>>> fingerprint_tokens(split_statements(tokenize("select A from T where id in (1, 2)", "postgres")))
'SELECT a FROM t WHERE id IN (?)'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Final

from sqlglot.dialects.dialect import Dialect
from sqlglot.tokenizer_core import Token, TokenType
from sqlglot.tokens import Tokenizer

from kailash_nodes.errors import ParameterError
from kailash_nodes.sql.placeholders import FORMAT, NUMERIC, QMARK, RewrittenQuery, rewrite

__all__ = [
    "ENGINES",
    "SAFE_FUNCTIONS",
    "dialect_name",
    "explain_target",
    "fingerprint_tokens",
    "listed_tables",
    "opaque_fingerprint",
    "parseable_text",
    "route_hint",
    "show_subject",
    "split_statements",
    "statement_head",
    "tokenize",
    "word",
    "word_set",
]


def word_set(text: str) -> frozenset[str]:
    """Return the whitespace-separated words of ``text`` as a frozenset."""
    return frozenset(text.split())


ENGINES: Final = {name: Dialect.get_or_raise(name) for name in ("postgres", "mysql", "sqlite")}
_DIALECTS: Final = {"postgresql": "postgres", "mariadb": "mysql", **{d: d for d in ENGINES}}
# sqlglot's tokenizer swallows what follows EXPLAIN, VACUUM, SHOW... into one string; these
# subclasses keep those statements' tokens for the keyword rules.
_TOKENIZERS: Final[dict[str, type[Tokenizer]]] = {
    name: type(f"{name}_tokenizer", (engine.tokenizer_class,), {"COMMANDS": set()})
    for name, engine in ENGINES.items()
}
_TARGETS: Final = {"postgres": NUMERIC, "mysql": FORMAT, "sqlite": QMARK}
_FORMAT_MARK: Final = re.compile(r"%[%s]")


def dialect_name(dialect: object) -> str:
    """Return the sqlglot dialect for ``dialect`` ("postgresql" -> "postgres"); raise if none."""
    name = _DIALECTS.get(dialect) if isinstance(dialect, str) else None
    if name is None:
        raise ValueError(f"dialect must be one of {sorted(_DIALECTS)} (got {dialect!r})")
    return name


def parseable_text(query: str, dialect: str) -> tuple[RewrittenQuery | None, str]:
    """Scan ``query`` once; return the scan and a text whose placeholders sqlglot parses.

    The scanner lexes as the server does, so ``$1``, ``?``, ``%s`` and ``:name`` become the
    one style the dialect's sqlglot grammar knows, never inside strings or comments.
    """
    try:
        scan = rewrite(query, _TARGETS[dialect])
    except ParameterError:  # mixed styles or $n gaps: execution will say so; judge as is
        return None, query
    text = scan.text
    if dialect == "mysql" and "%" in text:  # format output: %s marks, every literal % doubled
        text = _FORMAT_MARK.sub(lambda m: "%" if m.group() == "%%" else "?", text)
    return scan, text


def tokenize(text: str, dialect: str) -> list[Token]:
    """Tokenize ``text`` with the dialect's sqlglot tokenizer, commands kept as tokens."""
    return _TOKENIZERS[dialect](dialect=ENGINES[dialect]).tokenize(text)


def opaque_fingerprint(query: str) -> str:
    """Return a fingerprint for text that does not tokenize: a digest, never its literals."""
    digest = hashlib.blake2b(query.encode("utf-8", "replace"), digest_size=8).hexdigest()
    return f"<unparsed {digest}>"


_T = TokenType
_LITERALS: Final = frozenset(
    {
        *(_T.NUMBER, _T.STRING, _T.BIT_STRING, _T.HEX_STRING, _T.BYTE_STRING),
        *(_T.NATIONAL_STRING, _T.NATIONAL_RAW_STRING, _T.RAW_STRING, _T.HEREDOC_STRING),
        *(_T.UNICODE_STRING, _T.PLACEHOLDER, _T.TRUE, _T.FALSE),
    }
)
_NAMES: Final = frozenset({_T.VAR, _T.IDENTIFIER})
# After these a '-' is binary (a - 1); after anything else it is a sign (= -1).
_OPERANDS: Final = _LITERALS | _NAMES | {_T.R_PAREN, _T.R_BRACKET, _T.NULL, _T.STAR}
_NO_SPACE_BEFORE: Final = frozenset({_T.COMMA, _T.R_PAREN, _T.R_BRACKET, _T.DOT, _T.DCOLON})
_NO_SPACE_AFTER: Final = frozenset({_T.L_PAREN, _T.L_BRACKET, _T.DOT, _T.DCOLON, _T.PARAMETER})
_IN_LIST: Final = re.compile(r"\bIN \(\?(?:, \?)+\)")
_ROW_RUN: Final = re.compile(r"(\((?:\?, )*\?\))(?:, \1)+")
_HINT: Final = re.compile(r"\broute\s*:\s*(primary|replica)\b", re.IGNORECASE)
# Token types cannot tell the keyword NAME from a column called "name": a fixed list can.
_KEYWORDS: Final = word_set(
    """ALL ALTER ANALYZE AND ANY AS ASC BEGIN BETWEEN BY CASE CAST COMMIT CONFLICT COPY CREATE
    CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP DEFAULT DELETE DESC DISTINCT DO DROP
    DUPLICATE ELSE END EXCEPT EXISTS EXPLAIN FALSE FETCH FILTER FIRST FOR FROM FULL GROUP
    HAVING ILIKE IN INNER INSERT INTERSECT INTERVAL INTO IS JOIN KEY LAST LATERAL LEFT LIKE
    LIMIT LOCK LOCKED MATCHED MERGE MODE NATURAL NO NOT NOTHING NOWAIT NULL NULLS OF OFFSET ON
    OR ORDER OUTER OVER PARTITION RECURSIVE RELEASE REPLACE RETURNING RIGHT ROLLBACK ROWS
    SAVEPOINT SELECT SET SHARE SHOW SKIP TABLE TEMP TEMPORARY THEN TO TRUE TRUNCATE UNION
    UPDATE USING VALUES WHEN WHERE WINDOW WITH"""
)


SAFE_FUNCTIONS: Final = word_set(
    """abs acos age array_agg array_append array_cat array_length array_lower array_position
    array_positions array_prepend array_remove array_replace array_to_json array_to_string
    array_upper ascii asin atan atan2 avg bit_length bool_and bool_or btrim cardinality cbrt
    ceil ceiling char char_length character_length chr clock_timestamp coalesce concat
    concat_ws corr cos count covar_pop covar_samp cume_dist curdate current_database
    current_date current_schema current_time current_timestamp curtime database date date_add
    date_bin date_format date_part date_sub date_trunc datediff datetime day dayofmonth
    dayofweek dayofyear decode degrees dense_rank div encode every exp extract field
    find_in_set first_value floor format from_unixtime gen_random_uuid generate_series
    generate_subscripts glob greatest group_concat hex hour ifnull iif initcap instr isfinite
    isnull json json_agg json_array json_array_length json_arrayagg json_build_array
    json_build_object json_contains json_each json_extract json_extract_path
    json_extract_path_text json_group_array json_group_object json_keys json_length json_object
    json_object_agg json_objectagg json_search json_type json_typeof json_unquote json_valid
    jsonb_agg jsonb_array_elements jsonb_array_elements_text jsonb_array_length
    jsonb_build_array jsonb_build_object jsonb_each jsonb_each_text jsonb_extract_path
    jsonb_extract_path_text jsonb_object_agg jsonb_object_keys jsonb_path_exists
    jsonb_path_query jsonb_path_query_array jsonb_path_query_first jsonb_pretty jsonb_set
    jsonb_strip_nulls jsonb_typeof julianday justify_days justify_hours lag last_day
    last_value lcase lead least left length like likelihood likely ln localtime
    localtimestamp locate log log10 lower lpad ltrim make_date make_interval make_timestamp max
    md5 min minute mod mode month now nth_value ntile nullif octet_length percent_rank
    percentile_cont percentile_disc pg_sleep pg_sleep_for pg_typeof pi plainto_tsquery position
    power printf quote
    quote_ident quote_literal quote_nullable radians rand random rank regexp_match
    regexp_matches regexp_replace regexp_split_to_array regexp_split_to_table repeat replace
    reverse right round row_number row_to_json rpad rtrim second sha1 sha2 sha256 sign sin sleep
    split_part sqlite_version sqrt starts_with statement_timestamp stddev stddev_pop
    stddev_samp str_to_date strftime string_agg string_to_array strpos substr substring
    substring_index sum tan time timeofday timestampadd timestampdiff to_char to_date to_hex
    to_json to_jsonb to_number to_timestamp to_tsquery to_tsvector total transaction_timestamp
    translate trim trunc ts_headline ts_rank ts_rank_cd typeof ucase unhex unicode unixepoch
    unix_timestamp unlikely unnest upper utc_timestamp uuid var_pop var_samp variance version
    websearch_to_tsquery week weekday width_bucket year yearweek"""
)
"""Functions (lower-case) a plain read may call, besides the builtins sqlglot types itself.

Pure or merely volatile (``random``, ``now``, ``pg_sleep``/``sleep``: they wait and change
nothing) builtins of PostgreSQL, MySQL and SQLite; the
classifier treats any other function as unknown (fail closed) unless a Classifier adds it.
"""


def word(token: Token) -> str:
    """Return a keyword or bare word upper-cased; "" for literals and quoted identifiers."""
    if token.token_type in _LITERALS or token.token_type is _T.IDENTIFIER:
        return ""
    return token.text.upper()


def split_statements(tokens: Sequence[Token]) -> list[list[Token]]:
    """Split tokens on ``;`` into statements, dropping empty ones (``SELECT 1;;``)."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type is _T.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def route_hint(tokens: Sequence[Token]) -> str | None:
    """Return "primary" or "replica" from a ``route:`` comment; "primary" wins a conflict.

    Only real comments count (the tokenizer hands them over), never string contents.
    """
    found: set[str] = set()
    for token in tokens:
        for comment in token.comments:
            found.update(m.lower() for m in _HINT.findall(comment))
    if "primary" in found:
        return "primary"
    return "replica" if found else None


def fingerprint_tokens(statements: Sequence[Sequence[Token]]) -> str:
    """Return the normalised shape of the statements, joined by ``"; "``."""
    return "; ".join(_fingerprint_one(s) for s in statements)


def _fingerprint_one(tokens: Sequence[Token]) -> str:
    out: list[str] = []
    glue = True  # no space before the next piece
    prev: TokenType | None = None
    i, n = 0, len(tokens)
    while i < n:
        kind = tokens[i].token_type
        piece, step = _piece(tokens, i, prev)
        if kind in _NO_SPACE_BEFORE or (kind is _T.L_PAREN and prev in _NAMES):
            glue = True
        out.append(piece if glue else " " + piece)
        prev = _T.PLACEHOLDER if piece == "?" else kind
        glue = prev in _NO_SPACE_AFTER
        i += step
    return _ROW_RUN.sub(r"\1, ...", _IN_LIST.sub("IN (?)", "".join(out)))


def _piece(tokens: Sequence[Token], i: int, prev: TokenType | None) -> tuple[str, int]:
    """Return the text for the token at ``i`` and how many tokens it consumed."""
    token = tokens[i]
    kind = token.token_type
    after = tokens[i + 1].token_type if i + 1 < len(tokens) else None
    if kind in _LITERALS:
        return "?", 1
    if kind is _T.PARAMETER and after is _T.NUMBER:  # $1
        return "?", 2
    if kind is _T.DASH and after is _T.NUMBER and prev not in _OPERANDS:  # a sign
        return "?", 2
    if kind is _T.IDENTIFIER:
        return '"' + token.text.replace('"', '""') + '"', 1
    upper = token.text.upper()
    return (upper if upper in _KEYWORDS or not upper.isidentifier() else token.text.lower()), 1


_TWO_WORD_HEADS: Final = frozenset(
    {("START", "TRANSACTION"), ("PREPARE", "TRANSACTION"), ("COMMIT", "PREPARED")}
    | {("ROLLBACK", "PREPARED"), ("LOAD", "DATA"), ("LOAD", "XML")}
)
_OPS: Final = {
    **dict.fromkeys(("BEGIN", "START TRANSACTION"), "begin"),
    **dict.fromkeys(("COMMIT", "END"), "commit"),
    **dict.fromkeys(("ROLLBACK", "ABORT"), "rollback"),
    "SAVEPOINT": "savepoint",
    "RELEASE": "release",
    "PREPARE TRANSACTION": "prepare_transaction",
    "COMMIT PREPARED": "commit_prepared",
    "ROLLBACK PREPARED": "rollback_prepared",
}


def statement_head(tokens: Sequence[Token]) -> tuple[str, str | None]:
    """Return the statement's name ("SELECT", "START TRANSACTION"...) and transaction op.

    ``COMMIT PREPARED`` and ``ROLLBACK PREPARED`` end another, prepared transaction, so they
    get ops of their own; ``ROLLBACK [WORK] TO [SAVEPOINT] x`` is "rollback_to".
    """
    words = [word(t) for t in tokens[:4]]
    name = words[0].partition(" ")[0]  # sqlglot makes "LOCK TABLES" one token
    if len(words) > 1 and (name, words[1]) in _TWO_WORD_HEADS:
        name = f"{name} {words[1]}"
    if name == "ROLLBACK" and "TO" in words:
        return name, "rollback_to"
    return name, _OPS.get(name)


_SKIP_WORDS: Final = word_set(
    "TABLE TABLES ONLY VERBOSE FULL FREEZE ANALYZE ANALYSE MATERIALIZED VIEW CONCURRENTLY"
    " NO_WRITE_TO_BINLOG LOCAL SKIP_LOCKED"
)
_LISTERS: Final = word_set("VACUUM ANALYZE ANALYSE CLUSTER REFRESH OPTIMIZE REPAIR LOCK")
_COMMA: Final = frozenset({","})


def listed_tables(tokens: Sequence[Token]) -> frozenset[str]:
    """Return the tables a statement sqlglot does not parse names (best effort).

    Covers ``GRANT/REVOKE ... ON a, b``, ``RENAME TABLE a TO b``, ``LOCK [TABLES] a, b``,
    ``VACUUM``/``ANALYZE``/``CLUSTER``/``REFRESH``/``OPTIMIZE`` lists, ``REINDEX TABLE t``
    and ``LOAD DATA ... INTO TABLE t``; other statements name none.
    """
    words = [word(t) for t in tokens]
    head = words[0].partition(" ")[0]
    start, separators, stop = 1, _COMMA, word_set("USING IN WITH NOWAIT")
    if head in ("GRANT", "REVOKE"):
        start, stop = (words.index("ON") + 1 if "ON" in words else len(words)), word_set("TO FROM")
    elif head == "RENAME":
        separators = _COMMA | {"TO"}
    elif head == "LOAD":
        at = [i for i in range(1, len(words)) if words[i - 1 : i + 1] == ["INTO", "TABLE"]]
        start = at[0] + 1 if at else len(words)
    elif head not in _LISTERS and not (head == "REINDEX" and "TABLE" in words[1:4]):
        return frozenset()
    return _names_after(tokens, _skip_options(tokens, start), separators, stop)


def _skip_options(tokens: Sequence[Token], i: int) -> int:
    """Skip option words and parenthesised option lists (``VACUUM (VERBOSE) FULL t``)."""
    n = len(tokens)
    while i < n and (word(tokens[i]) in _SKIP_WORDS or tokens[i].token_type is _T.L_PAREN):
        i = _after_group(tokens, i) if tokens[i].token_type is _T.L_PAREN else i + 1
    return i


def _after_group(tokens: Sequence[Token], i: int) -> int:
    """Return the index after the parenthesised group opening at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += {_T.L_PAREN: 1, _T.R_PAREN: -1}.get(tokens[j].token_type, 0)
        if depth == 0:
            return j + 1
    return len(tokens)


def _dotted(tokens: Sequence[Token], i: int) -> tuple[str, int]:
    """Read ``name(.name)*`` at ``i``; return it lower-cased ("" if none) and the next index."""
    parts: list[str] = []
    n = len(tokens)
    while i < n and (tokens[i].token_type in _NAMES or tokens[i].text.isidentifier()):
        parts.append(tokens[i].text.lower())
        if i + 2 < n and tokens[i + 1].token_type is _T.DOT:
            i += 2
            continue
        return ".".join(parts), i + 1
    return "", i


def _names_after(
    tokens: Sequence[Token], i: int, separators: frozenset[str], stop: frozenset[str]
) -> frozenset[str]:
    """Collect a list of dotted names from ``i``; after each, skip to a separator or stop."""
    names: set[str] = set()
    n = len(tokens)
    while i < n:
        name, i = _dotted(tokens, i)
        if not name:
            break
        names.add(name)
        while i < n and word(tokens[i]) not in separators:
            if word(tokens[i]) in stop:
                return frozenset(names)
            i = _after_group(tokens, i) if tokens[i].token_type is _T.L_PAREN else i + 1
        i += 1
    return frozenset(names)


_EXPLAIN_OPTIONS: Final = word_set(
    "ANALYZE ANALYSE VERBOSE EXTENDED PARTITIONS FORMAT = TREE JSON TRADITIONAL QUERY PLAN"
)


def explain_target(tokens: Sequence[Token], dialect: str) -> tuple[int, bool]:
    """Return where EXPLAIN's statement starts and whether ANALYZE runs it.

    Skips PostgreSQL's ``(option, ...)`` list and the option words of each dialect
    (``ANALYZE``, ``VERBOSE``, MySQL ``FORMAT=JSON``, SQLite ``QUERY PLAN``).
    """
    i = 1
    if dialect == "postgres" and len(tokens) > 1 and tokens[1].token_type is _T.L_PAREN:
        i = _after_group(tokens, 1)
    while i < len(tokens) and word(tokens[i]) in _EXPLAIN_OPTIONS:
        i += 1
    return i, any(word(t) in ("ANALYZE", "ANALYSE") for t in tokens[1:i])


def show_subject(tokens: Sequence[Token]) -> str:
    """Return what a SHOW statement lists (``SHOW FULL COLUMNS`` -> "COLUMNS")."""
    rest = [word(t) for t in tokens[1:3]]
    return next((w for w in rest if w not in ("FULL", "EXTENDED")), "")
