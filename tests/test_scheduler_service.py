"""The scheduler service against a real Redis: each slot becomes exactly one run.

In-process tests drive ``SchedulerService.tick`` with an injected clock; the real-time
tests run ``envflow scheduler start`` processes, kill them, and stop Redis under them.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rq import Queue

from envflow.client import Client
from envflow.deployment_files import build_record
from envflow.deployments import Deployment
from envflow.errors import ParameterError
from envflow.models import RunRecord, RunState
from envflow.scheduler.enqueue import slot_key
from envflow.scheduler.service import SchedulerService
from envflow.schedules import Cron, Interval
from envflow.settings import Settings
from envflow.store import keys
from envflow.store.jobs import SERIALIZER

from .support.flows import NO_WORKER_YET, deploy, load_flows, write_flow
from .support.processes import RedisServer, WorkerProcess, envflow_command

BEAT = """
    from envflow import flow

    @flow
    def beat(n=1):
        print("beat", n)
"""

T0 = 1_700_000_000.25  # the injected clock starts here (in the past: runs are PENDING at once)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def runs_of(client: Client, name: str) -> list[RunRecord]:
    return sorted(client.runs(name, limit=100_000), key=lambda r: r.scheduled_for or 0)


def slots_of(client: Client, name: str) -> list[float]:
    return [r.scheduled_for for r in runs_of(client, name) if r.scheduled_for is not None]


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def assert_each_slot_once(client: Client, name: str, step: float = 1.0) -> list[float]:
    """No slot doubled, none missing between the first and the last; every run has its job and slot key."""
    runs = runs_of(client, name)
    slots = [r.scheduled_for for r in runs]
    assert len(set(slots)) == len(slots), f"doubled slots: {sorted(s for s in slots if slots.count(s) > 1)}"
    assert slots == [slots[0] + i * step for i in range(len(slots))], f"missing slots in {slots}"
    queue = Queue("default", connection=client.redis, serializer=SERIALIZER)
    jobs = set(queue.get_job_ids()) | set(queue.scheduled_job_registry.get_job_ids())
    assert {r.id for r in runs if r.state is RunState.PENDING} <= jobs
    assert len(client.redis.keys(keys.PREFIX + "slot:*")) == len(runs)
    for r in runs:
        assert r.schedule is not None
        assert client.redis.get(slot_key(name, r.schedule, r.scheduled_for)) == r.id.encode()
    return slots


@pytest.fixture
def scheduler_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The scheduler's log records (the CLI's logging setup, if it ran here, stops propagation)."""
    envflow_logger = logging.getLogger("envflow")
    propagate = envflow_logger.propagate
    envflow_logger.propagate = True
    caplog.set_level(logging.INFO, logger="envflow.scheduler")
    yield caplog
    envflow_logger.propagate = propagate


