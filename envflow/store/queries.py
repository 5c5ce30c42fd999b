"""Reading runs, deployments and queues for listings: ``envflow run ls``, ``deployment ls``,
``queue ls``, ``envflow stats``, ``Client.runs`` and the web UI all go through :class:`Queries`.

Run listings are index-backed (``indexes.py``): a page costs a few round trips and reads as
many records as it shows, whether Redis holds a hundred runs or a million. Pages go newest
first; each ends with an opaque cursor that asks for the next, older one.

Importing this module costs no more than redis-py: listings show :class:`RunSummary` rows read
with the standard library; full records (``RunRecord``, pydantic), deployments and queues
(RQ) are imported by the methods that return them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from redis import Redis

from ..errors import EnvflowError, RunNotFound
from ..states import RunState
from ..waits import Waiting
from . import keys, run_hash
from .deployments import DeploymentStore
from .indexes import index_keys
from .run_ids import MIN_PREFIX, is_run_id, is_run_id_prefix

if TYPE_CHECKING:
    from ..models import DeploymentRecord, RunRecord

T = TypeVar("T")
MAX_ROUNDS = 16  # index reads per page at most (more only when many listed runs vanished meanwhile)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run as a listing shows it."""

    id: str
    deployment: str
    state: RunState
    attempt: int
    created_at: float
    updated_at: float  # when it entered its current state
    worker: str | None
    started_at: float | None  # when its latest attempt started
    queue: str = ""
    route: str | None = None  # the env a worker must have to take it (envflow/store/routing.py)
    late: bool = False  # it fired LATE: not started late_after seconds after it was due
    waiting: Waiting | None = None  # why it waits, while PENDING and nothing can take it (waits.py)

    @property
    def short_id(self) -> str:
        return self.id[:8]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: its runs, newest first, and the cursor of the next (older) page,
    None when there is none."""

    runs: list[T]
    cursor: str | None


def _cursor(score: float, run_id: str) -> str:
    return f"{score!r}:{run_id}"


def _parse_cursor(cursor: str) -> tuple[float, str]:
    score, _, run_id = cursor.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = None
    if value is None or not is_run_id(run_id):
        raise EnvflowError(f"invalid listing cursor {cursor!r}: pass back the cursor a page ended with")
    return value, run_id


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing shows: of these deployments (None: every one), in this state, created
    within ``since``..``until`` (Unix seconds), run by this worker, of this queue. Deployments, state
    and times select index entries; worker and queue are checked on each record read."""

    deployments: tuple[str, ...] | None = None
    state: RunState | None = None
    since: float | None = None
    until: float | None = None
    worker: str | None = None
    queue: str | None = None

    @classmethod
    def of(cls, deployment: str | None, state: RunState | None) -> RunFilter:
        return cls(None if deployment is None else (deployment,), state)

    def sources(self) -> list[str]:
        states = [self.state] if self.state else None
        if self.deployments is None:
            return index_keys(None, states)
        return [key for d in self.deployments for key in index_keys(d, states)]

    def keeps(self, item: Any) -> bool:
        """Whether a run read from the sources matches (its state may have changed since it was indexed)."""
        return ((self.state is None or item.state is self.state)
                and (self.worker is None or item.worker == self.worker)
                and (self.queue is None or item.queue == self.queue))


