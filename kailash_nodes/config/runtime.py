"""Runtime settings: the ``LocalRuntime`` options, validated."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from kailash_nodes.config.model import LIVE, Settings

__all__ = ["RuntimeSettings"]


class RuntimeSettings(Settings):
    """Validated ``LocalRuntime(prewarm=, prewarm_timeout=)`` options (both live).

    >>> RuntimeSettings.from_options({"prewarm_timeout": 0.1})
    RuntimeSettings(prewarm=False, prewarm_timeout=0.1)
    """

    owner: ClassVar[str] = "LocalRuntime"

    prewarm: Annotated[bool, Field(json_schema_extra=LIVE)] = False
    prewarm_timeout: Annotated[float, Field(ge=0, json_schema_extra=LIVE)] = 0.05