@pytest.fixture
def make_service(settings: Settings) -> Callable[..., SchedulerService]:
    def make(clock: Callable[[], float] = time.time, **kwargs: object) -> SchedulerService:
        return SchedulerService(settings, clock=clock, reap=False, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def start_scheduler(env_vars: dict[str, str], workdir: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, wait_ready: bool = True) -> WorkerProcess:
        log = tmp_path / f"scheduler-{len(procs)}.log"
        env = {**os.environ, **env_vars, **(extra_env or {})}
        with open(log, "wb") as handle:
            proc = subprocess.Popen(envflow_command("scheduler", "start", *args), cwd=workdir, env=env,
                                    stdout=handle, stderr=subprocess.STDOUT)
        scheduler = WorkerProcess(proc, log)
        procs.append(scheduler)
        if wait_ready:
            wait_for(lambda: "started on" in scheduler.output() or proc.poll() is not None, 20, "the scheduler")
            assert proc.poll() is None, scheduler.output()
        return scheduler

    yield start
    for p in procs:
        p.stop(signal.SIGKILL, timeout=10)


# In-process, injected clock


def test_slots_become_runs_once(client, make_service, workdir):
    name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=10), parameters={"n": 7})
    schedule_id = client.get_deployment(name).schedules[0].id
    clock = Clock()
    service = make_service(clock)
    assert service.tick() == pytest.approx(T0 + 1)  # brand new: starts now, no backfill
    assert client.runs(name) == []
    clock.advance(9.0)
    assert service.tick() == pytest.approx(T0 + 9.75)  # sleeps until the next slot, not a whole tick
    assert client.runs(name) == []
    clock.advance(0.9)
    service.tick()
    [run] = client.runs(name)
    assert (run.scheduled_for, run.schedule, run.parameters) == (T0 + 9.75, schedule_id, {"n": 7})
    assert run.state is RunState.PENDING
    assert client.redis.hget(keys.schedule_state(name), schedule_id) == repr(T0 + 9.75).encode()
    for _ in range(3):  # the same moment again, by this scheduler or another: nothing new
        service.tick()
        make_service(clock).tick()
    assert_each_slot_once(client, name, step=10)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("skip", [100]), ("run_once", [90, 100]), ("catch_up", [70, 80, 90, 100])],
)
def test_missed_slots_after_downtime_follow_the_policy(client, make_service, workdir, policy, expected):
    name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=10),
                  missed_runs=policy, catch_up_limit=3)
    clock = Clock(T0 - 0.25)  # on a slot: the schedule starts here
    service = make_service(clock)
    service.tick()
    clock.advance(100.5)  # every scheduler was down for 100 s; slots more than 10 s late were missed
    service.tick()
    assert [s - clock.now + 100.5 for s in slots_of(client, name)] == expected
    clock.advance(10)
    service.tick()
    assert slots_of(client, name)[-1] == T0 - 0.25 + 110


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_paused_deployments_get_no_runs_and_no_backfill(client, make_service, workdir):
    name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=10), missed_runs="catch_up")
    clock = Clock(T0 - 0.25)
    service = make_service(clock)
    service.tick()
    client.pause_deployment(name)
    for _ in range(6):
        clock.advance(20)
        service.tick()
    assert client.runs(name) == []
    client.resume_deployment(name)
    clock.advance(10.5)
    service.tick()
    assert slots_of(client, name) == [T0 - 0.25 + 130]
    on_demand = client.run(name)  # never goes through the scheduler
    assert on_demand.record().scheduled_for is None


def test_changed_schedules_start_fresh_and_deleted_deployments_stop(client, make_service, workdir):
    path = write_flow(workdir, BEAT)
    name = deploy(client, path, "beat", schedule=Interval(seconds=10))
    clock = Clock(T0 - 0.25)
    service = make_service(clock)
    service.tick()
    clock.advance(10.1)
    service.tick()
    deploy(client, path, "beat", schedule=Interval(seconds=10))  # re-registered unchanged: cursor kept
    clock.advance(10)
    service.tick()
    assert len(slots_of(client, name)) == 2
    deploy(client, path, "beat", schedule=[Interval(seconds=10), Cron("* * * * *")])
    new_id = client.get_deployment(name).schedules[1].id
    clock.advance(5)
    service.tick()
    assert client.redis.hget(keys.schedule_state(name), new_id) == repr(clock.now).encode()
    deploy(client, path, "beat", schedule=Interval(seconds=5))
    service.tick()
    state = client.redis.hgetall(keys.schedule_state(name))
    assert list(state) == [client.get_deployment(name).schedules[0].id.encode()]  # old cursors dropped
    client.delete_deployment(name)
    clock.advance(100)
    service.tick()
    assert len(slots_of(client, name)) == 2 and not client.redis.exists(keys.schedule_state(name))


def test_a_deployment_its_flow_cannot_run_is_logged_not_enqueued(client, make_service, workdir, scheduler_log):
    flow = write_flow(workdir, """
        from envflow import flow

        @flow
        def needs(x):
            print(x)
    """)
    with pytest.raises(ParameterError, match="needs parameter x"):
        deploy(client, flow, "needs", schedule=Interval(seconds=10))  # refused when it is created...
    # ...but a record written without that check (by hand, or by an older envflow) must not break the scheduler.
    record, _ = build_record(Deployment(name="test", flow=load_flows(flow)["needs"], schedule=Interval(seconds=10)),
                             "default")
    name = record.name
    client.redis.set(keys.deployment(name), record.model_dump_json())
    client.redis.zadd(keys.DEPLOYMENTS, {name: 0})
    clock = Clock(T0 - 0.25)
    service = make_service(clock)
    service.tick()
    clock.advance(10.5)
    service.tick()
    service.tick()
    assert client.runs(name) == []
    errors = [r.getMessage() for r in scheduler_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "needs parameter x" in errors[0] and name in errors[0]


def test_broken_deployments_do_not_stop_the_others(client, make_service, workdir, scheduler_log):
    name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=10))
    other = deploy(client, write_flow(workdir, BEAT), "beat", name="other", schedule=Interval(seconds=10))
    client.redis.set(keys.deployment("beat/garbled"), "{not json")
    client.redis.zadd(keys.DEPLOYMENTS, {"beat/garbled": 0})
    client.redis.set(keys.schedule_state(other), "a string, not a hash")
    clock = Clock(T0 - 0.25)
    service = make_service(clock)
    for _ in range(3):
        service.tick()
        clock.advance(10)
    assert len(slots_of(client, name)) == 2 and client.runs(other) == []
    errors = sorted(r.getMessage() for r in scheduler_log.records if r.levelno >= logging.ERROR)
    assert len(errors) == 2  # once each, not every pass
    assert "beat/garbled is not scheduled: ValidationError" in errors[0] and "WRONGTYPE" in errors[1]


