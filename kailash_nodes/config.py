"""Pool configuration: the seed's options plus the new ones, validated at the boundary.

Bad input is rejected with a message naming the option, the rule and the value; nothing is
silently fixed. A DSN comes from ``connection_string``, else from ``host``/``database``/...,
else from the environment variable ``KAILASH_DATABASE_URL``.
"""

from __future__ import annotations

import logging
import math
import os
import reprlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kailash_nodes.errors import ConfigError, KailashNodesError
from kailash_nodes.secret import Secret, redact_dsn

__all__ = [
    "DATABASE_URL_ENV",
    "ConnectParams",
    "PoolConfig",
    "check_bool",
    "check_number",
    "check_str",
    "parse_dsn",
    "redact_options",
    "short_repr",
]

logger = logging.getLogger("kailash_nodes.config")

DATABASE_URL_ENV = "KAILASH_DATABASE_URL"

_SCHEMES = {
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
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}

# Options of the original that we accept so migrated code runs, but do not act on.
_IGNORED_ORIGINAL = frozenset(
    {
        "pre_warm",
        "circuit_breaker_failure_threshold",
        "circuit_breaker_recovery_timeout",
        "circuit_breaker_error_rate",
        "metrics_retention_minutes",
        "enable_pipelining",
        "pipeline_batch_size",
        "enable_monitoring",
        "monitoring_port",
        "dashboard_require_auth",
        "dashboard_auth_config",
        # named in the original's guides, never implemented there either
        "health_check_interval",
        "health_check_query",
        "recycle_on_error",
        "adaptation_interval",
        "pool_size",
        "pool_recycle",
    }
)
# Names from the original's guides with the same meaning as one of ours.
_ALIASES = {"max_idle_time": "max_idle", "connection_timeout": "connect_timeout"}


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
        if self.backend == "sqlite":
            return f"sqlite:{self.database}"
        return f"{self.backend}://{self.user or ''}@{self.host}:{self.port}/{self.database or ''}"


