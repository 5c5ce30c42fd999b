"""Warm env pools: runs forked from a ready process of their env, each still its own fresh process.

Real workers, real venvs and conda-layout envs, real forks; how a run's process started is read from
its attempt record (``fork``, ``spare`` or ``new``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from envflow.models import RunState

from .support.flows import deploy, write_flow
from .support.processes import alive, descendants, envflow_command, wait_until
from .support.pythons import THREADED, make_conda_prefix, pyenv_python, venv_with_modules

FLOWS = """
    import os, sys
    from envflow import flow

    STATE = {"runs": 0}
    SEEN_AT_IMPORT = os.environ.get("ENVFLOW_RUN_ID")

    @flow
    def mutate(tag: str = ""):
        STATE["runs"] += 1
        seen = {"runs": STATE["runs"], "x": os.environ.get("LEAK"), "cwd": os.getcwd(),
                "path": "/leaked" in sys.path, "modules": "leaky_module" in sys.modules, "pid": os.getpid(),
                "run_id": os.environ.get("ENVFLOW_RUN_ID"), "at_import": SEEN_AT_IMPORT,
                "var": os.environ.get("DEPLOY_VAR"), "extra": _extra()}
        os.environ["LEAK"] = "yes"
        os.chdir("/")
        sys.path.append("/leaked")
        sys.modules["leaky_module"] = sys
        return seen

    def _extra():
        try:
            import extra_mod
            return extra_mod.VALUE
        except ImportError:
            return None

    @flow
    def preloaded():
        return {"heavy": "heavy_mod" in sys.modules, "count": open(os.environ["IMPORTS"]).read().count("x")}

    @flow
    def goodbye():
        import atexit, threading, time
        atexit.register(lambda: print("atexit ran", flush=True))
        threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined", flush=True))).start()
        print("returned", flush=True)

    @flow
    def sleeper(seconds: float = 60):
        import subprocess, time
        child = subprocess.Popen(["sleep", "300"])
        print(f"pids {os.getpid()} {child.pid}", flush=True)
        time.sleep(seconds)