def test_concurrent_schedulers_make_one_run_per_slot(client, settings, workdir):
    name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=1))
    clock = Clock()
    services = [SchedulerService(settings, clock=clock, reap=False) for _ in range(6)]
    barrier = threading.Barrier(len(services))

    def tick(service: SchedulerService) -> None:
        barrier.wait(10)  # all decide at the same moment, so their transactions collide
        service.tick()

    with ThreadPoolExecutor(len(services)) as pool:
        for step in [0, *[1.0] * 25, 4.3, 0.4, *[1.0] * 10]:
            clock.advance(step)
            list(pool.map(tick, services))
    slots = assert_each_slot_once(client, name)
    assert slots[0] == T0 + 0.75 and slots[-1] == int(clock.now)


# Real processes, real time


def test_one_run_per_second_end_to_end(client, start_scheduler, start_worker, venv, workdir):
    (workdir / "deployments.py").write_text(
        "from envflow import Interval, flow\n"
        "from envflow.deployments import Deployment\n\n"
        "@flow\n"
        "def beat(n=1):\n"
        "    print('beat', n)\n\n"
        f"Deployment(name='every-second', flow=beat, virtualenv={str(venv)!r}, schedule=Interval(seconds=1))\n"
    )
    (workdir / "README.md").write_text("# not a deployment file: ignored\n")
    (workdir / "broken.yaml").write_text(
        "- name: broken\n  flow_location: deployments.py\n  schedule: {cron: '99 * * * *'}\n"
    )
    start_worker()
    scheduler = start_scheduler(extra_env={"ENVFLOW_DEPLOYMENTS": str(workdir / "*.*")})
    name = "beat/every-second"
    wait_for(lambda: bool(client.runs(name)), 10, "the first scheduled run")
    time.sleep(4.1)
    assert scheduler.stop(signal.SIGTERM, timeout=10) == 0
    slots = assert_each_slot_once(client, name)
    assert 5 <= len(slots) <= 7
    time.sleep(1.2)
    assert len(client.runs(name, limit=100)) == len(slots)  # stopped means stopped
    runs = runs_of(client, name)
    lateness = sorted(r.created_at - (r.scheduled_for or 0) for r in runs)
    assert 0 <= lateness[0] and lateness[len(lateness) // 2] < 0.25 and lateness[-1] < 1.0
    wait_for(lambda: all(r.state.is_final for r in client.runs(name, limit=100)), 30, "the worker to run them")
    assert {r.state for r in client.runs(name, limit=100)} == {RunState.COMPLETED}
    log = scheduler.output()
    assert "invalid deployment" in log and "'99 * * * *'" in log and "registered deployment beat/every-second" in log
    assert "SIGTERM received" in log and "Traceback" not in log and "README" not in log


def test_two_schedulers_killed_at_random_points(client, start_scheduler, workdir):
    name = deploy(client, write_flow(workdir, BEAT), "beat", name="every-second", schedule=Interval(seconds=1))
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    schedulers = [start_scheduler(), start_scheduler()]
    wait_for(lambda: bool(client.runs(name)), 10, "the first scheduled run")
    kills = 0
    deadline = time.monotonic() + 14
    while time.monotonic() < deadline:
        if rng.random() < 0.5:  # right as a slot falls due: in the middle of the commit
            time.sleep(1 - time.time() % 1 + rng.uniform(0, 0.015))
        else:
            time.sleep(rng.uniform(0.2, 1.2))
        i = rng.randrange(2)
        schedulers[i].stop(signal.SIGKILL)
        kills += 1
        schedulers[i] = start_scheduler(wait_ready=rng.random() < 0.5)
    time.sleep(1.5)
    for s in schedulers:
        wait_for(lambda: "started on" in s.output(), 20, "a restarted scheduler")  # noqa: B023
    for s in schedulers:
        assert s.stop(signal.SIGTERM, timeout=10) == 0, s.output()
    slots = assert_each_slot_once(client, name)
    assert len(slots) >= 14, f"seed {seed}: {len(slots)} slots"
    assert kills >= 10


def test_survives_a_redis_outage(tmp_path, workdir, scheduler_log):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    service: SchedulerService | None = None
    thread = None
    try:
        settings = Settings(redis_url=server.url, state_dir=tmp_path / "state", reaper_interval=0.5)
        client = Client(settings=settings)
        name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=1))
        service = SchedulerService(settings, name="outage-test")
        thread = threading.Thread(target=service.run)
        thread.start()
        wait_for(lambda: len(client.runs(name)) >= 2, 10, "two runs")
        client.redis.shutdown(save=True)  # keeps the data: the outage is an outage, not a wipe
        assert server.proc is not None and server.proc.wait(10) is not None
        time.sleep(3)
        server.start()
        before = len(client.runs(name, limit=100))
        wait_for(lambda: len(client.runs(name, limit=100)) >= before + 5, 15, "runs after the outage")
        service.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert_each_slot_once(client, name)
        made_up = [r for r in runs_of(client, name) if r.created_at - (r.scheduled_for or 0) > 1.5]
        assert len(made_up) >= 2  # slots that fell due during the outage ran once Redis was back
        messages = [r.getMessage() for r in scheduler_log.records]
        assert any("cannot reach Redis" in m for m in messages)
        assert any("answers again" in m for m in messages)
    finally:
        if service is not None:
            service.stop()
        if thread is not None:
            thread.join(10)
        server.stop()


