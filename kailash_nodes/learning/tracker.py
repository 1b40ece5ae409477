"""`QueryPatternTracker`: learn which query shape follows which, per session, and predict.

Sequences are keyed by session (a client session or a workflow run id), never one global
stream, so callers running side by side do not invent transitions between each other's
statements. Transitions are aggregated across sessions into first-order, second-order
and loop contexts (`kailash_nodes.learning.history`); finished sessions that repeat become
run templates (`kailash_nodes.learning.runs`). ``record`` runs on the query path: a few
dict updates, no numpy, no scans, nothing unbounded (`Bounds`). Shapes are normalised
fingerprints; nothing here parses SQL; parameter values are never stored.
``benchmarks/bench_learning.py`` measures what each option buys.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from datetime import datetime
from typing import Any

from kailash_nodes.errors import ConfigError
from kailash_nodes.learning import persist
from kailash_nodes.learning.history import History, NoiseKinds, Scorer
from kailash_nodes.learning.insights import build_insights
from kailash_nodes.learning.options import StrPath, TrackerOptions
from kailash_nodes.learning.prediction import Prediction, as_original_dict
from kailash_nodes.learning.runs import NoiseLevel, RunTemplates, SessionRun
from kailash_nodes.learning.shape import START, ShapeStats
from kailash_nodes.learning.transitions import Followers, wilson_lower_bound
from kailash_nodes.measure import Samples

__all__ = ["QueryPatternTracker"]

logger = logging.getLogger("kailash_nodes.learning")

RUN_TEMPLATE = 4
"""`Prediction.order` when a template of whole runs decided (`kailash_nodes.learning.runs`)."""


class _Session:
    __slots__ = ("last_end", "recent", "run", "suspect")

    def __init__(self, runs: bool) -> None:
        self.recent: History = (START,)  # the last loop_window + 1 shapes, oldest first
        self.last_end = 0.0
        self.suspect = False  # whether the last shape looked like noise when recorded
        self.run = SessionRun() if runs else None  # all its shapes, for run templates


class QueryPatternTracker:
    """Learn query-shape sequences per session; predict the next shapes; report insights.

    Built from a `TrackerOptions` (``QueryPatternTracker(options)``) or from its fields as
    keywords (``QueryPatternTracker(max_shapes=500, run_templates=False)``), not both. A
    ``persist_path`` that exists is loaded at construction. Raises `ConfigError` for a bad
    or unknown option and `PatternFileError` for an unreadable file.
    """

    def __init__(self, options: TrackerOptions | None = None, /, **keywords: Any) -> None:
        if options is None:
            options = TrackerOptions.from_keywords(**keywords)
        elif keywords:
            raise ConfigError(
                f"pass a TrackerOptions or keywords, not both (got keywords {sorted(keywords)})"
            )
        elif not isinstance(options, TrackerOptions):
            raise ConfigError(f"options must be a TrackerOptions (got {type(options).__name__})")
        self.options = options
        self.bounds = options.bounds
        second = options.order == 2
        self.order = options.order
        self.start_context = options.start_context and second
        self.loop_contexts = options.loop_contexts and second
        self.noise_floor = options.noise_floor if second else 0.0
        self.persist_path = options.persist_path
        self.max_run_length = options.max_run_length
        self._clock = options.clock
        self._shapes: OrderedDict[str, ShapeStats] = OrderedDict()  # least recent first
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recent first
        self._starts = Followers()  # sessions' first statements (with start_context)
        learn_kinds = options.learn_noise_kind and self.noise_floor > 0
        self._kinds = NoiseKinds(self.bounds.max_transition_count) if learn_kinds else None
        self._scorer = self._new_scorer()
        runs = options.run_templates and second
        self._runs = RunTemplates(max_length=self.max_run_length) if runs else None
        self._noise_level = NoiseLevel()
        self.counters = dict.fromkeys(persist.COUNTERS, 0)
        if self.persist_path is not None and os.path.exists(self.persist_path):
            self.restore(self.persist_path)

    # -- recording (the query path) -----------------------------------------------------

    def record(
        self,
        shape: str,
        *,
        session: str | None,
        duration_s: float,
        rows: int,
        is_write: bool | None,
        success: bool = True,
        at: float | None = None,
    ) -> None:
        """Record one execution of ``shape`` that ended at ``at`` (default: the clock now).

        With a ``session`` the transition from that session's previous shape is learned,
        with the gap from the end of the previous statement to the start of this one
        (``at - duration_s``); ``session=None`` updates statistics only. ``rows < 0`` and
        ``is_write=None`` mean unknown. Amortised O(1): a few dict updates, no numpy, no
        scan beyond one bounded follower table when it is full and the session's last
        ``loop_window`` shapes (the loop count); after a statement that looked like noise,
        a few dict lookups more to learn whether it had been inserted or replaced a step.
        Raises ValueError for a negative ``duration_s``.
        """
        if duration_s < 0:
            raise ValueError(f"duration_s must be >= 0 (got duration_s={duration_s})")
        end = self._clock() if at is None else at
        self._touch(shape).observe(duration_s, rows, is_write, success)
        self.counters["records"] += 1
        if session is None:
            self.counters["records_without_session"] += 1
            return
        state = self._session(session, end)
        recent = state.recent
        kinds = self._kinds
        if len(recent) > 1:
            if state.suspect and kinds is not None:
                replaced = self._scorer.judge(recent[-2], shape)
                if replaced is not None:
                    kinds.add(replaced=replaced)
            gap_s = max(0.0, end - duration_s - state.last_end)
            state.suspect = self._learn(recent, shape, gap_s)
        elif self.start_context:  # the session's first statement
            b = self.bounds
            starts = self._starts
            edge = starts.add(
                shape, b.max_followers, b.max_transition_count, self._shapes.__contains__
            )
            state.suspect = edge.count < self.noise_floor * starts.total
        state.recent = (
            (*recent[1:], shape) if len(recent) > self.bounds.loop_window else (*recent, shape)
        )
        state.last_end = end
        if state.run is not None:
            state.run.append(shape, self.max_run_length)

    def record_execution(
        self,
        fingerprint: str,
        execution_time_ms: float,
        connection_id: str | None = None,
        parameters: Any = None,
        success: bool = True,
        result_size: int = 0,
        session_id: str | None = None,
        *,
        is_write: bool | None = None,
    ) -> None:
        """Record an execution with the original tracker's signature; forward to `record`.

        ``parameters`` may be a list, tuple, dict or None; values are never stored.
        ``connection_id`` is accepted and ignored: a connection is shared by callers over
        time, so it is no session. Read/write counts as unknown unless ``is_write`` is given.
        """
        del connection_id, parameters  # accepted for compatibility; nothing is kept
        self.record(
            fingerprint,
            session=session_id,
            duration_s=execution_time_ms / 1000.0,
            rows=result_size,
            is_write=is_write,
            success=success,
        )

    def end_session(self, session: str) -> None:
        """Forget ``session``'s position (a finished workflow run); learned counts stay.

        With run templates, its statements count as one finished run. A session that
        expires (``session_ttl``) or is evicted (``max_sessions``) counts as finished too.
        """
        state = self._sessions.pop(session, None)
        if state is not None:
            self._finish(state)

    def _finish(self, state: _Session) -> None:
        runs, run = self._runs, state.run
        if runs is not None and run is not None and run.shapes:
            runs.finish(run.shapes, clean=1.0 - self._noise_level.rate)

    def _touch(self, shape: str) -> ShapeStats:
        shapes = self._shapes
        stats = shapes.get(shape)
        if stats is not None:
            shapes.move_to_end(shape)
            return stats
        stats = shapes[shape] = ShapeStats(self.bounds.duration_window)
        if len(shapes) > self.bounds.max_shapes:
            shapes.popitem(last=False)
            self.counters["shapes_evicted"] += 1
        return stats

    def _session(self, session: str, now: float) -> _Session:
        sessions = self._sessions
        state = sessions.get(session)
        if state is not None:
            sessions.move_to_end(session)
        else:
            state = sessions[session] = _Session(self._runs is not None)
            if len(sessions) > self.bounds.max_sessions:
                self._finish(sessions.popitem(last=False)[1])
                self.counters["sessions_evicted"] += 1
        ttl = self.bounds.session_ttl
        while True:  # least recent first: stop at the first session still fresh
            oldest_key = next(iter(sessions))
            oldest = sessions[oldest_key]
            if oldest is state or now - oldest.last_end <= ttl:
                break
            del sessions[oldest_key]
            self._finish(oldest)
            self.counters["sessions_expired"] += 1
        return state

    def _learn(self, recent: History, shape: str, gap_s: float) -> bool:
        """Learn ``recent[-1]`` -> ``shape``; return whether ``shape`` looks like noise."""
        last = recent[-1]
        prev_stats = self._shapes.get(last)
        if prev_stats is None:  # evicted since the session saw it
            return False
        b = self.bounds
        cap, halve_at = b.max_followers, b.max_transition_count
        live = self._shapes.__contains__
        followers = prev_stats.followers
        edge = followers.add(shape, cap, halve_at, live)
        if edge.gaps is None:
            edge.gaps = Samples(b.gap_window)
        edge.gaps.add(gap_s)
        self.counters["transitions"] += 1
        if self.order == 1:
            return False
        suspect = edge.count < self.noise_floor * followers.total
        before = recent[-2]
        if before != START or self.start_context:
            context = prev_stats.contexts.get(before)
            if context is None:
                context = prev_stats.contexts[before] = self._new_context(prev_stats)
            context.add(shape, cap, halve_at, live)
        if self.loop_contexts:
            window = recent[-b.loop_window :]  # loop_count(recent, len(recent) - 1, window)
            n = max(window.count(last), window.count(before))
            if n >= 2:
                loop = prev_stats.loops.get(n)
                if loop is None:
                    loop = prev_stats.loops[n] = Followers()
                loop.add(shape, cap, halve_at, live)
        return suspect

    def _new_context(self, stats: ShapeStats) -> Followers:
        contexts = stats.contexts
        if len(contexts) >= self.bounds.max_contexts:
            live = self._live_context
            victim = min(contexts, key=lambda prev: (live(prev), contexts[prev].total))
            del contexts[victim]
        return Followers()

    def _live_context(self, prev: str) -> bool:
        return prev in self._shapes or prev == START

    def _new_scorer(self) -> Scorer:
        return Scorer(
            shapes=self._shapes,
            starts=self._starts,
            min_support=self.options.min_context_support,
            window=self.bounds.loop_window,
            loops=self.loop_contexts,
            noise_floor=self.noise_floor,
            kinds=self._kinds,
        )

    # -- predicting ---------------------------------------------------------------------

    def predict_next(
        self, shape: str, *, session: str | None = None, k: int = 3
    ) -> list[Prediction]:
        """Return up to ``k`` likely next shapes after ``shape``, most likely first.

        Without ``session`` (or for a session the tracker does not know, or with
        ``order=1``) the first-order table of ``shape`` decides. With a known ``session``,
        its recent shapes are the history: up to ``shape`` when ``shape`` is its last
        recorded one, else its shapes followed by ``shape`` (a prediction made before
        recording ``shape``). When a run template fits the session, it predicts (``order``
        4; ``support`` = finished runs of its heaviest template). Else the most confident
        of the first-order, second-order and loop contexts predicts, mixed with what
        follows the statements before when ``shape`` or the one before it looks like noise
        (see `kailash_nodes.learning.history`); each `Prediction`'s ``order`` says which
        context the heaviest hypothesis used (1, 2, 3; 0 for a noise back-off) and
        ``support`` how many observations it had. Returns [] for an unknown shape, or when
        nothing ever followed any context looked at.
        """
        stats = self._shapes.get(shape)
        if stats is None:
            return []
        shapes = self._shapes
        from_runs = self._from_runs(shape, session)
        if from_runs is not None:
            probabilities, support, order = from_runs
        else:
            mixture = self._scorer.predict(*self._history(shape, session))
            if mixture is None:
                return []
            probabilities, support, order = mixture
        candidates = [(-p, name) for name, p in probabilities.items() if name in shapes]
        # k=1 is the router's case: no sort
        ranked = [min(candidates)] if k == 1 and candidates else sorted(candidates)[:k]
        edges = stats.followers.edges
        predictions = []
        for minus_p, name in ranked:
            first = edges.get(name)
            predictions.append(
                Prediction(
                    shape=name,
                    probability=-minus_p,
                    confidence=wilson_lower_bound(-minus_p * support, support),
                    expected_delay_s=first.gaps.median() if first and first.gaps else None,
                    support=support,
                    order=order,
                )
            )
        return predictions

    def predict_next_queries(
        self, fingerprint: str, time_window_minutes: float = 5
    ) -> list[dict[str, Any]]:
        """Return the original tracker's prediction dicts (first order, up to 10).

        Keys: ``fingerprint``, ``probability``, ``confidence`` (Wilson lower bound, not the
        original's ``min(0.9, 2p)``), ``expected_time`` (a datetime: now + median delay),
        plus ``expected_delay_s`` and ``support``. Shapes expected later than
        ``time_window_minutes`` from now are left out; so are the original's invented
        hourly/daily predictions.
        """
        now = datetime.now()
        window_s = time_window_minutes * 60.0
        return [
            as_original_dict(p, now)
            for p in self.predict_next(fingerprint, k=10)
            if (p.expected_delay_s or 0.0) <= window_s
        ]

    def _from_runs(
        self, shape: str, session: str | None
    ) -> tuple[dict[str, float], int, int] | None:
        """Return the run templates' prediction for ``session`` when one fits it."""
        runs = self._runs
        state = self._sessions.get(session) if session is not None else None
        if runs is None or state is None or state.run is None:
            return None
        kinds = self._kinds
        noise = self._noise_level.rate
        inserted, replaced = kinds.odds if kinds is not None else (1.0, 1.0)
        rates = (noise * replaced / (inserted + replaced), noise * inserted / (inserted + replaced))
        found = state.run.predict(runs, shape, rates, self._noise_level, len(self._shapes))
        if found is None:
            return None
        ranked, belief = found
        return dict(ranked), runs.support(belief), RUN_TEMPLATE

    def _history(self, shape: str, session: str | None) -> tuple[History, bool]:
        """Return the session's recent shapes up to ``shape``, and whether it was recorded."""
        if self.order == 1 or session is None:
            return (shape,), False
        state = self._sessions.get(session)
        if state is None:
            return (shape,), False
        recent = state.recent
        if recent[-1] == shape:
            return recent, True
        if len(recent) > self.bounds.loop_window:
            return (*recent[1:], shape), False
        return (*recent, shape), False

    # -- reporting and persistence ------------------------------------------------------

    def insights(self, top: int = 10) -> dict[str, Any]:
        """Return workload insights: the ``top`` shapes by count and totals.

        Per shape: count, errors, reads/writes and kind, p50/p95 duration in ms over the
        kept window (with its sample count), mean rows (with its sample count), and common
        successors with probabilities. Totals carry records, shapes, live sessions,
        transitions, evictions and the bounds, and with ``learn_noise_kind`` the
        ``noise_kinds`` counts: how often a statement that looked like noise turned out
        inserted or replacing a step (decayed, see `kailash_nodes.learning.history`).
        With run templates, ``run_templates``: finished runs counted since start (or
        load), distinct sequences kept, templates now, statements fed to a session's
        belief that it explained as steps or only as noise (decayed) and the noise rate
        estimated from them (`kailash_nodes.learning.runs`).
        """
        return build_insights(self._shapes, top, self._totals())

    def _totals(self) -> dict[str, Any]:
        totals = {
            **self.counters,
            "shapes": len(self._shapes),
            "live_sessions": len(self._sessions),
            "bounds": persist.bounds_dict(self.bounds),
        }
        if self._kinds is not None:
            totals["noise_kinds"] = {
                "inserted": self._kinds.inserted,
                "replaced": self._kinds.replaced,
            }
        if self._runs is not None:
            level = self._noise_level
            totals["run_templates"] = {
                "finished_runs": self._runs.finished,
                "counted_sequences": len(self._runs.candidates),
                "templates": len(self._runs.templates),
                "statements_explained": level.explained,
                "statements_surprised": level.surprised,
                "noise_rate": level.rate,
            }
        return totals

    def save(self, path: StrPath | None = None) -> None:
        """Write what was learned to ``path`` (default ``persist_path``) atomically.

        The JSON is written to a temporary file in the same directory, fsynced, then
        moved over ``path`` with `os.replace`, so a crash leaves the old file or the new
        one, never half of one. Raises ConfigError when there is no path.
        """
        target = self._save_target(path)
        document = self._document()
        persist.write_atomic(target, document)
        logger.debug("saved %d query shapes to %s", len(self._shapes), target)

    async def save_async(self, path: StrPath | None = None) -> None:
        """Like `save`, but await the file write in a worker thread.

        The document is built on the event loop first, so ``record`` calls made while the
        write is in flight cannot tear it.
        """
        target = self._save_target(path)
        document = self._document()
        await asyncio.to_thread(persist.write_atomic, target, document)

    def _document(self) -> dict[str, Any]:
        runs = self._runs.encode(self._noise_level) if self._runs is not None else None
        return persist.encode(self._shapes, self.counters, self._starts, self._kinds, runs)

    def _save_target(self, path: StrPath | None) -> StrPath:
        target = path if path is not None else self.persist_path
        if target is None:
            raise ConfigError("save() needs a path: pass one or set persist_path")
        return target

    @classmethod
    def load(
        cls, path: StrPath, options: TrackerOptions | None = None, /, **keywords: Any
    ) -> QueryPatternTracker:
        """Return a tracker built with ``options`` (or ``keywords``) holding what ``path`` holds.

        The bounds apply to the loaded data (the most recent shapes, the
        strongest followers and the latest samples are kept). Raises `PatternFileError`
        for a missing, corrupt or unknown-version file.
        """
        tracker = cls(options, **keywords)
        tracker.restore(path)
        return tracker

    def restore(self, path: StrPath) -> None:
        """Replace what this tracker learned with what ``path`` holds, cut to its bounds.

        Live sessions are not touched. Raises `PatternFileError` for a missing, corrupt or
        unknown-version file.
        """
        self._shapes, self.counters, self._starts, kinds = persist.read(
            path, self.bounds, self._runs, self._noise_level
        )
        if self._kinds is not None:
            self._kinds = kinds
        self._scorer = self._new_scorer()
        logger.debug("loaded %d query shapes from %s", len(self._shapes), path)
