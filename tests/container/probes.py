"""What the container suites share: the probe flows they run in the containers, and deploying them."""

from __future__ import annotations

import time

from envflow.deployments import Deployment
from envflow.store import routing

from .stack import Stack

PROBE = """
    import os, subprocess, sys, time
    from envflow import flow

    def container_id():
        # A container's own files (/etc/hostname, resolv.conf) are mounted from its directory under
        # /var/lib/docker/containers/<id>/: the one way to tell replicas apart on the host's network.
        for line in open("/proc/self/mountinfo"):
            if "/containers/" in line and "/etc/hostname" in line:
                return line.split("/containers/")[1].split("/")[0]

    @flow
    def probe(names=(), sleep=0.0):
        time.sleep(sleep)
        imported = subprocess.run([sys.executable, "-c", "import envflow"], capture_output=True, cwd="/")
        try:
            import pandas
            pandas_version = pandas.__version__
        except ImportError:
            pandas_version = None
        return {"version": list(sys.version_info[:2]), "prefix": sys.prefix, "container": container_id(),
                "conda_env": os.environ.get("CONDA_DEFAULT_ENV"), "conda_prefix": os.environ.get("CONDA_PREFIX"),
                "path0": os.environ["PATH"].split(os.pathsep)[0], "vars": {n: os.environ.get(n) for n in names},
                "pandas": pandas_version, "no_envflow": imported.returncode != 0}

    @flow
    def ticker(n=5, every=1.0):
        for i in range(n):
            print(f"tick {i}", flush=True)
            time.sleep(every)

    @flow
    def slow(seconds=8):
        print("started", container_id(), flush=True)
        time.sleep(seconds)
        print("finished", flush=True)
        return "done"
"""


def deploy(stack: Stack, flows: dict, flow: str, name: str, **fields) -> str:  # type: ignore[no-untyped-def]
    return stack.client().create_deployment(Deployment(name=name, flow=flows[flow], **fields)).name


def wait_until_looked_for(stack: Stack, deployment: str, timeout: float = 30) -> None:
    """Until a worker has looked for the deployment's env (each does every second): only then does a
    submit warn that no worker has it (a deployment just created gets no premature warning)."""
    client = stack.client()
    record = client.get_deployment(deployment)
    route = routing.route_key(record.env)
    assert route is not None
    deadline = time.monotonic() + timeout
    while routing.waiting_reason(client.redis, record.queue, route) is None:
        assert time.monotonic() < deadline, f"no worker looked for {route} in {timeout}s"
        time.sleep(0.5)
