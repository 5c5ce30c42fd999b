"""The RQ job that stands for a flow run, as envflow's processes load and queue it.

A run's job names ``envflow.jobs.run_flow`` (``RUN_FLOW``, kept at that path since every queued job
holds it) with the run id as its only argument, JSON-serialised: never pickle.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from ..jobs import RUN_FLOW
from .run_ids import is_run_id

SERIALIZER = JSONSerializer


class RunJob(Job):
    """RQ's job, as envflow's processes load it. envflow sets no webhooks and no callbacks on its
    jobs: any a job carries was written by someone else with Redis access, so none is ever sent,
    imported or called (refused jobs included)."""

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        return None

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        # RQ writes every field it knows, unset ones as '', and reads a missing field as unset
        # (rq 3.0's Job.restore). A run's job is a hashtable in Redis (its payload is over the 64
        # bytes of the compact encoding), where each field costs about 70 bytes: leave the unset out.
        return {k: v for k, v in super().to_dict(include_meta, include_result).items() if v != ""}


def is_run_job(func_name: str | None, args: object, kwargs: object) -> bool:
    """Whether a job's payload is an envflow run: our function, one run id (shape checked), no kwargs."""
    return func_name == RUN_FLOW and isinstance(args, (list, tuple)) and len(args) == 1 and is_run_id(args[0]) and not kwargs


class Queues:
    """RQ's queues of one Redis client, each made once (making one asks the server for its version)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queues: dict[str, Queue] = {}

    def get(self, name: str) -> Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = Queue(name, connection=self.redis, serializer=SERIALIZER, job_class=RunJob)
        return q
