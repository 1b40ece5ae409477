"""Secrets: a holder whose repr/str never show the value, and DSN redaction.

The password (and a DSN that carries one) lives in a `Secret` from the moment the options
are read. Everything the library shows — ``repr``, ``str``, ``Node.config``,
``Workflow.params``, stats, logs, error messages — shows the holder's redacted text; only
the driver libraries read the value, when they open a connection (asyncpg calls the holder,
aiomysql encodes it).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "Secret", "redact_dsn", "reveal"]

REDACTED = "***"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|[?&;])(?:password|passwd|pwd|sslpassword)=)[^&;]*")


class Secret:
    """Hold a secret string; show only ``shown`` (default ``***``) in repr, str and format.

    Calling the holder (or :meth:`reveal`) returns the value: asyncpg accepts a callable
    password and calls it at connect time; aiomysql only ever calls ``password.encode()``,
    which the holder provides, so neither driver copies the value into an attribute of its
    own. Equality compares values; pickling is refused so a copy cannot leave the process.

    >>> s = Secret("p@ss:w/rd")
    >>> s, str(s), f"{s}", s() == "p@ss:w/rd"
    (Secret('***'), '***', '***', True)
    >>> Secret("pw", shown="postgresql://u:***@h/db")
    Secret('postgresql://u:***@h/db')
    """

    __slots__ = ("_shown", "_value")

    def __init__(self, value: str | Secret, *, shown: str = REDACTED) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a str (got a value of type {type(value).__name__})")
        self._value = value
        self._shown = shown

    def reveal(self) -> str:
        """Return the secret value (for a driver, at connect time only)."""
        return self._value

    __call__ = reveal

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """Return the value encoded (what aiomysql does with a password)."""
        return self._value.encode(encoding, errors)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({self._shown!r})"

    def __str__(self) -> str:
        return self._shown

    def __format__(self, spec: str) -> str:
        return format(self._shown, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def reveal(value: str | Secret | None) -> str | None:
    """Return the plain value of a password given as a str or a `Secret`.

    >>> reveal(Secret("x")), reveal("y"), reveal(None)
    ('x', 'y', None)
    """
    return value.reveal() if isinstance(value, Secret) else value


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with its password (and anything that may be one) replaced by ``***``.

    Works on malformed DSNs too: the user part ends at the *last* ``@`` (a password may hold
    ``@``, ``:`` or ``/``, encoded or not), a ``password=`` query option is hidden, and a
    DSN without ``scheme://`` keeps only its scheme. When in doubt, more is hidden.

    >>> redact_dsn("postgresql://app:p@ss:w/rd@db:5432/shop?sslmode=require")
    'postgresql://app:***@db:5432/shop?sslmode=require'
    >>> redact_dsn("postgresql:/u:pw@h/db")
    'postgresql:***'
    >>> redact_dsn("mysql://h/db?user=u&password=pw")
    'mysql://h/db?user=u&password=***'
    >>> redact_dsn("postgresql://u@h/db?sslkey=k.pem&sslpassword=kp")
    'postgresql://u@h/db?sslkey=k.pem&sslpassword=***'
    >>> redact_dsn("sqlite:///tmp/x.db")
    'sqlite:///tmp/x.db'
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        match = _SCHEME.match(dsn)
        return f"{match.group(1)}:{REDACTED}" if match else REDACTED
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{REDACTED}@{rest}" if colon else f"{user}@{rest}"
    return f"{scheme}://{_QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, rest)}"
