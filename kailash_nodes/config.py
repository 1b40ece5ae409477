"""Pool configuration: the seed's options plus the new ones, validated at the boundary.

Bad input is rejected with a message naming the option, the rule and the value; nothing is
silently fixed. A DSN comes from ``connection_string``, else from ``host``/``database``/...,
else from the environment variable ``KAILASH_DATABASE_URL``.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kailash_nodes.errors import ConfigError

__all__ = [
    "DATABASE_URL_ENV",
    "ConnectParams",
    "PoolConfig",
    "parse_dsn",
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
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    application_name: str = "kailash_nodes"

    def describe(self) -> str:
        """Return where this connects to, without the password."""
        if self.backend == "sqlite":
            return f"sqlite:{self.database}"
        return f"{self.backend}://{self.user or ''}@{self.host}:{self.port}/{self.database or ''}"


def parse_dsn(dsn: str) -> tuple[str, dict[str, Any]]:
    """Split a DSN into the backend name and connection fields.

    >>> parse_dsn("postgresql://app:s%40cret@db.local:6543/shop?sslmode=disable")[1]["password"]
    's@cret'
    >>> parse_dsn("sqlite:////tmp/app.db")
    ('sqlite', {'database': '/tmp/app.db', 'options': {}})
    >>> parse_dsn("sqlite:///app.db")[1]["database"], parse_dsn("sqlite:///:memory:")[1]["database"]
    ('app.db', ':memory:')
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError(f"connection_string must be a non-empty DSN string (got {dsn!r})")
    scheme, sep, rest = dsn.partition("://")
    backend = _SCHEMES.get(scheme.lower()) if sep else None
    if backend is None:
        raise ConfigError(
            f"connection_string has no known scheme (got {_redact(dsn)!r}); expected one of "
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
    except ValueError as exc:
        raise ConfigError(f"connection_string has an invalid port: {_redact(dsn)!r}") from exc
    if not parts.hostname:
        raise ConfigError(f"connection_string has no host: {_redact(dsn)!r}")
    return {
        "host": unquote(parts.hostname),
        "port": port,
        "database": unquote(parts.path.lstrip("/")) or None,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "options": dict(parse_qsl(parts.query)),
    }


def _redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return dsn


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Validated settings of one pool. Build it with :meth:`from_options`.

    Durations are float seconds. ``max_waiting=0`` means an unbounded waiting queue;
    ``max_lifetime``/``max_idle`` of ``None`` disable those limits.
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
        name = str(opts.get("name") or "WorkflowConnectionPool")
        connect = replace(connect, application_name=name[:63])
        cfg = cls(
            name=name,
            connect=connect,
            min_connections=_int(opts, "min_connections", 2, low=0),
            max_connections=_int(opts, "max_connections", 10, low=1),
            health_threshold=_num(opts, "health_threshold", 50.0, low=0.0, high=100.0),
            adaptive_sizing=_bool(opts, "adaptive_sizing", False),
            enable_query_routing=_bool(opts, "enable_query_routing", False),
            timeout=_num(opts, "timeout", 30.0, low=0.0, strict=True),
            max_waiting=_int(opts, "max_waiting", 0, low=0),
            max_lifetime=_opt_num(opts, "max_lifetime", 3600.0),
            max_idle=_opt_num(opts, "max_idle", 600.0),
            check_idle_after=_num(opts, "check_idle_after", 1.0, low=0.0),
            strict_fifo=_bool(opts, "strict_fifo", False),
            query_timeout=_opt_num(opts, "query_timeout", None),
            statement_cache_size=_int(opts, "statement_cache_size", 256, low=0),
            maintenance_interval=_num(opts, "maintenance_interval", 1.0, low=0.0, strict=True),
            pattern_store=_opt_str(opts, "pattern_store"),
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
    }
)


def _connect_params(opts: Mapping[str, Any]) -> ConnectParams:
    """Resolve the DSN: connection_string, else the host/... fields, else the environment."""
    dsn = opts.get("connection_string")
    given = [k for k in ("host", "port", "database", "user", "password") if opts.get(k) is not None]
    if dsn is not None and given:
        raise ConfigError(
            f"give either connection_string or the fields {given}, not both "
            "(the DSN would silently win)"
        )
    fields_given = bool(given)
    if dsn is None and not fields_given:
        dsn = os.environ.get(DATABASE_URL_ENV) or None
    declared = opts.get("database_type")
    if declared is not None:
        declared = _SCHEMES.get(str(declared).lower())
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
        parsed = {k: opts.get(k) for k in ("host", "port", "database", "user", "password")}
        parsed["options"] = {}
    if backend != "sqlite":
        parsed["host"] = parsed.get("host") or "localhost"
        parsed["port"] = _port(parsed.get("port"), backend)
    elif parsed.get("database") in (None, "", ":memory:"):
        # Every pool connection must see the same in-memory database: a named shared cache.
        parsed["database"] = f"file:kailash-nodes-{uuid.uuid4().hex}?mode=memory&cache=shared"
        parsed["options"] = {**parsed.get("options", {}), "uri": "true"}
    return ConnectParams(
        backend=backend,
        connect_timeout=_num(opts, "connect_timeout", 10.0, low=0.0, strict=True),
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


def _int(opts: Mapping[str, Any], key: str, default: int, *, low: int) -> int:
    value = opts.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer >= {low} (got {value!r})")
    if value < low:
        raise ConfigError(f"{key} must be >= {low} (got {key}={value})")
    return value


def _num(
    opts: Mapping[str, Any],
    key: str,
    default: float,
    *,
    low: float,
    high: float | None = None,
    strict: bool = False,
) -> float:
    value = opts.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{key} must be a number (got {value!r})")
    if value < low or (strict and value == low) or (high is not None and value > high):
        rule = f"> {low}" if strict else f">= {low}"
        if high is not None:
            rule = f"between {low} and {high}"
        raise ConfigError(f"{key} must be {rule} (got {key}={value!r})")
    return float(value)


def _opt_num(opts: Mapping[str, Any], key: str, default: float | None) -> float | None:
    if opts.get(key, default) is None:
        return None
    return _num(opts, key, default or 0.0, low=0.0, strict=True)


def _opt_str(opts: Mapping[str, Any], key: str) -> str | None:
    value = opts.get(key)
    if value is not None and not (isinstance(value, str) and value):
        raise ConfigError(f"{key} must be a non-empty string or None (got {value!r})")
    return value


def _bool(opts: Mapping[str, Any], key: str, default: bool) -> bool:
    value = opts.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be True or False (got {value!r})")
    return value
