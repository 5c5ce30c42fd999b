"""The overview page: its counts are what `run ls` reports, and it shows what runs, waits and failed."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from envflow.errors import EnvflowWarning
from envflow.models import RunState

from ..support.flows import deploy
from ..support.processes import envflow_command, wait_until


def run_ls_counts(env_vars: dict[str, str]) -> dict[str, int]:
    done = subprocess.run(envflow_command("run", "ls", "--json", "-n", "500"), env={**os.environ, **env_vars},
                          capture_output=True, text=True, timeout=60, check=True)
    found: dict[str, int] = {}
    for run in json.loads(done.stdout):
        found[run["state"]] = found.get(run["state"], 0) + 1
    return found


def test_the_overview_counts_what_run_ls_lists(client, start_worker, flows_file, venv, session, env_vars):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv))
    ticker = deploy(client, flows_file, "ticker", virtualenv=str(venv), parameters={"seconds": 30})
    waiting = deploy(client, flows_file, "hello", "nowhere", virtualenv="/no/such/venv")
    start_worker()
    done = [client.run(name, {"name": n}) for n in ("ada", "bob", "fail")]
    for run in done:
        assert run.wait(60) in (RunState.COMPLETED, RunState.FAILED)
    running = client.run(ticker)
    with pytest.warns(EnvflowWarning, match="waiting for a worker"):
        parked = client.run(waiting)
    wait_until(lambda: running.record().state is RunState.RUNNING, timeout=30)
    page = session.get("/")
    assert page.status == 200
    expected = run_ls_counts(env_vars)
    row = re.search(r"<th scope=\"row\">1h</th>(.*?)</tr>", page.text, re.S)
    assert row is not None
    shown = {state: int(n) for state, n in re.findall(r'state=([A-Z_]+)">(\d+)</a>', row.group(1)) if n != "0"}
    assert shown == expected and expected == {"COMPLETED": 2, "FAILED": 1, "RUNNING": 1, "PENDING": 1}
    assert f'data-total="1h">{sum(expected.values())}<' in page.text
    assert running.short_id in page.text.split("Running now")[1].split("Waiting")[0]
    assert parked.short_id in page.text.split("Waiting (1)")[1].split("Latest failures")[0]
    failures = page.text.split("Latest failures")[1].split("Fleet")[0]
    assert done[2].short_id in failures and "asked to fail" in failures
    assert '<svg class="chart"' in page.text and "COMPLETED 2" in page.text  # the chart's summary for readers
    assert session.get("/?range=7d").status == 200
    client.cancel(running.id)
