"""Turning outbox events into deliveries and trying them: webhooks (retried with backoff) and run hooks.

One pass of a :class:`Deliverer`: start the deliveries that are due (retries, and those another deliverer
held when it died), then read new events from the outbox's consumer group (waiting up to a second for
one), record each event's deliveries (each held by its lease), acknowledge the event and start their first
tries. Tries run in a small pool of ``ENVFLOW_WEBHOOK_CONCURRENCY`` threads, and a pass takes no more than
the pool has free: a receiver that hangs holds one thread for ``ENVFLOW_WEBHOOK_TIMEOUT`` seconds. Retries wait about 1 s, 5 s, 30 s, 2 min, 10 min, 1 h, then hourly
(``ENVFLOW_WEBHOOK_RETRY_DELAYS``, each jittered by up to a fifth), or what a ``Retry-After`` asks, for up to
``ENVFLOW_WEBHOOK_RETRY_FOR``; a ``410 Gone`` stops them, and a delivery that runs out of time goes to the
dead-letter list.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis
from redis import Redis

from ..errors import EnvflowError
from ..hook_spec import Hook
from ..models import DeploymentRecord
from ..parameters import merge_parameters
from ..settings import Settings
from ..store import keys, run_hash
from ..store.deployments import answering
from ..store.hooks import OutboxEvent, hook_store
from ..store.runs import RunStore
from . import payload
from .sender import Answer, Signer, post

log = logging.getLogger("envflow.hooks")

# Run ids of run hooks are derived from their delivery's id: the same delivery can only ever make one run.
RUN_HOOK_NAMESPACE = uuid.UUID("5b0c6f0e-8d3e-4c55-9f3e-2f1d6f3a7c11")


def backoff(tries: int, delays: list[float], jitter: float = 0.2) -> float:
    """Seconds before the next try after ``tries`` failed ones: ``delays[tries - 1]``, the last repeating,
    spread by up to ``jitter`` either way so that receivers coming back are not hit all at once."""
    base = delays[min(max(tries, 1), len(delays)) - 1]
    return base * random.uniform(1 - jitter, 1 + jitter)


def run_hook_id(delivery_id: str) -> str:
    """The id of the run a run hook's delivery starts."""
    return uuid.uuid5(RUN_HOOK_NAMESPACE, delivery_id).hex


