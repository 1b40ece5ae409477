"""Replica safety of function calls, learned from the primary's catalog.

The router classifies every statement with :attr:`FunctionRules.classify`: a
:class:`~kailash_nodes.sql.Classifier` built from the functions the primary's catalog
says a replica may run (``Driver.function_catalog``), cached per text like the module's
``classify``, so a repeated statement still costs one cache lookup. A new catalog brings a
new classifier, and with it an empty cache: every verdict is taken again under the new
rules.

The catalog is read at start, again after DDL that may create, replace, alter or drop a
function (``sql.changes_routines``), and in the background when a statement first seen
calls a function the catalog does not name at all (created since by another client: that
statement goes to the primary, the next ones see it; each name asks at most once), and
every ``refresh`` seconds (a change made outside the router to a function the catalog
names: replaced, altered, dropped), in a task of its own. The
primary's catalog is the authority: a streaming standby replays it, and a function the
primary does not know cannot be called anywhere. Fail closed throughout: until a read
succeeds, after a read fails, and while a transaction that changed functions is open (its
changes may commit or roll back), the rules are the classifier's own list of builtins, so
an unknown function goes to the primary. A failed read is logged at debug level and never
fails a statement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kailash_nodes.background import BackgroundTasks, Periodic
from kailash_nodes.drivers import FunctionCatalog, catalog_read
from kailash_nodes.pool import ConnectionPool, PooledConnection
from kailash_nodes.sql import (
    SAFE_FUNCTIONS,
    Classification,
    Classifier,
    changes_routines,
)

__all__ = ["FunctionRules", "classifier_for"]

logger = logging.getLogger("kailash_nodes.router")
Classify = Callable[[str, str], Classification]
_MAX_ASKED = 1024  # names absent from the catalog that may each ask for one more read
_RETRY_FIRST, _RETRY_MAX = 1.0, 60.0  # seconds before reading again after a failed read


def classifier_for(
    catalog: FunctionCatalog,
    cache_size: int = 8192,
    on_unknown: Callable[[str], None] | None = None,
) -> Classifier:
    """Return a Classifier whose whitelist is ``catalog``'s safe names plus the builtins it
    knows, less the names ``catalog`` finds unsafe.

    An unsafe name that is only the server's own builtin stays safe when the classifier's
    list names it (``random()``: volatile in pg_proc, harmless on a standby); a user
    function with such a name (an overload in the search path) takes it out.

    >>> cat = FunctionCatalog("pg_proc", frozenset({"f"}), {"g": "volatile", "random": "volatile"},
    ...                       frozenset({"random"}))
    >>> c = classifier_for(cat)
    >>> [c.classify(f"SELECT {n}()").replica_safe for n in ("f", "g", "random")]
    [True, False, True]
    >>> c.classify("SELECT g()").reason
    'g() is not known to be read-only (pg_proc: volatile)'
    """
    unsafe = {
        name: f"{catalog.source}: {why}"
        for name, why in catalog.unsafe.items()
        if name not in catalog.builtin or name not in SAFE_FUNCTIONS
    }
    return Classifier(
        safe_functions=catalog.safe,
        unsafe_functions=unsafe,
        on_unknown=on_unknown,
        cache_size=cache_size,
    )


class FunctionRules:
    """The router's classifier and the catalog it came from, refreshed after DDL.

    ``classify(query, dialect)`` is the current classifier's cache (the router's own,
    with the builtins' list only, until a catalog was read); the router's plans sit in
    front of it and are cleared (``changed``) with every new classifier. ``source`` names
    the catalog in use
    ("" for none), ``loads`` / ``failures`` count catalog reads. Without ``enabled`` (a
    router with no replica: nothing to decide) the catalog is never read. ``refresh``:
    seconds between the reads `start_refresh` schedules (0: none); ``refreshes`` counts
    those that succeeded, ``refresh_changes`` those that found the catalog changed.
    """

    __slots__ = (
        "_asked", "_catalog", "_changed", "_current", "_generation", "_pool", "_refresher",
        "_retrying", "_stale", "_static", "_tasks",
        "classify", "enabled", "failures", "loads", "refresh_changes", "refresh_interval",
        "refreshes", "source",
    )  # fmt: skip

    def __init__(
        self,
        *,
        enabled: bool = True,
        changed: Callable[[], None] | None = None,
        refresh: float = 0.0,
    ) -> None:
        self.enabled = enabled
        self._changed = changed  # told after every change of classifier
        self._static = self._current = Classifier()  # the builtins' list only
        self.classify: Classify = self._static.lookup
        self.source = ""
        self.loads = 0
        self.failures = 0
        self._generation = 0  # bumped by every change, so an older read is not applied
        self._stale = False  # a transaction changed functions: read again when it ends
        self._asked: set[str] = set()  # names not in the catalog that asked for a read
        self._pool: ConnectionPool | None = None  # where the last catalog was read
        self._retrying = False  # a failed read is being retried (with a growing delay)
        self._tasks = BackgroundTasks("kailash_nodes-router:function-catalog")
        self._catalog: FunctionCatalog | None = None  # the catalog the classifier came from
        self.refresh_interval = refresh
        self.refreshes = 0
        self.refresh_changes = 0
        self._refresher = Periodic(
            "kailash_nodes-router:function-catalog-refresh", self._refresh, refresh
        )

    async def load(self, pool: ConnectionPool) -> bool:
        """Read the catalog on a connection of ``pool`` (the primary) and use it; return
        whether it was read. Waits for a connection like any checkout; never raises but
        for cancellation."""
        if not self.enabled:
            return False
        self._pool = pool
        generation = self._generation
        try:
            async with pool.connection() as pc:
                return await self._read(pool, pc, generation)
        except Exception as exc:
            return self._failed(exc, generation)

    async def after_ddl(
        self, query: str, dialect: str, pool: ConnectionPool, pc: PooledConnection, pinned: bool
    ) -> None:
        """React to DDL ``query`` that just ran on ``pc`` (a connection of the primary
        ``pool``; ``pinned``: a session's): when it may change functions, read the
        catalog again.

        Inside a transaction the change may yet roll back: the builtins-only rules apply
        until :meth:`transaction_ended`. A pinned connection may carry its session's
        search path, so the read runs on another connection, in the background (the
        builtins-only rules meanwhile). Otherwise it runs on ``pc``, now, so the next
        statement is judged by the new catalog.
        """
        if not (self.enabled and changes_routines(query, dialect)):
            return
        self._generation += 1
        if pc.connection.in_transaction():
            self.use(None)
            self._stale = True
        elif pinned:
            self.use(None)
            self._tasks.spawn(self.load(pool), "function-catalog")
        else:
            try:
                await self._read(pool, pc, self._generation)
            except Exception as exc:
                self._failed(exc, self._generation)

    def after_lost_ddl(self, query: str, dialect: str, pool: ConnectionPool) -> None:
        """React to DDL ``query`` whose connection died before its answer (it may or may
        not have run): when it may change functions, use the builtins only and read the
        catalog again in the background, on another connection."""
        if self.enabled and changes_routines(query, dialect):
            self._generation += 1
            self.use(None)
            self._tasks.spawn(self.load(pool), "function-catalog")

    def transaction_ended(self, pool: ConnectionPool) -> None:
        """Read the catalog again in the background if a session changed functions."""
        if self._stale:
            self._stale = False
            self._tasks.spawn(self.load(pool), "function-catalog")

    async def wait_loaded(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` s for catalog reads running in the background."""
        await self._tasks.wait_all(timeout)

    async def close(self) -> None:
        """Cancel catalog reads running in the background, and the refresh."""
        await self._refresher.stop()
        await self._tasks.cancel_all()

    @property
    def refresh_every(self) -> float | None:
        """Return the seconds between periodic reads while they run, else None."""
        return self.refresh_interval if self._refresher.running else None

    def start_refresh(self) -> None:
        """Read the catalog again every ``refresh`` seconds (±20 %), from now until `close`
        (nothing without ``refresh``, ``enabled`` or a pool to read on)."""
        if self.enabled and self.refresh_interval > 0 and self._pool is not None:
            self._refresher.start()

    async def _refresh(self) -> None:
        """One periodic read: apply the catalog if it changed (a new classifier), else keep
        the current one and its cache. Skipped while other rules hold on purpose (a
        transaction changed functions; a read or its retry is under way). A failed refresh
        keeps the current rules (it says nothing of the functions: the primary may only be
        busy) and is counted in ``failures``."""
        pool = self._pool
        if pool is None or self._stale or self._retrying or len(self._tasks):
            return
        generation = self._generation
        try:
            async with pool.connection() as pc:
                catalog = await _catalog_of(pool, pc)
        except Exception as exc:
            self.failures += 1
            logger.debug("refreshing the function catalog failed: %s", exc)
            return
        if generation != self._generation or self._stale:  # changed meanwhile: not applied
            return
        self.refreshes += 1
        if catalog != self._catalog:
            self.refresh_changes += 1
            self.loads += 1
            self.use(catalog)

    async def _read(self, pool: ConnectionPool, pc: PooledConnection, generation: int) -> bool:
        catalog = await _catalog_of(pool, pc)
        if generation != self._generation:  # functions changed while it read: a newer read
            return False  # follows (or the builtins-only rules hold until one does)
        self.use(catalog)
        self.loads += 1
        return catalog is not None

    def _failed(self, exc: Exception, generation: int) -> bool:
        self.failures += 1
        logger.debug("reading the function catalog failed: %s", exc)
        if generation == self._generation:
            self.use(None)  # fail closed: a stale catalog could call a changed function safe
            if not self._retrying and self._pool is not None:
                self._retrying = True  # a failure (e.g. at start) must not last for good
                self._tasks.spawn(self._retry(self._pool), "function-catalog-retry")
        return False

    async def _retry(self, pool: ConnectionPool) -> None:
        """Read the catalog again after a failed read: after 1 s, then twice as long each
        time up to 60 s, until a read succeeds or something else reads it (a DDL, the end
        of a transaction that changed functions)."""
        delay = _RETRY_FIRST
        try:
            while not self.source and not self._stale:
                await asyncio.sleep(delay)
                if self.source or self._stale:
                    return
                failures = self.failures
                if await self.load(pool) or self.failures == failures:
                    return  # read, or nothing to read (no catalog, not enabled)
                delay = min(delay * 2, _RETRY_MAX)
        finally:
            self._retrying = False

    def use(self, catalog: FunctionCatalog | None) -> None:
        """Classify by ``catalog`` from now on (None: the builtins only), with a new cache."""
        self._catalog = catalog
        if catalog is None:
            self._current, self.source = self._static, ""
        else:
            self._current = classifier_for(catalog, on_unknown=self._unknown)
            self.source = catalog.source
        self.classify = self._current.lookup
        if self._changed is not None:
            self._changed()

    def _unknown(self, name: str) -> None:
        """Read the catalog again, in the background, for a name it did not hold (once
        per name, up to ``_MAX_ASKED`` names; never while a read is running)."""
        pool = self._pool
        if pool is None or name in self._asked or len(self._asked) >= _MAX_ASKED:
            return
        if not len(self._tasks):
            self._asked.add(name)
            self._tasks.spawn(self.load(pool), "function-catalog")


async def _catalog_of(pool: ConnectionPool, pc: PooledConnection) -> FunctionCatalog | None:
    """Read ``pool``'s function catalog on ``pc`` (one of its connections)."""
    return await catalog_read(pc, pool.driver.function_catalog, pool.config.query_timeout)
