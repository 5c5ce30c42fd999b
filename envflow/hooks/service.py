"""Hook delivery as a service's background thread: the scheduler's always, a worker's while no scheduler
delivers (``envflow:hooks:deliverer``, refreshed by every scheduler's thread, says one does).

The thread is the services' own, apart from anything that runs flows: delivery never blocks a run.
"""

from __future__ import annotations

import logging
import threading

import redis
from redis import Redis

from ..backoff import Backoff
from ..settings import Settings
from ..store import keys
from .deliverer import Deliverer

log = logging.getLogger("envflow.hooks")

BLOCK = 1.0  # seconds a pass waits for a new event
ANNOUNCE_TTL = 15  # seconds a scheduler's claim to deliver outlives its last pass


class HookDelivery:
    """Runs :meth:`Deliverer.pass_once` in a daemon thread until :meth:`close`.

    :param defer_to_scheduler: deliver only while no scheduler does (a worker's maintenance); otherwise
        announce that a scheduler delivers (the scheduler's).
    """

    def __init__(self, connection: Redis, settings: Settings, name: str, *, defer_to_scheduler: bool) -> None:
        self.redis = connection
        self.name = name
        self.defer = defer_to_scheduler
        self.deliverer = Deliverer(connection, settings, name)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="envflow-hooks", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=BLOCK + 2)
        self.deliverer.close()

    def _loop(self) -> None:
        backoff = Backoff(first=0.5, cap=5.0)
        while not self.stop.is_set():
            try:
                if self.defer:
                    if self.redis.exists(keys.HOOK_DELIVERER):
                        self.stop.wait(BLOCK)
                        continue
                else:
                    self.redis.set(keys.HOOK_DELIVERER, self.name, ex=ANNOUNCE_TTL)
                self.deliverer.pass_once(BLOCK)
                backoff.reset()
            except redis.RedisError as e:
                delay = backoff.next()
                log.warning("hook delivery: Redis failed (%s); retrying in %.1fs", e, delay)
                self.stop.wait(delay)
            except Exception:
                delay = backoff.next()
                log.exception("hook delivery pass failed; retrying in %.1fs", delay)
                self.stop.wait(delay)
