"""Security: a canary password never shows, and parameter values are never logged or inlined.

A real PostgreSQL role and a real MariaDB user get a canary password holding ``@``, ``:``,
``/`` and ``%``; pools and routers connect with it, built directly and by type name in a
workflow. Then everything a user or a log can see is scanned for the canary: ``repr`` and
``str`` of every node, pool, router, workflow and runtime and of their attributes,
recursively (``vars()`` and slots); every stats, status and metrics result; every log
record at DEBUG; and the text and traceback (with its chained causes) of the errors raised
for bad configs, DSNs without ``://``, and connections refused for a wrong host, port,
database or password. The one place the value lives is a ``Secret``, whose repr, str and
format show ``***``; the scan treats it as a leaf and checks its repr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from types import FunctionType, MethodType, ModuleType
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool
from kailash_nodes.errors import ConfigError, ConnectionFailed, KailashNodesError
from kailash_nodes.runtime import WorkflowBuilder
from kailash_nodes.secret import Secret
from tests.conftest import server_dsn
from tests.reliability.test_driver_defects import _mariadb_root  # root over db-up's socket

CANARY = f"Kn@c4n:ry/{uuid.uuid4().hex[:8]}%pw"
NEEDLES = (CANARY, quote(CANARY, safe=""), CANARY.split("/")[1])  # whole, encoded, a piece
PARAM = f"param-canary-{uuid.uuid4().hex[:8]}"
INJECTION = "'; DROP TABLE {t}; --"

# Not walked: code, the event loop's machinery (it reaches every object of the process).
_OPAQUE = (type, ModuleType, FunctionType, MethodType, logging.Logger)


def leaks(root: Any, needles: tuple[str, ...] = NEEDLES, depth: int = 8) -> list[str]:
    """Return the paths under ``root`` whose repr or str holds one of ``needles``.

    Walks mappings, sequences and attributes (``vars()``, ``__slots__``, public properties)
    down to ``depth``: every attribute of this library's objects, the public ones of others
    (driver connections); a `Secret` is a leaf (its repr is checked).
    """
    found: list[str] = []
    seen: set[int] = set()
    queue: deque[tuple[Any, str, int]] = deque([(root, "root", 0)])
    while queue:
        obj, path, level = queue.popleft()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        for text in _texts(obj):
            if any(n in text for n in needles):
                found.append(path)
                break
        if level < depth and not isinstance(obj, str | bytes | int | float | Secret):
            queue.extend((child, f"{path}{key}", level + 1) for key, child in _children(obj))
    return found


def _texts(obj: Any) -> list[str]:
    texts = []
    for show in (repr, str):
        try:
            texts.append(show(obj))
        except Exception as exc:  # a repr that fails shows nothing
            texts.append(type(exc).__name__)
    if isinstance(obj, bytes | bytearray):
        texts.append(bytes(obj).decode("latin1"))
    return texts


def _children(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        return [(f"[{k!r}]", v) for k, v in list(obj.items())] + [
            (f"<key {k!r}>", k) for k in list(obj)
        ]
    if isinstance(obj, list | tuple | set | frozenset | deque):
        return [(f"[{i}]", v) for i, v in enumerate(list(obj))]
    attrs: dict[str, Any] = {}
    with contextlib.suppress(TypeError):  # no __dict__
        attrs.update(vars(obj))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                attrs.setdefault(name, getattr(obj, name))
        for name, member in vars(cls).items():  # public properties (dir())
            if isinstance(member, property) and not name.startswith("_"):
                try:
                    attrs.setdefault(name, getattr(obj, name))
                except Exception:  # e.g. a released connection's entry
                    continue
    if not type(obj).__module__.startswith("kailash_nodes"):
        # A driver library's own internals are not ours to show or hide (asyncpg's
        # protocol object keeps the password it authenticated with): public ones only.
        attrs = {k: v for k, v in attrs.items() if not k.startswith("_")}
    return [(f".{k}", v) for k, v in attrs.items()]


def assert_no_leak(label: str, *objects: Any) -> None:
    for obj in objects:
        found = leaks(obj)
        assert not found, f"{label}: the canary shows at {found[:5]}"


def error_text(exc: BaseException) -> str:
    """The message, notes and formatted traceback of ``exc`` with its causes."""
    return "".join(traceback.format_exception(exc))


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as a handler would print it, tracebacks included."""
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(fmt.format(r) for r in caplog.records)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level