class Deliverer:
    """Delivers hooks as the consumer ``name`` of the outbox's group.

    :param settings: ``ENVFLOW_WEBHOOK_*`` and ``ENVFLOW_UI_URL`` come from here.
    """

    def __init__(self, connection: Redis, settings: Settings, name: str) -> None:
        self.redis = connection
        self.settings = settings
        self.name = name
        self.store = hook_store(connection, settings)
        self.runs = RunStore(connection, settings)
        self.signer = Signer(settings.webhook_secret)
        if self.signer.problem:
            log.error(self.signer.problem)
        self.pool = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="envflow-hook")
        self._lock = threading.Lock()
        self._inflight = 0
        self._freed = threading.Event()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def pass_once(self, block: float = 1.0) -> int:
        """Start the tries that are due, then take new events (waiting up to ``block`` seconds for one), record
        their deliveries and start their first tries; the tries started. A pass never waits for a try: a
        receiver that hangs holds one of the pool's threads, and the others go on."""
        free = self.settings.webhook_concurrency - self._inflight
        if free <= 0:
            self._freed.wait(block)
            self._freed.clear()
            return 0
        due = self.store.claim_due(free)
        started = self._start(due)
        if len(due) >= free:
            return started
        wait = 0.0 if due else block
        upcoming = self.store.next_due()
        if upcoming is not None:
            wait = min(wait, max(upcoming - time.time(), 0.0))
        for event in self.store.read_events(self.name, free - len(due), int(wait * 1000)):
            created = self.expand(event)
            # Recorded: each delivery is held by its lease now, so the event can leave the outbox.
            self.store.ack(event.id)
            started += self._start(created)
        return started

    def _start(self, delivery_ids: list[str]) -> int:
        with self._lock:
            self._inflight += len(delivery_ids)
        for delivery_id in delivery_ids:
            self.pool.submit(self._try_one, delivery_id).add_done_callback(self._done)
        return len(delivery_ids)

    def _done(self, _: object) -> None:
        with self._lock:
            self._inflight -= 1
        self._freed.set()

    # Events into deliveries

    def expand(self, event: OutboxEvent) -> list[str]:
        """Record the deliveries of one event (the hooks that match it); the ids this call created, held by
        the caller, which tries them at once (those that existed, another deliverer's, are tried when due)."""
        raw = self.redis.hgetall(keys.run(event.run_id))
        if not raw:
            log.warning("hook event %s: run %s is gone; nothing to deliver", event.id, event.run_id[:8])
            return []
        run = run_hash.record(raw, event.run_id)
        deployment = self.runs.deployments_of([event.run_id])[0]
        matching: list[tuple[str, Hook]] = [(f"d{i}", h) for i, h in enumerate(deployment.hooks if deployment else [])
                                            if h.fires_on(event.event)]
        tags = deployment.tags if deployment else []
        matching += [(f"s{i}", h) for i, h in self.store.site.all().items() if h.fires_on(event.event, tags)]
        if not matching:
            return []
        body = payload.body(event.event, event.at, run, deployment, self.settings.redactor, self.settings.ui_url)
        created = []
        for key, hook in matching:
            delivery_id = f"{event.id}.{key}"
            fields = {"event": event.id, "run": event.run_id, "state": event.event, "hook": key}
            if hook.webhook is not None:
                fields.update(kind="webhook", target=hook.webhook, body=body)
            else:
                assert hook.run is not None
                fields.update(kind="run", target=hook.run, parameters=json.dumps(hook.parameters))
            if self.store.create(delivery_id, fields):
                created.append(delivery_id)
        return created

    # Tries

    def _try_one(self, delivery_id: str) -> int:
        try:
            delivery = self.store.get(delivery_id)
            if delivery is None or delivery.get("status") != "pending":
                self.store.drop(delivery_id)
                return 0
            answer = self._webhook(delivery_id, delivery) if delivery["kind"] == "webhook" else \
                self._run_hook(delivery_id, delivery)
            self._record(delivery_id, delivery, answer)
            return 1
        except redis.RedisError as e:
            log.warning("hook delivery %s: Redis failed (%s); tried again when its lease ends", delivery_id, e)
        except Exception:
            log.exception("hook delivery %s failed; tried again when its lease ends", delivery_id)
        return 0

    def _webhook(self, delivery_id: str, delivery: dict[str, str]) -> Answer:
        body = delivery.get("body", "")
        headers = self.signer.headers(delivery_id, body, time.time())
        return post(delivery["target"], body, headers, self.settings.webhook_timeout)

    def _record(self, delivery_id: str, delivery: dict[str, str], answer: Answer) -> None:
        now = time.time()
        tries = int(delivery.get("tries") or 0) + 1
        first = float(delivery.get("first_try") or now)
        next_at = None
        if answer.ok:
            status = "delivered"
        elif answer.code == 410:
            status = "gone"
        elif answer.permanent:  # a run hook that can never start (its parameters do not fit)
            status = "failed"
        else:
            wait = answer.retry_after if answer.retry_after is not None else backoff(tries, self.settings.retry_delays)
            next_at = now + wait
            status = "pending" if next_at <= first + self.settings.webhook_retry_for else "failed"
        code = "-" if answer.code is None else str(answer.code)
        self.store.record_try(delivery_id, code, self.settings.redactor.text(answer.error), status, next_at)
        target = self.settings.redactor.text(delivery.get("target", ""))
        if status == "delivered":
            log.info("hook %s: %s %s for run %s", delivery_id, delivery["kind"], target, delivery["run"][:8])
        elif status == "pending":
            log.warning("hook %s: %s %s: %s; try %d again in %.1fs", delivery_id, delivery["kind"], target,
                        answer.error, tries + 1, (next_at or now) - now)
        else:
            log.error("hook %s: %s %s: %s; %s after %d tries", delivery_id, delivery["kind"], target, answer.error,
                      "stopped (410 Gone)" if status == "gone" else "gave up (see `envflow hook deliveries --failed`)",
                      tries)

    # Run hooks

    def _run_hook(self, delivery_id: str, delivery: dict[str, str]) -> Answer:
        """Start the run hook's run, once per delivery whatever the retries or replicas: its id comes from the
        delivery's, and a marker set in the same transaction says it was made. ``Answer(201)`` when started
        now or before; a permanent failure when it never can."""
        marker = keys.hook_run(delivery_id)
        target = delivery["target"]
        run_id = run_hook_id(delivery_id)
        started_by = f"{delivery['run']}:{delivery['state']}"
        for _ in range(3):
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(marker, keys.deployment(target))
                    watched = answering(pipe)
                    if watched.exists(marker):
                        return Answer(201)
                    raw = watched.get(keys.deployment(target))
                    if raw is None:
                        return Answer(None, f"no deployment {target}; tried again later")
                    record = DeploymentRecord.model_validate_json(raw)
                    try:
                        merged = merge_parameters(record.parameter_spec, record.parameters,
                                                  json.loads(delivery.get("parameters") or "{}"), record.flow_name)
                    except EnvflowError as e:
                        return Answer(None, f"run {target}: {e}", permanent=True)
                    pipe.multi()
                    pipe.set(marker, run_id, ex=self.store.ttl)
                    self.runs.create(record, merged, run_id=run_id, started_by=started_by, pipeline=pipe)
                    pipe.execute()
                except redis.WatchError:
                    continue
            log.info("hook %s: started run %s of %s (%s's hook)", delivery_id, run_id[:8], target, started_by)
            return Answer(201)
        return Answer(None, "the deployment kept changing; tried again later")

