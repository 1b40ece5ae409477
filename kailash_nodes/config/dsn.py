"""DSNs and connection parameters: the facts each backend's DSN needs, as one table.

A DSN comes from ``connection_string``, else from the ``host``/``database``/... options,
else from the environment variable ``KAILASH_DATABASE_URL`` (`DATABASE_URL_ENV`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kailash_nodes.config.checks import short_repr
from kailash_nodes.errors import ConfigError
from kailash_nodes.secret import Secret, redact_dsn

__all__ = [
    "BACKENDS",
    "DATABASE_URL_ENV",
    "SCHEMES",
    "BackendFacts",
    "ConnectParams",
    "backend_named",
    "check_port",
    "parse_dsn",
    "resolve_connect",
]

DATABASE_URL_ENV = "KAILASH_DATABASE_URL"


@dataclass(frozen=True, slots=True)
class BackendFacts:
    """What the configuration needs to know of a backend (its driver knows the rest).

    ``default_port`` is None for an embedded database, whose ``database`` is a file path
    (or none: a private in-memory database) and whose DSN is ``scheme:///path``.
    """

    default_port: int | None

    @property
    def embedded(self) -> bool:
        """Return whether the database runs in-process (no host, no port)."""
        return self.default_port is None


BACKENDS: Mapping[str, BackendFacts] = {
    "postgresql": BackendFacts(default_port=5432),
    "mysql": BackendFacts(default_port=3306),
    "sqlite": BackendFacts(default_port=None),
}
# DSN scheme or database_type (lower case) -> backend name.
SCHEMES: Mapping[str, str] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mysql+aiomysql": "mysql",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "sqlite+aiosqlite": "sqlite",
}


def backend_named(name: str) -> str | None:
    """Return the backend a DSN scheme or ``database_type`` names, or None.

    >>> backend_named("MariaDB"), backend_named("oracle")
    ('mysql', None)
    """
    return SCHEMES.get(name.lower())


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """Where and how to open one server connection (the driver reads only this)."""

    backend: str
    host: str | None = None
    port: int | None = None
    database: str | None = None
    user: str | None = None
    password: Secret | None = None  # drivers pass it on as is (asyncpg calls it)
    options: Mapping[str, str] = field(default_factory=dict)
    ssl_password: Secret | None = None  # the DSN's sslpassword (a client key's passphrase)
    connect_timeout: float = 10.0
    application_name: str = "kailash_nodes"

    def describe(self) -> str:
        """Return where this connects to, without the password."""
        if BACKENDS[self.backend].embedded:
            return f"{self.backend}:{self.database}"
        return f"{self.backend}://{self.user or ''}@{self.host}:{self.port}/{self.database or ''}"


def parse_dsn(dsn: str) -> tuple[str, dict[str, Any]]:
    """Split a DSN into the backend name and connection fields.

    The password comes back in a `Secret` (also one given as a ``password=`` query option).
    Raises ConfigError for an empty DSN, an unknown scheme, a bad port or a missing host.

    >>> parse_dsn("postgresql://app:s%40cret@db.local:6543/shop?sslmode=disable")[1]["password"]
    Secret('***')
    >>> parse_dsn("sqlite:////tmp/app.db")
    ('sqlite', {'database': '/tmp/app.db', 'options': {}})
    >>> parse_dsn("sqlite:///app.db")[1]["database"], parse_dsn("sqlite:///:memory:")[1]["database"]
    ('app.db', ':memory:')
    """
    if not isinstance(dsn, str) or not dsn.strip():
        shown = "an empty string" if isinstance(dsn, str) else f"type {type(dsn).__name__}"
        raise ConfigError(f"connection_string must be a non-empty DSN string (got {shown})")
    scheme, sep, rest = dsn.partition("://")
    backend = backend_named(scheme) if sep else None
    if backend is None:
        raise ConfigError(
            f"connection_string has no known scheme (got {redact_dsn(dsn)!r}); expected one of "
            "postgresql://, mysql://, mariadb://, sqlite:///path"
        )
    if BACKENDS[backend].embedded:
        # As in SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db, sqlite:// (memory).
        path, _, query = rest.partition("?")
        path = unquote(path.removeprefix("/"))
        return backend, {"database": path or ":memory:", "options": dict(parse_qsl(query))}
    return backend, _parse_server_dsn(dsn)


def _parse_server_dsn(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    try:
        port = parts.port
    except ValueError:
        # from None: urllib's message quotes the "port", which may be part of a password
        raise ConfigError(
            "connection_string has an invalid port (a password holding '/', '?' or '#' must "
            f"be percent-encoded): {redact_dsn(dsn)!r}"
        ) from None
    if not parts.hostname:
        raise ConfigError(f"connection_string has no host: {redact_dsn(dsn)!r}")
    options = dict(parse_qsl(parts.query))
    password = unquote(parts.password) if parts.password else None
    for key in ("password", "passwd"):  # libpq-style: the password as a query option
        if key in options:
            if password is not None:
                raise ConfigError(
                    f"connection_string gives the password twice (user part and {key}=): "
                    f"{redact_dsn(dsn)!r}"
                )
            password = options.pop(key)
    ssl_password = options.pop("sslpassword", None)  # kept out of the shown options
    return {
        "host": unquote(parts.hostname),
        "port": port,
        "database": unquote(parts.path.lstrip("/")) or None,
        "user": unquote(parts.username) if parts.username else None,
        "password": None if password is None else Secret(password),
        "options": options,
        "ssl_password": None if ssl_password is None else Secret(ssl_password),
    }


def check_port(value: Any) -> int | None:
    """Return ``value`` as a port number (an int or a numeric string), or None.

    Raises ConfigError unless it is an integer in 1..65535.

    >>> check_port("5433"), check_port(None)
    (5433, None)
    """
    if value is None:
        return None
    rule = f"port must be an integer in 1..65535 (got {short_repr(value)})"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(rule)
    try:
        port = int(value)
    except ValueError as exc:
        raise ConfigError(rule) from exc
    if not 1 <= port <= 65535:
        raise ConfigError(rule)
    return port


def resolve_connect(
    *,
    dsn: Secret | None,
    fields: Mapping[str, Any],
    declared: str | None,
    connect_timeout: float,
    application_name: str,
) -> ConnectParams:
    """Return the connection parameters: the DSN, else ``fields``, else the environment.

    ``fields`` holds the validated ``host``/``port``/``database``/``user``/``password``
    options (None where not given); ``declared`` the backend ``database_type`` names.
    Raises ConfigError when both a DSN and fields are given, or the DSN contradicts
    ``declared``.
    """
    given = [k for k, v in fields.items() if v is not None]
    if dsn is not None and given:
        raise ConfigError(
            f"give either connection_string or the fields {given}, not both "
            "(the DSN would silently win)"
        )
    text = dsn.reveal() if dsn is not None else None
    if text is None and not given:
        text = os.environ.get(DATABASE_URL_ENV) or None
    backend, parsed = _parse(text, fields, declared)
    facts = BACKENDS[backend]
    if not facts.embedded:
        parsed["host"] = parsed.get("host") or "localhost"
        parsed["port"] = check_port(parsed.get("port")) or facts.default_port
    elif parsed.get("database") in (None, "", ":memory:"):
        # Every pool connection must see the same in-memory database: a named shared cache.
        parsed["database"] = f"file:kailash-nodes-{uuid.uuid4().hex}?mode=memory&cache=shared"
        parsed["options"] = {**parsed.get("options", {}), "uri": "true"}
    return ConnectParams(
        backend=backend,
        connect_timeout=connect_timeout,
        application_name=application_name,
        **parsed,
    )


def _parse(
    text: str | None, fields: Mapping[str, Any], declared: str | None
) -> tuple[str, dict[str, Any]]:
    if text and declared is not None and BACKENDS[declared].embedded and "://" not in text:
        return declared, {"database": text, "options": {}}  # a plain file path
    if text is not None:
        backend, parsed = parse_dsn(text)
        if declared is not None and declared != backend:
            raise ConfigError(
                f"database_type={declared!r} does not match the DSN scheme ({backend})"
            )
        return backend, parsed
    return declared or "postgresql", {**fields, "options": {}}
