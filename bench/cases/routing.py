"""Env-affinity routing at fleet scale: 100 envs and 50 workers, and dispatch through 100 sub-queues.

Fleet: 100 venvs (made once, cached), a deployment naming each, in a database of its own. 50
workers' ``Presence`` (the code a worker's maintenance thread runs each second: resolve every env
deployments name, advertise those it has) run in this process against the bench's redis-server:
even workers have all 100 envs, odd ones only the first 50 (so they also publish why they lack the
others). Figures: what one worker's refresh costs (resolving 100 envs), the Redis commands per
second the whole fleet sends in steady state, the Redis memory of the advertisements, and what a
submit (``routing.capable``) and a ``run inspect`` of a run no worker can take
(``routing.waiting_reason``) cost. Baseline: the same fleet with 1 env.

Dispatch: two real workers in the same run, samples interleaved: one that has 1 env (listening on
its queue and 1 sub-queue), one that has all 101 envs (its queue and 101 sub-queues). The same flow
in the same venv; enqueue → first line at a follower. Then a new env's first run: a deployment
created for a venv no deployment named before, run at once (create → first line), which waits for
the worker's next look at the envs (each second).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import redis

from envflow.client import Client
from envflow.deployments import Deployment
from envflow.models import EnvKind, EnvSpec
from envflow.store import keys, routing
from envflow.worker.presence import Presence
from envflow.worker.warm import WarmPool

from .. import stats
from ..harness import base_environ, make_venv
from ..procs import Child
from ..report import Row
from . import Context, Result

FLEET_DB = 3
ENVS = 100
WORKERS = 50
TIMEOUT = 30


def run(ctx: Context) -> Result:
    h = ctx.harness
    h.use_workers()  # this case's own workers only
    venvs = [make_venv(h.cache_dir / "routing" / ("a" if i < ENVS // 2 else "b") / f"env{i:03}") for i in range(ENVS)]
    ctx.log(f"routing: {ENVS} venvs ready")
    window = 6.0 if ctx.quick else 15.0
    fleet = {n: _fleet(h, venvs[:n], window) for n in (1, ENVS)}
    dispatch = _dispatch(ctx, venvs)
    return _result(fleet, dispatch)


def _fleet(h, venvs: list[Path], window: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Register a deployment per venv, run 50 workers' presence for ``window`` seconds; what it cost."""
    url = h.db_url(FLEET_DB)
    client = Client(settings=h.settings(redis_url=url))
    r = redis.Redis.from_url(url)
    r.flushdb()
    flow_file = str(h.files.path("hello"))
    for i, venv in enumerate(venvs):
        client.create_deployment(Deployment(name=f"env{i:03}", flow_location=flow_file, flow_name="hello",
                                            virtualenv=str(venv), queue="fleet", stream_output=False))
    half = venvs[0].parent.parent
    absent = str(half / "absent")  # an env no worker has: run inspect's reason lists what they have instead
    client.create_deployment(Deployment(name="absent", flow_location=flow_file, flow_name="hello",
                                        virtualenv=absent, queue="fleet", stream_output=False))
    nowhere = routing.route_key(EnvSpec(kind=EnvKind.VENV, value=absent))
    roots = {"all": str(half), "a": str(half / "a")}
    presences = []
    for i in range(WORKERS):
        settings = h.settings(redis_url=url, env_roots=roots["all" if i % 2 == 0 else "a"], warm_max=0,
                              state_dir=str(h.root / "state" / f"fleet{i}"))
        presences.append(Presence(f"fleet-{i}", ["fleet"], r, settings, WarmPool(0, 0)))
        r.sadd("rq:workers:fleet", f"rq:worker:fleet-{i}")  # as RQ registers a worker of the queue
    try:
        t0 = time.perf_counter()
        presences[0].refresh()
        first = time.perf_counter() - t0
        for p in presences[1:]:
            p.refresh()
        refresh: list[float] = []
        calls0, started = _calls(r), time.monotonic()
        while time.monotonic() - started < window:  # each worker's maintenance tick: once a second
            tick = time.monotonic()
            for p in presences:
                t0 = time.perf_counter()
                p.refresh()
                refresh.append(time.perf_counter() - t0)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        elapsed = time.monotonic() - started
        per_second = (_calls(r) - calls0) / elapsed
        memory = sum(r.memory_usage(k) or 0 for pattern in (keys.route("fleet", "*"), keys.worker("*"))
                     for k in r.scan_iter(pattern, count=1000))
        capable = _timed(lambda: routing.capable(r, "fleet", routing.route_key(EnvSpec(kind=EnvKind.VENV,
                                                                                         value=str(venvs[0])))))
        reason = routing.waiting_reason(r, "fleet", nowhere) or ""
        inspect = _timed(lambda: routing.waiting_reason(r, "fleet", nowhere))
        advertised = r.zcard(keys.route("fleet", routing.route_key(EnvSpec(kind=EnvKind.VENV, value=str(venvs[0])))))
    finally:
        client.redis.close()
        r.flushdb()
        r.close()
    return {"first_refresh": first, "refresh_p50": statistics.median(refresh), "commands_per_s": per_second,
            "memory": memory, "capable_p50": capable, "inspect_p50": inspect, "reason_bytes": len(reason.encode()),
            "advertised": advertised}


