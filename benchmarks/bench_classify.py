"""Cost of SQL classification: a cache hit, a cache miss, and sqlglot's bare parse beside it.

Each sqlglot build runs in its own child process: "compiled" is the installed package with
the sqlglot[c] extension modules (sqlglotc), "pure" the same package with an import hook
that loads only its .py sources. Per build, over each statement set:

- hit: ``classify(q, dialect)`` on a warm cache, ns per call (a tight loop over the set,
  least disturbed round; a plain dict lookup over the same keys is shown as the floor);
- miss: µs per statement, each round on texts no cache has seen (a round-numbered comment
  is appended, so the placeholder scan misses too); median of rounds;
- parse: ``sqlglot.parse(q, read=dialect)`` alone (errors caught), µs per statement,
  median of rounds: what one parse costs; a miss adds the scan, tokens and tree walk.

Statement sets: 40 realistic application statements (PostgreSQL, MySQL, SQLite) and the
acceptance corpus of tests/sql/corpus.py. The builds run alternately, ``--repeat`` times
each, and every figure is the minimum over those runs; compare ratios within one run.

    python benchmarks/bench_classify.py             # both builds, ~5 s
    python benchmarks/bench_classify.py --rounds 3 --hit-calls 100000
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

REALISTIC: tuple[tuple[str, str], ...] = (
    ("SELECT id, name, email FROM users WHERE id = $1", "postgres"),
    ("SELECT * FROM users WHERE email = $1 AND active = true", "postgres"),
    ("SELECT id, total FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
     "postgres"),
    ("SELECT count(*) FROM orders WHERE status = $1 AND created_at > now() - interval '1 day'",
     "postgres"),
    ("SELECT o.id, o.total, u.name FROM orders o JOIN users u ON u.id = o.user_id "
     "WHERE o.id = $1", "postgres"),
    ("SELECT p.id, p.title FROM posts p WHERE p.author_id IN (SELECT id FROM users "
     "WHERE team_id = $1)", "postgres"),
    ("SELECT status, count(*), sum(total) FROM orders GROUP BY status HAVING count(*) > $1",
     "postgres"),
    ("WITH recent AS (SELECT * FROM events WHERE ts > $1) SELECT kind, count(*) FROM recent "
     "GROUP BY kind", "postgres"),
    ("SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY ts) FROM events "
     "WHERE user_id = $1", "postgres"),
    ("SELECT * FROM jobs WHERE state = 'ready' ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED",
     "postgres"),
    ("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id", "postgres"),
    ("INSERT INTO events (user_id, kind, ts) VALUES ($1, $2, now()), ($3, $4, now())",
     "postgres"),
    ("INSERT INTO counters (k, n) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE "
     "SET n = counters.n + 1", "postgres"),
    ("UPDATE users SET last_login = now() WHERE id = $1", "postgres"),
    ("UPDATE jobs SET state = 'done', finished_at = now() WHERE id = $1 AND state = 'running'",
     "postgres"),
    ("DELETE FROM sessions WHERE expires_at < now()", "postgres"),
    ("WITH moved AS (DELETE FROM queue WHERE id = $1 RETURNING *) INSERT INTO done "
     "SELECT * FROM moved", "postgres"),
    ("SELECT nextval('orders_id_seq')", "postgres"),
    ("BEGIN", "postgres"),
    ("COMMIT", "postgres"),
    ("SET LOCAL statement_timeout = '5s'", "postgres"),
    ("EXPLAIN ANALYZE SELECT * FROM orders WHERE user_id = $1", "postgres"),
    ("SELECT * FROM products WHERE sku = %s", "mysql"),
    ("SELECT p.*, c.name FROM products p LEFT JOIN categories c ON c.id = p.category_id "
     "WHERE p.price BETWEEN %s AND %s", "mysql"),
    ("SELECT * FROM carts WHERE user_id = %s FOR UPDATE", "mysql"),
    ("INSERT INTO carts (user_id, product_id, qty) VALUES (%s, %s, %s) "
     "ON DUPLICATE KEY UPDATE qty = qty + VALUES(qty)", "mysql"),
    ("REPLACE INTO settings (k, v) VALUES (%s, %s)", "mysql"),
    ("UPDATE products SET stock = stock - %s WHERE id = %s AND stock >= %s", "mysql"),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM products LIMIT 10", "mysql"),
    ("START TRANSACTION", "mysql"),
    ("SHOW TABLES", "mysql"),
    ("SELECT * FROM notes WHERE id = ?", "sqlite"),
    ("SELECT id, body FROM notes WHERE owner = :owner ORDER BY updated DESC LIMIT 50",
     "sqlite"),
    ("SELECT n.id, t.name FROM notes n JOIN tags t ON t.note_id = n.id WHERE t.name = ?",
     "sqlite"),
    ("INSERT INTO notes (owner, body) VALUES (?, ?)", "sqlite"),
    ("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", "sqlite"),
    ("UPDATE notes SET body = ?, updated = datetime('now') WHERE id = ?", "sqlite"),
    ("DELETE FROM notes WHERE id = ?", "sqlite"),
    ("PRAGMA table_info(notes)", "sqlite"),
    ("SELECT 1", "sqlite"),
)  # fmt: skip


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Load sqlglot from its .py sources, ignoring the sqlglotc extension modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "sqlglot" and not fullname.startswith("sqlglot."):
            return None
        loaders = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path if path is not None else sys.path:
            spec = importlib.machinery.FileFinder(entry or ".", loaders).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def _median_us(samples: list[float], n: int) -> float:
    return statistics.median(samples) / n * 1e6


def _measure(statements: Sequence[tuple[str, str]], rounds: int, hit_calls: int) -> dict[str, Any]:
    """Time hit, miss and bare parse over ``statements`` in this process."""
    import sqlglot

    from kailash_nodes.sql import Classifier

    n = len(statements)
    miss, parse = [], []
    for r in range(rounds):
        fresh = [(f"{q} /* bench round {r} */", d) for q, d in statements]
        classifier = Classifier()
        t0 = time.perf_counter()
        for q, d in fresh:
            classifier.classify(q, d)
        miss.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for q, d in fresh:
            with contextlib.suppress(sqlglot.errors.SqlglotError):  # garbage, MySQL's %s
                sqlglot.parse(q, read=d)
        parse.append(time.perf_counter() - t0)
    classify = Classifier().classify
    for q, d in statements:
        classify(q, d)
    keys = [statements[i % n] for i in range(hit_calls)]
    floor = dict.fromkeys(statements, True)
    hit, dict_floor = [], []
    for _ in range(rounds):  # the minimum: the least disturbed of the rounds
        t0 = time.perf_counter()
        for q, d in keys:
            classify(q, d)
        hit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for key in keys:
            floor.get(key)
        dict_floor.append(time.perf_counter() - t0)
    return {
        "statements": n,
        "hit_ns": min(hit) / hit_calls * 1e9,
        "dict_ns": min(dict_floor) / hit_calls * 1e9,
        "miss_us": _median_us(miss, n),
        "parse_us": _median_us(parse, n),
    }


def _child(build: str, rounds: int, hit_calls: int) -> None:
    """Measure one sqlglot build and print the results as JSON."""
    if build == "pure":
        sys.meta_path.insert(0, _SourceOnly())
    sys.path.insert(0, str(ROOT))
    from sqlglot.tokens import SQLGLOTC_INSTALLED

    from tests.sql.corpus import CORPUS

    if (build == "compiled") != SQLGLOTC_INSTALLED:
        raise SystemExit(f"build {build!r} requested but SQLGLOTC_INSTALLED={SQLGLOTC_INSTALLED}")
    gc.disable()
    sets = {"realistic": REALISTIC, "corpus": tuple((c.sql, c.dialect) for c in CORPUS)}
    result = {name: _measure(s, rounds, hit_calls) for name, s in sets.items()}
    print(json.dumps(result))


def _compiled_available() -> bool:
    from sqlglot.tokens import SQLGLOTC_INSTALLED

    return bool(SQLGLOTC_INSTALLED)


def _run_child(build: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", build, "--rounds", str(args.rounds)]
    cmd += ["--hit-calls", str(args.hit_calls)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{build} run failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep each metric's minimum over the child runs of one build."""
    return {
        name: {key: min(r[name][key] for r in runs) for key in runs[0][name]} for name in runs[0]
    }


