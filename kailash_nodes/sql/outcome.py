"""What a statement whose answer was lost may have done: the error to report for it.

A connection that dies after a statement was sent and before its answer leaves three
cases, told apart by the statement's classification and by whether a transaction was open
before it: a transaction that may have committed, a change outside a transaction that may
have been applied, and a statement whose work died with the connection.
"""

from __future__ import annotations

from typing import Final

from kailash_nodes.errors import CommitOutcomeUnknown, ConnectionFailed, OutcomeUnknown
from kailash_nodes.sql.classify import Category, classify
from kailash_nodes.sql.fingerprint import dialect_name

__all__ = ["COMMIT_OPS", "lost_in_flight", "timed_out"]

# Transaction ops that may commit, and ones that leave nothing behind once the connection
# is gone (what they opened or kept dies with it).
COMMIT_OPS: Final = frozenset({"commit", "prepare_transaction", "commit_prepared"})
_NO_EFFECT_OPS: Final = frozenset({"begin", "rollback", "savepoint", "release", "rollback_to"})
_READS_OR_CONTROL: Final = frozenset(
    {Category.READ_SIMPLE, Category.READ_COMPLEX, Category.TRANSACTION}
)


def lost_in_flight(
    query: str, dialect: str, in_transaction: bool, cause: str
) -> ConnectionFailed | None:
    """Return the error for a connection lost after ``query`` was sent, before its answer.

    ``in_transaction``: whether the connection was inside an explicit transaction before
    ``query`` was sent. ``CommitOutcomeUnknown`` when it may have committed one (a
    ``COMMIT``, ``END``, ``PREPARE TRANSACTION`` or ``COMMIT PREPARED`` in the text; on
    MySQL also DDL or ``BEGIN`` inside a transaction, which commit it implicitly);
    ``OutcomeUnknown`` when, outside a transaction, it may have changed something (it is
    neither a plain read nor transaction control that dies with the connection); None
    when it plainly failed: a read, or a statement inside a transaction that did not end
    it (the transaction dies with the connection). ``cause`` ends the message.

    >>> type(lost_in_flight("COMMIT", "postgres", True, "lost")).__name__
    'CommitOutcomeUnknown'
    >>> type(lost_in_flight("UPDATE t SET a = 1", "postgres", False, "lost")).__name__
    'OutcomeUnknown'
    >>> lost_in_flight("UPDATE t SET a = 1", "postgres", True, "lost") is None
    True
    >>> lost_in_flight("SELECT a FROM t", "postgres", False, "lost") is None
    True
    """
    cls = classify(query, dialect)
    head = f"the connection was lost after {cls.statement or 'the statement'} was sent"
    implicit = dialect_name(dialect) == "mysql" and (
        Category.DDL in cls.parts or "begin" in cls.ops
    )
    if not cls.ops.isdisjoint(COMMIT_OPS) or (in_transaction and implicit):
        return CommitOutcomeUnknown(
            f"{head} and before its answer: the transaction may or may not have committed ({cause})"
        )
    if in_transaction or (cls.parts <= _READS_OR_CONTROL and cls.ops <= _NO_EFFECT_OPS):
        return None
    return OutcomeUnknown(
        f"{head} and before its answer, outside a transaction: it may or may not have taken "
        f"effect, so do not repeat it blindly ({cause})"
    )


def timed_out(
    query: str, dialect: str, in_transaction: bool, cause: str
) -> ConnectionFailed | None:
    """Return the error for ``query`` whose answer did not come within the query timeout.

    A late answer is a lost one: the server may have applied the statement. Outside a
    transaction that is :func:`lost_in_flight`'s answer (None for a read: the plain
    timeout stands). Inside one, a statement that may have changed something must not be
    committed later by a caller told it failed, so the answer is a ``ConnectionFailed``
    whose caller closes the connection (the server then rolls the transaction back); a
    provable plain read keeps the plain timeout.

    >>> type(timed_out("INSERT INTO t VALUES (1)", "postgres", False, "late")).__name__
    'OutcomeUnknown'
    >>> type(timed_out("INSERT INTO t VALUES (1)", "postgres", True, "late")).__name__
    'ConnectionFailed'
    >>> timed_out("SELECT a FROM t", "postgres", True, "late") is None
    True
    """
    lost = lost_in_flight(query, dialect, in_transaction, cause)
    if lost is not None or not in_transaction or classify(query, dialect).replica_safe:
        return lost
    return ConnectionFailed(
        f"{classify(query, dialect).statement or 'a statement'} got no answer in time inside a "
        f"transaction: the connection is closed, so the transaction is rolled back ({cause})"
    )
