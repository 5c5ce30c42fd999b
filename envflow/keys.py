"""Every Redis key and channel envflow uses, under one ``envflow:`` prefix.

Layout::

    envflow:deployment:<flow>/<name>   string  JSON of the deployment record
    envflow:deployments                zset    deployment names (score: creation time)
    envflow:source:<sha256>            string  a flow file's source, content-addressed
    envflow:run:<id>                   hash    the run record (see envflow/runstore.py, envflow/protocol.py)
    envflow:run:<id>:out               stream  output history; entry id "<attempt>-<first line seq>"
    envflow:run:<id>:lease             string  "<worker>" while an attempt runs; expires without heartbeats
    envflow:runs                       zset    every run id (score: creation time)
    envflow:runs:dep:<flow>/<name>     zset    run ids of one deployment (score: creation time)
    envflow:runs:active                zset    ids of RUNNING runs (score: start time), scanned by the reaper
    envflow:runs:pending               zset    ids of PENDING/SCHEDULED runs (score: when due)
    envflow:schedule:<deployment>      hash    schedule id -> cursor (Unix s): every slot up to it was handled
    envflow:slot:<deployment>:<sched>:<ms>     string  run id of that slot (ms: Unix milliseconds), expires after 3 days
    envflow:paused                     set     paused deployment names
    envflow:queues:paused              set     paused queue names (workers start no runs from them)
    envflow:scheduler:<name>           string  "<host>" while that scheduler runs (expires without passes)
    envflow:worker:<name>              string  JSON of what a live worker publishes: its warm processes (expires)

Pub/sub channels::

    envflow:run:<id>:out               each history entry, as it is appended

RQ's own keys (``rq:*``) hold the queues, jobs and registries; envflow only wraps them.
"""

from __future__ import annotations

PREFIX = "envflow:"

DEPLOYMENTS = PREFIX + "deployments"
RUNS = PREFIX + "runs"
ACTIVE_RUNS = PREFIX + "runs:active"
PENDING_RUNS = PREFIX + "runs:pending"
PAUSED_DEPLOYMENTS = PREFIX + "paused"
PAUSED_QUEUES = PREFIX + "queues:paused"


def deployment(name: str) -> str:
    return f"{PREFIX}deployment:{name}"


def source(digest: str) -> str:
    return f"{PREFIX}source:{digest}"


def run(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}"


def output(run_id: str) -> str:
    """The run's output history (a stream) and, by the same name, its live channel."""
    return f"{PREFIX}run:{run_id}:out"


def lease(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:lease"


def deployment_runs(name: str) -> str:
    return f"{PREFIX}runs:dep:{name}"


def worker(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def scheduler(name: str) -> str:
    return f"{PREFIX}scheduler:{name}"


def schedule_state(deployment_name: str) -> str:
    return f"{PREFIX}schedule:{deployment_name}"


def slot(deployment_name: str, schedule_id: str, slot_ts: int) -> str:
    return f"{PREFIX}slot:{deployment_name}:{schedule_id}:{slot_ts}"
