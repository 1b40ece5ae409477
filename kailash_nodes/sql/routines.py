"""Whether a DDL text may change which functions exist or what they are declared to be.

The router keeps the server's function catalog (which functions a replica may run) and
reads it again after such a statement. The test is a word scan of the text's tokens
(literals, quoted identifiers and dollar-quoted bodies are not words): it names a routine,
an extension (which brings functions), a schema or database (which hold them) or ``DROP
OWNED``. A false positive (a column called ``schema``) costs one catalog read.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from kailash_nodes.sql.fingerprint import dialect_name, parseable_text, tokenize, word, word_set

__all__ = ["changes_routines"]

_ROUTINE_WORDS: Final = word_set(
    "FUNCTION FUNCTIONS PROCEDURE ROUTINE AGGREGATE EXTENSION SCHEMA DATABASE OWNED"
)


@lru_cache(maxsize=1024)
def changes_routines(query: str, dialect: str = "postgres") -> bool:
    """Return whether ``query`` may create, replace, alter or drop a function.

    Cached per (query, dialect); text that does not tokenize counts (fail closed).

    >>> changes_routines("CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$")
    True
    >>> changes_routines("DROP FUNCTION IF EXISTS app.f(int)"), changes_routines("DROP OWNED BY x")
    (True, True)
    >>> changes_routines("CREATE TABLE log (note text DEFAULT 'function')")
    False
    >>> changes_routines("CREATE FUNCTION f() RETURNS INT NO SQL RETURN 1", "mysql")
    True
    """
    name = dialect_name(dialect)
    try:
        tokens = tokenize(parseable_text(query, name)[1], name)
    except Exception:  # sqlglot raises more than one type on odd input
        return True
    return any(word(t) in _ROUTINE_WORDS for t in tokens)
