"""Limits under fire: workers SIGKILLed at random while runs cycle through limits of 1, 2 and 5.

Sampled every 100 ms, the runs RUNNING under each limit (the state index, which claim.lua and the
scripts that end attempts keep together with the slots) never exceed it, and every run ends.
"""

from __future__ import annotations

import random
import signal
import threading
import time

from envflow.store import keys

from ..support.flows import deploy, write_flow

SHORT = """
    import time
    from envflow import flow

    @flow
    def short(seconds: float = 0.05):
        time.sleep(seconds)
"""

LIMITS = {"one": 1, "two": 2, "five": 5}
RUNS, KILLS, WORKERS = 300, 10, 5


def test_slots_hold_while_workers_are_killed(client, start_worker, venv, workdir):
    rng = random.Random(24)
    flows = write_flow(workdir, SHORT)
    names = {}
    for tag, slots in LIMITS.items():
        client.set_limit(tag, slots)
        names[tag] = deploy(client, flows, "short", name=tag, virtualenv=str(venv), tags=[tag])
    workers = [start_worker() for _ in range(WORKERS)]
    runs = [client.run(names[rng.choice(list(LIMITS))], {"seconds": rng.choice([0.02, 0.1, 0.3])})
            for _ in range(RUNS)]

    most = dict.fromkeys(LIMITS, 0)
    stop = threading.Event()

    def sample() -> None:
        deadline = time.monotonic() + 120
        while not stop.wait(0.1) and time.monotonic() < deadline:
            with client.redis.pipeline(transaction=False) as pipe:
                for tag in LIMITS:
                    pipe.zcard(keys.state_index("RUNNING", names[tag]))
                for tag, running in zip(LIMITS, pipe.execute()):
                    most[tag] = max(most[tag], running)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(KILLS):
        time.sleep(1.5)
        victim = rng.choice([w for w in workers if w.proc.poll() is None])
        victim.proc.send_signal(signal.SIGKILL)
        workers.append(start_worker(wait_ready=False))
    states = [run.wait(90) for run in runs]
    stop.set()
    sampler.join(5)
    assert all(state.is_final for state in states)
    assert all(most[tag] <= LIMITS[tag] for tag in LIMITS), most
    assert most["five"] > 1  # the limits were reached, not serialised
    assert all(info.holders == {} and info.waiting == 0 for info in client.limits())