# ---------------------------------------------------------------------- canary accounts


@pytest.fixture
async def pg_canary() -> AsyncIterator[dict[str, Any]]:
    """A PostgreSQL role whose password is the canary; dropped afterwards."""
    admin_dsn = server_dsn("KN_PG_ADMIN_DSN")
    target = urlsplit(server_dsn("KN_PG_DSN"))
    role = f"kn_canary_{uuid.uuid4().hex[:8]}"
    database = target.path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{CANARY}'")
        await admin.execute(f'GRANT CONNECT, TEMP ON DATABASE "{database}" TO {role}')
        yield {"host": target.hostname, "port": target.port, "database": database, "user": role}
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
        await admin.execute(f"DROP ROLE {role}")
    finally:
        await admin.close()


@pytest.fixture
def mariadb_canary() -> Iterator[dict[str, Any]]:
    """A MariaDB user whose password is the canary (made as root over db-up's socket)."""
    target = urlsplit(server_dsn("KN_MYSQL_DSN"))
    user = f"kn_canary_{uuid.uuid4().hex[:8]}"
    database = target.path.lstrip("/")
    made = _mariadb_root(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{CANARY}'; "
        f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'"
    )
    if not made:
        if os.environ.get("KN_REQUIRE_SERVERS") == "1":
            pytest.fail("creating a MariaDB user needs root over scripts/db-up's socket")
        pytest.skip("creating a MariaDB user needs root over scripts/db-up's socket")
    yield {"host": target.hostname, "port": target.port, "database": database, "user": user}
    _mariadb_root(f"DROP USER IF EXISTS '{user}'@'%'")


def dsn_of(scheme: str, account: Mapping[str, Any]) -> str:
    return (
        f"{scheme}://{account['user']}:{quote(CANARY, safe='')}@{account['host']}:"
        f"{account['port']}/{account['database']}"
    )


# ---------------------------------------------------------------------- the scans


