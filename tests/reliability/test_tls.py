"""TLS: the pool reaches servers that refuse connections without it.

The servers (a PostgreSQL with only ``hostssl`` lines, a MariaDB with
``require_secure_transport``) have a certificate for 127.0.0.1 signed by a CA made in the
test setup with the openssl CLI. The libpq TLS options of the DSN (``sslmode``,
``sslrootcert``, ``sslcert``, ``sslkey``, ...) go through to asyncpg, and the same names
configure aiomysql's TLS context; a connection that cannot be made is a typed
``ConnectionFailed``, also when the TLS handshake itself is cut or stalled.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kailash_nodes import WorkflowConnectionPool
from kailash_nodes.errors import ConnectionFailed
from tests.reliability.conftest import LONG, Figures, ProxyFactory
from tests.reliability.proxy import C2S, S2C
from tests.reliability.servers import MariaDB, PgCluster

GUARD = 20.0
TRIES = 20 if LONG else 3
# aiomysql's TLS connections leave an unclosed transport object for the garbage collector
# (a ResourceWarning, after failed handshakes and closed connections alike); the socket is
# closed (20 failed handshakes left no descriptor open in /proc/self/fd).
AIOMYSQL_TLS_LEFTOVERS = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
async def make_pool() -> AsyncIterator[Any]:
    """Build pools; every pool is closed at teardown."""
    pools: list[WorkflowConnectionPool] = []

    def make(dsn: str, **options: Any) -> WorkflowConnectionPool:
        options.setdefault("name", f"tls_{uuid.uuid4().hex[:6]}")
        options.setdefault("connect_timeout", 3.0)
        pool = WorkflowConnectionPool(connection_string=dsn, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()
    gc.collect()  # what the pools' connections left is collected (and warned about) here


async def _ssl_in_use(pool: WorkflowConnectionPool) -> bool:
    """Return what the server says about the connection the pool lends: TLS or not."""

    async def run() -> bool:
        async with pool.connection() as conn:
            res = await pool.execute(
                conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            assert res["success"], res
            return bool(res["data"][0]["ssl"])

    return await asyncio.wait_for(run(), GUARD)


async def _refused_by_verification(pool: WorkflowConnectionPool) -> None:
    """Opening the pool fails typed, because the server's certificate did not verify."""
    with pytest.raises(ConnectionFailed) as caught:
        await asyncio.wait_for(pool.initialize(), GUARD)
    message = str(caught.value)
    causes = []
    exc: BaseException | None = caught.value
    while exc is not None:
        causes.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes
    assert "certificate verify failed" in message, message  # aiomysql alone says only 2003


@pytest.mark.postgres
async def test_sslmode_require_in_the_dsn_connects_over_tls(
    pg_tls: PgCluster, make_pool: Any
) -> None:
    pool = make_pool(f"{pg_tls.primary.dsn}?sslmode=require", min_connections=2)
    assert await _ssl_in_use(pool)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
@pytest.mark.postgres
async def test_the_ca_file_verifies_the_server_certificate(
    pg_tls: PgCluster, make_pool: Any, mode: str
) -> None:
    pool = make_pool(f"{pg_tls.primary.dsn}?sslmode={mode}&sslrootcert={pg_tls.ca_file}")
    assert await _ssl_in_use(pool)


