"""A plain RQ worker for the raw-RQ baselines: ``python -m bench.rqworker URL QUEUE CLASS NAME``.

CLASS is ``default`` (``rq.Worker``: forks a work horse per job) or ``simple``
(``rq.SimpleWorker``: runs jobs in the worker process). It prints ``ready`` once registered.
The job module is imported up front, so no job pays for that import.
"""

from __future__ import annotations

import sys

from redis import Redis
from rq import SimpleWorker, Worker

import bench.rqjobs  # noqa: F401 - preloaded for every job (and every forked horse)

CLASSES = {"default": Worker, "simple": SimpleWorker}


def main(url: str, queue: str, kind: str, name: str) -> None:
    base = CLASSES[kind]

    class Ready(base):  # type: ignore[misc, valid-type]
        def bootstrap(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().bootstrap(*args, **kwargs)
            print("ready", flush=True)

    worker = Ready([queue], name=name, connection=Redis.from_url(url))
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main(*sys.argv[1:5])