def parse_dsn(dsn: str) -> tuple[str, dict[str, Any]]:
    """Split a DSN into the backend name and connection fields.

    The password comes back in a `Secret` (also one given as a ``password=`` query option).

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
    backend = _SCHEMES.get(scheme.lower()) if sep else None
    if backend is None:
        raise ConfigError(
            f"connection_string has no known scheme (got {redact_dsn(dsn)!r}); expected one of "
            "postgresql://, mysql://, mariadb://, sqlite:///path"
        )
    if backend == "sqlite":
        # As in SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db, sqlite:// (memory).
        path, _, query = rest.partition("?")
        path = unquote(path.removeprefix("/"))
        return backend, {"database": path or ":memory:", "options": dict(parse_qsl(query))}
    return backend, _parse_server_dsn(dsn, backend)


def _parse_server_dsn(dsn: str, backend: str) -> dict[str, Any]:
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


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Validated settings of one pool. Build it with :meth:`from_options`.

    Durations are float seconds. ``max_waiting=0`` means an unbounded waiting queue;
    ``max_lifetime``/``max_idle``/``max_rows`` of ``None`` disable those limits.
    """

    name: str
    connect: ConnectParams
    min_connections: int = 2
    max_connections: int = 10
    health_threshold: float = 50.0
    adaptive_sizing: bool = False
    enable_query_routing: bool = False
    timeout: float = 30.0
    max_waiting: int = 0
    max_lifetime: float | None = 3600.0
    max_idle: float | None = 600.0
    check_idle_after: float = 1.0
    strict_fifo: bool = False
    query_timeout: float | None = None
    statement_cache_size: int = 256
    maintenance_interval: float = 1.0
    pattern_store: str | None = None
    allow_multi_statements: bool = True
    max_rows: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PoolConfig:
        """Validate the node's keyword options (the seed's names) and build a config.

        Raises ConfigError naming the option, the rule and the value.
        """
        opts = dict(options)
        for alias, name in _ALIASES.items():
            if alias in opts:
                if name in opts:
                    raise ConfigError(f"give {name} or its alias {alias}, not both")
                opts[name] = opts.pop(alias)
        unknown = set(opts) - _KNOWN - _IGNORED_ORIGINAL
        if unknown:
            raise ConfigError(
                f"unknown option(s) {sorted(unknown)} for WorkflowConnectionPool; "
                f"known options: {sorted(_KNOWN)}"
            )
        ignored = sorted(set(opts) & _IGNORED_ORIGINAL)
        if ignored:
            logger.warning("options of the original SDK accepted but not used: %s", ignored)
        connect = _connect_params(opts)
        name = check_str("name", opts.get("name"), empty_ok=True) or "WorkflowConnectionPool"
        connect = replace(connect, application_name=name[:63])

        def num(key: str, default: float | None, **rule: Any) -> Any:
            value = opts.get(key, default)
            if value is None and not rule.get("none_ok"):
                value = default  # an explicit None means the default here
            return check_number(key, value, **rule)

        def flag(key: str, default: bool) -> bool:
            return check_bool(key, opts.get(key, default))

        cfg = cls(
            name=name,
            connect=connect,
            min_connections=num("min_connections", 2, low=0, integer=True),
            max_connections=num("max_connections", 10, low=1, integer=True),
            health_threshold=num("health_threshold", 50.0, low=0.0, high=100.0),
            adaptive_sizing=flag("adaptive_sizing", False),
            enable_query_routing=flag("enable_query_routing", False),
            timeout=num("timeout", 30.0, low=0.0, strict=True),
            max_waiting=num("max_waiting", 0, low=0, integer=True),
            max_lifetime=num("max_lifetime", 3600.0, low=0.0, strict=True, none_ok=True),
            max_idle=num("max_idle", 600.0, low=0.0, strict=True, none_ok=True),
            check_idle_after=num("check_idle_after", 1.0, low=0.0),
            strict_fifo=flag("strict_fifo", False),
            query_timeout=num("query_timeout", None, low=0.0, strict=True, none_ok=True),
            statement_cache_size=num("statement_cache_size", 256, low=0, integer=True),
            maintenance_interval=num("maintenance_interval", 1.0, low=0.0, strict=True),
            pattern_store=check_str("pattern_store", opts.get("pattern_store")),
            allow_multi_statements=flag("allow_multi_statements", True),
            max_rows=num("max_rows", None, low=1, integer=True, none_ok=True),
        )
        if "mode=memory" in (connect.database or "") and (
            cfg.min_connections < 1 or cfg.max_connections < 2
        ):
            raise ConfigError(
                "an in-memory SQLite database lives only while a connection is open: it needs "
                "min_connections >= 1 and max_connections >= 2 (so a replacement opens before "
                f"a connection closes) (got min_connections={cfg.min_connections}, "
                f"max_connections={cfg.max_connections})"
            )
        if cfg.min_connections > cfg.max_connections:
            raise ConfigError(
                "max_connections must be >= min_connections (got "
                f"min_connections={cfg.min_connections}, max_connections={cfg.max_connections})"
            )
        return cfg


_KNOWN = frozenset(
    {
        "name",
        "database_type",
        "host",
        "port",
        "database",
        "user",
        "password",
        "connection_string",
        "min_connections",
        "max_connections",
        "health_threshold",
        "adaptive_sizing",
        "enable_query_routing",
        "timeout",
        "max_waiting",
        "max_lifetime",
        "max_idle",
        "check_idle_after",
        "strict_fifo",
        "query_timeout",
        "connect_timeout",
        "statement_cache_size",
        "maintenance_interval",
        "pattern_store",
        "allow_multi_statements",
        "max_rows",
    }
)