async def _exercise_and_scan(
    backend: str, account: Mapping[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    scheme = "postgresql" if backend == "postgresql" else "mysql"
    direct = WorkflowConnectionPool(
        name="direct", connection_string=dsn_of(scheme, account), min_connections=1,
        enable_query_routing=True,
    )  # fmt: skip
    fields = WorkflowConnectionPool(
        name="fields", database_type=scheme, password=CANARY, min_connections=1, **account
    )
    router = QueryRouterNode(name="router", connection_pool="direct")
    runtime = LocalRuntime()
    runtime.register_node("direct", direct)
    runtime.register_node("router", router)
    wb = WorkflowBuilder()
    wb.add_node("WorkflowConnectionPool", "db", {"database_type": scheme, "password": CANARY,
                                                 "min_connections": 1, **account})  # fmt: skip
    wb.add_node("QueryRouterNode", "wrouter", {"connection_pool": "db"})
    workflow = wb.build()
    runtime.register_node("db", workflow.nodes["db"])
    try:
        async with runtime:
            res = await router.process({"query": "SELECT ? AS v", "parameters": [PARAM]})
            assert res["success"] and res["data"] == [{"v": PARAM}], res
            async with fields.connection() as pc:
                assert (await fields.execute(pc, "SELECT ? AS v", [PARAM]))["success"]
            cid = (await direct.process({"operation": "acquire"}))["connection_id"]
            bad = await direct.process(
                {"operation": "execute", "connection_id": cid, "query": "SELEC ?",
                 "params": [PARAM]}
            )  # fmt: skip
            assert not bad["success"]
            await direct.process({"operation": "release", "connection_id": cid})
            results, _ = await runtime.execute_async(
                workflow,
                {
                    "db": {"operation": "stats"},
                    "wrouter": {"query": "SELECT ? AS v", "parameters": [PARAM]},
                },
            )
            assert results["wrouter"]["data"] == [{"v": PARAM}], results
            reports = [
                direct.get_stats(), direct.get_pool_statistics(), direct.get_status(),
                await direct.process({"operation": "stats"}), await router.get_metrics(),
                runtime.get_prewarm_stats(), fields.get_stats(), results,
                workflow.nodes["db"].get_stats(),  # type: ignore[attr-defined]
                await workflow.nodes["wrouter"].get_metrics(),  # type: ignore[attr-defined]
            ]  # fmt: skip
            assert_no_leak("live objects", direct, fields, router, runtime, workflow)
            assert_no_leak("reports", reports)
            for obj in (direct, fields, router, workflow, runtime, workflow.nodes["db"]):
                assert not any(n in repr(obj) or n in str(obj) for n in NEEDLES)
                assert_no_leak(f"vars({obj!r})", vars(obj))
    finally:
        await fields.close()
        await workflow.nodes["db"].close()
    text = logged(caplog)
    assert not any(n in text for n in NEEDLES), "the canary was logged"
    assert PARAM not in text, "a parameter value was logged"


@pytest.mark.postgres
async def test_postgres_canary_password_appears_nowhere(
    pg_canary: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await _exercise_and_scan("postgresql", pg_canary, caplog)


@pytest.mark.mysql
async def test_mariadb_canary_password_appears_nowhere(
    mariadb_canary: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await _exercise_and_scan("mysql", mariadb_canary, caplog)


_BAD_CONFIGS: list[dict[str, Any]] = [
    {"connection_string": f"postgresql:/u:{CANARY}@h/db"},  # no '://'
    {"connection_string": f"postgresql:u:{quote(CANARY, safe='')}@h/db"},
    {"connection_string": f"postgresql://u:{CANARY}@h/db"},  # '/' unencoded: a bogus port
    {"connection_string": f"postgresql://u:{CANARY}@/db"},
    {"connection_string": f"mysql://u:{quote(CANARY, safe='')}@h:99999/db"},
    {"connection_string": f"oracle://u:{quote(CANARY, safe='')}@h/db"},
    {"connection_string": f"postgresql://u@h/db?password={quote(CANARY, safe='')}&passwd=x"},
    {"connection_string": f"postgresql://u:{quote(CANARY, safe='')}@h/db", "password": "x"},
    {"connection_string": f"sqlite:///x.db?password={CANARY}", "database_type": "mysql"},
    {"password": CANARY, "port": 70000},
    {"password": CANARY, "max_connections": float("nan")},
    {"password": CANARY, "host": 123},
    {"password": CANARY, "min_connections": 5, "max_connections": 1},
    {"password": CANARY, "no_such_option": 1},
    {"password": [CANARY]},
    {"password": CANARY.encode()},
]


@pytest.mark.parametrize("options", _BAD_CONFIGS, ids=lambda o: repr(o)[:50])
def test_config_errors_never_show_the_password(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError) as info:
        WorkflowConnectionPool(**options)
    text = error_text(info.value)
    assert not any(n in text for n in NEEDLES), text
    assert not any(n in logged(caplog) for n in NEEDLES)
    wb = WorkflowBuilder()
    with pytest.raises(ConfigError) as info:
        wb.add_node("WorkflowConnectionPool", "db", options)
    assert not any(n in error_text(info.value) for n in NEEDLES)


def _refused(account: Mapping[str, Any], scheme: str) -> list[tuple[str, dict[str, Any]]]:
    base = {"database_type": scheme, "password": CANARY, "connect_timeout": 5, **account}
    return [
        ("wrong host", {**base, "host": "kn-no-such-host.invalid"}),
        ("wrong port", {**base, "port": 1}),
        ("wrong database", {**base, "database": "kn_no_such_db"}),
        ("wrong password", {**base, "password": CANARY + "x"}),
    ]


async def _refused_connections_never_show_it(
    account: Mapping[str, Any], scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    for label, options in _refused(account, scheme):
        pool = WorkflowConnectionPool(name=f"bad-{label}", min_connections=1, **options)
        with pytest.raises(ConnectionFailed) as info:
            await pool.initialize()
        text = error_text(info.value)
        assert not any(n in text for n in NEEDLES), (label, text)
        router = QueryRouterNode(connection_pool="p")
        router.set_connection_pool(pool)
        with pytest.raises(KailashNodesError) as routed:
            await router.process({"query": "SELECT 1"})
        assert not any(n in error_text(routed.value) for n in NEEDLES), label
        wb = WorkflowBuilder()
        wb.add_node("WorkflowConnectionPool", "db", {**options, "min_connections": 1})
        workflow = wb.build()
        with pytest.raises(KailashNodesError) as ran:
            await LocalRuntime().execute_async(workflow, {"db": {"operation": "acquire"}})
        assert not any(n in error_text(ran.value) for n in NEEDLES), label
        grow = WorkflowConnectionPool(name=f"grow-{label}", min_connections=0, **options)
        with pytest.raises(KailashNodesError) as grew:  # a failed growth is logged
            await grow.acquire(timeout=10)
        assert not any(n in error_text(grew.value) for n in NEEDLES), label
        assert_no_leak(label, pool, grow, router, workflow, pool.get_stats())
        await grow.close()
        await pool.close()
        await workflow.nodes["db"].close()
    assert caplog.records, "nothing was logged: the log scan would prove nothing"
    assert not any(n in logged(caplog) for n in NEEDLES)


@pytest.mark.postgres
async def test_refused_postgres_connections_never_show_the_password(
    pg_canary: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await _refused_connections_never_show_it(pg_canary, "postgresql", caplog)


@pytest.mark.mysql
async def test_refused_mariadb_connections_never_show_the_password(
    mariadb_canary: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await _refused_connections_never_show_it(mariadb_canary, "mysql", caplog)


# ---------------------------------------------------------------------- parameter values


@pytest.mark.postgres
async def test_postgres_parameters_are_sent_apart_from_the_sql_text(table: str) -> None:
    """The server's own record of the statement text holds the placeholder, not the value."""
    pool = WorkflowConnectionPool(connection_string=server_dsn("KN_PG_DSN"), min_connections=1)
    router = QueryRouterNode(connection_pool="p", prepare_statements=False)  # unnamed too
    router.set_connection_pool(pool)
    own_text = "(SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid())"
    try:
        async with pool.connection() as pc:
            res = await pool.execute(pc, f"SELECT ?::text AS v, {own_text} AS q", [PARAM])
        assert res["data"][0]["v"] == PARAM and PARAM not in res["data"][0]["q"], res
        res = await router.process({"query": f"SELECT ?::text AS v, {own_text} AS q",
                                    "parameters": [PARAM]})  # fmt: skip
        assert res["data"][0]["v"] == PARAM and PARAM not in res["data"][0]["q"], res
        await _injection_round_trips(pool, router, table)
    finally:
        await router.close()
        await pool.close()


@pytest.mark.mysql
async def test_mariadb_injection_through_parameters_round_trips(table: str) -> None:
    """MariaDB's driver escapes parameters client-side; the value still comes back verbatim
    and the table survives."""
    pool = WorkflowConnectionPool(connection_string=server_dsn("KN_MYSQL_DSN"), min_connections=1)
    router = QueryRouterNode(connection_pool="p")
    router.set_connection_pool(pool)
    try:
        await _injection_round_trips(pool, router, table)
    finally:
        await router.close()
        await pool.close()


async def _injection_round_trips(
    pool: WorkflowConnectionPool, router: QueryRouterNode, table: str
) -> None:
    value = INJECTION.format(t=table)
    assert (await router.process({"query": f"CREATE TABLE {table} (id INT, v TEXT)"}))["success"]
    try:
        for i, via in enumerate(("pool", "router")):
            insert = f"INSERT INTO {table} (id, v) VALUES (?, ?)"
            if via == "pool":
                async with pool.connection() as pc:
                    assert (await pool.execute(pc, insert, [i, value]))["success"]
            else:
                res = await router.process({"query": insert, "parameters": [i, value]})
                assert res["success"], res
        res = await router.process({"query": f"SELECT id, v FROM {table} WHERE v = ?",
                                    "parameters": [value]})  # fmt: skip
        assert res["success"] and sorted(r["v"] for r in res["data"]) == [value, value], res
    finally:
        await router.process({"query": f"DROP TABLE {table}"})
