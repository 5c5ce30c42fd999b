"""Every Redis key and channel envflow uses, under one ``envflow:`` prefix.

Layout::

    envflow:deployment:<flow>/<name>   string  JSON of the deployment record
    envflow:deployments                zset    deployment names (score: creation time)
    envflow:source:<sha256>            string  a flow file's source, content-addressed
    envflow:requirements:<sha256>      string  a deployment's requirements file, content-addressed
    envflow:spec:<digest>              string  a deployment as runs were created with it (JSON), shared by them
    envflow:run:<id>                   hash    the run record (fields: envflow/store/run_hash.py; changes: envflow/store/protocol.py)
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
    envflow:reaper:lock                string  held by the process whose reaper pass runs now
    envflow:replicated                 string  a mark written before WAIT: its replication implies the run's (expires)
    envflow:schedule:<deployment>      hash    schedule id -> cursor (Unix s): every slot up to it was handled
    envflow:slot:<deployment>:<sched>:<ms>     string  run id of that slot (ms: Unix milliseconds), expires after 3 days
    envflow:paused                     set     paused deployment names
    envflow:queues:paused              set     paused queue names (workers start no runs from them)
    envflow:scheduler:<name>           string  "<host>" while that scheduler runs (expires without passes)
    envflow:worker:<name>              string  JSON of what a live worker publishes: its envs, warm processes (expires)
    envflow:envs                       hash    route key -> env spec JSON, of every env a deployment names
    envflow:route:<queue>:<key>        zset    workers of <queue> that have the env <key> (score: when that lapses)
    envflow:ui:ended:<session id>      string  a web UI session ended by logging out (expires with the session)
    envflow:runs:late                  zset    ids of waiting runs of deployments with late_after (score: when LATE)
    envflow:hooks:outbox               stream  hook events, written by the transition scripts (fields run, state, at);
                                               read through the consumer group "deliverers"
    envflow:hooks:site                 hash    site-wide hook id -> JSON of the hook (envflow hook add)
    envflow:hooks:due                  zset    delivery ids to try (score: when; a claimed one is pushed ahead)
    envflow:hooks:deliveries           zset    every delivery id, for `envflow hook deliveries` (score: created)
    envflow:hooks:dead                 list    delivery ids that gave up (newest first)
    envflow:hooks:deliverer            string  the scheduler delivering hooks now (expires); workers deliver without one
    envflow:hook:<delivery id>         hash    one delivery: its target, body, tries, codes, status
    envflow:hook:<delivery id>:run     string  the run a run hook started for that delivery (set once)
    envflow:run:<id>:hooks             set     the ids of the hook deliveries of that run's events (expires)
    envflow:limits                     hash    limit name -> slots (a tag's name, or "deployment:<flow>/<name>")
    envflow:limit:<name>:holders       hash    run id -> attempt, of each RUNNING attempt that holds a slot
    envflow:limit:<name>:waiting       zset    ids of the runs parked on it or kept in line (score: when each
                                               became due, envflow:runs:pending's): first in, first out

Pub/sub channels::

    envflow:run:<id>:out               each history entry, as it is appended

RQ's own keys (``rq:*``) hold the queues, jobs and registries; envflow only wraps them. The few it
reads directly are named at the end of this module, as rq 3.0 spells them (``tests/test_listings.py``
holds them equal to RQ's own constants; importing RQ here would cost every CLI command its import).
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
REAPER_LOCK = PREFIX + "reaper:lock"
LATE_RUNS = PREFIX + "runs:late"
HOOK_OUTBOX = PREFIX + "hooks:outbox"
HOOK_GROUP = "deliverers"  # the outbox's consumer group (a name, not a key)
SITE_HOOKS = PREFIX + "hooks:site"
HOOKS_DUE = PREFIX + "hooks:due"
HOOK_DELIVERIES = PREFIX + "hooks:deliveries"
HOOKS_DEAD = PREFIX + "hooks:dead"
HOOK_DELIVERER = PREFIX + "hooks:deliverer"
LIMITS = PREFIX + "limits"
LIMIT_PREFIX = PREFIX + "limit:"
DEPLOYMENT_LIMIT_PREFIX = "deployment:"  # a deployment's own limit is the limit "deployment:<flow>/<name>"
REPLICATED_MARK = PREFIX + "replicated"  # written before a WAIT: its replication implies every earlier write's


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


def limit_holders(name: str) -> str:
    return f"{LIMIT_PREFIX}{name}:holders"


def limit_waiting(name: str) -> str:
    return f"{LIMIT_PREFIX}{name}:waiting"


def deployment_limit(deployment_name: str) -> str:
    """The name of a deployment's own limit (its ``concurrency_limit``)."""
    return DEPLOYMENT_LIMIT_PREFIX + deployment_name


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


def hook_delivery(delivery_id: str) -> str:
    return f"{PREFIX}hook:{delivery_id}"


def hook_run(delivery_id: str) -> str:
    """The run a run hook started for one delivery: set once, so retries and replicas start one run."""
    return f"{PREFIX}hook:{delivery_id}:run"


def run_hooks(run_id: str) -> str:
    """The ids of the hook deliveries a run's events made (its page lists them)."""
    return f"{PREFIX}run:{run_id}:hooks"
def skipped_slots(deployment_name: str) -> str:
    """The slots of a deployment's schedules skipped while one of its runs waited for an env (JSON)."""
    return f"{PREFIX}schedule:{deployment_name}:skipped"


def slot(deployment_name: str, schedule_id: str, slot_ts: int) -> str:
    return f"{PREFIX}slot:{deployment_name}:{schedule_id}:{slot_ts}"


# RQ's keys that envflow reads or names itself (rq 3.0, default RQ_KEY_PREFIX):
RQ_QUEUES = "rq:queues"  # Queue.redis_queues_keys: the set of every queue's key
RQ_QUEUE_PREFIX = "rq:queue:"  # Queue.redis_queue_namespace_prefix
RQ_WORKER_PREFIX = "rq:worker:"  # BaseWorker.redis_worker_namespace_prefix
RQ_JOB_PREFIX = "rq:job:"  # Job.redis_job_namespace_prefix
RQ_QUEUED = "queued"  # JobStatus.QUEUED: the status a parked run's job is given (lua/_limits.lua)
RQ_REGISTRIES = ("scheduled", "wip", "failed", "finished", "deferred", "canceled")  # each registry's key_template


def rq_workers(queue: str) -> str:
    """The set of the workers that listen on ``queue`` (rq's worker_registration.WORKERS_BY_QUEUE_KEY)."""
    return f"rq:workers:{queue}"


def rq_registry(kind: str, queue: str) -> str:
    return f"rq:{kind}:{queue}"


def ended_session(session_id: str) -> str:
    return f"{PREFIX}ui:ended:{session_id}"
