"""Fixtures of the UI suite: `envflow ui` processes against the test's Redis, flows, sessions."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..support.flows import write_flow
from ..support.processes import IN_CI
from .helpers import Session, UIProcess

if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn", "jinja2", "prometheus_client")):
    if IN_CI:
        raise RuntimeError("the ui extra is not installed (scripts/test installs envflow[test,ui])")
    pytest.skip("the ui extra is not installed: pip install -e '.[ui]'", allow_module_level=True)

FLOWS = """
    import sys, time
    from envflow import flow

    @flow
    def hello(name: str = "world", times: int = 1):
        for _ in range(times):
            print(f"hello {name}")
        print("to stderr", file=sys.stderr)
        if name == "fail":
            raise RuntimeError("asked to fail")
        return {"name": name}

    @flow
    def ticker(seconds: int = 30):
        for i in range(seconds):
            print(f"tick {i}", flush=True)
            time.sleep(1)

    @flow
    def chatty(n: int = 10000):
        for i in range(n):
            stream = sys.stderr if i % 3 == 0 else sys.stdout
            stream.write(f"line {i}\\n")
        sys.stdout.write("no newline at the end")
"""


@pytest.fixture
def flows_file(workdir: Path) -> Path:
    return write_flow(workdir, FLOWS)


@pytest.fixture
def start_ui(env_vars: dict[str, str], workdir: Path, tmp_path: Path) -> Iterator[Callable[..., UIProcess]]:
    """Start ``envflow ui`` (extra ``ENVFLOW_*`` settings as keyword arguments); every one is stopped after."""
    started: list[UIProcess] = []

    def start(*args: str, **settings: str) -> UIProcess:
        env = {**env_vars, **{f"ENVFLOW_{k.upper()}": v for k, v in settings.items()}}
        ui = UIProcess(env, workdir, tmp_path / f"ui-{len(started)}.log", *args)
        started.append(ui)
        return ui

    yield start
    for ui in started:
        ui.stop()


@pytest.fixture
def ui(start_ui: Callable[..., UIProcess]) -> UIProcess:
    return start_ui()


@pytest.fixture
def session(ui: UIProcess) -> Session:
    return Session(ui.base)
