"""Starting and completing a run's RQ job in one round trip each.

RQ's worker spends two pipelines preparing a job and a WATCH/MULTI/EXEC cycle finishing
it; with envflow's own claim and finish scripts that is half a dozen round trips per run,
which is a large share of a short run. These functions queue the same RQ bookkeeping
(``rq.executions.prepare_execution``, ``BaseWorker.prepare_job_execution``, the success
part of ``BaseWorker.handle_job_success`` for a job without dependents, repeats or rate
limits, which envflow never creates) together with envflow's script in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import WorkerStatus

from envflow import keys
from envflow.runstore import now_text

if TYPE_CHECKING:
    from .worker import FlowWorker


def claim_keys(run_id: str) -> list[str]:
    return [keys.run(run_id), keys.lease(run_id), keys.ACTIVE_RUNS, keys.PENDING_RUNS, keys.output(run_id),
            keys.PAUSED_QUEUES]


def start(worker: FlowWorker, job: Job, queue: Queue) -> tuple[Execution, list[Any]]:
    """Record the job as started (as RQ would) and claim its run; returns RQ's execution and the claim's reply."""
    run_id = job.args[0]
    settings = worker.settings
    ttl = worker.get_heartbeat_ttl(job)
    claim_args: list[Any] = [worker.name, now_text(), int(settings.lease_ttl * 1000), settings.history_ttl,
                             settings.run_ttl, queue.name]
    with worker.connection.pipeline() as pipe:
        execution = Execution.create(job, ttl, pipeline=pipe, worker_name=worker.name)
        worker.executions[execution.id] = execution
        worker.set_state(WorkerStatus.BUSY, pipeline=pipe)
        worker.heartbeat(ttl, pipeline=pipe)
        job.heartbeat(rq_now(), ttl, pipeline=pipe)
        job.prepare_for_execution(worker.name, pipeline=pipe)
        pipe.persist(job.key)
        if len(worker.queues) == 1:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        worker.store.scripts.queue(pipe, worker.store.scripts.claim, claim_keys(run_id), claim_args)
        results = pipe.execute(raise_on_error=False)
    claim = worker.store.scripts.rerun_if_missing(results[-1], worker.store.scripts.claim, claim_keys(run_id), claim_args)
    return execution, claim  # type: ignore[return-value]


def finish_keys(run_id: str) -> list[str]:
    return [keys.run(run_id), keys.lease(run_id), keys.ACTIVE_RUNS, keys.PENDING_RUNS, keys.output(run_id)]


def complete(worker: FlowWorker, job: Job, execution: Execution, run_id: str, finish_args: list[Any]) -> None:
    """Record a COMPLETED attempt on the run and finish its job as RQ's success handling does."""
    scripts = worker.store.scripts
    with worker.connection.pipeline() as pipe:
        scripts.queue(pipe, scripts.finish, finish_keys(run_id), finish_args)
        worker.increment_successful_job_count(pipeline=pipe)
        worker.increment_total_working_time(job.ended_at - job.started_at, pipe)  # type: ignore[operator]
        # As job._handle_success, minus the Result stream: the run record holds the outcome, and a
        # per-job results stream would double Redis memory per run for the job's lifetime.
        result_ttl = job.get_result_ttl(worker.default_result_ttl)
        job.set_status(JobStatus.FINISHED, pipeline=pipe)
        pipe.hset(job.key, "ended_at", utcformat(job.ended_at))  # type: ignore[arg-type]
        if result_ttl != 0:
            job.finished_job_registry.add(job, result_ttl, pipe)
        job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
        job._status = JobStatus.FINISHED
        worker.cleanup_execution(job, pipeline=pipe, execution=execution)
        results = pipe.execute(raise_on_error=False)
    scripts.rerun_if_missing(results[0], scripts.finish, finish_keys(run_id), finish_args)


def put_back(worker: FlowWorker, job: Job, queue: Queue, execution: Execution) -> None:
    """Undo a start: the job's queue was paused meanwhile; return the job, untouched, to its front."""
    with worker.connection.pipeline() as pipe:
        worker.cleanup_execution(job, pipeline=pipe, execution=execution)
        job.set_status(JobStatus.QUEUED, pipeline=pipe)
        queue.push_job_id(job.id, pipeline=pipe, at_front=True)
        pipe.execute()
