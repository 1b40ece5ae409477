"""Query-sequence learning: top-1 accuracy with each component removed, call costs, and
what pre-warming saves on an A -> B -> C workflow end to end.

Workload: six workflow templates of 4-8 statement shapes over a 24-shape vocabulary that
share shapes at different positions (``--random-templates SEED``: six random templates
instead). Each workflow run is a session; ``--concurrency`` runs interleave in the recorded
stream, as on a shared pool. Noise (``--noise``, default 0.2): each step is, with
probability noise/2, replaced by a random shape and, with probability noise/2, preceded by
an inserted one ("mixed"); the ``replace`` and ``insert`` columns use one kind only. The
"no ends" columns never end a session (a caller that does not say when a run finished), so
no run template forms and the transition tables alone predict.

Accuracy is prequential: before each statement of a run (after its first) the tracker
predicts from the run's previous statement; top-1 is correct when it is the statement that
came next. The first ``--warmup`` runs only train. Rows: the default, then the default
minus one component (in brackets: points vs the default) - the ablation that decides what
stays on by default; the last row is the Bayes-optimal predictor for this generator
(templates, shares and noise model known), the ceiling of each column.

Pre-warming (PostgreSQL, ``--pg-dsn`` or KN_PG_DSN; skipped without): a pool of one
connection with ``enable_query_routing=True`` and a router; ``--train`` sessions of
A -> B -> C (point selects with different column lists) teach the pool that B follows A
and C follows B. Each trial drops every prepared statement and runs A, B, C in a fresh
session, timing each ``router.process`` call and their sum (the workflow end to end).
Trials alternate ``router.pattern_learning`` on/off (the order flips every pair).

    python benchmarks/bench_learning.py                  # ~40 s on a small VM
    python benchmarks/bench_learning.py --runs 1000 --seeds 1
    python benchmarks/bench_learning.py --latency-only --trials 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kailash_nodes when not installed

from _common import create_rows_table, percentile

from kailash_nodes.learning import QueryPatternTracker

TEMPLATES: dict[str, tuple[list[str], float]] = {  # name -> (shapes, share of runs)
    "checkout": (
        [
            "SELECT sessions WHERE token=?",
            "SELECT users WHERE id=?",
            "SELECT cart_items WHERE user_id=?",
            "SELECT products WHERE id IN (?)",
            "UPDATE stock SET qty=qty-? WHERE product_id=?",
            "INSERT INTO orders",
            "INSERT INTO audit_log",
            "DELETE FROM cart_items WHERE user_id=?",
        ],
        0.25,
    ),
    "profile": (
        [
            "SELECT sessions WHERE token=?",
            "SELECT profiles WHERE user_id=?",
            "SELECT users WHERE id=?",
            "SELECT preferences WHERE user_id=?",
            "SELECT orders WHERE user_id=? ORDER BY created LIMIT ?",
        ],
        0.20,
    ),
    "report": (
        [
            "SELECT count(*) FROM orders WHERE created>?",
            "SELECT sum(total) FROM orders WHERE created>?",
            "SELECT products ORDER BY sold DESC LIMIT ?",
            "INSERT INTO audit_log",
            "INSERT INTO reports",
        ],
        0.10,
    ),
    "signup": (
        [
            "SELECT users WHERE email=?",
            "INSERT INTO users",
            "INSERT INTO preferences",
            "INSERT INTO audit_log",
        ],
        0.15,
    ),
    "search": (
        [
            "SELECT products WHERE name LIKE ?",
            "SELECT products WHERE id=?",
            "SELECT reviews WHERE product_id=?",
            "SELECT products WHERE id=?",
            "SELECT reviews WHERE product_id=?",
            "SELECT products WHERE id=?",
            "SELECT reviews WHERE product_id=?",
            "INSERT INTO search_log",
        ],
        0.20,
    ),
    "settings": (
        [
            "SELECT api_keys WHERE user_id=?",
            "SELECT users WHERE id=?",
            "UPDATE users SET ... WHERE id=?",
            "INSERT INTO audit_log",
            "SELECT users WHERE id=?",
        ],
        0.10,
    ),
}
VOCAB = sorted({s for shapes, _ in TEMPLATES.values() for s in shapes})
ADHOC = [f"SELECT adhoc_{i} WHERE x=?" for i in range(30)]


def random_templates(
    seed: int, count: int = 6, vocab: int = 24
) -> dict[str, tuple[list[str], float]]:
    """Return ``count`` random templates of 4-9 statements drawn with replacement from
    ``vocab`` shapes (so shapes repeat within and across templates), with random shares.

    >>> t = random_templates(1)
    >>> len(t), all(4 <= len(steps) <= 9 for steps, _ in t.values())
    (6, True)
    >>> round(sum(share for _, share in t.values()), 9)
    1.0
    """
    rng = random.Random(seed)
    words = [f"SELECT t{i} WHERE id=?" for i in range(vocab)]
    raw = {
        f"random{j}": ([rng.choice(words) for _ in range(rng.randint(4, 9))], rng.uniform(0.5, 2))
        for j in range(count)
    }
    total = sum(weight for _, weight in raw.values())
    return {name: (steps, weight / total) for name, (steps, weight) in raw.items()}


def use_templates(templates: dict[str, tuple[list[str], float]]) -> None:
    """Make ``templates`` the workload's (the generator and the Oracle read these globals)."""
    global TEMPLATES, VOCAB
    TEMPLATES = templates
    VOCAB = sorted({s for shapes, _ in templates.values() for s in shapes})


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded statement: its run, shape, end time, and whether noise made it."""

    run: str
    shape: str
    at: float
    noise: bool
    last: bool = False  # the run's last statement: the caller ends the session after it


# How a noise rate splits into (replaced, inserted) per step, by noise kind.
NOISE_KINDS = {
    "mixed": lambda noise: (noise / 2, noise / 2),  # the headline model
    "replace": lambda noise: (noise, 0.0),  # noise statements stand in for steps
    "insert": lambda noise: (0.0, noise),  # noise statements come between steps
}


def run_shapes(
    template: list[str], noise: float, rng: random.Random, kind: str = "mixed"
) -> list[tuple[str, bool]]:
    """Return one run's (shape, is_noise) statements: the template with noise applied."""
    out: list[tuple[str, bool]] = []
    pool = VOCAB + ADHOC
    replace, insert = NOISE_KINDS[kind](noise)
    for step in template:
        roll = rng.random()
        if roll < replace:
            out.append((rng.choice([s for s in pool if s != step]), True))  # substitution
            continue
        if roll < replace + insert:
            out.append((rng.choice(pool), True))  # insertion before the step
        out.append((step, False))
    return out


