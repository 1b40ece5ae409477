"""Options, DSNs and the environment are validated at the boundary with clear messages."""

from __future__ import annotations

import math
import string
import traceback
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kailash_nodes import ConfigError, WorkflowConnectionPool
from kailash_nodes.config import DATABASE_URL_ENV, PoolConfig
from kailash_nodes.runtime import WorkflowBuilder
from kailash_nodes.secret import redact_dsn


def test_min_above_max_names_both_options() -> None:
    with pytest.raises(ConfigError, match=r"min_connections=4, max_connections=2"):
        WorkflowConnectionPool(database_type="sqlite", min_connections=4, max_connections=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_connections": 0}, "max_connections must be an integer >= 1"),
        ({"min_connections": -1}, "min_connections must be an integer >= 0"),
        ({"min_connections": "5"}, "min_connections must be an integer"),
        ({"timeout": 0}, "timeout must be a number > 0"),
        ({"timeout": True}, "timeout must be a number"),
        ({"health_threshold": 150}, "health_threshold must be a number between 0 and 100"),
        ({"adaptive_sizing": "yes"}, "adaptive_sizing must be True or False"),
        ({"max_lifetime": -1}, "max_lifetime must be a number > 0, or None for no limit"),
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
    assert (c.backend, c.host, c.port, c.user, c.password and c.password.reveal(), c.database) == (
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


_NUMERIC = [
    "min_connections",
    "max_connections",
    "health_threshold",
    "timeout",
    "max_waiting",
    "max_lifetime",
    "max_idle",
    "check_idle_after",
    "query_timeout",
    "connect_timeout",
    "statement_cache_size",
    "maintenance_interval",
]


@pytest.mark.parametrize("option", _NUMERIC)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "5", [1], -1])
def test_every_numeric_pool_option_refuses_nan_infinity_bools_strings_and_negatives(
    option: str, value: object
) -> None:
    with pytest.raises(ConfigError, match=rf"^{option} must be (a number|an integer)"):
        PoolConfig.from_options({"database_type": "sqlite", option: value})


@pytest.mark.parametrize("option", ["host", "user", "database", "name", "database_type"])
@pytest.mark.parametrize("value", [123, b"x", ["h"], 1.5])
def test_string_options_must_be_strings(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{option} must be a (non-empty )?string"):
        PoolConfig.from_options({option: value})


@pytest.mark.parametrize("value", [123, b"s3cret-bytes", ["s3cret-list"]])
def test_a_wrong_typed_password_is_refused_without_showing_it(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^password must be a string") as err:
        PoolConfig.from_options({"database_type": "postgresql", "password": value})
    assert "s3cret" not in str(err.value) and "123" not in str(err.value)


def test_allow_multi_statements_is_a_bool_defaulting_to_true() -> None:
    assert PoolConfig.from_options({"database_type": "sqlite"}).allow_multi_statements is True
    with pytest.raises(ConfigError, match="allow_multi_statements must be True or False"):
        PoolConfig.from_options({"database_type": "sqlite", "allow_multi_statements": "no"})


_CANARY = "Zq7@pa:ss/wd%"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql:/u:{_CANARY}@h/db",  # no '://'
        f"postgresql:u:{_CANARY}@h/db",
        f"postgresql://u:{_CANARY}@h:bad/db",  # an unencoded '/' makes a bogus port
        f"postgresql://u:{quote(_CANARY, safe='')}@h:bad/db",
        f"postgresql://u:{quote(_CANARY, safe='')}@/db",  # no host
        f"postgresql://u:{_CANARY}@/db",
        f"oracle://u:{_CANARY}@h/db",
        f"postgresql://h:x/db?password={quote(_CANARY, safe='')}",
    ],
)
def test_malformed_dsn_errors_never_show_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as err:
        WorkflowConnectionPool(connection_string=dsn)
    text = "".join(traceback.format_exception(err.value))
    for shown in (_CANARY, quote(_CANARY, safe=""), "Zq7", "wd%"):
        assert shown not in text


@settings(max_examples=200, deadline=None)
@given(
    password=st.text(alphabet=string.printable + "é€@:/%", min_size=1, max_size=30),
    encode=st.booleans(),
    tail=st.sampled_from(["@h/db", "@h:5432/db?sslmode=disable", "@h:x/db", "@/db", "@h/d@b"]),
)
def test_redact_dsn_hides_any_password(password: str, encode: bool, tail: str) -> None:
    secret = "\x00" + password  # a marker no DSN part can contain by chance
    shown = quote(secret, safe="") if encode else secret
    for dsn in (f"postgresql://u:{shown}{tail}", f"postgresql:/u:{shown}{tail}"):
        assert secret not in redact_dsn(dsn) and shown not in redact_dsn(dsn)


def test_the_password_is_held_redacted_and_still_reaches_the_driver() -> None:
    pool = WorkflowConnectionPool(
        database_type="postgresql", host="h", user="u", password=_CANARY, min_connections=0
    )
    for text in (repr(pool.config), repr(pool.pool_config), repr(vars(pool)), str(pool.config)):
        assert _CANARY not in text
    assert pool.pool_config.connect.password is not None
    assert pool.pool_config.connect.password() == _CANARY  # what asyncpg calls
    assert pool.pool_config.connect.password.encode("latin1") == _CANARY.encode()  # aiomysql
    clone = WorkflowConnectionPool(**{**pool.config, "name": "clone"})  # Secret given back
    assert clone.pool_config.connect.password == pool.pool_config.connect.password


def test_a_password_given_as_a_dsn_query_option_is_held_redacted() -> None:
    cfg = PoolConfig.from_options(
        {"connection_string": f"postgresql://u@h/db?password={quote(_CANARY, safe='')}"}
    )
    assert cfg.connect.password is not None and cfg.connect.password() == _CANARY
    assert "password" not in cfg.connect.options and _CANARY not in repr(cfg)


def test_a_pool_added_by_type_name_keeps_only_redacted_params() -> None:
    dsn = f"postgresql://u:{quote(_CANARY, safe='')}@h/db"
    wb = WorkflowBuilder()
    wb.add_node("WorkflowConnectionPool", "db", {"connection_string": dsn, "min_connections": 0})
    workflow = wb.build()
    node = workflow.nodes["db"]
    assert isinstance(node, WorkflowConnectionPool)
    assert node.pool_config.connect.password is not None
    assert node.pool_config.connect.password() == _CANARY
    for text in (repr(workflow), str(workflow.params), repr(node.config)):
        assert _CANARY not in text and quote(_CANARY, safe="") not in text
    assert "postgresql://u:***@h/db" in repr(workflow.params)


def test_a_dsn_sslpassword_is_held_as_a_secret_and_never_shown() -> None:
    dsn = "postgresql://u:pw@h/db?sslkey=/k.pem&sslpassword=KEY%40SECRET&sslmode=require"
    pool = WorkflowConnectionPool(name="tls_pw", connection_string=dsn)
    params = pool.pool_config.connect
    assert params.ssl_password is not None and params.ssl_password.reveal() == "KEY@SECRET"
    assert "sslpassword" not in params.options and params.options["sslkey"] == "/k.pem"
    for shown in (repr(pool.pool_config), repr(pool.config), repr(vars(pool)), str(pool)):
        assert "SECRET" not in shown, shown
