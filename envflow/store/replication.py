"""Waiting for replicas: a run ``Client.run()`` returned must survive its primary's failover.

Redis replicates asynchronously, so a write the primary acknowledged can be missing on the replica
Sentinel promotes. After a run's creation the creator writes a mark and sends ``WAIT`` on the same
connection: the replication stream is ordered, so a replica that has the mark has the run too.
How many replicas: ``ENVFLOW_REDIS_WAIT_REPLICAS``; by default one behind Sentinel when the primary
has any (asked every ``REPLICAS_RECHECK`` seconds: after a failover the new primary may have none,
and waiting for a replica that is not there would cost every run the whole timeout), else none.
"""

from __future__ import annotations

import time
import warnings

from redis import Redis

from ..errors import EnvflowWarning
from ..sentinel import is_sentinel_url
from ..settings import Settings
from . import keys

REPLICAS_RECHECK = 10.0  # seconds between reads of the primary's replica count (the default only)


class ReplicaWait:
    """:param redis: the client that made the writes. :param settings: the wait's replicas and timeout."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._known: tuple[float, int] | None = None  # (when read, replicas connected then)

    def wanted(self) -> int:
        """Replicas to wait for now."""
        if self.settings.redis_wait_replicas is not None:
            return self.settings.redis_wait_replicas
        if not is_sentinel_url(self.settings.redis_url):
            return 0
        now = time.monotonic()
        if self._known is None or now - self._known[0] > REPLICAS_RECHECK:
            info = self.redis.info("replication")
            self._known = (now, min(1, int(info.get("connected_slaves", 0))))
        return self._known[1]

    def wait(self, what: str) -> int | None:
        """Wait until the replicas have every write made before; the count that did, or None when none was wanted.

        :param what: the writes, for the warning when too few replicas confirmed them in time.
        """
        wanted = self.wanted()
        if not wanted:
            return None
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.REPLICATED_MARK, repr(time.time()), ex=60)
            pipe.wait(wanted, int(self.settings.redis_wait_timeout * 1000))
            acked = int(pipe.execute()[1])
        if acked < wanted:
            self._known = None  # a replica may have gone: count them again next time
            warnings.warn(EnvflowWarning(
                f"{what}: {acked} of {wanted} replica(s) confirmed it within ENVFLOW_REDIS_WAIT_TIMEOUT="
                f"{self.settings.redis_wait_timeout}s; a failover now could lose it"), stacklevel=3)
        return acked