def workload(
    runs: int, concurrency: int, noise: float, seed: int, kind: str = "mixed"
) -> Iterator[Event]:
    """Yield the interleaved statements of ``runs`` workflow runs, ``concurrency`` at a time."""
    rng = random.Random(seed)
    names = list(TEMPLATES)
    weights = [TEMPLATES[n][1] for n in names]
    started, clock = 0, 0.0
    active: list[tuple[str, list[tuple[str, bool]]]] = []
    while active or started < runs:
        while len(active) < concurrency and started < runs:
            template = TEMPLATES[rng.choices(names, weights)[0]][0]
            active.append((f"run-{seed}-{started}", run_shapes(template, noise, rng, kind)))
            started += 1
        i = rng.randrange(len(active))
        run, remaining = active[i]
        shape, is_noise = remaining.pop(0)
        clock += rng.expovariate(1000.0)  # ~1 ms between statements on the pool
        yield Event(run, shape, clock, is_noise, last=not remaining)
        if not remaining:
            active.pop(i)


@dataclass
class Score:
    """Correct top-1 predictions over scored positions, all and clean targets only."""

    hits: int = 0
    n: int = 0
    clean_hits: int = 0
    clean_n: int = 0

    def add(self, hit: bool, *, clean: bool) -> None:
        """Count one scored prediction."""
        self.hits += hit
        self.n += 1
        if clean:
            self.clean_hits += hit
            self.clean_n += 1

    def merge(self, other: Score) -> None:
        """Add ``other``'s counts to these."""
        self.hits += other.hits
        self.n += other.n
        self.clean_hits += other.clean_hits
        self.clean_n += other.clean_n