def _table(results: dict[str, dict[str, Any]]) -> str:
    head = f"{'sqlglot build':<14}{'set':<11}{'n':>4}{'hit ns':>9}{'dict ns':>9}"
    head += f"{'miss µs':>10}{'parse µs':>10}{'miss/parse':>11}"
    lines = [head, "-" * len(head)]
    for build, sets in results.items():
        for name, m in sets.items():
            ratio = m["miss_us"] / m["parse_us"]
            lines.append(
                f"{build:<14}{name:<11}{m['statements']:>4}{m['hit_ns']:>9.0f}{m['dict_ns']:>9.0f}"
                f"{m['miss_us']:>10.1f}{m['parse_us']:>10.1f}{ratio:>11.2f}"
            )
    if {"pure", "compiled"} <= results.keys():
        for name in results["pure"]:
            pure, comp = results["pure"][name], results["compiled"][name]
            lines.append(
                f"compiled speed-up on a miss ({name}): "
                f"{pure['miss_us'] / comp['miss_us']:.1f}x (parse alone "
                f"{pure['parse_us'] / comp['parse_us']:.1f}x)"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run each available sqlglot build in a child process and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="miss/parse rounds (median)")
    parser.add_argument("--hit-calls", type=int, default=200_000, help="calls in the hit loop")
    parser.add_argument("--repeat", type=int, default=2, help="child runs per build (min)")
    parser.add_argument("--child", choices=("pure", "compiled"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.rounds, args.hit_calls)
        return 0
    builds = ["pure", "compiled"] if _compiled_available() else ["pure"]
    if builds == ["pure"]:
        print("sqlglot[c] (sqlglotc) not installed: measuring the pure-Python build only")
    runs: dict[str, list[dict[str, Any]]] = {build: [] for build in builds}
    for _ in range(args.repeat):  # alternate the builds so drifting load hits both alike
        for build in builds:
            runs[build].append(_run_child(build, args))
    results = {build: _best(r) for build, r in runs.items()}
    print(f"Python {sys.version.split()[0]}, sqlglot {_sqlglot_version()}")
    print(_table(results))
    return 0


def _sqlglot_version() -> str:
    return importlib.metadata.version("sqlglot")


if __name__ == "__main__":
    raise SystemExit(main())
