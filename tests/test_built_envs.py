"""Envs built from requirements, through real workers, a real redis-server and real uv, offline: every
package comes from a wheelhouse each test writes (``--no-index --find-links``)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from bench.wheelhouse import wheel_hash, write_wheel
from envflow.models import EnvKind, EnvSpec, RunState
from envflow.settings import Settings
from envflow.worker.builds.cache import EnvStore
from envflow.worker.env_cache import EnvCache

from .support.flows import deploy, write_flow
from .support.processes import envflow_command, wait_until
from .support.pythons import PYENV_ROOT, pyenv_python

RUN_TIMEOUT = 60

FLOW = """
    import sys
    from envflow import flow

    @flow
    def uses_alpha():
        import alpha, beta
        print("alpha", alpha.VERSION, "beta", beta.VERSION)
        return {"prefix": sys.prefix, "version": list(sys.version_info[:2])}

    @flow
    def uses_gamma():
        import gamma
        return gamma.VERSION
"""


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    write_wheel(directory, "alpha", "1.0", requires=("beta>=1",))
    write_wheel(directory, "beta", "1.2")
    for name in ("gamma", "delta", "epsilon"):
        write_wheel(directory, name, "2.0")
    return directory


@pytest.fixture(autouse=True)
def offline(env_vars: dict[str, str], wheels: Path, tmp_path: Path) -> None:
    """Workers of these tests install from the wheelhouse only, into a cache of the test's own."""
    env_vars.update({"ENVFLOW_PIP_FIND_LINKS": str(wheels), "ENVFLOW_PIP_NO_INDEX": "1",
                     "ENVFLOW_ENV_CACHE": str(tmp_path / "env-cache")})


@pytest.fixture
def store(tmp_path: Path) -> EnvStore:
    return EnvStore(tmp_path / "env-cache")


@pytest.fixture
def flows(workdir: Path) -> Path:
    return write_flow(workdir, FLOW)


def builds(store: EnvStore, event: str = "start") -> list[dict]:
    """The journal's entries of one kind: "start" is written just before the installer is started."""
    return [e for e in store.history() if e["event"] == event]


def leftovers(store: EnvStore) -> list[str]:
    """Anything in the cache other than finished envs and the cache's own bookkeeping."""
    own = {".locks", ".builds.log", ".uv-cache"}
    return [p.name for p in store.root.iterdir() if p.name not in own and not (p / "envflow-env.json").is_file()]


def run_output(flow_run) -> list[str]:
    return [line.text for line in flow_run.follow(timeout=RUN_TIMEOUT)]


def test_first_run_builds_live_then_later_runs_reuse(client, start_worker, flows, store):
    start_worker()
    name = deploy(client, flows, "uses_alpha", requirements=["alpha"])
    first = client.run(name)
    lines = run_output(first)  # a follower from the start sees the build, as it went
    assert first.wait(RUN_TIMEOUT) is RunState.COMPLETED, lines
    assert any(line.startswith("envflow: building env") for line in lines), lines
    assert any("alpha==1.0" in line for line in lines), lines  # uv's own output
    assert "alpha 1.0 beta 1.2" in lines
    (env,) = store.envs()
    assert first.result()["prefix"] == str(env.path)
    assert len(builds(store)) == 1

    second = client.run(name)
    lines = run_output(second)
    assert second.result(RUN_TIMEOUT)["prefix"] == str(env.path)
    assert not any("building env" in line or "waiting for" in line for line in lines), lines
    assert len(builds(store)) == 1  # no installer was started for it
    assert store.envs()[0].last_used >= env.last_used


