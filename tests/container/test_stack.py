"""`docker compose up` of compose.yaml, end to end: the examples it registers, a flow in each baked conda
env and in a venv made with `envflow venv create`, live output on the host, 3 workers running 30 flows,
a graceful `docker compose stop` mid-run, and `down`. The tests run in file order on one stack."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from envflow.deployments import Deployment
from envflow.models import RunState

from ..conftest import load_flows
from .conftest import Stack, env_names, read_env_file, write_flow

PROBE = """
    import os, subprocess, sys
    from envflow import flow

    @flow
    def probe(names=()):
        import socket
        imported = subprocess.run([sys.executable, "-c", "import envflow"], capture_output=True, cwd="/")
        no_envflow = imported.returncode != 0
        return {"version": list(sys.version_info[:2]), "prefix": sys.prefix, "host": socket.gethostname(),
                "conda_env": os.environ.get("CONDA_DEFAULT_ENV"), "vars": {n: os.environ.get(n) for n in names},
                "no_envflow": no_envflow}

    @flow
    def ticker(n=5):
        import time
        for i in range(n):
            print(f"tick {i}", flush=True)
            time.sleep(1)

    @flow
    def slow(seconds=8):
        import time
        print("started", flush=True)
        time.sleep(seconds)
        print("finished", flush=True)
        return "done"
"""


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return load_flows(write_flow(tmp_path_factory.mktemp("flows"), PROBE))


def deploy(stack: Stack, flows: dict, flow: str, name: str, **fields) -> str:  # type: ignore[no-untyped-def]
    return stack.client().create_deployment(Deployment(name=name, flow=flows[flow], **fields)).name


def wait_for_completed_run(stack: Stack, deployment: str, timeout: float = 200) -> None:
    client = stack.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.runs(deployment=deployment, limit=50)
        if any(r.state is RunState.COMPLETED for r in runs):
            return
        time.sleep(2)
    states = [(r.state, r.error) for r in client.runs(deployment=deployment)]
    raise AssertionError(f"no completed run of {deployment} in {timeout}s: {states}\n{stack.logs('worker')[-4000:]}")


def test_up_registers_and_runs_the_examples(stack: Stack) -> None:
    """`docker compose up` alone: the example venv is made, the examples registered and run on schedule."""
    venvs = stack.containers("venvs", all=True)
    assert venvs and venvs[0].wait(timeout=300)["StatusCode"] == 0, stack.logs("venvs")
    assert (stack.venvs / "example" / "pyvenv.cfg").is_file()
    names = {d.name for d in stack.client().deployments()}
    assert {"hello-conda/py38", "hello-conda/py312", "hello-venv/example"} <= names
    for deployment in ("hello-conda/py38", "hello-conda/py312", "hello-venv/example"):
        wait_for_completed_run(stack, deployment)
    logs = stack.logs("worker")
    assert "Hello! Running with /opt/conda/envs/py38/bin/python" in logs
    assert "Hello compose! Running with /venvs/example/bin/python" in logs


@pytest.mark.parametrize("name", env_names())
def test_flow_in_each_conda_env(stack: Stack, flows: dict, name: str) -> None:
    variables = read_env_file(name).get("variables", {})
    deployment = deploy(stack, flows, "probe", f"conda-{name}", condaenv=name)
    run = stack.client().run(deployment, {"names": sorted(variables)})
    assert run.wait(120) is RunState.COMPLETED, run.record()
    result = run.result()
    wanted = [int(p) for p in str(next(d for d in read_env_file(name)["dependencies"]
                                       if str(d).startswith("python"))).split("=")[1].split(".")[:2]]
    assert result["version"] == wanted
    assert result["prefix"] == f"/opt/conda/envs/{name}" and result["conda_env"] == name
    assert result["vars"] == variables
    assert result["no_envflow"]


def test_venv_created_in_the_mounted_directory(stack: Stack, flows: dict) -> None:
    made = stack.compose("run", "--rm", "venvs", "envflow", "venv", "create", "/venvs/ctest", "--python", "py38")
    assert "venv ready" in made.stdout + made.stderr
    assert (stack.venvs / "ctest" / "pyvenv.cfg").is_file()
    deployment = deploy(stack, flows, "probe", "venv-ctest", virtualenv="/venvs/ctest")
    run = stack.client().run(deployment)
    assert run.wait(120) is RunState.COMPLETED, run.record()
    assert run.result()["prefix"] == "/venvs/ctest" and run.result()["version"] == [3, 8]


def test_a_venv_made_elsewhere_fails_fast(stack: Stack, flows: dict) -> None:
    broken = stack.venvs / "from-host"
    (broken / "bin").mkdir(parents=True)
    (broken / "pyvenv.cfg").write_text("home = /nonexistent/bin\ninclude-system-site-packages = false\n")
    (broken / "bin" / "python").symlink_to("/nonexistent/bin/python3")
    deployment = deploy(stack, flows, "probe", "venv-from-host", virtualenv="/venvs/from-host")
    run = stack.client().run(deployment)
    assert run.wait(60) is not RunState.COMPLETED
    assert "/nonexistent" in (run.record().error or ""), run.record()


def test_live_output_on_the_host(stack: Stack, flows: dict) -> None:
    """`envflow deployment run ... --follow` on the host prints each line as the flow prints it."""
    deployment = deploy(stack, flows, "ticker", "ticker", condaenv="py312")
    env = {**stack.environ(), "ENVFLOW_REDIS_URL": stack.redis_url}
    proc = subprocess.Popen([sys.executable, "-m", "envflow", "deployment", "run", deployment, "--follow"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[tuple[float, str]] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append((time.monotonic(), line.strip()))
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    ticks = [(t, text) for t, text in seen if text.startswith("tick")]
    assert [text for _, text in ticks] == [f"tick {i}" for i in range(5)]
    assert ticks[-1][0] - ticks[0][0] > 3  # they arrived as printed, not all at the end


def test_three_workers_run_thirty_flows(stack: Stack, flows: dict) -> None:
    stack.compose("up", "--detach", "--no-build", "--scale", "worker=3")
    stack.wait_for_workers(3)
    hosts = {c.attrs["Config"]["Hostname"] for c in stack.containers("worker")}
    assert len(hosts) == 3
    deployment = deploy(stack, flows, "probe", "spread", condaenv="py312")
    client = stack.client()
    runs = [client.run(deployment) for _ in range(30)]
    deadline = time.monotonic() + 300
    for run in runs:
        assert run.wait(max(1.0, deadline - time.monotonic())) is RunState.COMPLETED, run.record()
    served = {run.result()["host"] for run in runs}
    assert served == hosts


def test_workers_become_healthy(stack: Stack) -> None:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        states = [c.attrs["State"].get("Health", {}).get("Status") for c in stack.containers("worker")]
        if states and all(s == "healthy" for s in states):
            return
        time.sleep(3)
        for c in stack.containers("worker"):
            c.reload()
    raise AssertionError(f"worker health: {states}")


def test_compose_stop_lets_the_running_flow_finish(stack: Stack, flows: dict) -> None:
    deployment = deploy(stack, flows, "slow", "slow", condaenv="py312")
    run = stack.client().run(deployment)
    for line in run.follow(timeout=60):
        if line.text == "started":
            break
    started = time.monotonic()
    stack.compose("stop", "worker", timeout=120)
    assert time.monotonic() - started < 60  # well inside stop_grace_period: nothing was SIGKILLed
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
