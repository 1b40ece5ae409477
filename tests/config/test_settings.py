"""The settings models: router, runtime, learning; live markers; errors never pydantic's."""

from __future__ import annotations

import dataclasses
import math
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.config import (
    BACKENDS,
    MODELS,
    ConnectionSettings,
    LearningSettings,
    PoolConfig,
    RouterSettings,
    RuntimeSettings,
    Settings,
    live_settings,
)
from kailash_nodes.config.dsn import SCHEMES, ConnectParams
from kailash_nodes.errors import ConfigError
from kailash_nodes.learning.bounds import Bounds
from kailash_nodes.router import RouterOptions

NAN, INF = math.nan, math.inf
_ROUTER_NUMBERS = [
    "health_threshold",
    "cache_size",
    "replica_lag_threshold",
    "session_timeout",
    "consistency_timeout",
    "replica_check_interval",
]


@pytest.mark.parametrize("option", _ROUTER_NUMBERS)
@pytest.mark.parametrize("value", [NAN, INF, -INF, -1, True, "1", None], ids=repr)
def test_a_router_number_option_refuses_nan_infinity_negatives_bools_strings(
    option: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=rf"^{option} must be (a number|an integer)"):
        RouterSettings.from_options({"connection_pool": "db", option: value})


def test_router_unknown_options_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['cache_sise'\] for Query"):
        RouterSettings.from_options({"connection_pool": "db", "cache_sise": 3})


@pytest.mark.parametrize("value", [None, "", 3])
def test_the_router_needs_a_pool_name(value: Any) -> None:
    options = {} if value is None else {"connection_pool": value}
    with pytest.raises(ConfigError, match=r"^connection_pool must be the name of a pool node"):
        RouterSettings.from_options(options)


@pytest.mark.parametrize("value", [["r1", "r2"], ("r1", "r2")])
def test_read_replicas_take_a_list_or_tuple_of_names(value: Any) -> None:
    got = RouterSettings.from_options({"connection_pool": "db", "read_replicas": value})
    assert got.read_replicas == ("r1", "r2")
    assert RouterSettings.from_options({"connection_pool": "db"}).read_replicas == ()


@pytest.mark.parametrize("value", ["r1", [""], [1], {"r1": 1}])
def test_read_replicas_refuse_anything_but_names(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^read_replicas must be a list of pool names"):
        RouterSettings.from_options({"connection_pool": "db", "read_replicas": value})


def test_engine_options_are_the_router_engines_fields() -> None:
    given_options = {
        "connection_pool": "db",
        "enable_read_write_split": False,
        "cache_size": 7,
        "replica_lag_threshold": 2,
        "reads_on_primary": True,
        "session_timeout": 9.0,
        "consistency_timeout": 0.25,
        "replica_check_interval": 0.5,
        "prepare_statements": False,
    }
    built = RouterOptions(**RouterSettings.from_options(given_options).engine_options())
    assert built == QueryRouterNode(**given_options).options
    assert built.prepare is False and built.replica_lag_threshold == 2.0


_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2000), st.floats(allow_nan=True),
    st.text(max_size=4), st.lists(st.text(max_size=2), max_size=2), st.binary(max_size=2),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(RouterSettings.options())), _ANY, max_size=3))
def test_router_settings_accept_and_refuse_what_the_router_node_does(
    options: dict[str, Any],
) -> None:
    options = {"connection_pool": "db", **options} if "connection_pool" not in options else options
    try:
        node_options: Any = QueryRouterNode(**options).options
    except ConfigError:
        node_options = ConfigError
    try:
        model: Any = RouterOptions(**RouterSettings.from_options(options).engine_options())
    except ConfigError:
        model = ConfigError
    # The node lets a falsy non-list read_replicas through as "none"; the model refuses it.
    if options.get("read_replicas") in ("", 0, False, 0.0, b""):
        return
    assert model == node_options


@pytest.mark.parametrize("value", [NAN, INF, -INF, -1, True, "1"], ids=repr)
def test_runtime_prewarm_timeout_refuses_what_the_runtime_refuses(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^prewarm_timeout must be a number >= 0"):
        RuntimeSettings.from_options({"prewarm_timeout": value})
    with pytest.raises(ConfigError, match=r"^prewarm_timeout must be a number >= 0"):
        LocalRuntime(prewarm_timeout=value)


def test_check_validates_one_live_value_with_the_models_rule() -> None:
    assert RuntimeSettings.check("prewarm_timeout", 1) == 1.0
    with pytest.raises(ConfigError, match=r"^prewarm must be True or False \(got 1 of type int"):
        RuntimeSettings.check("prewarm", 1)
    with pytest.raises(ConfigError, match=r"^enable_query_routing must be True or False"):
        PoolConfig.check("enable_query_routing", "yes")
    with pytest.raises(ConfigError, match="not an option of RouterSettings"):
        RouterSettings.check("nope", 1)


def test_learning_settings_default_to_the_trackers_bounds() -> None:
    learning = LearningSettings()
    for field in dataclasses.fields(Bounds):
        assert getattr(learning, field.name) == field.default, field.name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": 3}, r"^order must be 1 or 2 \(got order=3\)"),
        ({"order": True}, r"^order must be 1 or 2 \(got True of type bool"),
        ({"noise_floor": 1.0}, r"^noise_floor must be a number >= 0 and < 1"),
        ({"loop_window": 1}, r"^loop_window must be an integer >= 2 \(got loop_window=1\)"),
        ({"session_ttl": 0}, r"^session_ttl must be a number > 0"),
    ],
)
def test_learning_settings_refuse_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LearningSettings.from_options(options)