@pytest.mark.postgres
async def test_a_certificate_from_another_ca_is_refused_typed(
    pg_tls: PgCluster, make_pool: Any, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    await asyncio.to_thread(
        subprocess.run,
        ["openssl", "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "1",
         "-subj", "/CN=not the server's CA", "-keyout", str(tmp_path / "k"), "-out", str(other)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    pool = make_pool(f"{pg_tls.primary.dsn}?sslmode=verify-full&sslrootcert={other}")
    await _refused_by_verification(pool)


@pytest.mark.postgres
async def test_a_missing_ca_file_is_refused_typed(
    pg_tls: PgCluster, make_pool: Any, tmp_path: Path
) -> None:
    pool = make_pool(
        f"{pg_tls.primary.dsn}?sslmode=verify-full&sslrootcert={tmp_path / 'absent.crt'}"
    )
    with pytest.raises(ConnectionFailed) as caught:
        await asyncio.wait_for(pool.initialize(), GUARD)
    assert "absent.crt" in str(caught.value), caught.value


@pytest.mark.postgres
async def test_without_tls_the_hostssl_server_is_refused_typed(
    pg_tls: PgCluster, make_pool: Any
) -> None:
    pool = make_pool(f"{pg_tls.primary.dsn}?sslmode=disable")
    with pytest.raises(ConnectionFailed, match="no encryption"):
        await asyncio.wait_for(pool.initialize(), GUARD)


@pytest.mark.postgres
async def test_without_sslmode_the_driver_prefers_tls(pg_tls: PgCluster, make_pool: Any) -> None:
    """asyncpg's default is libpq's ``prefer``: TLS when offered, without verification."""
    assert await _ssl_in_use(make_pool(pg_tls.primary.dsn))


@pytest.mark.parametrize("direction", [S2C, C2S])
@pytest.mark.postgres
async def test_a_cut_tls_handshake_fails_typed_and_the_pool_recovers(
    pg_tls: PgCluster,
    make_pool: Any,
    make_proxy: ProxyFactory,
    reliability: Figures,
    direction: str,
) -> None:
    """Every connection is cut 200 bytes into the handshake (the ServerHello and the
    certificate, or the client's key exchange): acquire fails typed, and once the network
    is back the pool serves again without caller action."""
    proxy = await make_proxy(pg_tls.primary.dsn)
    pool = make_pool(
        f"{proxy.dsn(pg_tls.primary.dsn)}?sslmode=require", min_connections=1, timeout=2.0
    )
    assert await _ssl_in_use(pool)
    recover = []
    for _ in range(TRIES):
        rule = proxy.cut_after_bytes(200 if direction == S2C else 40, direction)
        proxy.cut_all()
        while not rule.fired:  # the idle connection that was cut fails first, then reconnects
            with pytest.raises(ConnectionFailed):
                await _ssl_in_use(pool)
        with pytest.raises(ConnectionFailed):  # every reconnect is cut in its handshake
            await _ssl_in_use(pool)
        await proxy.restore()
        back = time.monotonic()
        while True:
            try:
                if await _ssl_in_use(pool):
                    break
            except ConnectionFailed:
                await asyncio.sleep(0.01)
            assert time.monotonic() - back < GUARD, "the pool did not recover"
        recover.append(time.monotonic() - back)
    reliability.add(f"TLS handshake cut ({direction})", tries=TRIES, recover_s=max(recover))


@pytest.mark.postgres
async def test_a_stalled_tls_handshake_times_out_typed(
    pg_tls: PgCluster, make_pool: Any, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(pg_tls.primary.dsn)
    pool = make_pool(
        f"{proxy.dsn(pg_tls.primary.dsn)}?sslmode=require", min_connections=0, connect_timeout=1.0
    )
    proxy.stall()
    began = time.monotonic()
    with pytest.raises(ConnectionFailed):
        await _ssl_in_use(pool)
    assert time.monotonic() - began < GUARD
    await proxy.restore()
    assert await _ssl_in_use(pool)


# ---------------------------------------------------------------------- MariaDB


async def _mysql_cipher(pool: WorkflowConnectionPool) -> str:
    """Return the TLS cipher of the connection the pool lends ('' without TLS)."""

    async def run() -> str:
        async with pool.connection() as conn:
            res = await pool.execute(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert res["success"], res
            return str(res["data"][0]["Value"])

    return await asyncio.wait_for(run(), GUARD)


@pytest.mark.mysql
@AIOMYSQL_TLS_LEFTOVERS
@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
async def test_mariadb_sslmode_in_the_dsn_connects_over_tls(
    mariadb_tls: MariaDB, make_pool: Any, mode: str
) -> None:
    pool = make_pool(f"{mariadb_tls.dsn}?sslmode={mode}&sslrootcert={mariadb_tls.ca_file}")
    assert await _mysql_cipher(pool)


@pytest.mark.mysql
@AIOMYSQL_TLS_LEFTOVERS
async def test_mariadb_without_tls_is_refused_typed(mariadb_tls: MariaDB, make_pool: Any) -> None:
    # MariaDB answers a login without TLS under require_secure_transport with 1045
    with pytest.raises(ConnectionFailed, match=r"1045|secure transport"):
        await asyncio.wait_for(make_pool(mariadb_tls.dsn).initialize(), GUARD)


@pytest.mark.mysql
@AIOMYSQL_TLS_LEFTOVERS
async def test_mariadb_certificate_from_another_ca_is_refused_typed(
    mariadb_tls: MariaDB, pg_tls: PgCluster, make_pool: Any
) -> None:
    other = pg_tls.ca_file  # a CA that did not sign the MariaDB server's certificate
    pool = make_pool(f"{mariadb_tls.dsn}?sslmode=verify-ca&sslrootcert={other}")
    await _refused_by_verification(pool)
