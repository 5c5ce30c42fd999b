"""The line-latency baseline's publisher: ``python -m bench.publisher URL CHANNEL N RATE``.

Publishes N bare messages ``"<i> <time.time()>"`` at RATE per second, paced like the
ticker flow, from its own process (as the worker publishes from its own).
"""

from __future__ import annotations

import sys
import time

from redis import Redis


def main(url: str, channel: str, n: int, rate: float) -> None:
    redis = Redis.from_url(url)
    redis.ping()
    start = time.time()
    for i in range(n):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        redis.publish(channel, f"{i} {time.time():.6f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