class Queries:
    """Read-only views over envflow's Redis, for listings.

    :param client: a Redis client.
    """

    def __init__(self, client: Redis) -> None:
        self.redis = client

    # Runs

    def runs(self, deployment: str | None = None, state: RunState | None = None, limit: int = 20,
             cursor: str | None = None) -> Page[RunSummary]:
        """Runs newest first, of one deployment and/or in one state, as listing rows.

        :param cursor: the ``cursor`` of the previous page, for the next one.
        """
        return self._page(RunFilter.of(deployment, state), limit, cursor, self._summaries)

    def run_records(self, deployment: str | None = None, state: RunState | None = None, limit: int = 20,
                    cursor: str | None = None) -> Page[RunRecord]:
        """As :meth:`runs`, with each run's full record."""
        return self._page(RunFilter.of(deployment, state), limit, cursor, self._records)

    def find(self, where: RunFilter, limit: int = 20, cursor: str | None = None) -> Page[RunRecord]:
        """Runs newest first that match ``where``, with their full records. A filter on worker or queue
        reads the runs of the other filters and keeps those that match, at most ``MAX_ROUNDS`` reads
        per page: a page can then hold fewer runs than ``limit`` and still have a next one."""
        return self._page(where, limit, cursor, self._records)

    def count(self, deployment: str | None = None, state: RunState | None = None) -> int:
        """How many runs (of a deployment, in a state) Redis holds."""
        return sum(self.state_counts(deployment, [state] if state else None).values())

    def state_counts(self, deployment: str | None = None, states: list[RunState] | None = None) -> dict[RunState, int]:
        """Runs per state (of a deployment), from the indexes' sizes."""
        chosen = states or list(RunState)
        with self.redis.pipeline(transaction=False) as pipe:
            for key in index_keys(deployment, chosen):
                pipe.zcard(key)
            sizes = pipe.execute()
        return dict(zip(chosen, sizes))

    def resolve_id(self, text: str) -> str:
        """A full run id from an id or a unique prefix of at least 4 characters.

        :raises RunNotFound: ``text`` is not shaped like a run id (32 lowercase hex characters) or a
            prefix of one, or no single run matches it.
        """
        if not is_run_id_prefix(text):
            raise RunNotFound(f"no run {text!r}: a run id is 32 hex characters (0-9, a-f); give it or at least "
                              f"{MIN_PREFIX} of its first characters")
        if is_run_id(text) and self.redis.exists(keys.run(text)):
            return text
        found: set[str] = set()
        for key in index_keys():
            found.update(m.decode() for m, _ in self.redis.zscan_iter(key, match=f"{text}*", count=1000))
        matches = [m for m in sorted(found) if self.redis.exists(keys.run(m))]
        if not matches:
            raise RunNotFound(f"no run starts with {text!r}; list runs with `envflow run ls`")
        if len(matches) > 1:
            raise RunNotFound(f"{text!r} matches {len(matches)} runs ({', '.join(matches[:5])}...); give more characters")
        return matches[0]

    def _page(self, where: RunFilter, limit: int, cursor: str | None,
              fetch: Callable[[list[str]], list[T | None]]) -> Page[T]:
        sources = where.sources()
        after = _parse_cursor(cursor) if cursor else None
        out: list[tuple[float, str, T]] = []
        seen: set[str] = set()
        scanned_to, exhausted = after, not sources
        for _ in range(MAX_ROUNDS):
            want = limit - len(out)
            candidates = self._newest(sources, want, after, where.since, where.until)
            if len(candidates) < want:
                exhausted = True
            if not candidates:
                break
            after = scanned_to = (candidates[-1][2], candidates[-1][1])
            fresh = [c for c in candidates if c[1] not in seen]  # a run that moved between two reads
            seen.update(run_id for _, run_id, _ in fresh)
            gone: dict[str, list[str]] = {}
            for (key, run_id, score), item in zip(fresh, fetch([run_id for _, run_id, _ in fresh])):
                if item is None:
                    gone.setdefault(key, []).append(run_id)  # its record expired; the trim has not run yet
                elif where.keeps(item):
                    out.append((score, run_id, item))
            for key, ids in gone.items():
                self.redis.zrem(key, *ids)
            if len(out) >= limit or exhausted:
                break
        if len(out) >= limit:
            next_cursor: str | None = _cursor(out[limit - 1][0], out[limit - 1][1])
        else:  # a filter that keeps few runs: the next page goes on from where this one's reads ended
            next_cursor = None if exhausted or scanned_to is None else _cursor(*scanned_to)
        return Page([item for _, _, item in out[:limit]], next_cursor)

    def _newest(self, sources: list[str], want: int, after: tuple[float, str] | None, since: float | None = None,
                until: float | None = None) -> list[tuple[str, str, float]]:
        """Up to ``want`` index entries ``(key, run id, score)`` over ``sources``, newest first (equal
        scores: higher id first), strictly older than ``after``, created within ``since``..``until``."""
        bounds = [b for b in (after[0] if after else None, until) if b is not None]
        top = repr(min(bounds)) if bounds else "+inf"
        bottom = "-inf" if since is None else repr(since)
        fetch = want
        entries: list[tuple[str, str, float]] = []
        for _ in range(MAX_ROUNDS):
            with self.redis.pipeline(transaction=True) as pipe:  # one consistent view of every source
                for key in sources:
                    pipe.zrevrangebyscore(key, top, bottom, start=0, num=fetch, withscores=True)
                results = pipe.execute()
            rows = sorted(((score, m.decode(), key) for key, found in zip(sources, results) for m, score in found),
                          reverse=True)
            entries = [(key, run_id, score) for score, run_id, key in rows if after is None or (score, run_id) < after]
            if len(entries) >= want or all(len(found) < fetch for found in results):
                return entries[:want]
            fetch *= 2  # entries tied with the cursor's score filled the window
        return entries[:want]

    def _summaries(self, ids: list[str]) -> list[RunSummary | None]:
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hmget(keys.run(run_id), run_hash.SUMMARY_FIELDS)
            rows = pipe.execute()
        out = []
        for run_id, values in zip(ids, rows):
            data = run_hash.summary(run_id, values)
            out.append(None if data is None else RunSummary(**data))
        return out

    def _records(self, ids: list[str]) -> list[RunRecord | None]:

        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(keys.run(run_id))
            hashes = pipe.execute()
        return [run_hash.record(raw, run_id) if raw else None for run_id, raw in zip(ids, hashes)]

    # Deployments and queues

    def deployments(self) -> list[DeploymentRecord]:
        """Every registered deployment, by name."""
        return DeploymentStore(self.redis).all()

    def deployment_exists(self, name: str) -> bool:
        return DeploymentStore(self.redis).exists(name)

    def paused_deployments(self) -> set[str]:
        return DeploymentStore(self.redis).paused()

    def queues(self, extra: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Every queue envflow or RQ knows (and ``extra``): queued, running and scheduled counts, workers, paused."""
        from rq import Queue
        from rq.worker import Worker

        from . import routing
        from .jobs import SERIALIZER, Queues

        paused = {n.decode() for n in self.redis.smembers(keys.PAUSED_QUEUES)}
        rq_names = {q.name for q in Queue.all(connection=self.redis, serializer=SERIALIZER)}
        names = {routing.user_queue(n) for n in rq_names} | {d.queue for d in self.deployments()} | paused | set(extra)
        workers = Worker.all(connection=self.redis, serializer=SERIALIZER)
        queues = Queues(self.redis)
        out = []
        for name in sorted(names):
            # A queue's runs wait in it and in its envs' sub-queues (envflow/store/routing.py).
            parts = [queues.get(n) for n in rq_names if routing.user_queue(n) == name] or [queues.get(name)]
            out.append({
                "name": name,
                "queued": sum(q.count for q in parts),
                "running": sum(q.started_job_registry.count for q in parts),
                "scheduled": sum(q.scheduled_job_registry.count for q in parts),
                "workers": sorted(w.name for w in workers if name in w.queue_names()),
                "paused": name in paused,
            })
        return out