def test_the_scheduler_reaps_runs_of_a_dead_worker(client, settings, start_worker, venv, workdir):
    flow = write_flow(workdir, """
        import time
        from envflow import flow

        @flow
        def sleeper():
            print("sleeping")
            time.sleep(30)
    """)
    name = deploy(client, flow, "sleeper", virtualenv=str(venv))
    worker = start_worker()
    run = client.run(name)
    wait_for(lambda: client.store.get(run.id).state is RunState.RUNNING, 20, "the run to start")
    worker.stop(signal.SIGKILL)
    service = SchedulerService(settings)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        # read the record directly: FlowRun.wait would reap the run itself
        wait_for(lambda: client.store.get(run.id).state is RunState.CRASHED, 15, "the run to be reaped", 0.1)
    finally:
        service.stop()
        thread.join(10)
    assert "no heartbeat" in (client.store.get(run.id).reason or "")


def test_no_runs_pile_up_behind_one_waiting_for_its_env(client, make_service, workdir):
    """While a run of the deployment waits because every live worker lacks its env, its due slots make no
    runs and are recorded as skipped (shown by `deployment inspect`); once it no longer waits, the slots
    left behind follow missed_runs."""
    from envflow.cli.deployment import skipped_rows
    from envflow.waits import ENV, Waiting

    name = deploy(client, write_flow(workdir, BEAT), "beat", schedule=Interval(seconds=10), missed_runs="run_once")
    clock = Clock(T0 - 0.25)
    service = make_service(clock)
    service.tick()
    clock.advance(10)
    service.tick()
    [first] = client.runs(name)
    # What a worker writes once it has looked for the env and lacks it (routing.note_route).
    assert client.store.scripts.note_waiting([first.id], Waiting(ENV, "waiting for a worker with venv:./x")).run() == 1
    for _ in range(5):
        clock.advance(10)
        service.tick()
    assert [r.id for r in client.runs(name)] == [first.id]
    [(label, text)] = skipped_rows(client, client.get_deployment(name))
    assert label == "skipped slots" and text.startswith("5 (") and f"run {first.short_id} waiting for" in text
    client.cancel(first.id)
    clock.advance(10)
    service.tick()
    assert slots_of(client, name) == [T0 - 0.25 + 10, T0 - 0.25 + 60, T0 - 0.25 + 70]  # run_once: the latest missed, then on time