def test_ten_concurrent_runs_on_two_workers_build_once(client, start_worker, flows, store):
    start_worker()
    start_worker()
    name = deploy(client, flows, "uses_gamma", requirements=["gamma==2.*"])
    # Both must listen for the env before the runs go in, or the first could run all ten (built,
    # each run takes milliseconds) before the second looks at its envs (once a second).
    record = client.get_deployment(name)
    wait_until(lambda: len(client.capable_workers(record)) == 2, 10, what="both workers to take the env")
    runs = [client.run(name) for _ in range(10)]
    assert [r.result(RUN_TIMEOUT) for r in runs] == ["2.0"] * 10
    assert len(builds(store)) == 1
    assert len(builds(store, "built")) == 1
    outputs = [run_output(r) for r in runs]
    assert sum(any(line.startswith("envflow: building env") for line in out) for out in outputs) == 1
    workers = {r.record().worker for r in runs}
    assert len(workers) == 2, workers  # both workers ran some, one built, the other waited or reused
    assert len(store.envs()) == 1 and not leftovers(store)


def test_a_bad_requirement_is_refused_at_create(env_vars, workdir, flows, tmp_path):
    (workdir / "requirements.txt").write_text("alpha==1.0\n--index-url https://elsewhere.example/simple\n")
    (workdir / "deployments.yaml").write_text(textwrap.dedent("""\
        deployments:
          - name: bad-spec
            flow_location: flows.py
            flow_name: uses-alpha
            requirements: ["alpha", "pandas==>2"]
          - name: bad-file
            flow_location: flows.py
            flow_name: uses-alpha
            requirements_file: requirements.txt
          - name: both
            flow_location: flows.py
            flow_name: uses-alpha
            requirements: ["alpha"]
            virtualenv: /venvs/x
          - name: url
            flow_location: flows.py
            flow_name: uses-alpha
            requirements: ["alpha @ https://example.com/alpha-1.0-py3-none-any.whl"]
          - name: good
            flow_location: flows.py
            flow_name: uses-alpha
            requirements: ["alpha"]
    """))
    done = subprocess.run(envflow_command("deployment", "create", "deployments.yaml"), cwd=workdir,
                          env={**os.environ, **env_vars}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "deployment" in line and ".yaml" in line]
    assert len(errors) == 4, done.stderr
    path = workdir / "deployments.yaml"
    assert f"{path}:2: deployment 'bad-spec': requirements: item 2: 'pandas==>2' is not a valid requirement" \
        " (PEP 508)" in done.stderr
    assert f"requirements_file: {workdir / 'requirements.txt'}:2: option '--index-url' is not allowed" in done.stderr
    assert f"{path}:10: deployment 'both': deployment: give requirements (an env the workers build) or virtualenv" \
        in done.stderr
    assert f"{path}:6: requirements_file: {workdir / 'requirements.txt'}:2:" in done.stderr
    assert "direct URL references are not allowed" in done.stderr
    assert "registered uses-alpha/good" in done.stdout


def test_an_unresolvable_requirement_fails_the_run_and_caches_nothing(client, start_worker, flows, store):
    start_worker()
    name = deploy(client, flows, "uses_alpha", requirements=["alpha", "no-such-package>=1"])
    flow_run = client.run(name)
    lines = run_output(flow_run)
    assert flow_run.wait(RUN_TIMEOUT) is RunState.FAILED
    record = flow_run.record()
    assert record.error_type == "EnvActivationError"
    assert "failed: uv pip install failed" in record.error and "no-such-package" in record.error, record.error
    assert any("no-such-package" in line and "not found" in line for line in lines), lines  # uv's own words
    assert sum("No solution found" in line for line in lines) == 1, lines  # said once, by uv
    assert lines[-1].startswith("envflow: building env ") and lines[-1].endswith("failed (uv's output above)"), lines
    assert store.envs() == [] and leftovers(store) == []
    assert [e["event"] for e in store.history()] == ["start", "failed"]


