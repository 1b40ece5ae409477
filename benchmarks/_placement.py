"""Run the benchmark client and a local PostgreSQL server on separate CPUs.

Why: on a small VM, where the scheduler puts the server's processes relative to the client
decides more than the pools do. Here (2 vCPUs) a point select took ~47 µs when the
backend ran on the client's CPU and 76–105 µs when it ran on the other one, and the
scheduler moves them as it likes; the client's sub-10 µs acquires were delayed by
server processes preempting it. An A/A test of bench_sizing (our fixed 50-connection
pool against an identical one, taking turns) gave p99 ratios of 0.65–1.67× per run
with the placement left to the scheduler, and 0.98–1.04× with the client on one CPU and
the server on the other. Separating the load generator from the system it loads is the
usual practice; it applies to every contender alike.

Linux only, and only for a server on this host that we may re-pin (root, or the same
user): the postmaster and every process it has forked are moved, and backends forked
later inherit its CPUs. Everything is put back on exit (also on an exception or ^C).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["local_postmasters", "postmaster_of", "separate_cpus"]


async def local_postmasters(dsns: Sequence[str | None]) -> list[int | None]:
    """Return the postmaster pid of each PostgreSQL DSN's server (None: not on this host,
    or not reachable: the benchmark reports that itself)."""
    import asyncpg

    out: list[int | None] = []
    for dsn in dsns:
        if not dsn:
            continue
        try:
            conn = await asyncpg.connect(dsn)
        except Exception:
            out.append(None)
            continue
        try:
            out.append(postmaster_of(await conn.fetchval("SELECT pg_backend_pid()")))
        finally:
            await conn.close()
    return out


def postmaster_of(backend_pid: int) -> int | None:
    """Return the pid of the postmaster that forked ``backend_pid`` (from
    ``pg_backend_pid()``, asked while that connection is open), or None when that is not a
    PostgreSQL process on this host (a remote server, or one in another pid namespace)."""
    parent = _parent(backend_pid)
    if parent is None or parent <= 1 or not (_is_postgres(backend_pid) and _is_postgres(parent)):
        return None
    return parent


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
    except OSError:
        return False


def _parent(pid: int) -> int | None:
    """Return the parent pid of ``pid`` from /proc, or None if it is not visible."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after "(comm) state"


def _children(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(pid := int(entry.name)) == parent:
            out.append(pid)
    return [pid for pid in out if _is_postgres(pid)]


def _split(cpus: list[int]) -> tuple[set[int], set[int]]:
    """Return (client CPUs, server CPUs): the first half for the client, at least one.

    >>> _split([0, 1]), _split([0, 1, 2, 3, 4])
    (({0}, {1}), ({0, 1}, {2, 3, 4}))
    """
    half = max(1, len(cpus) // 2)
    return set(cpus[:half]), set(cpus[half:])


@contextlib.contextmanager
def separate_cpus(postmasters: Sequence[int | None], enabled: bool = True) -> Iterator[str]:
    """Pin this process to half the CPUs and the local PostgreSQL servers whose postmasters
    are ``postmasters`` (see `postmaster_of`; None entries are skipped) to the other half,
    for the block.

    Yields one line saying what was done, or why nothing was (not Linux, one CPU, no
    server on this host, not permitted, ``enabled=False``). Call it before starting
    threads: threads inherit the CPUs of the thread that starts them.
    """
    if not enabled:
        yield "CPU placement: left to the scheduler (--no-pin)"
        return
    if not hasattr(os, "sched_setaffinity"):
        yield "CPU placement: left to the scheduler (no CPU affinity on this system)"
        return
    mine = sorted(os.sched_getaffinity(0))
    servers = sorted({pm for pm in postmasters if pm is not None})
    if len(mine) < 2 or not servers:
        why = "one CPU" if len(mine) < 2 else "the server is not a process on this host"
        yield f"CPU placement: left to the scheduler ({why})"
        return
    client, server = _split(mine)
    before = {pm: os.sched_getaffinity(pm) for pm in servers}
    moved = 0
    try:
        for pm in servers:
            moved += _move([pm, *_children(pm)], server)
    except PermissionError:
        _restore(before)
        moved = 0
    if not moved:
        yield "CPU placement: left to the scheduler (not permitted to move the server)"
        return
    os.sched_setaffinity(0, client)
    try:
        yield (
            f"CPU placement: this process on CPU {_cpus(client)}, PostgreSQL (postmaster "
            f"{', '.join(map(str, servers))} and {moved - len(servers)} processes they "
            f"forked) on CPU {_cpus(server)}; --no-pin leaves it to the scheduler"
        )
    finally:
        os.sched_setaffinity(0, set(mine))
        _restore(before)


def _restore(before: dict[int, set[int]]) -> None:
    for pm, cpus in before.items():
        _move([pm, *_children(pm)], cpus, quiet=True)


def _move(pids: list[int], cpus: set[int], *, quiet: bool = False) -> int:
    """Set the CPUs of ``pids`` (gone ones skipped); return how many were moved."""
    moved = 0
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
            moved += 1
        except ProcessLookupError:
            continue
        except PermissionError:
            if not quiet:
                raise
    return moved


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