"""

HEAVY = "import os\nwith open(os.environ['IMPORTS'], 'a') as f:\n    f.write('x')\n"


@pytest.fixture
def env(tmp_path):
    """A venv of its own (the tests install into it), with preloadable modules on its path."""
    return venv_with_modules(tmp_path / "wvenv", {"heavy_mod": HEAVY, "threaded_mod": THREADED,
                                                  "broken_mod": "raise ImportError('broken_mod cannot be imported here')\n"})


def starts(run) -> list[str]:
    return [a.start for a in run.record().attempts]


def run_until_forked(client, name, params=None, tries=20):
    """Runs until one starts forked from the ready process (the first ones start while it gets ready)."""
    for _ in range(tries):
        run = client.run(name, params or {})
        result = run.result(timeout=30)
        if starts(run) == ["fork"]:
            return run, result
        time.sleep(0.2)
    raise AssertionError(f"no run of {name} was forked from a ready process in {tries} runs")


def test_runs_are_isolated_from_each_other(client, start_worker, workdir, env):
    name = deploy(client, write_flow(workdir, FLOWS), "mutate", virtualenv=str(env), env={"DEPLOY_VAR": "v1"})
    start_worker()
    first, seen = run_until_forked(client, name)
    second = client.run(name)
    again = second.result(timeout=30)
    assert starts(second) == ["fork"]
    assert again["runs"] == 1 and again["x"] is None and again["cwd"] != "/"
    assert not again["path"] and not again["modules"]
    assert again["pid"] != seen["pid"]
    assert again["run_id"] == second.id and again["at_import"] == second.id  # per-run variables before import
    assert again["var"] == "v1"


def test_a_change_to_the_env_or_the_deployment_is_never_served_stale(client, start_worker, workdir, env, tmp_path):
    flows = write_flow(workdir, FLOWS)
    name = deploy(client, flows, "mutate", virtualenv=str(env), env={"DEPLOY_VAR": "v1"})
    start_worker()
    run_until_forked(client, name)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "extra_mod.py").write_text("VALUE = 'installed'\n")
    (next(env.glob("lib/python3*/site-packages")) / "extra.pth").write_text(f"{extra}\n")  # as pip install -e does
    assert client.run(name).result(timeout=30)["extra"] == "installed"
    deploy(client, flows, "mutate", virtualenv=str(env), env={"DEPLOY_VAR": "v2"})
    assert client.run(name).result(timeout=30)["var"] == "v2"


def test_a_changed_activate_script_is_never_served_stale(client, start_worker, workdir):
    prefix = make_conda_prefix(workdir / "cenv", env_vars={}, scripts={"a.sh": "export FROM_SCRIPT=one\n"})
    flows = write_flow(workdir, FLOWS + "\n    @flow\n    def script_var():\n        return os.environ.get('FROM_SCRIPT')\n")
    name = deploy(client, flows, "script_var", condaenv=str(prefix))
    start_worker()
    run, value = run_until_forked(client, name)
    assert value == "one"
    time.sleep(0.05)
    (prefix / "etc" / "conda" / "activate.d" / "a.sh").write_text("export FROM_SCRIPT=two\n")
    assert client.run(name).result(timeout=30) == "two"


def test_preloaded_modules_are_imported_once_ahead(client, start_worker, workdir, env, tmp_path):
    imports = tmp_path / "imports"
    imports.write_text("")
    name = deploy(client, write_flow(workdir, FLOWS), "preloaded", virtualenv=str(env), preload=["heavy_mod"],
                  env={"IMPORTS": str(imports)}, warm=True)
    start_worker()
    wait_until(lambda: imports.read_text() == "x", 20, what="the ready process to import the preload")
    runs = [client.run(name) for _ in range(3)]
    results = [r.result(timeout=30) for r in runs]
    assert [starts(r) for r in runs] == [["fork"]] * 3  # warm=True: ready before the first run
    assert all(r["heavy"] for r in results) and imports.read_text() == "x"  # imported once, in the ready process


def test_a_preload_that_fails_to_import_fails_the_run_not_the_pool(client, start_worker, workdir, env):
    flows = write_flow(workdir, FLOWS)
    bad = deploy(client, flows, "mutate", name="bad", virtualenv=str(env), preload=["broken_mod"])
    good = deploy(client, flows, "mutate", name="good", virtualenv=str(env))
    start_worker()
    for _ in range(3):
        run = client.run(bad)
        assert run.wait(30) is RunState.FAILED
        record = run.record()
        assert record.error_type == "ImportError" and "broken_mod cannot be imported here" in record.error
        assert any("Traceback" in line.text for line in run.follow(timeout=10))
    run_until_forked(client, good)


def test_threads_in_a_preload_make_the_env_fall_back_from_forking(client, start_worker, workdir, env, tmp_path):
    imports = tmp_path / "imports"
    imports.write_text("")
    name = deploy(client, write_flow(workdir, FLOWS), "preloaded", virtualenv=str(env),
                  preload=["threaded_mod", "heavy_mod"], env={"IMPORTS": str(imports)})
    worker = start_worker()
    runs = [client.run(name) for _ in range(6)]
    for run in runs:
        assert run.result(timeout=30)["heavy"]
        time.sleep(0.3)
    assert "fork" not in [s for r in runs for s in starts(r)]
    assert "spare" in [s for r in runs for s in starts(r)]  # started ahead, preloaded: still warm
    assert worker.output().count("forking is unsafe") == 1


@pytest.mark.parametrize("how", ["cancel", "timeout", "sigkill"])
def test_stopping_a_warm_run_leaves_no_process(client, start_worker, workdir, env, how):
    name = deploy(client, write_flow(workdir, FLOWS), "sleeper", virtualenv=str(env),
                  timeout=3 if how == "timeout" else None)
    worker = start_worker()
    run_until_forked(client, name, {"seconds": 0})
    run = client.run(name)
    line = next(run.follow(timeout=30)).text
    pids = [int(p) for p in line.split()[1:]]
    pool = descendants(worker.pid)  # the ready process, the run and its child
    # Else the waits below would hold at once, for no process at all.
    assert line.startswith("pids ") and len(pids) == 2 and set(pids) < set(pool), (line, pool)
    if how == "cancel":
        client.cancel(run.id)
        assert run.wait(30) is RunState.CANCELLED
    elif how == "timeout":
        assert run.wait(30) is RunState.TIMED_OUT
    else:
        worker.stop(signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in pids), 15, what="the run's processes to go")
    if how != "sigkill":
        assert starts(run) == ["fork"]
    worker.stop(signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in pool), 15, what="every process of the pool to go with the worker")


def test_warm_max_evicts_the_least_recently_used(client, start_worker, workdir, env):
    flows = write_flow(workdir, FLOWS)
    names = [deploy(client, flows, "mutate", name=f"d{i}", virtualenv=str(env), env={"DEPLOY_VAR": str(i)})
             for i in range(3)]
    start_worker(extra_env={"ENVFLOW_WARM_MAX": "2"})
    for name in names:
        run_until_forked(client, name)
    def ready() -> list[dict]:
        warm = [w for worker in _status() for w in worker["warm"]]
        return warm if all(w["mode"] == "fork" for w in warm) else []

    warm = wait_until(ready, 10, what="`worker status` to show the ready processes")
    assert len(warm) == 2 and all(w["rss"] > 0 for w in warm)
    evicted = client.run(names[0])
    assert evicted.wait(30) is RunState.COMPLETED and starts(evicted) == ["new"]  # least recently used: cold again


def _status() -> list[dict]:
    done = subprocess.run(envflow_command("worker", "status", "--json"), capture_output=True, text=True, timeout=60,
                          env=os.environ, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(pyenv_python("3.8") is None, reason="needs a Python 3.8 from pyenv")
def test_a_python38_env_forks_warm_runs(client, start_worker, workdir, tmp_path):
    env38 = tmp_path / "py38"
    subprocess.run([pyenv_python("3.8"), "-m", "venv", "--without-pip", str(env38)], check=True)
    name = deploy(client, write_flow(workdir, FLOWS), "mutate", virtualenv=str(env38))
    start_worker()
    _, seen = run_until_forked(client, name)
    assert seen["runs"] == 1 and psutil.pid_exists(seen["pid"]) is False


def test_a_forked_run_exits_as_an_interpreter_does(client, start_worker, workdir, env):
    """Threads are joined and atexit handlers run, as `python flow.py` would, in a forked run too."""
    name = deploy(client, write_flow(workdir, FLOWS), "goodbye", virtualenv=str(env))
    start_worker()
    run, _ = run_until_forked(client, name)
    assert [line.text for line in run.follow(timeout=10)] == ["returned", "thread joined", "atexit ran"]
