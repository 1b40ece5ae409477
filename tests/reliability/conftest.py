"""Shared fixtures of the reliability suite (other parts of the suite append theirs).

Private servers (``servers.py``) start once per session and only when a test asks for one;
they are the only servers a test may stop, restart or pause. The fault proxy
(``proxy.py``) goes in front of a shared or private server for cuts and stalls.
Measured figures go to the ``reliability`` fixture and are printed at the end of the run
(and written as JSON to ``$KN_RELIABILITY_REPORT`` when set).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import pytest

from tests.reliability.proxy import FaultProxy
from tests.reliability.servers import MariaDB, PgCluster, ServerUnavailable

LONG = os.environ.get("KN_RELIABILITY_LONG") == "1"
_FIGURES: list[dict[str, Any]] = []


def _unavailable(exc: ServerUnavailable) -> None:
    if os.environ.get("KN_REQUIRE_SERVERS") == "1":
        pytest.fail(f"private server unavailable but KN_REQUIRE_SERVERS=1: {exc}")
    pytest.skip(f"private server unavailable: {exc}")


class _Server(Protocol):
    def destroy(self) -> None: ...


S = TypeVar("S", bound=_Server)


def _private(make: Callable[[], S]) -> Iterator[S]:
    """Start a private server for the session (skip, or fail with KN_REQUIRE_SERVERS=1,
    when this machine cannot run one); remove it at the end."""
    try:
        server = make()
    except ServerUnavailable as exc:
        _unavailable(exc)
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL primary + streaming standby that tests may stop and pause."""
    yield from _private(PgCluster.create)


@pytest.fixture(scope="session")
def pg_tls() -> Iterator[PgCluster]:
    """A private PostgreSQL that accepts only TLS (hostssl); ``ca_file`` signed its cert."""
    yield from _private(lambda: PgCluster.create(replica=False, tls=True))


@pytest.fixture(scope="session")
def private_mariadb() -> Iterator[MariaDB]:
    """A private MariaDB server that tests may stop and start."""
    yield from _private(MariaDB.create)


@pytest.fixture(scope="session")
def mariadb_tls() -> Iterator[MariaDB]:
    """A private MariaDB that refuses connections without TLS; ``ca_file`` signed its cert."""
    yield from _private(lambda: MariaDB.create(tls=True))


ProxyFactory = Callable[[str], Awaitable[FaultProxy]]


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """Start fault proxies in front of DSNs' servers; all are closed at teardown."""
    proxies: list[FaultProxy] = []

    async def make(dsn: str) -> FaultProxy:
        parts = urlsplit(dsn)
        scheme = parts.scheme.split("+")[0]
        protocol = "postgresql" if scheme in ("postgresql", "postgres") else "mysql"
        proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 0, protocol)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()


class Figures:
    """Where the tests put what they measured (one row per fault)."""

    def add(self, fault: str, **values: Any) -> None:
        """Record one measured row, e.g. ``add("primary restart", tries=1, lost=0, ...)``."""
        _FIGURES.append({"fault": fault, **values})


@pytest.fixture(scope="session")
def reliability() -> Figures:
    """Record measured figures; they are printed in the terminal summary."""
    return Figures()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the measured figures (and write them to $KN_RELIABILITY_REPORT)."""
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for row in _FIGURES:
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "fault")
        terminalreporter.write_line(f"{row['fault']}: {values}")
    path = os.environ.get("KN_RELIABILITY_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_FIGURES, f, indent=1)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
