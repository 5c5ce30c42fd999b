"""compose.fleet.yaml: a heterogeneous fleet on one queue. `worker` has the py312 conda env and the
venvs of /venvs, `worker-legacy` the py38 conda env only (ENVFLOW_ENV_ROOTS). Each run lands on the
service that has its env, `envflow env ls --all` on the host says which worker has which, and a run
whose env no service has waits, PENDING, saying why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from envflow.errors import EnvflowWarning
from envflow.models import RunState

from ..support.flows import load_flows, write_flow
from .probes import PROBE, deploy, wait_until_looked_for
from .stack import FLEET, IMAGE, Stack

# deployment: (its env, the service that has it, its Python, its prefix)
RUNS = {
    "fleet-py38": ({"condaenv": "py38"}, "worker-legacy", [3, 8], "/opt/conda/envs/py38"),
    "fleet-py312": ({"condaenv": "py312"}, "worker", [3, 12], "/opt/conda/envs/py312"),
    "fleet-venv": ({"virtualenv": "/venvs/example"}, "worker", [3, 12], "/venvs/example"),
}
EXAMPLES = {"hello-conda/py38": "worker-legacy", "hello-conda/py312": "worker", "hello-venv/example": "worker"}
SERVICES = ("worker", "worker-legacy")


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return load_flows(write_flow(tmp_path_factory.mktemp("fleet-flows"), PROBE))


@pytest.fixture(scope="module")
def fleet(built: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`docker compose -f compose.yaml -f compose.fleet.yaml up -d` (plus the suite's host overrides)."""
    stack = Stack(built.command, tmp_path_factory.mktemp("fleet"), files=FLEET)
    stack.compose("up", "--detach", "--no-build")
    try:
        stack.wait_for_workers(2)
        yield stack
    finally:
        for service in (*SERVICES, "scheduler", "venvs"):
            sys.stderr.write(f"--- {service} log (last lines)\n{stack.logs(service)[-4000:]}\n")
        stack.down()


