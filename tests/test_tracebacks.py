"""A failing flow's traceback holds only the flow's own frames, under the file name the deployment
was created with, with its source lines, however its process started (cold, spare, forked)."""

from __future__ import annotations

import time

import pytest

from envflow.models import RunState

from .support.flows import deploy, write_flow
from .support.pythons import THREADED, venv_with_modules

FLOWS = """
    import sys
    from envflow import flow

    def helper():
        raise ValueError("boom from the flow")

    @flow
    def fails(ok: bool = False):
        if ok:
            return repr(sys.exc_info())
        helper()
"""

@pytest.fixture
def env(tmp_path):
    return venv_with_modules(tmp_path / "tvenv", {"threaded_mod": THREADED})


def run_started(client, name, how, tries=20):
    """A successful run whose process started ``how``; the flow saw no exception being handled."""
    for _ in range(tries):
        run = client.run(name, {"ok": True})
        assert run.result(timeout=30) == "(None, None, None)"
        if how == "new" or run.record().attempts[-1].start == how:
            return
        time.sleep(0.2)
    raise AssertionError(f"no run of {name} started {how}")


@pytest.mark.parametrize("how", ["new", "spare", "fork"])
def test_a_failing_flow_shows_only_its_own_traceback(client, start_worker, env, workdir, how):
    path = write_flow(workdir, FLOWS, "my_flows.py")
    name = deploy(client, path, "fails", virtualenv=str(env), preload=["threaded_mod"] if how == "spare" else [])
    path.unlink()  # the stored source runs: the file is not on the worker
    start_worker(extra_env={"ENVFLOW_WARM_MAX": "0"} if how == "new" else {})
    run_started(client, name, how)
    run = client.run(name)
    assert run.wait(30) is RunState.FAILED
    if how != "new":
        assert run.record().attempts[-1].start == how
    text = [line.text for line in run.follow(timeout=10)]
    assert text == [
        "Traceback (most recent call last):",
        f'  File "{path}", line 12, in fails',
        "    helper()",
        f'  File "{path}", line 6, in helper',
        '    raise ValueError("boom from the flow")',
        "ValueError: boom from the flow",
    ], text
