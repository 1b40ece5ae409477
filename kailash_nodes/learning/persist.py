"""Save and load what a tracker learned: a versioned JSON file, written atomically.

Format (version 2)::

    {"format": "kailash_nodes.query_patterns", "version": 2, "saved_at": "<ISO 8601>",
     "counters": {"records": 0, ...},
     "starts": {"total": 0, "edges": [["first", count], ...]},   # sessions' first shapes
     "shapes": [                                   # least recently seen first
       {"shape": "...", "count": 0, "errors": 0, "reads": 0, "writes": 0, "rows": 0,
        "row_samples": 0, "durations_s": [...],    # oldest first
        "followers": {"total": 0, "edges": [["next", count, [gap_s, ...]], ...]},
        "contexts": [["previous", {"total": 0, "edges": [["next", count], ...]}], ...],
        "loops": [[loop_count, {"total": 0, "edges": [["next", count], ...]}], ...]}],
     "noise_kinds": {"inserted": 0, "replaced": 0},   # optional
     "runs": {"finished": 0, "explained": 0, "surprised": 0,   # optional
              "sequences": [[["shape", ...], count], ...]}}

A context whose ``"previous"`` is `START` (``"\\u0000start"`` in the JSON) counts what
follows the shape when it opened its session. ``noise_kinds`` holds how often a statement
that looked like noise turned out inserted or replacing a step
(`kailash_nodes.learning.history.NoiseKinds`); it is optional, so a version 2 file without
it (written before it existed, or by a tracker that does not learn it) loads with zero
counts, and a reader that predates it ignores it. ``runs`` is optional the same way: the
finished runs counted for run templates (`kailash_nodes.learning.runs`), from which the
templates are rebuilt on load, and the noise level estimated while predicting. Version 1
is version 2 without ``starts``, ``loops`` and `START` contexts; it still loads, with none
of them.
Sessions are not saved: they are positions in running work, not knowledge. A file with
another ``format`` or ``version`` is rejected with `PatternFileError`, never guessed at.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from kailash_nodes.errors import KailashNodesError
from kailash_nodes.learning.bounds import Bounds
from kailash_nodes.learning.history import NoiseKinds
from kailash_nodes.learning.options import StrPath
from kailash_nodes.learning.runs import NoiseLevel, RunTemplates
from kailash_nodes.learning.shape import START, ShapeStats
from kailash_nodes.learning.transitions import Edge, Followers
from kailash_nodes.measure import Samples

__all__ = [
    "COUNTERS",
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "PatternFileError",
    "bounds_dict",
    "encode",
    "read",
    "write_atomic",
]

FORMAT = "kailash_nodes.query_patterns"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
COUNTERS = (
    "records",
    "records_without_session",
    "transitions",
    "shapes_evicted",
    "sessions_evicted",
    "sessions_expired",
)


class PatternFileError(KailashNodesError, ValueError):
    """A query-pattern file is missing, unreadable, malformed or of an unknown version."""


def bounds_dict(bounds: Bounds) -> dict[str, Any]:
    """Return ``bounds`` as a plain dict.

    >>> bounds_dict(Bounds())["max_shapes"]
    2000
    """
    return asdict(bounds)


def encode(
    shapes: OrderedDict[str, ShapeStats],
    counters: dict[str, int],
    starts: Followers,
    noise_kinds: NoiseKinds | None = None,
    runs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the JSON-ready document for ``shapes`` (in LRU order), ``counters``, the
    sessions' first statements ``starts`` and, when given, the learned ``noise_kinds`` and
    the ``runs`` part (`RunTemplates.encode`)."""
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "saved_at": datetime.now(UTC).isoformat(),
        "counters": dict(counters),
        "starts": _encode_followers(starts, with_gaps=False),
        "shapes": [_encode_shape(name, stats) for name, stats in shapes.items()],
    }
    if noise_kinds is not None:
        document["noise_kinds"] = {
            "inserted": noise_kinds.inserted,
            "replaced": noise_kinds.replaced,
        }
    if runs is not None:
        document["runs"] = runs
    return document


def _encode_shape(name: str, s: ShapeStats) -> dict[str, Any]:
    return {
        "shape": name,
        "count": s.count,
        "errors": s.errors,
        "reads": s.reads,
        "writes": s.writes,
        "rows": s.rows,
        "row_samples": s.row_samples,
        "durations_s": s.durations.ordered(),
        "followers": _encode_followers(s.followers, with_gaps=True),
        "contexts": [
            [prev, _encode_followers(f, with_gaps=False)] for prev, f in s.contexts.items()
        ],
        "loops": [[n, _encode_followers(f, with_gaps=False)] for n, f in s.loops.items()],
    }


