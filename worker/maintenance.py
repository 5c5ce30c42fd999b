"""A worker's background duties, in one daemon thread: RQ's scheduler, envflow's reaper, and what the
worker publishes about itself (``presence.py``); and, in a thread of its own, hooks' delivery while no
scheduler delivers them (``envflow.hooks.service``).

RQ's ``work(with_scheduler=True)`` forks its scheduler into a child process; if the
worker is killed with SIGKILL that child lives on, still holding the worker's Redis
sockets, and Redis keeps serving the dead worker's blocked dequeue, swallowing the next
job. So envflow drives ``RQScheduler`` (moving due delayed jobs, e.g. retries with a
delay, onto their queues; one holder of the lock per queue) from a thread instead.
"""

from __future__ import annotations

import logging
import threading

import redis
from rq.scheduler import RQScheduler

from envflow.hooks.service import HookDelivery
from envflow.store import routing
from envflow.store.jobs import SERIALIZER
from envflow.store.reaper import Reaper

from .presence import Presence

log = logging.getLogger("envflow.worker")

SCHEDULER_INTERVAL = 1.0


class Maintenance:
    def __init__(self, worker_name: str, queue_names: list[str], connection: redis.Redis, reaper: Reaper,
                 presence: Presence) -> None:
        self.name = worker_name
        self.reaper = reaper
        self.presence = presence
        self.connection = connection
        self.queue_names = list(queue_names)
        self.routes = presence.routes
        self.interval = reaper.settings.reaper_interval
        self.scheduler = RQScheduler(queue_names, connection=connection, interval=int(SCHEDULER_INTERVAL),
                                     logging_level="WARNING", serializer=SERIALIZER)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="envflow-maintenance", daemon=True)
        self.hooks = HookDelivery(connection, reaper.settings, worker_name, defer_to_scheduler=True)

    def start(self) -> None:
        self.thread.start()
        self.hooks.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.hooks.close()
        try:
            self.scheduler.release_locks()
            self.presence.remove()
        except redis.exceptions.RedisError:
            pass

    def _loop(self) -> None:
        ticks_per_reap = max(int(round(self.interval / SCHEDULER_INTERVAL)), 1)
        wait = min(SCHEDULER_INTERVAL, self.interval)
        tick = 0
        while not self.stop.wait(wait):
            tick += 1
            try:
                self._schedule()
                self.presence.refresh()
                if tick % ticks_per_reap == 0 or wait < SCHEDULER_INTERVAL:
                    self.reaper.reap_shared(self.name)
            except redis.exceptions.RedisError as e:
                log.warning("background maintenance failed: %s; retrying", e)
            except Exception:
                log.exception("background maintenance failed")

    def _schedule(self) -> None:
        if self.presence.routes != self.routes:  # delayed runs of its envs wait in their sub-queues' registries
            self.routes = self.presence.routes
            self.scheduler.release_locks()
            names = [*self.queue_names, *(routing.rq_queue(q, key) for q in self.queue_names for key in sorted(self.routes))]
            self.scheduler = RQScheduler(names, connection=self.connection, interval=int(SCHEDULER_INTERVAL),
                                         logging_level="WARNING", serializer=SERIALIZER)
        if self.scheduler.should_reacquire_locks:
            self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.heartbeat()
            self.scheduler.enqueue_scheduled_jobs()

