"""Runs through a real worker in conda-layout envs, an old-Python venv, and an env with its own envflow."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

import envflow
from envflow.errors import EnvflowWarning
from envflow.models import RunState
from envflow.store import keys

from .support.flows import deploy, write_flow
from .support.pythons import make_conda_prefix, pyenv_python

PROBE = """
    import os, sys
    from envflow import flow

    @flow
    def probe():
        print("running in", sys.prefix)
        keys = ["CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL", "ENVFLOW_HOME", "FROM_SCRIPT", "VIRTUAL_ENV",
                "PYTHONPATH", "FROM_DEPLOYMENT"]
        import envflow
        return {"prefix": sys.prefix, "version": list(sys.version_info[:2]), "envflow": envflow.__file__,
                "path": os.environ["PATH"].split(":")[0], **{k: os.environ.get(k) for k in keys}}
"""


def test_named_conda_env_run(client, start_worker, workdir, tmp_path):
    root = make_conda_prefix(tmp_path / "conda", env_vars={})
    log = tmp_path / "sourced.log"
    prefix = make_conda_prefix(
        root / "envs" / "analytics",
        env_vars={"ENVFLOW_HOME": "~/.envflow/analytics", "PATH": "/evil"},  # conda ignores PATH
        scripts={"env.sh": f'echo sourced >> "{log}"\nexport FROM_SCRIPT="$CONDA_PREFIX/etc"\n'},
    )
    name = deploy(client, write_flow(workdir, PROBE), "probe", condaenv="analytics", env={"FROM_DEPLOYMENT": "1"})
    worker = start_worker(extra_env={"ENVFLOW_CONDA_ROOT": str(root)})
    for _ in range(2):
        run = client.run(name)
        result = run.result(timeout=30)
    assert result["prefix"] == str(prefix) and result["path"] == f"{prefix}/bin"
    assert result["CONDA_PREFIX"] == str(prefix) and result["CONDA_DEFAULT_ENV"] == "analytics"
    assert result["CONDA_SHLVL"] == "1" and result["ENVFLOW_HOME"] == "~/.envflow/analytics"
    assert result["FROM_SCRIPT"] == f"{prefix}/etc" and result["FROM_DEPLOYMENT"] == "1"
    assert log.read_text().count("sourced") == 1  # the second run used the cached activation
    assert worker.output().count("config var PATH is ignored") == 1  # said once, when activation was computed
    assert [line.text for line in run.follow(timeout=10)] == [f"running in {prefix}"]


def test_conda_prefix_path_run(client, start_worker, workdir):
    prefix = make_conda_prefix(workdir / "envs" / "local", env_vars={"ENVFLOW_HOME": "/tmp/h"})
    name = deploy(client, write_flow(workdir, PROBE), "probe", condaenv="./envs/local")
    start_worker()
    result = client.run(name).result(timeout=30)
    # conda's _default_env: a prefix in a directory named "envs" is called by its name
    assert result["CONDA_PREFIX"] == str(prefix) and result["CONDA_DEFAULT_ENV"] == "local"


@pytest.mark.skipif(pyenv_python("3.8") is None, reason="needs a Python 3.8 from pyenv")
def test_python38_venv_without_envflow(client, start_worker, workdir, tmp_path):
    venv38 = tmp_path / "py38"
    subprocess.run([pyenv_python("3.8"), "-m", "venv", "--without-pip", str(venv38)], check=True)
    flow_file = write_flow(
        workdir,
        PROBE + """
    from envflow.deployments import DeploymentSpec
    from envflow.flow_runners import SubprocessFlowRunner

    DeploymentSpec(name="inert", flow=probe, flow_runner=SubprocessFlowRunner(virtualenv="x"))
    """,
    )
    name = deploy(client, flow_file, "probe", virtualenv=str(venv38))
    start_worker()
    run = client.run(name)
    result = run.result(timeout=30)
    assert result["version"] == [3, 8] and result["prefix"] == str(venv38)
    assert result["envflow"] is None  # the stand-in package has no file: envflow is not installed there


def test_env_with_its_own_envflow_uses_it(client, start_worker, workdir, tmp_path, venv):
    own = tmp_path / "own"
    subprocess.run([str(venv / "bin" / "python"), "-m", "venv", "--without-pip", str(own)], check=True)
    site = next(own.glob("lib/python3*/site-packages"))
    package = site / "envflow"
    package.mkdir()
    shutil.copy(Path(envflow.__file__).parent / "flows.py", package / "flows.py")
    (package / "__init__.py").write_text("from .flows import flow, Flow\nOWN_COPY = True\n")
    name = deploy(client, write_flow(workdir, PROBE), "probe", virtualenv=str(own))
    start_worker()
    result = client.run(name).result(timeout=30)
    assert result["envflow"] == str(package / "__init__.py")


def test_env_errors_fail_the_run_clearly(client, start_worker, workdir):
    name = deploy(client, write_flow(workdir, PROBE), "probe", condaenv="no-such-env")
    start_worker(extra_env={"ENVFLOW_ENV_WAIT": "1"})  # no worker has it: the run waits, then fails saying why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnvflowWarning)  # said at submit once the worker has looked: meant here
        run = client.run(name)
    assert run.wait(30) is RunState.FAILED
    record = run.record()
    assert record.error_type == "EnvNotFound" and "no conda env named 'no-such-env'" in record.error


def test_path_storage_runs_the_file_in_place_and_names_it_when_missing(client, start_worker, venv, workdir):
    project = workdir / "project"
    project.mkdir()
    (project / "helpers.py").write_text("GREETING = 'from the project'\n")
    flow = write_flow(project, """
        from envflow import flow
        from helpers import GREETING

        @flow
        def local():
            print(GREETING)
    """, "local.py")
    name = deploy(client, flow, "local", virtualenv=str(venv), flow_storage="path")
    record = client.get_deployment(name)
    assert record.flow_storage == "path" and record.source_digest is None and record.flow_path == str(flow)
    start_worker()
    run = client.run(name)
    assert [line.text for line in run.follow(timeout=30)] == ["from the project"]  # sibling imports work
    flow.unlink()
    run = client.run(name)
    assert run.wait(30) is RunState.FAILED
    error = run.record().error
    assert str(flow) in error and "does not exist on worker" in error


def test_replaced_flow_sources_expire_once_unused(client, venv, workdir):
    flow = write_flow(workdir, PROBE)
    name = deploy(client, flow, "probe", virtualenv=str(venv))
    first = client.get_deployment(name).source_digest
    deploy(client, flow, "probe", name="other", virtualenv=str(venv))  # same source, another deployment
    flow.write_text(flow.read_text() + "\n# changed\n")
    deploy(client, flow, "probe", virtualenv=str(venv))
    assert client.redis.ttl(keys.source(first)) == -1  # still used by probe/other
    client.delete_deployment("probe/other")
    assert 0 < client.redis.ttl(keys.source(first)) <= client.settings.run_ttl
    assert client.redis.ttl(keys.source(client.get_deployment(name).source_digest)) == -1
