"""Router settings: the ``QueryRouterNode`` options, validated."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field

from kailash_nodes.config.model import LIVE, NAME_RULE, Settings, default_if_empty

__all__ = ["RouterSettings"]

ROUTER_OWNER = "QueryRouterNode"
_POOL_NAME = {"rule": "the name of a pool node (a non-empty string)"}


def _names(value: Any) -> Any:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else value


class RouterSettings(Settings):
    """Validated ``QueryRouterNode`` options; the engine's take `engine_options`.

    Durations are float seconds. ``connection_pool`` is required.
    """

    owner: ClassVar[str] = ROUTER_OWNER

    name: Annotated[
        str,
        default_if_empty(ROUTER_OWNER),
        Field(json_schema_extra=NAME_RULE),
    ] = ROUTER_OWNER
    connection_pool: Annotated[str, Field(min_length=1, json_schema_extra=_POOL_NAME)]
    read_replicas: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...],
        BeforeValidator(_names),
        Field(json_schema_extra={"rule": "a list of pool names"}),
    ] = ()
    enable_read_write_split: Annotated[bool, Field(json_schema_extra=LIVE)] = True
    cache_size: Annotated[int, Field(ge=0)] = 1000
    pattern_learning: Annotated[bool, Field(json_schema_extra=LIVE)] = True
    health_threshold: Annotated[float, Field(ge=0, le=100)] = 50.0
    replica_lag_threshold: Annotated[float, Field(ge=0)] = 5.0
    reads_on_primary: bool = False
    session_timeout: Annotated[float, Field(ge=0.001)] = 60.0
    consistency_timeout: Annotated[float, Field(ge=0)] = 0.5
    replica_check_interval: Annotated[float, Field(ge=0.01)] = 1.0
    function_catalog_refresh: Annotated[float, Field(ge=0)] = 60.0
    prepare_statements: bool = True
    prepare_predicted: bool = False

    def engine_options(self) -> dict[str, Any]:
        """Return the router engine's options, keyed as ``router.RouterOptions`` fields.

        >>> RouterSettings.from_options({"connection_pool": "db"}).engine_options()["prepare"]
        True
        """
        return {
            "enable_read_write_split": self.enable_read_write_split,
            "cache_size": self.cache_size,
            "replica_lag_threshold": self.replica_lag_threshold,
            "reads_on_primary": self.reads_on_primary,
            "session_timeout": self.session_timeout,
            "consistency_timeout": self.consistency_timeout,
            "replica_check_interval": self.replica_check_interval,
            "function_catalog_refresh": self.function_catalog_refresh,
            "prepare": self.prepare_statements,
            "prepare_predicted": self.prepare_predicted,
        }
