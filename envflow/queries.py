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

from . import keys, run_hash
from .errors import EnvflowError, RunNotFound
from .indexes import index_keys
from .run_ids import MIN_PREFIX, is_run_id, is_run_id_prefix
from .states import RunState
from .waits import Waiting

if TYPE_CHECKING:
    from .models import DeploymentRecord, RunRecord

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
    route: str | None = None  # the env a worker must have to take it (envflow/routing.py)
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
        return self._page(deployment, state, limit, cursor, self._summaries)

    def run_records(self, deployment: str | None = None, state: RunState | None = None, limit: int = 20,
                    cursor: str | None = None) -> Page[RunRecord]:
        """As :meth:`runs`, with each run's full record."""
        return self._page(deployment, state, limit, cursor, self._records)

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
        for key in [*index_keys(), keys.LEGACY_RUNS]:  # the legacy index until the reaper has moved it
            found.update(m.decode() for m, _ in self.redis.zscan_iter(key, match=f"{text}*", count=1000))
        matches = [m for m in sorted(found) if self.redis.exists(keys.run(m))]
        if not matches:
            raise RunNotFound(f"no run starts with {text!r}; list runs with `envflow run ls`")
        if len(matches) > 1:
            raise RunNotFound(f"{text!r} matches {len(matches)} runs ({', '.join(matches[:5])}...); give more characters")
        return matches[0]

    def _page(self, deployment: str | None, state: RunState | None, limit: int, cursor: str | None,
              fetch: Callable[[list[str]], list[T | None]]) -> Page[T]:
        sources = index_keys(deployment, [state] if state else None)
        after = _parse_cursor(cursor) if cursor else None
        out: list[tuple[float, str, T]] = []
        seen: set[str] = set()
        for _ in range(MAX_ROUNDS):
            want = limit - len(out)
            candidates = self._newest(sources, want, after)
            if not candidates:
                break
            after = (candidates[-1][2], candidates[-1][1])
            fresh = [c for c in candidates if c[1] not in seen]  # a run that moved between two reads
            seen.update(run_id for _, run_id, _ in fresh)
            gone: dict[str, list[str]] = {}
            for (key, run_id, score), item in zip(fresh, fetch([run_id for _, run_id, _ in fresh])):
                if item is None:
                    gone.setdefault(key, []).append(run_id)  # its record expired; the trim has not run yet
                elif state is None or getattr(item, "state") is state:  # noqa: B009 (RunSummary | RunRecord)
                    out.append((score, run_id, item))
            for key, ids in gone.items():
                self.redis.zrem(key, *ids)
            if len(out) >= limit or len(candidates) < want:
                break
        next_cursor = _cursor(out[limit - 1][0], out[limit - 1][1]) if len(out) >= limit else None
        return Page([item for _, _, item in out[:limit]], next_cursor)

    def _newest(self, sources: list[str], want: int, after: tuple[float, str] | None) -> list[tuple[str, str, float]]:
        """Up to ``want`` index entries ``(key, run id, score)`` over ``sources``, newest first (equal
        scores: higher id first), strictly older than ``after``."""
        top = "+inf" if after is None else repr(after[0])
        fetch = want
        entries: list[tuple[str, str, float]] = []
        for _ in range(MAX_ROUNDS):
            with self.redis.pipeline(transaction=True) as pipe:  # one consistent view of every source
                for key in sources:
                    pipe.zrevrangebyscore(key, top, "-inf", start=0, num=fetch, withscores=True)
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
        from .models import RunRecord

        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(keys.run(run_id))
            hashes = pipe.execute()
        return [RunRecord.from_hash(raw, run_id) if raw else None for run_id, raw in zip(ids, hashes)]

    # Deployments and queues

    def deployments(self) -> list[DeploymentRecord]:
        """Every registered deployment, by name."""
        from .models import DeploymentRecord

        names = [n.decode() for n in self.redis.zrange(keys.DEPLOYMENTS, 0, -1)]
        raws = self.redis.mget([keys.deployment(n) for n in names]) if names else []
        return sorted((DeploymentRecord.model_validate_json(r) for r in raws if r is not None), key=lambda d: d.name)

    def deployment_exists(self, name: str) -> bool:
        return bool(self.redis.exists(keys.deployment(name)))

    def paused_deployments(self) -> set[str]:
        return {n.decode() for n in self.redis.smembers(keys.PAUSED_DEPLOYMENTS)}

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
            # A queue's runs wait in it and in its envs' sub-queues (envflow/routing.py).
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

