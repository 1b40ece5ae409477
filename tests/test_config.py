"""Options, DSNs and the environment are validated at the boundary with clear messages."""

from __future__ import annotations

import pytest

from kailash_nodes import ConfigError, WorkflowConnectionPool
from kailash_nodes.config import DATABASE_URL_ENV, PoolConfig


def test_min_above_max_names_both_options() -> None:
    with pytest.raises(ConfigError, match=r"min_connections=4, max_connections=2"):
        WorkflowConnectionPool(database_type="sqlite", min_connections=4, max_connections=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_connections": 0}, "max_connections must be >= 1"),
        ({"min_connections": -1}, "min_connections must be >= 0"),
        ({"min_connections": "5"}, "min_connections must be an integer"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": True}, "timeout must be a number"),
        ({"health_threshold": 150}, "health_threshold must be between 0.0 and 100.0"),
        ({"adaptive_sizing": "yes"}, "adaptive_sizing must be True or False"),
        ({"max_lifetime": -1}, "max_lifetime must be > 0"),
        ({"database_type": "oracle"}, "database_type must be one of"),
        ({"port": 70000, "database_type": "postgresql"}, "port must be an integer in 1..65535"),
        ({"min_conections": 3}, r"unknown option\(s\) \['min_conections'\]"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PoolConfig.from_options({"database_type": "sqlite", **options})


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("localhost:5432/db", "no known scheme"),
        ("oracle://u:p@h/db", "no known scheme"),
        ("postgresql://u:p@h:notaport/db", "invalid port"),
        ("postgresql:///db", "no host"),
        ("", "non-empty DSN"),
    ],
)
def test_malformed_dsn_is_a_config_error(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkflowConnectionPool(connection_string=dsn)


def test_malformed_dsn_message_hides_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        WorkflowConnectionPool(connection_string="postgresql://u:s3cret@h:bad/db")
    assert "s3cret" not in str(err.value)


def test_dsn_fields_are_url_decoded() -> None:
    cfg = PoolConfig.from_options(
        {"connection_string": "postgres://app%40corp:p%2Fw@db.example:6543/my%20db?sslmode=require"}
    )
    c = cfg.connect
    assert (c.backend, c.host, c.port, c.user, c.password, c.database) == (
        "postgresql",
        "db.example",
        6543,
        "app@corp",
        "p/w",
        "my db",
    )
    assert c.options == {"sslmode": "require"}
    assert "p/w" not in repr(cfg)


def test_database_type_must_match_the_dsn_scheme() -> None:
    with pytest.raises(ConfigError, match="does not match"):
        PoolConfig.from_options({"database_type": "mysql", "connection_string": "sqlite:///x.db"})


def test_environment_url_is_used_when_nothing_else_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "mysql://u:p@dbhost:3307/shop")
    cfg = PoolConfig.from_options({"name": "p"})
    assert (cfg.connect.backend, cfg.connect.host, cfg.connect.port) == ("mysql", "dbhost", 3307)
    # explicit fields win over the environment
    cfg = PoolConfig.from_options({"host": "other", "database": "x"})
    assert (cfg.connect.backend, cfg.connect.host) == ("postgresql", "other")


def test_seed_defaults_and_original_option_names_are_accepted() -> None:
    pool = WorkflowConnectionPool(
        name="db_pool", database_type="postgresql", host="localhost", database="myapp",
        min_connections=5, max_connections=20, health_threshold=70, pre_warm=True,
    )  # fmt: skip
    cfg = pool.pool_config
    assert (cfg.connect.port, cfg.min_connections, cfg.max_connections) == (5432, 5, 20)
    assert cfg.timeout == 30.0 and cfg.health_threshold == 70.0


def test_sqlite_driver_needs_no_server_library() -> None:
    pool = WorkflowConnectionPool(database_type="sqlite", database=":memory:")
    assert pool.engine.driver.name == "sqlite"


def test_original_guide_aliases_map_to_our_options() -> None:
    cfg = PoolConfig.from_options(
        {"database_type": "sqlite", "max_idle_time": 30, "connection_timeout": 3}
    )
    assert (cfg.max_idle, cfg.connect.connect_timeout) == (30.0, 3.0)


def test_dsn_and_connection_fields_together_are_ambiguous() -> None:
    with pytest.raises(ConfigError, match="either connection_string or the fields"):
        PoolConfig.from_options({"connection_string": "postgresql://u@h/db", "password": "x"})