def _encode_followers(f: Followers, *, with_gaps: bool) -> dict[str, Any]:
    edges: list[list[Any]] = []
    for name, e in f.edges.items():
        gaps = e.gaps.ordered() if e.gaps is not None else []
        edges.append([name, e.count, gaps] if with_gaps else [name, e.count])
    return {"total": f.total, "edges": edges}


def write_atomic(path: StrPath, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON to ``path`` via a synced temporary file and `os.replace`.

    Blocking file I/O: from async code, encode first and call this in a thread.
    """
    target = os.fspath(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=os.path.dirname(target) or "."
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read(
    path: StrPath, bounds: Bounds, runs: RunTemplates | None = None, level: NoiseLevel | None = None
) -> tuple[OrderedDict[str, ShapeStats], dict[str, int], Followers, NoiseKinds]:
    """Return the shapes (cut to ``bounds``), counters, session starts and noise kinds
    (halved below ``bounds.max_transition_count``) saved in ``path``; when the file has a
    ``runs`` part and ``runs`` and ``level`` are given, load it into them.

    Raises `PatternFileError` naming the file for a missing or unreadable file, another
    format, an unknown version, or malformed content.
    """
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as exc:
        raise PatternFileError(f"{os.fspath(path)}: cannot read query-pattern file: {exc}") from exc
    _check_header(path, document)
    try:
        shapes = _decode_shapes(document["shapes"], bounds)
        counters = {k: int(document["counters"].get(k, 0)) for k in COUNTERS}
        starts = document.get("starts")  # absent in version 1
        kept = set(shapes)
        starts = _decode_followers(starts, bounds, kept, with_gaps=False) if starts else Followers()
        kinds = document.get("noise_kinds") or {}  # absent before it existed
        noise_kinds = NoiseKinds(
            bounds.max_transition_count,
            inserted=_count(kinds.get("inserted", 0)),
            replaced=_count(kinds.get("replaced", 0)),
        )
        saved_runs = document.get("runs")  # absent before run templates existed
        if saved_runs and runs is not None and level is not None:
            runs.restore(saved_runs, level)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise PatternFileError(
            f"{os.fspath(path)}: malformed query-pattern file ({type(exc).__name__}: {exc})"
        ) from exc
    return shapes, counters, starts, noise_kinds


def _count(value: Any) -> int:
    count = int(value)
    if count < 0:
        raise ValueError(f"a count must be >= 0 (got {value!r})")
    return count


def _check_header(path: StrPath, document: Any) -> None:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise PatternFileError(
            f"{os.fspath(path)}: not a query-pattern file "
            f"(format must be {FORMAT!r}, got {found!r})"
        )
    version = document.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise PatternFileError(
            f"{os.fspath(path)}: query-pattern file version {version!r} is not supported "
            f"(this kailash_nodes reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )


def _decode_shapes(items: list[dict[str, Any]], bounds: Bounds) -> OrderedDict[str, ShapeStats]:
    shapes: OrderedDict[str, ShapeStats] = OrderedDict()
    items = items[-bounds.max_shapes :]  # the most recently seen
    kept = {str(item["shape"]) for item in items}
    kept_contexts = kept | {START}
    for item in items:
        s = ShapeStats(bounds.duration_window)
        s.count, s.errors = int(item["count"]), int(item["errors"])
        s.reads, s.writes = int(item["reads"]), int(item["writes"])
        s.rows, s.row_samples = int(item["rows"]), int(item["row_samples"])
        s.durations = Samples(bounds.duration_window, map(float, item["durations_s"]))
        s.followers = _decode_followers(item["followers"], bounds, kept, with_gaps=True)
        contexts = sorted(
            item["contexts"], key=lambda c: (c[0] not in kept_contexts, -int(c[1]["total"]))
        )
        for prev, table in contexts[: bounds.max_contexts]:
            s.contexts[str(prev)] = _decode_followers(table, bounds, kept, with_gaps=False)
        for n, table in item.get("loops", ()):  # absent in version 1
            if 2 <= int(n) <= bounds.loop_window:
                s.loops[int(n)] = _decode_followers(table, bounds, kept, with_gaps=False)
        shapes[str(item["shape"])] = s
    return shapes


def _decode_followers(
    table: dict[str, Any], bounds: Bounds, kept: set[str], *, with_gaps: bool
) -> Followers:
    # When the bounds cut, keep edges into kept shapes first, then the strongest.
    f = Followers()
    f.total = int(table["total"])
    edges = sorted(table["edges"], key=lambda e: (e[0] not in kept, -int(e[1])))
    edges = edges[: bounds.max_followers]
    for edge in edges:
        gaps = Samples(bounds.gap_window, map(float, edge[2])) if with_gaps else None
        f.edges[str(edge[0])] = Edge(int(edge[1]), gaps)
    f.recount_top()
    return f
