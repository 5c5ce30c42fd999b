"""`docker compose up` of compose.yaml, end to end on one stack, in file order: the examples it
registers, a flow in each baked conda env and in a venv made through the `venvs` service, live
output on the host, three workers running thirty flows, a worker killed mid-run, Redis restarted
mid-run, the web UI on loopback, a graceful `docker compose stop`, the containers' user, PID 1, mounts and
health, and `down`."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from envflow.errors import EnvflowWarning
from envflow.models import RunState

from ..support.flows import load_flows, write_flow
from .conftest import env_names, read_env_file
from .probes import PROBE, deploy, wait_until_looked_for
from .stack import README_SCALE, README_VENV, Stack


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return load_flows(write_flow(tmp_path_factory.mktemp("flows"), PROBE))


def wait_for_completed_run(stack: Stack, deployment: str, timeout: float = 200) -> None:
    client = stack.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.state is RunState.COMPLETED for r in client.runs(deployment=deployment, limit=50)):
            return
        time.sleep(2)
    states = [(r.state, r.error) for r in client.runs(deployment=deployment)]
    raise AssertionError(f"no completed run of {deployment} in {timeout}s: {states}\n{stack.logs('worker')[-4000:]}")


def first_line(run, text: str, timeout: float = 120):  # type: ignore[no-untyped-def]
    for line in run.follow(timeout=timeout):
        if line.text.startswith(text):
            return line
    raise AssertionError(f"no line {text!r} within {timeout}s: {run.record()}")


def wait_for_state(run, states: set[RunState], timeout: float) -> RunState:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run.state
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"run not {sorted(s.value for s in states)} within {timeout}s: {run.record()}")


def test_up_registers_and_runs_the_examples(stack: Stack) -> None:
    """`docker compose up` alone: the example venv is made, the examples registered and run on
    schedule, their output (with the conda env's `variables:`) in `docker compose logs`."""
    assert stack.exit_status("venvs") == 0, stack.logs("venvs")
    assert (stack.venvs / "example" / "pyvenv.cfg").is_file()
    names = {d.name for d in stack.client().deployments()}
    assert {"hello-conda/py38", "hello-conda/py312", "hello-venv/example"} <= names
    for deployment in ("hello-conda/py38", "hello-conda/py312", "hello-venv/example"):
        wait_for_completed_run(stack, deployment)
    logs = stack.logs("worker")
    for name in ("py38", "py312"):
        assert f"Hello! Running with /opt/conda/envs/{name}/bin/python" in logs
        assert f"in conda env {name}: {read_env_file(name)['variables']['FLOW_ENV_LABEL']}" in logs
    assert "Hello compose! Running with /venvs/example/bin/python" in logs


@pytest.mark.parametrize("name", env_names())
def test_flow_in_each_conda_env(stack: Stack, flows: dict, name: str) -> None:
    env = read_env_file(name)
    variables = env.get("variables", {})
    deployment = deploy(stack, flows, "probe", f"conda-{name}", condaenv=name)
    run = stack.client().run(deployment, {"names": sorted(variables)})
    assert run.wait(120) is RunState.COMPLETED, run.record()
    result = run.result()
    python = next(str(d) for d in env["dependencies"] if str(d).startswith("python"))
    assert result["version"] == [int(p) for p in python.split("=")[1].split(".")[:2]]
    prefix = f"/opt/conda/envs/{name}"
    assert result["prefix"] == prefix and result["conda_prefix"] == prefix and result["conda_env"] == name
    assert result["path0"] == f"{prefix}/bin"
    assert result["vars"] == variables
    pandas = next((str(d) for d in env["dependencies"] if str(d).startswith("pandas")), None)
    if pandas:
        assert result["pandas"] == pandas.split("=")[1]
    assert result["no_envflow"]


# A deployment of a venv just made: its first run may be submitted before the workers have looked at
# the env it names (they do within seconds), so the warning that it waits may come, and is expected.
NEW_VENV_WAITS = r"ignore:run [0-9a-f]+. waiting for a worker with venv./venvs/:envflow.errors.EnvflowWarning"  # no colons


@pytest.mark.filterwarnings(NEW_VENV_WAITS)
def test_venv_created_through_the_venvs_service(stack: Stack, flows: dict) -> None:
    """The README's `docker compose run --rm venvs envflow venv create ...`, then a run in that venv."""
    made = stack.compose(*README_VENV)
    assert "venv ready" in made.stdout + made.stderr
    assert (stack.venvs / "myproject" / "pyvenv.cfg").is_file()
    deployment = deploy(stack, flows, "probe", "venv-myproject", virtualenv="/venvs/myproject")
    run = stack.client().run(deployment)
    assert run.wait(120) is RunState.COMPLETED, run.record()
    assert run.result()["prefix"] == "/venvs/myproject" and run.result()["version"] == [3, 12]


@pytest.mark.filterwarnings(NEW_VENV_WAITS)
def test_venv_on_python_3_8(stack: Stack, flows: dict) -> None:
    stack.compose("run", "--rm", "venvs", "envflow", "venv", "create", "/venvs/legacy", "--python", "py38")
    deployment = deploy(stack, flows, "probe", "venv-legacy", virtualenv="/venvs/legacy")
    run = stack.client().run(deployment)
    assert run.wait(120) is RunState.COMPLETED, run.record()
    assert run.result()["prefix"] == "/venvs/legacy" and run.result()["version"] == [3, 8]


def test_a_venv_made_elsewhere_waits_saying_why(stack: Stack, flows: dict) -> None:
    """A venv whose interpreter the image lacks is an env no worker has: its run is taken by none and
    waits, PENDING, with the reason naming the missing interpreter and the command that remakes it."""
    broken = stack.venvs / "from-host"
    (broken / "bin").mkdir(parents=True)
    (broken / "pyvenv.cfg").write_text("home = /nonexistent/bin\ninclude-system-site-packages = false\n")
    (broken / "bin" / "python").symlink_to("/nonexistent/bin/python3")
    deployment = deploy(stack, flows, "probe", "venv-from-host", virtualenv="/venvs/from-host")
    wait_until_looked_for(stack, deployment)
    with pytest.warns(EnvflowWarning, match="waiting for a worker with venv:/venvs/from-host"):
        run = stack.client().run(deployment)
    try:
        deadline = time.monotonic() + 30  # the workers look at a newly named env within seconds
        while "/nonexistent" not in getattr(run.record().waiting, "message", "") and time.monotonic() < deadline:
            time.sleep(1)
        record = run.record()
        assert record.state is RunState.PENDING and record.attempts == [], record
        waiting = getattr(record.waiting, "message", "")
        assert "/nonexistent" in waiting and "envflow venv create /venvs/from-host" in waiting, waiting
    finally:
        run.cancel()
    assert run.wait(30) is RunState.CANCELLED, run.record()


def test_live_output_on_the_host(stack: Stack, flows: dict) -> None:
    """`envflow deployment run ... --follow` on the host: each line arrives while the flow still runs."""
    deployment = deploy(stack, flows, "ticker", "ticker", condaenv="py312")
    env = {**stack.environ(), "ENVFLOW_REDIS_URL": stack.redis_url}
    proc = subprocess.Popen([sys.executable, "-m", "envflow", "deployment", "run", deployment, "--follow"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = stack.client()
    seen: list[tuple[str, RunState | None]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            runs = client.runs(deployment=deployment, limit=1)
            seen.append((line.strip(), runs[0].state if runs else None))
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [text for text, _ in seen] == [f"tick {i}" for i in range(5)]
    assert all(state is RunState.RUNNING for _, state in seen), seen


def test_three_workers_run_thirty_flows_each_once(stack: Stack, flows: dict) -> None:
    """`--scale worker=3` on the host's network (one hostname): three distinct worker names, and
    thirty runs spread over them, each run exactly once."""
    stack.compose(*README_SCALE)
    names = stack.wait_for_workers(3)
    assert len(stack.containers("worker")) == 3
    deployment = deploy(stack, flows, "probe", "spread", condaenv="py312")
    client = stack.client()
    runs = [client.run(deployment, {"sleep": 1.0}) for _ in range(30)]
    deadline = time.monotonic() + 300
    for run in runs:
        assert run.wait(max(1.0, deadline - time.monotonic())) is RunState.COMPLETED, run.record()
    records = [run.record() for run in runs]
    assert all(len(r.attempts) == 1 for r in records), [r.attempts for r in records if len(r.attempts) != 1]
    assert {r.attempts[0].worker for r in records} == names
    containers = {run.result()["container"] for run in runs}
    assert containers == {c.id for c in stack.containers("worker")}


def test_killed_worker_run_crashes_and_is_retried_on_another(stack: Stack, flows: dict) -> None:
    """SIGKILL to the replica running a flow: the attempt is CRASHED within 30 s, the run retried on
    another replica."""
    assert len(stack.containers("worker")) == 3
    deployment = deploy(stack, flows, "slow", "killed", condaenv="py312", retries=1, retry_delay=[0])
    run = stack.client().run(deployment, {"seconds": 20})
    victim = first_line(run, "started").text.split()[1]
    stack.docker.containers.get(victim).kill(signal="SIGKILL")
    killed_at = time.time()
    assert run.wait(180) is RunState.COMPLETED, run.record()
    first, second = run.record().attempts
    assert first.state == RunState.CRASHED.value and first.ended_at is not None
    assert first.ended_at - killed_at <= 30, first
    assert second.worker != first.worker and second.state == RunState.COMPLETED.value
    started = [line.text for line in run.follow(timeout=10) if line.text.startswith("started")]
    assert len(started) == 2 and started[1].split()[1] != victim
    stack.compose(*README_SCALE)  # the replica back
    stack.wait_for_workers(3)


def test_redis_restart_mid_run_loses_nothing(stack: Stack, flows: dict) -> None:
    """`docker compose restart redis` while a flow prints: the run completes with every line once,
    in order; runs waiting in a queue survive it (append-only file on the redis-data volume)."""
    ticker = deploy(stack, flows, "ticker", "through-restart", condaenv="py312")
    parked = deploy(stack, flows, "probe", "parked", condaenv="py312", queue="parked")
    client = stack.client()
    with pytest.warns(EnvflowWarning, match="no live worker on queue parked"):
        queued = [client.run(parked) for _ in range(3)]
    run = client.run(ticker, {"n": 30, "every": 0.5})
    first_line(run, "tick 3")
    stack.compose("restart", "redis", timeout=120)
    assert run.wait(120) is RunState.COMPLETED, run.record()
    lines = [line.text for line in run.follow(timeout=30)]
    assert lines == [f"tick {i}" for i in range(30)]
    assert [r.state for r in queued] == [RunState.PENDING] * 3
    # A worker for that queue, once: the queued runs are still there to run.
    stack.compose("run", "--rm", "--no-deps", "worker", "envflow", "worker", "start", "--queue", "parked", "--burst",
                  timeout=300)
    assert [r.wait(60) for r in queued] == [RunState.COMPLETED] * 3


def test_containers_user_pid1_mounts_and_health(stack: Stack) -> None:
    """uid 10001, tini as PID 1, project and venvs read-only, the host's network, healthchecks healthy."""
    deadline = time.monotonic() + 150
    services = ("redis", "scheduler", "worker", "ui")
    while True:
        containers = [c for s in services for c in stack.containers(s)]
        health = {c.name: c.attrs["State"].get("Health", {}).get("Status") for c in containers}
        if all(s == "healthy" for s in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert health and all(s == "healthy" for s in health.values()), health
    for container in (c for s in ("scheduler", "worker") for c in stack.containers(s)):
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        assert container.exec_run(["cat", "/proc/1/cmdline"]).output.split(b"\0")[0] == b"/usr/bin/tini"
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert not mounts["/project"]["RW"] and not mounts["/venvs"]["RW"], mounts
        assert container.exec_run(["touch", "/venvs/x"]).exit_code != 0
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"


def test_ui_serves_runs_and_metrics_on_loopback(stack: Stack, flows: dict) -> None:
    """The ui service: `envflow ui` on the host's loopback (the override), asking for its token."""
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{stack.ui_port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                assert response.read() == b"ok\n"
                break
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the ui service does not answer:\n{stack.logs('ui')[-4000:]}") from None
            time.sleep(1)
    deployment = deploy(stack, flows, "ticker", "ui-ticker", condaenv="py312")
    run = stack.client().run(deployment, {"n": 2, "every": 0.1})
    assert run.wait(120) is RunState.COMPLETED, run.record()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(base + "/metrics"), timeout=10)
    assert refused.value.code == 401
    auth = {"Authorization": f"Bearer {stack.ui_token}"}
    with urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=auth), timeout=10) as response:
        metrics = response.read().decode()
    workers = float(len(stack.worker_names()))
    assert f'envflow_workers{{queue="default"}} {workers}' in metrics and "envflow_runs_running" in metrics
    assert f'envflow_runs_total{{deployment="{deployment}",state="COMPLETED"}} 1.0' in metrics
    with urllib.request.urlopen(urllib.request.Request(f"{base}/runs/{run.id}/output.txt", headers=auth),
                                timeout=10) as response:
        assert response.read().decode() == "tick 0\ntick 1\n"
    for container in stack.containers("ui"):
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"


def test_compose_stop_lets_the_running_flow_finish(stack: Stack, flows: dict) -> None:
    deployment = deploy(stack, flows, "slow", "slow", condaenv="py312")
    run = stack.client().run(deployment)
    first_line(run, "started")
    stack.compose("stop", "worker", timeout=120)
    assert run.wait(30) is RunState.COMPLETED, run.record()
    assert run.result() == "done"
    assert "finished" in [line.text for line in stack.client().get_run(run.id).follow(timeout=10)]
    for container in stack.containers("worker", all=True):
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.attrs["State"]


def test_down_removes_the_stack(stack: Stack) -> None:
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "70")
    label = f"com.docker.compose.project={stack.project}"
    assert stack.docker.containers.list(all=True, filters={"label": label}) == []
    assert stack.docker.volumes.list(filters={"label": label}) == []
    assert (stack.venvs / "example" / "pyvenv.cfg").is_file()  # host directories outlive the stack