def host_envflow(stack: Stack, *args: str) -> str:
    """`envflow ARGS...` on the host, against the stack's published Redis."""
    env = {**stack.environ(), "ENVFLOW_REDIS_URL": stack.redis_url}
    done = subprocess.run([sys.executable, "-m", "envflow", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def workers_of(stack: Stack) -> dict[str, set[str]]:
    names = {service: stack.service_workers(service) for service in SERVICES}
    assert all(len(n) == 1 for n in names.values()) and not set.intersection(*names.values()), names
    return names


def test_the_fleet_is_one_image_on_the_hosts_network(fleet: Stack) -> None:
    """Only `worker` builds; both worker services run the image as uid 10001 under tini, with the
    project read-only, on the host's network; the legacy one mounts no venvs."""
    services = json.loads(fleet.compose("config", "--format", "json").stdout)["services"]
    assert {name for name, s in services.items() if s.get("build")} == {"worker"}
    assert services["worker-legacy"]["image"] == services["worker"]["image"] == IMAGE
    roots = {name: services[name]["environment"]["ENVFLOW_ENV_ROOTS"] for name in SERVICES}
    assert roots == {"worker": "/opt/conda/envs/py312:/venvs", "worker-legacy": "/opt/conda/envs/py38"}
    for service in SERVICES:
        (container,) = fleet.containers(service)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        assert container.exec_run(["cat", "/proc/1/cmdline"]).output.split(b"\0")[0] == b"/usr/bin/tini"
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert not mounts["/project"]["RW"], mounts
        assert ("/venvs" in mounts) is (service == "worker"), mounts
        if service == "worker":
            assert not mounts["/venvs"]["RW"], mounts


def test_each_run_lands_on_the_service_with_its_env(fleet: Stack, flows: dict) -> None:
    """One run per env (conda py38, conda py312, the venv the `venvs` service made): each completes,
    in its env, on a worker of the service that has it (by the run record's worker name, and by the
    container the flow itself ran in)."""
    assert fleet.exit_status("venvs") == 0, fleet.logs("venvs")
    names = workers_of(fleet)
    client = fleet.client()
    runs = {name: client.run(deploy(fleet, flows, "probe", name, **env)) for name, (env, *_) in RUNS.items()}
    for name, run in runs.items():
        _, service, version, prefix = RUNS[name]
        assert run.wait(180) is RunState.COMPLETED, (name, run.record())
        record, result = run.record(), run.result()
        assert [a.worker for a in record.attempts] == [record.worker] and record.worker in names[service], (
            name, record.attempts, names)
        assert result["version"] == version and result["prefix"] == prefix, (name, result)
        assert result["container"] in {c.id for c in fleet.containers(service)}, (name, service, result)


def test_env_ls_all_shows_which_worker_has_which_env(fleet: Stack) -> None:
    """`envflow env ls --all` on the host: each worker and the envs it has, with their Python; and
    `deployment preview` names the workers that can run a deployment."""
    names = workers_of(fleet)
    (legacy,), (worker,) = names["worker-legacy"], names["worker"]
    deadline = time.monotonic() + 60
    while True:  # a worker advertises a newly named env within its refresh (seconds)
        rows = json.loads(host_envflow(fleet, "env", "ls", "--all", "--json"))
        has = {w: {r["env"]: r for r in rows if r["worker"] == w} for w in (legacy, worker)}
        if {"conda:py312", "venv:/venvs/example"} <= set(has[worker]) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(has[legacy]) == {"conda:py38"}, rows
    assert set(has[worker]) == {"conda:py312", "venv:/venvs/example"}, rows
    assert {r["worker"] for r in rows} == {legacy, worker}, rows
    assert has[legacy]["conda:py38"]["path"] == "/opt/conda/envs/py38"
    assert has[legacy]["conda:py38"]["python"].startswith("3.8.")
    assert has[worker]["conda:py312"]["python"].startswith("3.12.")
    assert has[worker]["venv:/venvs/example"]["path"] == "/venvs/example"
    table = host_envflow(fleet, "env", "ls", "--all").splitlines()
    assert table[0].split() == ["ENV", "WORKER", "QUEUES", "PATH", "PYTHON"]
    assert any(line.split()[:3] == ["conda:py38", legacy, "default"] for line in table[1:]), table
    for service, deployment, capable in (("worker-legacy", "probe/fleet-py38", legacy),
                                         ("worker", "hello-venv/example", worker)):  # as the docs show it
        (container,) = fleet.containers(service)
        preview = container.exec_run(["envflow", "deployment", "preview", deployment, "--json"], demux=True)
        out, err = (part.decode() if part else "" for part in preview.output)
        assert preview.exit_code == 0, (out, err)
        assert json.loads(out)["workers"] == [capable], (out, err)


def test_an_env_no_service_has_waits_pending_with_the_reason(fleet: Stack, flows: dict) -> None:
    """A deployment whose conda env no service has: a warning at submit, then PENDING with the reason
    (which envs the workers have, and why they lack this one), in the record and `run inspect`."""
    deployment = deploy(fleet, flows, "probe", "fleet-gpu", condaenv="gpu")
    wait_until_looked_for(fleet, deployment)
    client = fleet.client()
    with pytest.warns(EnvflowWarning, match="waiting for a worker with conda:gpu"):
        run = client.run(deployment)
    try:
        time.sleep(12)  # beyond the workers' refresh of the envs deployments name (reaper interval, 5 s)
        record = run.record()
        assert record.state is RunState.PENDING and record.attempts == [], record
        waiting = record.waiting.message if record.waiting else ""
        assert waiting.startswith("waiting for a worker with conda:gpu: all "), waiting
        assert "live workers on queue default lack it" in waiting and "; they have: " in waiting, waiting
        assert "conda:py38" in waiting and "conda:py312" in waiting and "venv:/venvs/example" in waiting, waiting
        assert "no conda env named 'gpu'" in waiting, waiting
        inspected = host_envflow(fleet, "run", "inspect", run.id)
        assert "waiting for a worker with conda:gpu" in inspected, inspected
        listed = host_envflow(fleet, "run", "ls", "--deployment", deployment)
        assert "waiting for a worker with conda:gpu" in listed, listed
    finally:
        run.cancel()
    assert run.wait(30) is RunState.CANCELLED, run.record()


def test_the_scheduled_examples_land_on_the_right_service(fleet: Stack) -> None:
    """The examples compose.yaml registers run on schedule in the fleet too, each attempt on the
    service that has its env: hello-conda/py38 on worker-legacy, the others on worker."""
    names = workers_of(fleet)
    client = fleet.client()
    deadline = time.monotonic() + 200
    for deployment in EXAMPLES:
        while not any(r.state is RunState.COMPLETED for r in client.runs(deployment=deployment, limit=20)):
            assert time.monotonic() < deadline, [(r.state, r.error) for r in client.runs(deployment=deployment)]
            time.sleep(2)
    for deployment, service in EXAMPLES.items():
        attempts = [a.worker for r in client.runs(deployment=deployment, limit=50) for a in r.attempts]
        assert attempts and set(attempts) <= names[service], (deployment, attempts, names)
    assert "Hello! Running with /opt/conda/envs/py38/bin/python" in fleet.logs("worker-legacy")
    assert "Hello! Running with /opt/conda/envs/py38/bin/python" not in fleet.logs("worker")