@dataclass(frozen=True, slots=True)
class Model:
    """A tracker configuration under test; ``per_session=False`` is one global stream;
    ``oracle`` replaces the tracker with `Oracle`."""

    name: str
    options: dict[str, Any]
    per_session: bool = True
    oracle: bool = False


# Each component the default enables -> the option that turns it off.
ABLATIONS: dict[str, dict[str, Any]] = {
    "run templates": {"run_templates": False},
    "learned noise kind": {"learn_noise_kind": False},
    "noise back-off": {"noise_floor": 0},
    "loop contexts": {"loop_contexts": False},
    "session-start context": {"start_context": False},
    "second order (and all above)": {"order": 1},
}
MODELS = [
    Model("global stream, 1st order (the original)", {"order": 1}, per_session=False),
    Model("default", {}),
    *(Model(f"  default minus {name}", off) for name, off in ABLATIONS.items()),
    Model("Bayes-optimal, generator known", {}, oracle=True),
]


class Oracle:
    """The best possible predictor of this workload: it knows the templates, their shares
    and the noise model, and keeps each run's exact posterior over (template, steps done,
    an inserted statement pending) to predict the most probable next statement.
    """

    def __init__(self, noise: float, kind: str = "mixed") -> None:
        self.replace, self.insert = NOISE_KINDS[kind](noise)
        self.pool_size = len(VOCAB + ADHOC)
        self.beliefs: dict[str, dict[tuple[str, int, bool], float]] = {}

    def _belief(self, run: str) -> dict[tuple[str, int, bool], float]:
        if run not in self.beliefs:
            self.beliefs[run] = {(name, 0, False): share for name, (_, share) in TEMPLATES.items()}
        return self.beliefs[run]

    def predict_next(self, shape: str, *, session: str, k: int = 1) -> list[SimpleNamespace]:
        """Return the most probable next statement (noise spreads evenly over the pool)."""
        del shape, k
        rep, ins, pool = self.replace, self.insert, self.pool_size
        score: dict[str, float] = defaultdict(float)  # a shape's probability, less a constant
        for (name, j, pending), p in self._belief(session).items():
            steps = TEMPLATES[name][0]
            if pending:
                score[steps[j]] += p
            elif j < len(steps):  # a replacement is any shape but the step
                score[steps[j]] += p * (1 - rep - ins - rep / (pool - 1))
        if not score:
            return []
        best = max(score.items(), key=lambda item: (item[1], item[0]))[0]
        return [SimpleNamespace(shape=best)]

    def end_session(self, session: str) -> None:
        """Forget a finished run's posterior."""
        self.beliefs.pop(session, None)

    def record(self, shape: str, *, session: str, **_: Any) -> None:
        """Update ``session``'s posterior with ``shape``."""
        rep, ins, pool = self.replace, self.insert, self.pool_size
        after: dict[tuple[str, int, bool], float] = defaultdict(float)
        for (name, j, pending), p in self._belief(session).items():
            steps = TEMPLATES[name][0]
            if pending:
                if steps[j] == shape:
                    after[(name, j + 1, False)] += p
            elif j < len(steps):
                step = p * (1 - rep - ins) if shape == steps[j] else p * rep / (pool - 1)
                after[(name, j + 1, False)] += step
                after[(name, j, True)] += p * ins / pool
        total = sum(after.values())
        self.beliefs[session] = {key: p / total for key, p in after.items() if p > 1e-12 * total}


