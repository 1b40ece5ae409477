"""Fixtures for real servers: SQLite always; PostgreSQL and MariaDB from scripts/db-up.

Server DSNs come from KN_PG_DSN, KN_PG_REPLICA_DSN, KN_PG_ADMIN_DSN and KN_MYSQL_DSN (what
`scripts/db-up` exports). Without them the server tests skip, unless KN_REQUIRE_SERVERS=1
(set by scripts/test), where a missing server is a failure. Marks come from the backend.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes import WorkflowConnectionPool

BACKENDS = ("sqlite", "postgresql", "mysql")
_ENV = {"postgresql": "KN_PG_DSN", "mysql": "KN_MYSQL_DSN"}


@dataclass
class Backend:
    """One database under test: its name and DSN."""

    name: str
    dsn: str

    @property
    def native_placeholder(self) -> str:
        return {"postgresql": "$1", "mysql": "%s", "sqlite": "?"}[self.name]


def server_dsn(env: str) -> str:
    """Return the DSN in ``env``, or skip (fail when servers are required)."""
    dsn = os.environ.get(env)
    if not dsn:
        if os.environ.get("KN_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{env} is not set but KN_REQUIRE_SERVERS=1")
        pytest.skip(f"{env} not set (run scripts/db-up)")
    return dsn


@pytest.fixture(
    params=[
        pytest.param(b, marks=getattr(pytest.mark, "postgres" if b == "postgresql" else b))
        for b in BACKENDS
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each contract test runs once per backend."""
    name: str = request.param
    if name == "sqlite":
        return Backend(name, f"sqlite:///{tmp_path / 'test.db'}")
    return Backend(name, server_dsn(_ENV[name]))


PoolFactory = Callable[..., WorkflowConnectionPool]


@pytest.fixture
async def make_pool(backend: Backend) -> AsyncIterator[PoolFactory]:
    """Build pools on the backend under test; every pool is closed at teardown."""
    pools: list[WorkflowConnectionPool] = []

    def make(**options: Any) -> WorkflowConnectionPool:
        options.setdefault("name", f"t{uuid.uuid4().hex[:6]}")
        options.setdefault("connection_string", backend.dsn)
        pool = WorkflowConnectionPool(**options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
def table() -> str:
    """A unique table name for one test."""
    return f"kn_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_admin_dsn() -> str:
    """The PostgreSQL superuser DSN (for pg_terminate_backend and friends)."""
    return server_dsn("KN_PG_ADMIN_DSN")


def pg_ctl(server: str) -> list[str]:
    """Return the pg_ctl command line for ``server`` ("pg-primary" or "pg-replica").

    Skips unless the test runs as root with runuser and scripts/db-up's KN_DB_STATE_DIR.
    """
    state = os.environ.get("KN_DB_STATE_DIR")
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not state or not bins or os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("controlling a server needs root, runuser and KN_DB_STATE_DIR")
    return ["runuser", "-u", "postgres", "--", str(bins[-1]), "-D", f"{state}/{server}"]
