"""Each command imports what it needs and no more (their speed is measured in bench/, not here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envflow.redis_url import redis_url
from envflow.settings import Settings

from .support.runs import register

PROBE = """
import json, sys
from envflow.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="envflow")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded(env_vars: dict[str, str], *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env={**os.environ, **env_vars}, capture_output=True,
                          text=True, timeout=60)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_needs_no_redis_client(env_vars):
    assert not packages(loaded(env_vars, "--help")) & {"redis", "rq", "pydantic", "yaml", "croniter"}


def test_run_ls_loads_redis_and_nothing_heavier(client, env_vars):
    client.store.create(register(client), {})
    modules = loaded(env_vars, "run", "ls", "--limit", "20")
    assert "redis" in packages(modules) and "envflow.store.queries" in modules
    assert not packages(modules) & {"rq", "pydantic", "pydantic_settings", "yaml", "croniter"}


def test_deployment_run_loads_no_schedules_or_deployment_files(client, env_vars):
    register(client, "hello/test")
    modules = loaded(env_vars, "deployment", "run", "hello/test")
    assert not {"envflow.schedules", "envflow.deployment_files", "yaml", "croniter"} & modules


@pytest.mark.parametrize("variables", [
    {},
    {"ENVFLOW_REDIS_URL": "redis://example:6380/2"},
    {"envflow_redis_url": "redis://lower:6379/0"},
    {"ENVFLOW_REDIS_URL": "redis://localhost:7777/0", "ENVFLOW_STATE_DIR": "{state}"},
])
def test_the_light_redis_url_is_the_one_settings_reads(variables, tmp_path, monkeypatch):
    state = tmp_path / "state"
    (state / "redis").mkdir(parents=True)
    (state / "redis" / "password").write_text(json.dumps({"port": 7777, "password": "s3cret"}))
    for name in list(os.environ):
        if name.upper().startswith("ENVFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(state=state))
    assert redis_url() == Settings().redis_url
    if "ENVFLOW_STATE_DIR" in variables:
        assert ":s3cret@" in redis_url()
    assert Path(Settings().state_dir).is_absolute()