def slow_sdist(directory: Path, marker: Path) -> None:
    """An sdist whose in-tree build backend records its pid in ``marker`` then sleeps: a build that
    is still going when the test cancels its run."""
    source = directory / "src" / "slowpkg-1.0"
    source.mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "slowpkg"\nversion = "1.0"\n'
    )
    (source / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: slowpkg\nVersion: 1.0\n")
    (source / "backend.py").write_text(textwrap.dedent(f"""\
        import os, time
        def _wait(*args, **kwargs):
            with open({str(marker)!r}, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(300)
        build_wheel = prepare_metadata_for_build_wheel = _wait
        def get_requires_for_build_wheel(config_settings=None):
            return []
    """))
    with tarfile.open(directory / "slowpkg-1.0.tar.gz", "w:gz") as archive:
        archive.add(source, arcname="slowpkg-1.0")


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_a_stop_during_a_build_leaves_no_env_and_no_installer(client, start_worker, flows, store, wheels, tmp_path,
                                                               stop):
    marker = tmp_path / "backend.pid"
    slow_sdist(wheels, marker)
    start_worker()
    timeout = 3 if stop == "timeout" else None  # the build counts toward the run's timeout
    name = deploy(client, flows, "uses_alpha", requirements=["alpha", "slowpkg"], timeout=timeout)
    flow_run = client.run(name)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not marker.exists() or not marker.read_text():  # the build is under way, uv's children started
        assert time.monotonic() < deadline and not flow_run.state.is_final, flow_run.record()
        time.sleep(0.05)
    backend = psutil.Process(int(marker.read_text()))
    uv = [p for p in backend.parents() if p.name() == "uv"]
    assert uv, [p.name() for p in backend.parents()]
    if stop == "cancel":
        assert flow_run.cancel() == "requested"
    assert flow_run.wait(RUN_TIMEOUT) is (RunState.CANCELLED if stop == "cancel" else RunState.TIMED_OUT)
    for process in [backend, *uv]:
        try:
            assert process.wait(10) is not None or not process.is_running()
        except psutil.NoSuchProcess:
            pass
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert store.envs() == [] and leftovers(store) == []
    assert [e["event"] for e in store.history()] == ["start", "cancelled"]


def test_eviction_by_size_skips_an_env_in_use(client, start_worker, env_vars, flows, store):
    env_vars["ENVFLOW_ENV_CACHE_MAX_BYTES"] = "1"  # every env a run does not hold is evicted after a build
    env_vars["ENVFLOW_WARM_MAX"] = "0"  # no warm processes: a worker holds its latest run's env only
    holder = start_worker("--queue", "holder")
    start_worker("--queue", "builder")
    held = deploy(client, flows, "uses_alpha", name="held", requirements=["alpha"], queue="holder")
    first = deploy(client, flows, "uses_gamma", name="first", requirements=["gamma"], queue="builder")
    second = deploy(client, flows, "uses_gamma", name="second", requirements=["gamma", "delta"], queue="builder")
    assert client.run(held).wait(RUN_TIMEOUT) is RunState.COMPLETED
    held_key = store.envs()[0].key
    assert client.run(first).wait(RUN_TIMEOUT) is RunState.COMPLETED
    first_key = next(e.key for e in store.envs() if e.key != held_key)
    assert {e.key for e in store.envs()} == {held_key, first_key}  # held: in use by the idle holder worker
    assert client.run(second).wait(RUN_TIMEOUT) is RunState.COMPLETED
    remaining = {e.key: e for e in store.envs()}
    assert held_key in remaining and first_key not in remaining and len(remaining) == 2
    assert remaining[held_key].in_use
    assert [e["env"] for e in builds(store, "evicted")] == [first_key]

    holder.stop()  # its env is no longer used: pruning by hand evicts it
    done = subprocess.run(envflow_command("env", "prune"), env={**os.environ, **env_vars}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"evicted {held_key[:12]}" in done.stdout
    assert [e.key for e in store.envs()] == [k for k in remaining if k != held_key]  # the builder still holds its own


@pytest.mark.skipif(pyenv_python("3.8") is None, reason="needs a Python 3.8 from pyenv")
def test_a_python_38_base_interpreter(client, start_worker, env_vars, flows, store):
    env_vars["ENVFLOW_ENV_ROOTS"] += os.pathsep + str(PYENV_ROOT)  # pyenv under HOME: trusted once named
    start_worker()
    name = deploy(client, flows, "uses_alpha", requirements=["alpha"], python="3.8")
    result = client.run(name).result(RUN_TIMEOUT)
    assert result["version"] == [3, 8]
    (env,) = store.envs()
    assert env.meta["version"].startswith("3.8.") and env.meta["python"] == "3.8"


def test_changed_requirements_build_a_new_env_and_leave_the_old(client, start_worker, flows, store, wheels,
                                                                workdir):
    start_worker()
    requirements = workdir / "requirements.txt"
    alpha, beta = wheels / "alpha-1.0-py3-none-any.whl", wheels / "beta-1.2-py3-none-any.whl"
    requirements.write_text(f"# hash-pinned\nalpha==1.0 --hash={wheel_hash(alpha)}\nbeta==1.2 \\\n"
                            f"    --hash={wheel_hash(beta)}\n")
    name = deploy(client, flows, "uses_alpha", requirements_file=str(requirements))
    assert client.run(name).wait(RUN_TIMEOUT) is RunState.COMPLETED
    (old,) = store.envs()

    requirements.write_text(f"alpha==1.0 --hash={wheel_hash(alpha)}\nbeta==1.2 --hash=sha256:{'0' * 64}\n")
    deploy(client, flows, "uses_alpha", requirements_file=str(requirements))
    wrong = client.run(name)
    assert wrong.wait(RUN_TIMEOUT) is RunState.FAILED
    assert "hash" in wrong.record().error.lower(), wrong.record().error  # --require-hashes held

    deploy(client, flows, "uses_alpha", requirements_file=str(requirements), requirements=["epsilon"])
    requirements.write_text(f"alpha==1.0 --hash={wheel_hash(alpha)}\nbeta==1.2 --hash={wheel_hash(beta)}\n")
    name = deploy(client, flows, "uses_alpha", requirements_file=str(requirements), requirements=["delta"])
    assert client.run(name).wait(RUN_TIMEOUT) is RunState.FAILED  # inline delta has no hash: refused too
    name = deploy(client, flows, "uses_alpha", requirements_file=str(requirements))
    assert client.run(name).wait(RUN_TIMEOUT) is RunState.COMPLETED
    envs = {e.key: e for e in store.envs()}
    assert len(envs) == 2 and old.key in envs  # the new content is a new env; the old waits for eviction
    new = next(e for k, e in envs.items() if k != old.key)
    assert new.meta["requirements_digest"] != old.meta["requirements_digest"]
    assert not leftovers(store)


def test_env_build_prebuilds_and_lists(client, env_vars, flows, store, start_worker):
    name = deploy(client, flows, "uses_alpha", requirements=["alpha"])
    environ = {**os.environ, **env_vars}
    done = subprocess.run(envflow_command("env", "build", name), env=environ, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "building env" in done.stderr and "ready" in done.stdout
    listed = subprocess.run(envflow_command("env", "ls", "--json"), env=environ, capture_output=True, text=True,
                            timeout=60)
    (built,) = [row for row in json.loads(listed.stdout) if row["kind"] == "built"]
    assert built["requirements"] == ["alpha"] and built["size"] > 0 and built["last_used"] > 0
    start_worker()
    flow_run = client.run(name)
    assert flow_run.wait(RUN_TIMEOUT) is RunState.COMPLETED
    assert len(builds(store)) == 1  # the worker found it built


def test_index_credentials_never_reach_the_output(client, start_worker, env_vars, flows, store):
    env_vars["ENVFLOW_PIP_NO_INDEX"] = "0"
    env_vars["ENVFLOW_PIP_INDEX_URL"] = "http://builder:s3cr3t-token@127.0.0.1:9/simple"  # nothing listens there
    start_worker(extra_env={"ENVFLOW_PASS_ENV": "UV_HTTP_RETRIES", "UV_HTTP_RETRIES": "0"})  # uv's settings: passed by name
    flow_run = client.run(deploy(client, flows, "uses_alpha", requirements=["not-in-the-wheelhouse"]))
    lines = run_output(flow_run)
    assert flow_run.wait(RUN_TIMEOUT) is RunState.FAILED
    record = flow_run.record()
    shown = "\n".join([*lines, record.error or ""])
    assert "127.0.0.1:9" in shown and "s3cr3t" not in shown, shown
    assert all("s3cr3t" not in json.dumps(e) for e in store.history())
    assert "s3cr3t" not in Settings(pip_index_url=env_vars["ENVFLOW_PIP_INDEX_URL"]).redacted()["pip_index_url"]


def environ_dumping_sdist(directory: Path, dump: Path) -> None:
    """An sdist whose build backend writes the environment it was given to ``dump`` (then fails)."""
    source = directory / "src" / "dumper-1.0"
    source.mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "dumper"\nversion = "1.0"\n'
    )
    (source / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: dumper\nVersion: 1.0\n")
    (source / "backend.py").write_text(textwrap.dedent(f"""\
        import json, os
        def _dump(*args, **kwargs):
            with open({str(dump)!r}, "w") as f:
                json.dump({{"environ": dict(os.environ), "cwd": os.getcwd()}}, f)
            raise RuntimeError("dumped")
        build_wheel = prepare_metadata_for_build_wheel = _dump
        def get_requires_for_build_wheel(config_settings=None):
            return []
    """))
    with tarfile.open(directory / "dumper-1.0.tar.gz", "w:gz") as archive:
        archive.add(source, arcname="dumper-1.0")


def test_build_backends_get_the_flows_allowlist_not_the_workers_environment(client, start_worker, flows, wheels,
                                                                            tmp_path):
    dump = tmp_path / "backend-environ.json"
    environ_dumping_sdist(wheels, dump)
    start_worker(extra_env={"MY_WORKER_SECRET": "worker-only-42", "REDISCLI_AUTH": "redis-pw-42"})
    flow_run = client.run(deploy(client, flows, "uses_alpha", requirements=["dumper"]))
    assert flow_run.wait(RUN_TIMEOUT) is RunState.FAILED
    seen = json.loads(dump.read_text())
    assert "worker-only-42" not in json.dumps(seen) and "redis-pw-42" not in json.dumps(seen)
    assert not [k for k in seen["environ"] if k.startswith(("ENVFLOW_", "REDIS"))], sorted(seen["environ"])
    assert "PATH" in seen["environ"] and seen["environ"]["UV_NO_CONFIG"] == "1"


def test_uv_config_under_home_does_not_steer_builds(client, start_worker, flows, tmp_path):
    # What a flow of the same uid can write: a uv.toml in the worker's HOME that adds a wheelhouse of
    # its own (a newer gamma) to the worker's --no-index --find-links.
    home = tmp_path / "home"
    planted = tmp_path / "planted-wheels"
    write_wheel(planted, "gamma", "9.0")
    (home / ".config" / "uv").mkdir(parents=True)
    (home / ".config" / "uv" / "uv.toml").write_text(f'find-links = ["{planted}"]\n')
    (home / "uv.toml").write_text(f'find-links = ["{planted}"]\n')
    start_worker(extra_env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}, cwd=home)
    assert client.run(deploy(client, flows, "uses_gamma", requirements=["gamma"])).result(RUN_TIMEOUT) == "2.0"


def test_a_process_holds_its_recent_envs_against_eviction(tmp_path):
    store = EnvStore(tmp_path / "cache")
    for i, key in enumerate(["k1", "k2", "k3"]):
        (store.path(key)).mkdir(parents=True)
        (store.path(key) / "envflow-env.json").write_text(json.dumps({"size": 1000}))
        os.utime(store.path(key) / "envflow-env.json", (1000 + i, 1000 + i))
    assert store.pin("k1", keep=2) and store.pin("k2", keep=2)
    assert [e.key for e in store.evict(0)] == ["k3"]  # k1 and k2 are held
    assert store.pin("k2", keep=2) and store.pin("k1", keep=2)  # reused: k1 is the most recent now
    (store.path("k3")).mkdir()
    (store.path("k3") / "envflow-env.json").write_text(json.dumps({"size": 1000}))
    assert store.pin("k3", keep=2)  # lets go of k2, the least recently used of the three
    assert [e.key for e in store.evict(0)] == ["k2"] and sorted(e.key for e in store.envs()) == ["k1", "k3"]
    assert not store.pin("gone", keep=2)
    (store.root / ".build-k9-dead").mkdir()  # left by a killed build
    (store.root / ".locks" / "k9.build").touch()
    store.evict(10**9)
    assert not (store.root / ".build-k9-dead").exists()


def test_two_threads_of_one_process_build_once(tmp_path, wheels):
    """The worker's run thread and its warm-pool thread each have an EnvCache; flock does not part them."""
    settings = Settings(state_dir=tmp_path / "state", env_cache=tmp_path / "cache", pip_find_links=str(wheels),
                        pip_no_index=True)
    spec = EnvSpec(kind=EnvKind.REQUIREMENTS, requirements=("alpha",))
    results: list[object] = []

    def prepare() -> None:
        try:
            results.append(EnvCache(settings).prepare(spec, dict(os.environ)).python)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            results.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_TIMEOUT)
    store = EnvStore(tmp_path / "cache")
    assert len(results) == 2 and results[0] == results[1], results
    assert len(builds(store)) == 1 and not leftovers(store)


def test_each_built_env_is_named_by_its_requirements_one_row_each(client, start_worker, flows, store):
    """Two requirement sets on one interpreter share a route (any worker able to build there takes both),
    but workers list them apart: a short digest plus the first packages, each with its own path."""
    from envflow.store import routing

    first = deploy(client, flows, "uses_alpha", requirements=["alpha"])
    second = deploy(client, flows, "uses_gamma", requirements=["beta", "alpha==1.0", "gamma"], name="other")
    names = [routing.env_name(client.get_deployment(n).env) for n in (first, second)]
    assert names[0].startswith("build: ") and names[0].endswith(" (alpha)") and names[1].endswith("(alpha==1.0, beta, +1)")
    worker = start_worker()
    wait_until(lambda: all(n in (client.workers() or [{}])[0].get("envs", {}) for n in names), 20,
               what="the worker to list both built envs")
    envs = client.workers()[0]["envs"]
    assert envs[names[0]]["path"] != envs[names[1]]["path"]
    assert all(envs[n]["route"] == routing.route_key(client.get_deployment(first).env) for n in names)
    wait_until(lambda: all(n in worker.output() for n in names), 10, what="the worker's log to name them")
def test_a_build_never_runs_a_python_planted_under_the_flows_home(client, start_worker, flows, store, tmp_path):
    from .test_requirements import planted_python

    home, marker = tmp_path / "home", tmp_path / "planted-ran"
    planted_python(home, "3.11.99", marker)  # as a flow of another deployment would have left it
    start_worker(extra_env={"HOME": str(home), "PYENV_ROOT": "", "ENVFLOW_ENV_WAIT": "3"})
    flow_run = client.run(deploy(client, flows, "uses_alpha", requirements=["alpha"], python="3.11.99"))
    assert flow_run.wait(RUN_TIMEOUT) is RunState.FAILED  # no worker offers that Python: it waited, then failed
    assert not marker.exists() and store.envs() == [], flow_run.record().error
