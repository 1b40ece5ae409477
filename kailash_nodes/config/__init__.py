"""One configuration model: typed, validated settings for pools, routers and the runtime.

Each model's fields are its options' names (`PoolConfig` for ``WorkflowConnectionPool``,
`RouterSettings` for ``QueryRouterNode``, `RuntimeSettings` for ``LocalRuntime``,
`LearningSettings` for the pattern tracker), built with ``Model.from_options(mapping)``;
bad input is a `ConfigError` naming the option, the value and what is allowed. Options
changeable live are marked in the model (`live_settings` lists them). pydantic is
imported only inside this package. The environment is read for one variable,
``KAILASH_DATABASE_URL`` (`DATABASE_URL_ENV`), the pool's DSN when none is given.
"""

from __future__ import annotations

from kailash_nodes.config.checks import check_bool, check_number, check_str, short_repr
from kailash_nodes.config.dsn import (
    BACKENDS,
    DATABASE_URL_ENV,
    BackendFacts,
    ConnectParams,
    parse_dsn,
)
from kailash_nodes.config.learning import LearningSettings
from kailash_nodes.config.model import Settings
from kailash_nodes.config.pool import ConnectionSettings, PoolConfig, PoolSettings, redact_options
from kailash_nodes.config.router import RouterSettings
from kailash_nodes.config.runtime import RuntimeSettings

__all__ = [
    "BACKENDS",
    "DATABASE_URL_ENV",
    "MODELS",
    "BackendFacts",
    "ConnectParams",
    "ConnectionSettings",
    "LearningSettings",
    "PoolConfig",
    "PoolSettings",
    "RouterSettings",
    "RuntimeSettings",
    "Settings",
    "check_bool",
    "check_number",
    "check_str",
    "live_settings",
    "parse_dsn",
    "redact_options",
    "short_repr",
]

MODELS: tuple[type[Settings], ...] = (
    ConnectionSettings,
    PoolConfig,
    RouterSettings,
    RuntimeSettings,
    LearningSettings,
)
"""Every settings model, in the order docs/configuration.md lists them."""


def live_settings() -> dict[str, tuple[str, ...]]:
    """Return, per owner, the options that may be changed on the running object.

    >>> live_settings()["QueryRouterNode"]
    ('enable_read_write_split', 'pattern_learning')
    """
    out: dict[str, tuple[str, ...]] = {}
    for model in MODELS:
        out[model.owner] = out.get(model.owner, ()) + model.live_options()
    return out