def evaluate(
    model: Model,
    events: list[Event],
    scored_from: int,
    noise: float,
    kind: str = "mixed",
    ends: bool = True,
) -> Score:
    """Score ``model`` prequentially over ``events`` (made with ``noise`` of ``kind``); runs
    numbered below ``scored_from`` only train; ``ends=False``: sessions are never ended
    (as a caller that does not say when a run finished), so no run template forms."""
    tracker: Any = Oracle(noise, kind) if model.oracle else QueryPatternTracker(**model.options)
    last: dict[str, str] = {}
    score = Score()
    for e in events:
        session = e.run if model.per_session else "global"
        prev = last.get(e.run)
        if prev is not None and int(e.run.rsplit("-", 1)[1]) >= scored_from:
            top = tracker.predict_next(prev, session=session, k=1)
            score.add(bool(top) and top[0].shape == e.shape, clean=not e.noise)
        tracker.record(e.shape, session=session, duration_s=0.0005, rows=1, is_write=False, at=e.at)
        last[e.run] = e.shape
        if e.last and model.per_session and ends:
            tracker.end_session(session)
    return score


def call_costs_us(options: dict[str, Any], n: int, seed: int) -> tuple[float, float]:
    """Return µs per ``record`` and per ``predict_next(k=1)`` over ``n`` calls each.

    As on the router's path: each statement is recorded, then the next one predicted from
    it, and a run's session is ended after its last statement (so run templates form and
    are used). Each call is timed on its own (the clock read, ~0.1 µs, included). Best of
    three passes over a noisy interleaved workload, each on a fresh tracker: the floor,
    not the machine's noise.
    """
    events = list(workload(n // 5, 8, 0.2, seed))[:n]
    clock = time.perf_counter
    best_record = best_predict = float("inf")
    for _ in range(3):
        tracker = QueryPatternTracker(**options)
        record, predict, end = tracker.record, tracker.predict_next, tracker.end_session
        recording = predicting = 0.0
        for e in events:
            t0 = clock()
            record(e.shape, session=e.run, duration_s=0.0005, rows=1, is_write=False, at=e.at)
            t1 = clock()
            predict(e.shape, session=e.run, k=1)
            t2 = clock()
            recording += t1 - t0
            predicting += t2 - t1
            if e.last:
                end(e.run)
        best_record, best_predict = min(best_record, recording), min(best_predict, predicting)
    return best_record / len(events) * 1e6, best_predict / len(events) * 1e6


def worst_case_memory_mb() -> float:
    """Return the MB (tracemalloc) a default tracker holds when every bound is full:
    2000 shapes with full duration windows and 8 followers each with full gap windows,
    ~1000 counted runs of 20 statements, and 10000 live sessions of 64 statements."""
    import tracemalloc

    tracemalloc.start()
    tracker = QueryPatternTracker()
    record = tracker.record
    shapes = [f"SELECT t{i} WHERE id=?" for i in range(2000)]
    rng, now = random.Random(1), 0.0
    for i, shape in enumerate(shapes):
        for j in range(8):
            for k in range(16):
                now += 0.001
                session = f"w{i}-{j}-{k}"
                for s in (shape, shapes[(i + j + 1) % len(shapes)]):
                    record(s, session=session, duration_s=0.001, rows=1, is_write=False, at=now)
                tracker.end_session(session)
    for run in range(1000):
        for s in rng.sample(shapes, 20):
            now += 0.001
            record(s, session=f"run{run}", duration_s=0.001, rows=1, is_write=False, at=now)
        tracker.end_session(f"run{run}")
    for live in range(10_000):
        for s in rng.choices(shapes, k=64):
            now += 0.00001
            record(s, session=f"live{live}", duration_s=0.001, rows=1, is_write=False, at=now)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held / 1e6


def original_record_cost_us(n: int, seed: int) -> float | None:
    """Return µs per ``record_execution`` of the kailash SDK's tracker, None if missing."""
    try:
        from kailash.core.ml.query_patterns import (  # type: ignore[import-untyped,unused-ignore]
            QueryPatternTracker as Original,
        )
    except ImportError:
        return None
    events = list(workload(n // 5, 8, 0.2, seed))[:n]
    tracker = Original()
    start = time.perf_counter()
    for e in events:
        tracker.record_execution(e.shape, 0.5, e.run, {}, True, 1)
    return (time.perf_counter() - start) / len(events) * 1e6


def accuracy_table(args: argparse.Namespace) -> None:
    """Print the accuracy of each model on every workload, summed over seeds, with each
    cell's difference from the default in points (the ablation: what a component buys).

    The headline noise is ``mixed``; the ``replace`` and ``insert`` columns score the same
    models on streams whose noise only replaces steps, or only comes between them.
    """
    others = [k for k in args.noise_kinds if k != "mixed"]
    columns = ["deterministic", "mixed", "clean", *others, "no ends", "no ends, det."]
    titles = ["deterministic", "noisy: all", "clean targets", *(k + ": all" for k in others)]
    titles += ["no ends: noisy", "no ends: det."]
    header = f"{'model':<42}" + "".join(f" {t:>14}" for t in titles)
    print(header)
    print("-" * len(header))
    streams = {
        (noise, kind): [
            list(workload(args.runs, args.concurrency, noise, seed, kind)) for seed in args.seeds
        ]
        for noise, kind in [(0.0, "mixed"), (args.noise, "mixed")]
        + [(args.noise, k) for k in others]
    }
    sessions_never_end = {"no ends": (args.noise, "mixed"), "no ends, det.": (0.0, "mixed")}
    default: dict[str, float] = {}
    scores: dict[str, Score] = {}
    for model in MODELS:
        for (noise, kind), runs in streams.items():
            key = "deterministic" if noise == 0.0 else kind
            scores[key] = Score()
            for events in runs:
                scores[key].merge(evaluate(model, events, args.warmup, noise, kind))
        for key, stream in sessions_never_end.items():
            scores[key] = Score()
            for events in streams[stream]:
                scores[key].merge(evaluate(model, events, args.warmup, *stream, ends=False))
        shares = {k: s.hits / s.n if s.n else 0.0 for k, s in scores.items()}
        noisy = scores["mixed"]
        shares["clean"] = noisy.clean_hits / noisy.clean_n if noisy.clean_n else 0.0
        if model.name == "default":
            default = shares
        cells = [_cell(shares[c], default.get(c), model.name == "default") for c in columns]
        print(f"{model.name:<42}" + "".join(f" {c:>14}" for c in cells))
    det, noisy = scores["deterministic"], scores["mixed"]
    print(
        f"(in brackets: points vs the default.) scored predictions: {det.n} deterministic, "
        f"{noisy.n} noisy ({noisy.clean_n} with a clean target), seeds {args.seeds}.\n"
        f"Ceiling of 'noisy: all' (share of targets that are workflow steps, not noise): "
        f"{pct(noisy.clean_n, noisy.n)}"
        + "".join(f"; {k}: {pct(scores[k].clean_n, scores[k].n)}" for k in others)
        + "."
    )


def _cell(share: float, default: float | None, is_default: bool) -> str:
    if default is None or is_default:
        return f"{100 * share:.1f}%"
    return f"{100 * share:.1f}% ({100 * (share - default):+.1f})"


COLUMNS = ("id", "id, a", "id, a, b")  # A, B, C: point selects, one distinct statement each


def latency_steps(table: str) -> list[str]:
    """Return the three statements of the A -> B -> C workflow on ``table``."""
    return [f"SELECT {cols} FROM {table} WHERE id = $1" for cols in COLUMNS]


@dataclass
class Trial:
    """One A -> B -> C run: µs per router.process call, cache hits, statement shapes."""

    us: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)


async def latency_trial(router: Any, steps: list[str], session: str, key: int) -> Trial:
    """Drop every prepared statement, run ``steps`` in a fresh ``session``; time each call."""
    await router.invalidate_cache()
    trial = Trial()
    for sql in steps:
        start = time.perf_counter()
        res = await router.process({"query": sql, "parameters": [key], "session_id": session})
        trial.us.append((time.perf_counter() - start) * 1e6)
        if not res["success"]:
            raise RuntimeError(f"{sql!r} failed: {res['error']}")
        trial.hits.append(res["routing_metadata"]["cache_hit"])
        trial.fingerprints.append(res["routing_metadata"]["fingerprint"])
    await router.process({"operation": "end_session", "session_id": session})
    return trial


async def prewarm_latency(args: argparse.Namespace) -> None:
    """Time the first call of a predicted statement on a connection, pre-warmed or not.

    One pool connection, so every statement of a trial runs on it; each trial first drops
    every prepared statement, so A, B and C are each that connection's first call of their
    statement. With ``pattern_learning`` on (and ``prepare_predicted=True``), after A's
    call has returned its connection the router prepares B on it in the background (and C
    after B), unless the session's next statement has already arrived; off, each pays its
    own prepare round trip when it runs. The "cache_hit as expected" line counts the
    trials where the prediction landed in time. Modes alternate trial by trial (the order
    flips every pair) on the same router.
    """
    from kailash_nodes import LocalRuntime, QueryRouterNode, WorkflowConnectionPool

    began = time.perf_counter()
    table = f"kn_bench_learning_{os.getpid()}"
    steps = latency_steps(table)
    pool = WorkflowConnectionPool(
        name="db_pool", connection_string=args.pg_dsn, min_connections=1, max_connections=1,
        enable_query_routing=True,
    )  # fmt: skip
    router = QueryRouterNode(
        name="router", connection_pool="db_pool", pattern_learning=False, prepare_predicted=True
    )
    runtime = LocalRuntime()
    runtime.register_node("db_pool", pool)
    runtime.register_node("router", router)
    rng = random.Random(11)
    expected = {True: [False, True, True], False: [False, False, False]}
    times: dict[bool, list[list[float]]] = {True: [], False: []}
    surprises = {True: 0, False: 0}
    load = os.getloadavg()[0]
    async with runtime:
        await create_rows_table(router, table)
        try:
            for run in range(args.train):  # learning off: the pool records, nothing prepared
                trial = await latency_trial(router, steps, f"train-{run}", run % 100 + 1)
            assert pool.pattern_tracker is not None
            predicted = pool.predict_next_query(trial.fingerprints[0], f"train-{args.train - 1}")
            print(
                f"after {args.train} training runs, the pool predicts after A: "
                + ("B" if predicted == steps[1] else repr(predicted))
            )
            for i in range(20 + 2 * args.trials):  # 20 warm-up trials, then the measured ones
                mode = (i % 2 == 0) != (i // 2 % 2 == 1)  # on/off, off/on, on/off, ...
                if i == 20:
                    before = (await router.get_metrics())["pattern_learning"]
                router.pattern_learning = mode
                trial = await latency_trial(
                    router, steps, f"{'on' if mode else 'off'}-{i}", rng.randint(1, 100)
                )
                if i >= 20:
                    times[mode].append(trial.us)
                    surprises[mode] += trial.hits != expected[mode]
            after = (await router.get_metrics())["pattern_learning"]
        finally:
            router.pattern_learning = False
            await router.process({"query": f"DROP TABLE IF EXISTS {table}"})
    n = args.trials
    print(
        f"PostgreSQL, pool of 1 connection, {n} trials per mode interleaved, A -> B -> C point "
        f"selects; µs per router.process call (wall clock); load avg {load:.2f} -> "
        f"{os.getloadavg()[0]:.2f}"
    )
    rows = {
        "A  (cold in both; with: also prepares B)": [0],
        "B  predicted (with: prepared; also prepares C)": [1],
        "C  predicted, last (with: prepared)": [2],
        "A+B": [0, 1],
        "A+B+C": [0, 1, 2],
    }
    header = (
        f"{'call':<47} {'with p50':>9} {'p90':>7} {'without p50':>12} {'p90':>7} "
        f"{'with/without p50':>17} {'paired':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, idx in rows.items():
        on = [sum(t[j] for j in idx) for t in times[True]]
        off = [sum(t[j] for j in idx) for t in times[False]]
        paired = statistics.median(a / b for a, b in zip(on, off, strict=True))
        print(
            f"{label:<47} {percentile(on, 0.5):>9.0f} {percentile(on, 0.9):>7.0f} "
            f"{percentile(off, 0.5):>12.0f} {percentile(off, 0.9):>7.0f} "
            f"{percentile(on, 0.5) / percentile(off, 0.5):>17.2f} {paired:>7.2f}"
        )
    print(
        "cache_hit as expected (with: A miss, B and C hits; without: all misses) in "
        f"{n - surprises[True]}/{n} and {n - surprises[False]}/{n} trials"
    )
    issued = after["prewarms"] - before["prewarms"]
    used = after["prewarms_used"] - before["prewarms_used"]
    print(
        f"pre-warms over the measured trials (get_metrics()['pattern_learning']): issued "
        f"{issued}, used {used}, wasted or pending {issued - used}, errors "
        f"{after['prewarm_errors'] - before['prewarm_errors']}; totals since start: {after}"
    )
    print(f"section took {time.perf_counter() - began:.1f} s")


def pct(hits: int, n: int) -> str:
    """Format ``hits / n`` as a percentage."""
    return f"{100.0 * hits / n:.1f}%" if n else "n/a"


def main() -> None:
    """Parse options; print the accuracy table, the call costs and the pre-warming latency."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="workflow runs per stream")
    parser.add_argument("--warmup", type=int, default=300, help="runs that only train")
    parser.add_argument("--concurrency", type=int, default=8, help="runs in flight at once")
    parser.add_argument("--noise", type=float, default=0.2, help="noise rate per step")
    parser.add_argument(
        "--noise-kinds",
        default="mixed,replace,insert",
        help="comma-separated noise kinds to score (mixed is the headline and always scored)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--random-templates",
        type=int,
        metavar="SEED",
        help="replace the six workflow templates with six random ones made from SEED",
    )
    parser.add_argument("--record-calls", type=int, default=50_000)
    parser.add_argument("--pg-dsn", default=os.environ.get("KN_PG_DSN"))
    parser.add_argument("--trials", type=int, default=1000, help="latency trials per mode")
    parser.add_argument("--train", type=int, default=10, help="A->B->C runs that train")
    parser.add_argument(
        "--latency-only", action="store_true", help="only the pre-warming latency section"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also measure a full tracker's memory (~1 min)"
    )
    args = parser.parse_args()
    args.noise_kinds = list(dict.fromkeys(["mixed", *args.noise_kinds.split(",")]))
    if unknown := set(args.noise_kinds) - set(NOISE_KINDS):
        parser.error(f"unknown noise kind(s) {sorted(unknown)}; choose from {list(NOISE_KINDS)}")
    if args.trials < 1 or args.train < 3:
        parser.error("--trials must be >= 1 and --train >= 3 (a prediction needs support 3)")
    if not args.latency_only:
        print(
            f"== top-1 next-statement accuracy: {args.runs} runs x {len(args.seeds)} seeds, "
            f"{args.concurrency} interleaved, noise {args.noise:.0%} =="
        )
        if args.random_templates is not None:
            use_templates(random_templates(args.random_templates))
            print(f"random templates (seed {args.random_templates}):")
            for name, (steps, share) in TEMPLATES.items():
                print(f"  {name} ({share:.0%}): " + " > ".join(s.split()[1] for s in steps))
        accuracy_table(args)
        print()
        print(f"== call cost: µs per call, best of 3 passes of {args.record_calls} calls ==")
        for label, options in (
            ("the default", {}),
            *((f"default minus {name}", off) for name, off in ABLATIONS.items()),
        ):
            rec, pred = call_costs_us(options, args.record_calls, 7)
            print(
                f"kailash_nodes QueryPatternTracker({label}): record {rec:.2f} µs, "
                f"predict_next(k=1) {pred:.2f} µs"
            )
        original = original_record_cost_us(args.record_calls, 7)
        print(
            "kailash SDK QueryPatternTracker.record_execution: "
            + (f"{original:.2f} µs (one pass)" if original is not None else "not installed")
        )
        if args.memory:
            print(f"memory of a default tracker, every bound full: {worst_case_memory_mb():.1f} MB")
        print()
    print("== first-call latency of the predicted statement, with vs without pre-warming ==")
    if not args.pg_dsn:
        print("skipped: no PostgreSQL DSN (set KN_PG_DSN or pass --pg-dsn)")
        return
    asyncio.run(prewarm_latency(args))


if __name__ == "__main__":
    main()
