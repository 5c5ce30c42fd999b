"""Every Redis key and channel envflow uses, under one ``envflow:`` prefix.

Layout::

    envflow:deployment:<flow>/<name>   string  JSON of the deployment record
    envflow:deployments                zset    deployment names (score: creation time)
    envflow:source:<sha256>            string  a flow file's source, content-addressed
    envflow:requirements:<sha256>      string  a deployment's requirements file, content-addressed
    envflow:spec:<digest>              string  a deployment as runs were created with it (JSON), shared by them
    envflow:run:<id>                   hash    the run record (fields: envflow/run_hash.py; changes: envflow/protocol.py)
    envflow:run:<id>:out               stream  output history; entry id "<attempt>-<first line seq>"
    envflow:run:<id>:packed            string  a short history, packed into one value when its run ended
                                               (the stream is then gone; format: envflow/output/format.py)
    envflow:run:<id>:lease             string  "<worker>" while an attempt runs; expires without heartbeats
    envflow:runs:state:<STATE>         zset    ids of the runs in that state (score: creation time)
    envflow:runs:state:<STATE>:<flow>/<name>   zset    the same, of one deployment
    envflow:runs:deps                  set     deployments that have runs in those indexes
    envflow:runs:active                zset    ids of RUNNING runs (score: start time), scanned by the reaper
    envflow:runs:pending               zset    ids of PENDING/SCHEDULED runs (score: when due)
    envflow:indexes:lock               string  held while one process trims the state indexes
    envflow:schedule:<deployment>      hash    schedule id -> cursor (Unix s): every slot up to it was handled
    envflow:slot:<deployment>:<sched>:<ms>     string  run id of that slot (ms: Unix milliseconds), expires after 3 days
    envflow:paused                     set     paused deployment names
    envflow:queues:paused              set     paused queue names (workers start no runs from them)
    envflow:scheduler:<name>           string  "<host>" while that scheduler runs (expires without passes)
    envflow:worker:<name>              string  JSON of what a live worker publishes: its envs, warm processes (expires)
    envflow:envs                       hash    route key -> env spec JSON, of every env a deployment names
    envflow:route:<queue>:<key>        zset    workers of <queue> that have the env <key> (score: when that lapses)

Pub/sub channels::

    envflow:run:<id>:out               each history entry, as it is appended

RQ's own keys (``rq:*``) hold the queues, jobs and registries; envflow only wraps them.
"""

from __future__ import annotations

PREFIX = "envflow:"

DEPLOYMENTS = PREFIX + "deployments"
ACTIVE_RUNS = PREFIX + "runs:active"
PENDING_RUNS = PREFIX + "runs:pending"
PAUSED_DEPLOYMENTS = PREFIX + "paused"
PAUSED_QUEUES = PREFIX + "queues:paused"
INDEXED_DEPLOYMENTS = PREFIX + "runs:deps"
STATE_INDEX_PREFIX = PREFIX + "runs:state:"
INDEXES_LOCK = PREFIX + "indexes:lock"
# The indexes of releases before the state indexes: every run, and the runs of each deployment
# (both scored by creation time). The reaper's pass moves what they hold into the state indexes.
LEGACY_RUNS = PREFIX + "runs"
LEGACY_DEPLOYMENT_RUNS_PREFIX = PREFIX + "runs:dep:"


def deployment(name: str) -> str:
    return f"{PREFIX}deployment:{name}"


def source(digest: str) -> str:
    return f"{PREFIX}source:{digest}"


def requirements(digest: str) -> str:
    return f"{PREFIX}requirements:{digest}"


def run(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}"


def output(run_id: str) -> str:
    """The run's output history (a stream) and, by the same name, its live channel."""
    return f"{PREFIX}run:{run_id}:out"


def lease(run_id: str) -> str:
    return f"{PREFIX}run:{run_id}:lease"


def spec(digest: str) -> str:
    return f"{PREFIX}spec:{digest}"


def packed_output(run_id: str) -> str:
    """The run's output history once its run ended, packed into one string (when it was short)."""
    return f"{PREFIX}run:{run_id}:packed"


def state_index(state: str, deployment: str | None = None) -> str:
    """The runs in ``state`` (a ``RunState`` value), of every deployment or of one."""
    return f"{STATE_INDEX_PREFIX}{state}" if deployment is None else f"{STATE_INDEX_PREFIX}{state}:{deployment}"


ENVS = PREFIX + "envs"


def route(queue: str, key: str) -> str:
    return f"{PREFIX}route:{queue}:{key}"


def worker(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def scheduler(name: str) -> str:
    return f"{PREFIX}scheduler:{name}"


def schedule_state(deployment_name: str) -> str:
    return f"{PREFIX}schedule:{deployment_name}"


def skipped_slots(deployment_name: str) -> str:
    """The slots of a deployment's schedules skipped while one of its runs waited for an env (JSON)."""
    return f"{PREFIX}schedule:{deployment_name}:skipped"


def slot(deployment_name: str, schedule_id: str, slot_ts: int) -> str:
    return f"{PREFIX}slot:{deployment_name}:{schedule_id}:{slot_ts}"