def _connect_params(opts: Mapping[str, Any]) -> ConnectParams:
    """Resolve the DSN: connection_string, else the host/... fields, else the environment."""
    dsn = opts.get("connection_string")
    if dsn is not None and not isinstance(dsn, str | Secret):
        raise ConfigError(
            f"connection_string must be a DSN string (got a value of type {type(dsn).__name__})"
        )
    if isinstance(dsn, Secret):  # a redacted copy of a pool's config, given back
        dsn = dsn.reveal()
    given = [k for k in ("host", "port", "database", "user", "password") if opts.get(k) is not None]
    if dsn is not None and given:
        raise ConfigError(
            f"give either connection_string or the fields {given}, not both "
            "(the DSN would silently win)"
        )
    fields_given = bool(given)
    if dsn is None and not fields_given:
        dsn = os.environ.get(DATABASE_URL_ENV) or None
    declared = check_str("database_type", opts.get("database_type"))
    if declared is not None:
        declared = _SCHEMES.get(declared.lower())
        if declared is None:
            raise ConfigError(
                "database_type must be one of 'postgresql', 'mysql', 'sqlite' "
                f"(got {opts.get('database_type')!r})"
            )
    if isinstance(dsn, str) and dsn and declared == "sqlite" and "://" not in dsn:
        backend = "sqlite"
        parsed: dict[str, Any] = {"database": dsn, "options": {}}  # a plain file path
    elif dsn is not None:
        backend, parsed = parse_dsn(dsn)
        if declared is not None and declared != backend:
            raise ConfigError(
                f"database_type={opts.get('database_type')!r} does not match the DSN "
                f"scheme ({backend})"
            )
    else:
        backend = declared or "postgresql"
        parsed = _fields(opts)
    if backend != "sqlite":
        parsed["host"] = parsed.get("host") or "localhost"
        parsed["port"] = _port(parsed.get("port"), backend)
    elif parsed.get("database") in (None, "", ":memory:"):
        # Every pool connection must see the same in-memory database: a named shared cache.
        parsed["database"] = f"file:kailash-nodes-{uuid.uuid4().hex}?mode=memory&cache=shared"
        parsed["options"] = {**parsed.get("options", {}), "uri": "true"}
    return ConnectParams(
        backend=backend,
        connect_timeout=check_number(
            "connect_timeout", _or(opts.get("connect_timeout"), 10.0), low=0.0, strict=True
        ),
        **parsed,
    )


def _port(value: Any, backend: str) -> int:
    if value is None:
        return _DEFAULT_PORTS[backend]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"port must be an integer in 1..65535 (got {value!r})")
    try:
        port = int(value)
    except ValueError as exc:
        raise ConfigError(f"port must be an integer in 1..65535 (got {value!r})") from exc
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be an integer in 1..65535 (got {value!r})")
    return port


def _fields(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Return the connection fields given as options, each checked for its type."""
    password = opts.get("password")
    if password is not None and not isinstance(password, str | Secret):
        raise ConfigError(  # never the value: it may be the password
            f"password must be a string (got a value of type {type(password).__name__})"
        )
    database = opts.get("database")
    if isinstance(database, os.PathLike):  # a pathlib.Path for SQLite
        database = os.fspath(database)
    return {
        "host": check_str("host", opts.get("host")),
        "port": opts.get("port"),
        "database": check_str("database", database, empty_ok=True),
        "user": check_str("user", opts.get("user"), empty_ok=True),
        "password": None if password is None else Secret(password),
        "options": {},
    }


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = 4


def short_repr(value: Any) -> str:
    """Return ``repr(value)`` cut to a readable length, for an error message.

    >>> short_repr("x" * 100)[-6:], short_repr(list(range(9)))
    ("xxxxx'", '[0, 1, 2, 3, ...]')
    """
    return _SHOW.repr(value)


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
    rule = _rule(low, high, strict, integer, none_ok)
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise error(
            f"{key} must be {rule} (got {short_repr(value)} of type {type(value).__name__})"
        )
    if not math.isfinite(value):
        raise error(f"{key} must be {rule} (got {key}={value!r}, not finite)")
    if (low is not None and (value < low or (strict and value == low))) or (
        high is not None and value > high
    ):
        raise error(f"{key} must be {rule} (got {key}={value!r})")
    return value if integer else float(value)


def _rule(low: float | None, high: float | None, strict: bool, integer: bool, none_ok: bool) -> str:
    rule = "an integer" if integer else "a number"
    if low is not None and high is not None:
        rule += f" between {low:g} and {high:g}"
    elif low is not None:
        rule += f" {'>' if strict else '>='} {low:g}"
    elif high is not None:
        rule += f" <= {high:g}"
    return rule + (", or None for no limit" if none_ok else "")


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


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return pool ``options`` with the password and the DSN held in a `Secret`.

    What a node keeps in ``Node.config`` and a workflow in ``Workflow.params``: their repr
    shows ``***`` (the DSN without its password), yet ``WorkflowConnectionPool(**redacted)``
    still connects, since the options accept a `Secret` back.

    >>> redact_options({"connection_string": "mysql://u:pw@h/db", "password": None})
    {'connection_string': Secret('mysql://u:***@h/db'), 'password': None}
    """
    out = dict(options)
    password = out.get("password")
    if isinstance(password, str):
        out["password"] = Secret(password)
    dsn = out.get("connection_string")
    if isinstance(dsn, str):
        out["connection_string"] = Secret(dsn, shown=redact_dsn(dsn))
    return out
