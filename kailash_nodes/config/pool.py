"""Pool settings: `ConnectionSettings` (where to connect) and `PoolConfig` (the pool).

``PoolConfig.from_options`` takes the ``WorkflowConnectionPool`` keyword options (the
seed's names, the original's aliases, the new ones), validates them and returns the
frozen config the pool engine reads on its hot path (plain attribute reads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, InstanceOf, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from kailash_nodes.config.checks import short_repr
from kailash_nodes.config.dsn import (
    BACKENDS,
    SCHEMES,
    ConnectParams,
    backend_named,
    check_port,
    resolve_connect,
)
from kailash_nodes.config.model import LIVE, NAME_RULE, SECRET, Settings, default_if_empty
from kailash_nodes.errors import ConfigError
from kailash_nodes.secret import Secret, redact_dsn

__all__ = ["ConnectionSettings", "PoolConfig", "PoolSettings", "redact_options"]

logger = logging.getLogger("kailash_nodes.config")

POOL_OWNER = "WorkflowConnectionPool"

# Options of the original that we accept so migrated code runs, but do not act on.
IGNORED_ORIGINAL = frozenset(
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
ALIASES = {"max_idle_time": "max_idle", "connection_timeout": "connect_timeout"}


def _password(value: Any) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str):  # never the value: it may be the password
        raise ConfigError(f"password must be a string (got a value of type {type(value).__name__})")
    return Secret(value)


def _dsn(value: Any) -> Secret | None:
    if value is None or isinstance(value, Secret):  # a Secret: a redacted config given back
        return value
    if not isinstance(value, str):
        raise ConfigError(
            f"connection_string must be a DSN string (got a value of type {type(value).__name__})"
        )
    return Secret(value, shown=redact_dsn(value))


_ALIASES_OF_BACKENDS = sorted(k for k in SCHEMES if "+" not in k and k not in BACKENDS)
_BACKEND_RULE = (
    f"one of {', '.join(map(repr, BACKENDS))} (or an alias: {', '.join(_ALIASES_OF_BACKENDS)})"
)


def _backend(value: Any) -> Any:
    if isinstance(value, str):
        backend = backend_named(value)
        if backend is None:
            raise ConfigError(f"database_type must be {_BACKEND_RULE} (got {short_repr(value)})")
        return backend
    return value  # a wrong type: the str check names it


def _path(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value  # a pathlib.Path


_SecretText = Annotated[
    InstanceOf[Secret] | None, WithJsonSchema({"type": "string", "writeOnly": True})
]
_NonEmpty = Field(min_length=1)
_DSN_RULE = "a DSN string (postgresql://, mysql://, mariadb://, sqlite:///path) or None"
_PORT_RULE = "an integer in 1..65535 (or one as a string), or None for the backend's default"


class ConnectionSettings(Settings):
    """Where a pool connects: a DSN, or the host/port/... fields, or the environment."""

    owner: ClassVar[str] = POOL_OWNER
    none_means_default: ClassVar[bool] = True

    database_type: Annotated[
        str | None,
        BeforeValidator(_backend),
        Field(json_schema_extra={"rule": "a non-empty string or None", "allowed": _BACKEND_RULE}),
    ] = None
    connection_string: Annotated[
        _SecretText,
        BeforeValidator(_dsn),
        Field(json_schema_extra={**SECRET, "rule": _DSN_RULE}),
    ] = None
    host: Annotated[str | None, _NonEmpty] = None
    port: Annotated[
        int | None, BeforeValidator(check_port), Field(json_schema_extra={"rule": _PORT_RULE})
    ] = None
    database: Annotated[str | None, BeforeValidator(_path)] = None
    user: str | None = None
    password: Annotated[
        _SecretText,
        BeforeValidator(_password),
        Field(json_schema_extra={**SECRET, "rule": "a string or None"}),
    ] = None
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0

    def resolve(self, application_name: str) -> ConnectParams:
        """Return the connection parameters (see `kailash_nodes.config.dsn.resolve_connect`).

        Raises ConfigError for a bad DSN, a DSN given with fields, or a backend mismatch.
        """
        fields = {k: getattr(self, k) for k in ("host", "port", "database", "user", "password")}
        return resolve_connect(
            dsn=self.connection_string,
            fields=fields,
            declared=self.database_type,
            connect_timeout=self.connect_timeout,
            application_name=application_name,
        )


class PoolConfig(Settings):
    """Validated settings of one pool. Build it with :meth:`from_options`.

    Durations are float seconds. ``max_waiting=0`` means an unbounded waiting queue;
    ``max_lifetime``/``max_idle``/``max_rows`` of ``None`` disable those limits.
    ``connect`` holds the resolved `ConnectionSettings`.
    """

    owner: ClassVar[str] = POOL_OWNER
    none_means_default: ClassVar[bool] = True

    name: Annotated[str, default_if_empty(POOL_OWNER), Field(json_schema_extra=NAME_RULE)] = (
        POOL_OWNER
    )
    # Resolved from ConnectionSettings, not an option: left out of dumps and the schema.
    connect: SkipJsonSchema[InstanceOf[ConnectParams]] = Field(exclude=True)
    min_connections: Annotated[int, Field(ge=0)] = 2
    max_connections: Annotated[int, Field(ge=1)] = 10
    health_threshold: Annotated[float, Field(ge=0, le=100)] = 50.0
    adaptive_sizing: Annotated[
        bool, Field(json_schema_extra={**LIVE, "attribute": "adaptive_sizing_enabled"})
    ] = False
    enable_query_routing: Annotated[bool, Field(json_schema_extra=LIVE)] = False
    timeout: Annotated[float, Field(gt=0)] = 30.0
    max_waiting: Annotated[int, Field(ge=0)] = 0
    max_lifetime: Annotated[float | None, Field(gt=0)] = 3600.0
    max_idle: Annotated[float | None, Field(gt=0)] = 600.0
    check_idle_after: Annotated[float, Field(ge=0)] = 1.0
    strict_fifo: bool = False
    query_timeout: Annotated[float | None, Field(gt=0)] = None
    statement_cache_size: Annotated[int, Field(ge=0)] = 256
    maintenance_interval: Annotated[float, Field(gt=0)] = 1.0
    pattern_store: Annotated[str | None, _NonEmpty] = None
    allow_multi_statements: bool = True
    max_rows: Annotated[int | None, Field(ge=1)] = None

    @classmethod
    def options(cls) -> frozenset[str]:
        """Return the pool's option names: its own and `ConnectionSettings`'."""
        return (frozenset(cls.model_fields) - {"connect"}) | ConnectionSettings.options()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PoolConfig:
        """Validate the node's keyword options (the seed's names) and build a config.

        Accepts the original's aliases (``max_idle_time``, ``connection_timeout``) and
        ignores, with a warning, the original's options that do nothing here. Raises
        ConfigError naming the option, the rule and the value.
        """
        opts = _unalias(options)
        ignored = sorted(set(opts) & IGNORED_ORIGINAL)
        if ignored:
            logger.warning("options of the original SDK accepted but not used: %s", ignored)
            opts = {k: v for k, v in opts.items() if k not in IGNORED_ORIGINAL}
        cls.refuse_unknown(opts)
        conn = {k: v for k, v in opts.items() if k in ConnectionSettings.model_fields}
        own = {k: v for k, v in opts.items() if k not in conn}
        connection = ConnectionSettings.from_mapping(conn)
        own["name"] = name = cls.check("name", own.get("name"))
        connect = connection.resolve(application_name=name[:63])
        config: PoolConfig = cls.build({**cls._defaults_for_none(own), "connect": connect})
        return config

    @model_validator(mode="after")
    def _limits_agree(self) -> PoolConfig:
        if "mode=memory" in (self.connect.database or "") and (
            self.min_connections < 1 or self.max_connections < 2
        ):
            raise ConfigError(
                "an in-memory SQLite database lives only while a connection is open: it needs "
                "min_connections >= 1 and max_connections >= 2 (so a replacement opens before "
                f"a connection closes) (got min_connections={self.min_connections}, "
                f"max_connections={self.max_connections})"
            )
        if self.min_connections > self.max_connections:
            raise ConfigError(
                "max_connections must be >= min_connections (got "
                f"min_connections={self.min_connections}, max_connections={self.max_connections})"
            )
        return self


def _unalias(options: Mapping[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    for alias, name in ALIASES.items():
        if alias in opts:
            if name in opts:
                raise ConfigError(f"give {name} or its alias {alias}, not both")
            opts[name] = opts.pop(alias)
    return opts


PoolSettings = PoolConfig
"""The pool's settings model under the name the other settings models follow."""


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