def _calls(r: redis.Redis) -> int:
    return sum(int(v["calls"]) for v in r.info("commandstats").values())


def _timed(fn, rounds: int = 50) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _dispatch(ctx: Context, venvs: list[Path]) -> dict[str, list[float]]:
    h = ctx.harness
    one = make_venv(h.cache_dir / "routing" / "one" / "env")
    flow_file = str(h.files.path("hello"))
    names = {}
    for queue in ("one", "many"):
        names[queue] = h.client.create_deployment(Deployment(
            name=f"route-{queue}", flow_location=flow_file, flow_name="hello", virtualenv=str(one),
            queue=f"bench-route-{queue}", stream_output=False)).name
    for i, venv in enumerate(venvs):  # the envs only the second worker has
        h.client.create_deployment(Deployment(name=f"fleet{i:03}", flow_location=flow_file, flow_name="hello",
                                              virtualenv=str(venv), queue="bench-route-many", stream_output=False))
    workers = {"one": _start(h, "one", str(one.parent)), "many": _start(h, "many", str(venvs[0].parent.parent.resolve()))}
    samples: dict[str, list[float]] = {"one": [], "many": [], "new": []}
    rounds = ctx.sizes.dispatch_samples
    try:
        for i in range(rounds + 3):
            for queue in ("one", "many"):
                t0 = time.perf_counter()
                line = next(h.client.run(names[queue]).follow(timeout=TIMEOUT))
                if line.text != "hello world":
                    raise RuntimeError(f"{names[queue]}: unexpected output {line.text!r}")
                if i >= 3:
                    samples[queue].append(time.perf_counter() - t0)
                h.wait_idle()
        for i in range(3 if ctx.quick else 10):
            fresh = make_venv(h.cache_dir / "routing" / "one" / f"new{i}")
            time.sleep(random.random())  # at any point of the worker's second, not locked to its phase
            t0 = time.perf_counter()
            name = h.client.create_deployment(Deployment(
                name=f"new{i}", flow_location=flow_file, flow_name="hello", virtualenv=str(fresh),
                queue="bench-route-one", stream_output=False)).name
            next(h.client.run(name).follow(timeout=TIMEOUT))
            samples["new"].append(time.perf_counter() - t0)
            h.wait_idle()
            h.client.delete_deployment(name)
    finally:
        for child in workers.values():
            child.stop()
        for name in [*names.values(), *(f"hello/fleet{i:03}" for i in range(len(venvs)))]:
            h.client.delete_deployment(name)
        h.redis.delete(keys.ENVS)  # later cases' workers need not resolve this case's envs
    return samples