def test_live_settings_are_exactly_the_live_toggles() -> None:
    assert live_settings() == {
        "WorkflowConnectionPool": ("adaptive_sizing", "enable_query_routing"),
        "QueryRouterNode": ("enable_read_write_split", "pattern_learning"),
        "LocalRuntime": ("prewarm", "prewarm_timeout"),
        "QueryPatternTracker": (),
    }


@pytest.mark.parametrize(
    ("owner", "model"),
    [(WorkflowConnectionPool, PoolConfig), (QueryRouterNode, RouterSettings),
     (LocalRuntime, RuntimeSettings)],
)  # fmt: skip
def test_every_live_option_has_a_setter_on_its_owner(owner: type, model: type[Settings]) -> None:
    for name in model.live_options():
        extra = model.model_fields[name].json_schema_extra
        attribute = str(extra.get("attribute", name)) if isinstance(extra, dict) else name
        prop = getattr(owner, attribute, None)
        assert isinstance(prop, property) and prop.fset is not None, (owner, attribute)


def test_a_config_is_frozen_as_before() -> None:
    cfg = PoolConfig.from_options({"database_type": "sqlite"})
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"'timeout'.*enable_query_routing"):
        cfg.timeout = 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        del cfg.max_rows


_ALL_KEYS = sorted({(m, k) for m in MODELS for k in m.model_fields if k != "connect"}, key=str)


@settings(max_examples=300, deadline=None)
@given(pair=st.sampled_from(_ALL_KEYS), value=_ANY)
def test_every_bad_value_is_a_config_error_naming_the_option(
    pair: tuple[type[Settings], str], value: Any
) -> None:
    model, key = pair
    base = {"connection_pool": "db"} if model is RouterSettings else {}
    try:
        model.from_options({**base, key: value})
    except ConfigError as exc:
        assert str(exc).startswith(key) or key in str(exc), exc
        text = "".join(traceback.format_exception(exc))
        assert "pydantic" not in text and "ValidationError" not in text


def test_several_bad_options_are_all_named() -> None:
    with pytest.raises(ConfigError) as err:
        RouterSettings.from_options({"connection_pool": "db", "cache_size": -1, "prewarm": 1})
    assert "unknown option(s) ['prewarm']" in str(err.value)
    with pytest.raises(ConfigError) as err:
        RouterSettings.from_options({"connection_pool": "db", "cache_size": -1, "name": 5})
    assert "cache_size must be" in str(err.value) and "name must be" in str(err.value)


def test_every_scheme_names_a_backend_with_facts() -> None:
    assert set(SCHEMES.values()) == set(BACKENDS)
    assert ConnectParams(backend="sqlite", database="a.db").describe() == "sqlite:a.db"
    cfg = PoolConfig.from_options({"database_type": "mariadb", "host": "h"})
    assert (cfg.connect.backend, cfg.connect.port) == ("mysql", 3306)


def test_a_dsn_port_outside_the_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"port must be an integer in 1..65535 \(got 0\)"):
        PoolConfig.from_options({"connection_string": "postgresql://u@h:0/db"})


def test_connection_settings_are_the_pools_connection_options() -> None:
    assert ConnectionSettings.options() <= PoolConfig.options()
    assert "connect" not in PoolConfig.options()
    assert "connect" not in PoolConfig.model_json_schema()["properties"]


def test_the_docs_list_every_option_with_its_default_and_liveness() -> None:
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    sections = {part.split("`", 1)[0]: part for part in text.split("\n### `")[1:]}
    for model in MODELS:
        rows = {
            line.split("|")[1].strip(" `"): line
            for line in sections[model.__name__].splitlines()
            if line.startswith("| `")
        }
        assert set(rows) == set(model.model_fields) - {"connect"}, model
        for key in rows:
            info = model.model_fields[key]
            default = "required" if info.is_required() else f"`{info.default!r}`"
            cells = [c.strip() for c in rows[key].split("|")]
            assert cells[3] == default, (key, cells)
            assert cells[5].startswith("yes") == (key in model.live_options()), (key, cells)


@pytest.mark.parametrize("model", [PoolConfig, RouterSettings])
@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("n1", "n1")])
def test_an_empty_name_means_the_default_name(
    model: type[Settings], value: Any, expected: str | None
) -> None:
    base = {"connection_pool": "db"} if model is RouterSettings else {"database_type": "sqlite"}
    built = model.from_options({**base, "name": value})
    assert built.name == (expected or model.owner)


@pytest.mark.parametrize("model", [PoolConfig, RouterSettings])
@pytest.mark.parametrize("value", [0, False, 1.5])
def test_a_falsy_non_string_name_is_refused(model: type[Settings], value: Any) -> None:
    base = {"connection_pool": "db"} if model is RouterSettings else {"database_type": "sqlite"}
    with pytest.raises(ConfigError, match=r"^name must be a string"):
        model.from_options({**base, "name": value})


def test_connection_secrets_stay_held_in_a_dump() -> None:
    dsn = "postgresql://u:Zq7pw@h/db"
    dumped = ConnectionSettings.from_options({"connection_string": dsn}).model_dump()
    assert "Zq7pw" not in repr(dumped) and dumped["connection_string"].reveal() == dsn
