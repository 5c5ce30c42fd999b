"""Flow files and deployments of them, as a user's deployment file would make them."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from envflow.client import Client
from envflow.deployments import Deployment


def write_flow(directory: Path, source: str, name: str = "flows.py") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def load_flows(path: Path) -> dict:
    """Import a flow file as a module (as a deployment file would) and return its namespace."""
    import runpy

    from envflow import flows

    sys.path.insert(0, str(path.parent))
    try:
        with flows.loading():
            return runpy.run_path(str(path), run_name=f"test_{path.stem}")
    finally:
        sys.path.remove(str(path.parent))


def deploy(client: Client, path: Path, flow: str, name: str = "test", **fields) -> str:
    """Register a deployment of the flow ``flow`` (function name) in ``path``; return its full name."""
    namespace = load_flows(path)
    record = client.create_deployment(Deployment(name=name, flow=namespace[flow], **fields))
    return record.name


# A run submitted before any worker is up warns (EnvflowWarning); tests that do so on purpose filter it.
NO_WORKER_YET = r"ignore:run [0-9a-f]+. waiting. no live worker on queue:envflow.errors.EnvflowWarning"


# A flow that prints n numbered lines, one every ``pause`` seconds (the failover suites' load).
PRINTER = """
    import time
    from envflow import flow

    @flow
    def printer(tag: str = "", n: int = 40, pause: float = 0.1):
        for i in range(n):
            print(f"{tag} line {i}", flush=True)
            time.sleep(pause)
        return n
"""