def _start(h, queue: str, roots: str) -> Child:  # type: ignore[no-untyped-def]
    name = f"bench-route-{queue}"
    env = {**base_environ(), **h.envflow_environ(),
           "ENVFLOW_ENV_ROOTS": f"{roots}:{h.cache_dir.resolve() / 'routing' / 'one'}"}
    child = Child(name, [sys.executable, "-m", "envflow", "worker", "start", "--queue", f"bench-route-{queue}",
                         "--name", name], h.logs / f"{name}.log", env, h.root / "work")
    child.wait_for("ready on queue", 60)
    h.envflow_workers.append(child)
    deadline = time.monotonic() + 20  # until it listens on the sub-queues of the envs it has
    wanted = 1 if queue == "one" else ENVS + 1
    while time.monotonic() < deadline:
        if sum(routing.capable(h.redis, f"bench-route-{queue}", k.decode()) for k in h.redis.hkeys(keys.ENVS)) >= wanted:
            break
        time.sleep(0.1)
    time.sleep(2.5)  # its dequeue loop picks the new sub-queues up within ROUTE_POLL
    return child


def _result(fleet: dict[int, dict[str, float]], dispatch: dict[str, list[float]]) -> Result:
    base, big = fleet[1], fleet[ENVS]
    kib = 1024
    rows = [
        Row(case=f"one worker's presence refresh, {ENVS} envs (p50, each second)",
            envflow=stats.ms(big["refresh_p50"]), baselines=[f"1 env {stats.ms(base['refresh_p50'])}"],
            ratios=[f"{stats.ratio(big['refresh_p50'], base['refresh_p50']):.1f}× ({stats.ms(big['first_refresh'])} "
                    "the first time)"]),
        Row(case=f"Redis commands/s of {WORKERS} workers' presence, {ENVS} envs",
            envflow=f"{big['commands_per_s']:,.0f}/s", baselines=[f"1 env {base['commands_per_s']:,.0f}/s"],
            ratios=[f"{stats.ratio(big['commands_per_s'], base['commands_per_s']):.1f}×"]),
        Row(case=f"Redis memory of the advertisements, {WORKERS} workers × {ENVS} envs",
            envflow=f"{big['memory'] / kib:,.0f} KiB", baselines=[f"1 env {base['memory'] / kib:,.0f} KiB"],
            ratios=[f"{stats.ratio(big['memory'], base['memory']):.1f}×"]),
        Row(case="submit's capable-worker count (p50)", envflow=stats.ms(big["capable_p50"]),
            baselines=[f"1 env {stats.ms(base['capable_p50'])}"],
            ratios=[f"{int(big['advertised'])} workers advertise the first env"]),
        Row(case="run inspect's waiting reason, no worker has the env (p50)", envflow=stats.ms(big["inspect_p50"]),
            baselines=[f"1 env {stats.ms(base['inspect_p50'])}"],
            ratios=[f"{int(big['reason_bytes'])} bytes of reason"]),
    ]
    one, many = stats.summary(dispatch["one"]), stats.summary(dispatch["many"])
    for p in ("p50", "p99"):
        rows.append(Row(
            case=f"dispatch {p}, worker on {ENVS + 1} sub-queues (enqueue → first line)",
            envflow=stats.ms(many[p]), baselines=[f"worker on 1 sub-queue {stats.ms(one[p])}"],
            ratios=[f"{stats.ratio(many[p], one[p]):.2f}×"],
            target="≤ 1.05×" if p == "p50" else "—",
            met=(many[p] <= 1.05 * one[p]) if p == "p50" else None))
    new = stats.summary(dispatch["new"])
    rows.append(Row(
        case="a new env's first run, create → first line (p50)", envflow=stats.ms(new["p50"]),
        baselines=[f"dispatch of a known env {stats.ms(one['p50'])}"],
        ratios=[f"+{stats.ms(new['p50'] - one['p50'])}, {stats.ms(new['p99'])} p99: the worker's next look at its envs "
                "(each second)"]))
    notes = [f"routing: fleet of {WORKERS} simulated workers (their Presence, in one process, each refreshed once "
             f"a second: even ones have all {ENVS} envs, odd ones 50); dispatch n = {many['n']} samples each, "
             "interleaved, two real workers."]
    return Result(rows, notes, {"fleet": fleet, "dispatch": dispatch})
