"""Run isolation: a flow reaches no other process (warm children and spares waiting for their run,
ready parents, envflow's own processes) and changes nothing a later run or build trusts (stored
sources, built envs, uv's cache, the state dir's files). Each attack is a flow, run by workers with
no capabilities at all (``CAPLESS``), as an unprivileged worker runs; ordinary flows still work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from envflow.models import RunState
from worker.flowenv.sandbox import probe
from worker.launcher import encode, spawn

from ..support.flows import deploy, write_flow
from ..support.processes import CAPLESS
from ..support.pythons import THREADED, venv_with_modules

pytestmark = pytest.mark.skipif(not probe()[0], reason="Landlock is not available on this kernel")

SECRET = "victim-secret-123"
HELD_SECRET = "held-secret-456"  # in the environment of an envflow process that holds a credential

ATTACKS = """
    import marshal, os, sys, time
    from envflow import flow

    def others():
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in (os.getpid(), os.getppid()):
                yield int(name)

    def bootstraps():
        for pid in others():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"envflow-bootstrap" in f.read():
                        yield pid
            except OSError:
                pass

    @flow
    def read_environs(needles: list):
        found = set()
        for pid in others():
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            found.update(n for n in needles if n.encode() in data)
        return sorted(found)

    @flow
    def signal_each(pids: list):
        reached = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                reached.append(pid)
            except OSError:
                pass
        return reached

    @flow
    def hijack():
        code = 'from envflow import flow\\n@flow\\ndef victim():\\n    print("PWNED")\\n    return "PWNED"\\n'
        spec = {"flow_file": "/x/flows.py", "flow_source": code, "flow_name": "victim", "parameters": {},
                "environ": {}}
        data = marshal.dumps(spec, 2)
        message = b"%d\\n" % len(data) + data
        written = 0
        for pid in bootstraps():
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    if not os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("pipe:"):
                        continue
                    with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                        flags = int(f.read().split("flags:")[1].split()[0], 8)
                    if flags & 3:
                        continue  # a write end: the child's output or result
                    w = os.open("/proc/%d/fd/%s" % (pid, fd), os.O_WRONLY | os.O_NONBLOCK)
                    os.write(w, message)
                    os.close(w)
                    written += 1
                except OSError:
                    pass
        return written

    @flow
    def open_mem(seconds: float = 8.0):
        print("polling", flush=True)
        opened = set()
        seen = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for pid in bootstraps():
                seen.add(pid)
                try:
                    fd = os.open("/proc/%d/mem" % pid, os.O_RDWR)
                    os.close(fd)
                    opened.add(pid)
                except OSError:
                    pass
            time.sleep(0.002)
        return {"opened": len(opened), "seen": len(seen)}

    @flow
    def tamper(root: str):
        done = {"read": [], "write": [], "create": [], "rename": [], "remove": []}
        for folder, dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                for what, mode in (("read", "rb"), ("write", "ab")):
                    try:
                        with open(path, mode) as f:
                            if what == "read":
                                f.read()
                            else:
                                f.write(b"PWNED")
                        done[what].append(path)
                    except OSError:
                        pass
                try:
                    os.rename(path, path + ".moved")
                    os.rename(path + ".moved", path)
                    done["rename"].append(path)
                except OSError:
                    pass
            for planted in ("json.py", "iso_planted.py", "sitecustomize.py"):
                try:
                    with open(os.path.join(folder, planted), "w") as f:
                        f.write("PLANTED = True\\n")
                    done["create"].append(os.path.join(folder, planted))
                except OSError:
                    pass
        return done
"""

VICTIM = """
    import os, sys
    from envflow import flow

    @flow
    def victim():
        try:
            import iso_planted
            planted = True
        except ImportError:
            planted = False
        return {"said": "victim ran", "planted": planted, "path0": sys.path[0], "token": os.environ.get("API_TOKEN")}
"""

ORDINARY = """
    import os, subprocess, sys, tempfile
    from envflow import flow

    @flow
    def ordinary(data: str):
        with open("made-in-cwd.txt", "w") as f:
            f.write("cwd")
        fd, tmp = tempfile.mkstemp()
        os.write(fd, b"tmp")
        os.close(fd)
        os.unlink(tmp)
        cache = os.path.join(os.environ["HOME"], ".cache", "some-tool")
        os.makedirs(cache, exist_ok=True)
        with open(os.path.join(cache, "entry"), "w") as f:
            f.write("cached")
        child = subprocess.run([sys.executable, "-c", "print('from a child')"], capture_output=True, text=True)
        import sqlite3, helpers
        with open(data) as f:
            mounted = f.read()
        return {"child": child.stdout.strip(), "mounted": mounted, "sqlite": sqlite3.sqlite_version != "",
                "sibling": helpers.VALUE}
"""

RANDOM = """
    import random
    from envflow import flow

    @flow
    def draw():
        return random.random()
"""

SLOW = "import time\ntime.sleep(1.5)\n"


@pytest.fixture
def env(tmp_path):
    """A venv of its own, with preloadable modules on its path."""
    return venv_with_modules(tmp_path / "ivenv", {"threaded_mod": THREADED, "slow_mod": SLOW})


@pytest.fixture
def holder():
    """A process holding a credential in its environment, as the scheduler and the UI do."""
    proc = subprocess.Popen([*CAPLESS, "sleep", "120"], env={"ENVFLOW_REDIS_URL": f"redis://:{HELD_SECRET}@h/0"})
    yield proc
    proc.kill()
    proc.wait()


def start(start_worker, *args, **extra):
    return start_worker(*args, prefix=CAPLESS, extra_env={"WORKER_SECRET": HELD_SECRET, **extra})


def waiting_processes(worker_pid: int, how: str) -> list[int]:
    """Flow processes of a worker started ahead of their run: children forked ahead, or spares."""
    def command(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.Error:
            return ""

    try:
        kids = psutil.Process(worker_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    if how == "fork":
        return [p.pid for p in kids if " serve " in command(p) and p.ppid() != worker_pid]
    return [p.pid for p in kids if " run " in command(p)]


def warm_victim(client, name, worker, how):
    for _ in range(20):
        assert client.run(name).result(timeout=30)["said"] == "victim ran"
        if waiting_processes(worker.pid, how):
            return
        time.sleep(0.3)
    raise AssertionError(f"no process started ahead for {name}")


@pytest.mark.parametrize("how", ["fork", "spare"])
def test_a_flow_reads_no_secret_of_a_process_waiting_for_its_run(client, start_worker, env, workdir, holder, how):
    preload = ["threaded_mod"] if how == "spare" else []  # threads make forking unsafe: spares
    victim = deploy(client, write_flow(workdir, VICTIM, "victim.py"), "victim", name="v", virtualenv=str(env),
                    env={"API_TOKEN": SECRET}, preload=preload)
    attacker = deploy(client, write_flow(workdir, ATTACKS, "attacks.py"), "read_environs", name="a",
                      virtualenv=str(env))
    worker = start(start_worker)
    warm_victim(client, victim, worker, how)
    assert client.run(attacker, {"needles": [SECRET, HELD_SECRET]}).result(timeout=30) == []
    for pid in waiting_processes(worker.pid, how):  # not even in its exec environment: it came over the pipe
        assert SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    assert client.run(victim).result(timeout=30)["token"] == SECRET  # the secret still reaches its own run


@pytest.mark.parametrize("how", ["fork", "spare"])
def test_a_flow_cannot_write_a_run_into_a_waiting_process(client, start_worker, env, workdir, how):
    preload = ["threaded_mod"] if how == "spare" else []
    victim = deploy(client, write_flow(workdir, VICTIM, "victim.py"), "victim", name="v", virtualenv=str(env),
                    env={"API_TOKEN": SECRET}, preload=preload)  # its own key: the attacker cannot take its process
    attacker = deploy(client, write_flow(workdir, ATTACKS, "attacks.py"), "hijack", name="a", virtualenv=str(env))
    worker = start(start_worker)
    warm_victim(client, victim, worker, how)
    written = client.run(attacker).result(timeout=30)
    run = client.run(victim)
    assert run.wait(30) is RunState.COMPLETED and run.result(timeout=5)["said"] == "victim ran"
    assert written == 0


def test_a_message_without_the_nonce_is_refused(venv, tmp_path):
    """Where nothing stops another process writing to a control pipe first, its message is refused."""
    flow = spawn(venv / "bin" / "python", {"PATH": os.environ["PATH"]})
    source = "from envflow import flow\n@flow\ndef victim():\n    return 'PWNED'\n"
    forged = {"flows_path": "/x", "flows_source": "print('PWNED')", "preload": [], "environ": {}}
    try:
        os.write(flow.control_w, encode(forged))  # as a process that opened the pipe through /proc would
        flow.send({"flow_file": "/x/f.py", "flow_source": source, "flow_name": "victim", "parameters": {}})
        out, err = flow.proc.stdout.read(), flow.proc.stderr.read()
        assert flow.proc.wait() == 3
    finally:
        flow.close()
    assert b"PWNED" not in out and b"did not come from the worker" in err


def test_a_flow_cannot_open_a_new_ready_parents_memory(client, start_worker, env, workdir):
    attacker = deploy(client, write_flow(workdir, ATTACKS, "attacks.py"), "open_mem", name="a", virtualenv=str(env),
                      queue="a")
    victim = deploy(client, write_flow(workdir, VICTIM, "victim.py"), "victim", name="v", virtualenv=str(env),
                    preload=["slow_mod"], queue="v")
    start(start_worker, "--queue", "a")
    start(start_worker, "--queue", "v")
    poll = client.run(attacker, {"seconds": 8})
    lines = iter(poll.follow(timeout=30))
    assert next(lines).text == "polling"
    assert client.run(victim).result(timeout=30)["said"] == "victim ran"  # its ready parent starts meanwhile
    seen = poll.result(timeout=30)
    assert seen["seen"] > 0 and seen["opened"] == 0


def test_a_flow_changes_nothing_in_the_state_dir_and_reads_no_secret_there(client, start_worker, env, workdir,
                                                                          env_vars):
    state = Path(env_vars["ENVFLOW_STATE_DIR"])
    built = state / "envs" / "0123abcd" / "lib" / "site-packages"
    built.mkdir(parents=True)
    (built / "pkg.py").write_text("VALUE = 1\n")
    uv = state / "envs" / ".uv-cache" / "archive-v0" / "x" / "pkg"
    uv.mkdir(parents=True)
    (uv / "__init__.py").write_text("VALUE = 1\n")
    (state / "redis").mkdir(parents=True)
    (state / "redis" / "password").write_text("up-password-789")
    victim = deploy(client, write_flow(workdir, VICTIM, "victim.py"), "victim", name="v", virtualenv=str(env))
    attacker = deploy(client, write_flow(workdir, ATTACKS, "attacks.py"), "tamper", name="a", virtualenv=str(env))
    start(start_worker)
    assert client.run(victim).result(timeout=30)["said"] == "victim ran"  # its source is cached now
    assert list(state.glob("sources/*/victim.py")) and list(state.glob("worker-locks/*"))
    done = client.run(attacker, {"root": str(state)}).result(timeout=30)
    assert not done["write"] and not done["create"] and not done["rename"], done
    assert done["read"] and all(p.startswith(str(state / "envs")) for p in done["read"])  # built envs: read only
    seen = client.run(victim).result(timeout=30)
    assert seen["said"] == "victim ran" and not seen["planted"]
    assert not seen["path0"].startswith(str(state)) and seen["path0"] == str(workdir)


def test_ordinary_flows_still_work_in_the_sandbox(client, start_worker, env, workdir, tmp_path):
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("mounted data")
    (workdir / "helpers.py").write_text("VALUE = 'sibling'\n")
    name = deploy(client, write_flow(workdir, ORDINARY, "ordinary.py"), "ordinary", virtualenv=str(env))
    worker = start(start_worker, HOME=str(home))
    assert "flow sandbox: Landlock ABI" in worker.output()
    assert client.workers()[0]["sandbox"]["on"] is True  # as `envflow worker status` shows it
    for _ in range(3):  # cold, then started ahead or forked
        result = client.run(name, {"data": str(data / "input.txt")}).result(timeout=30)
        assert result == {"child": "from a child", "mounted": "mounted data", "sqlite": True, "sibling": "sibling"}
    assert (workdir / "made-in-cwd.txt").read_text() == "cwd"
    assert (home / ".cache" / "some-tool" / "entry").read_text() == "cached"


def test_a_worker_without_the_sandbox_says_so_once_and_in_worker_status(client, start_worker, env_vars):
    worker = start(start_worker, ENVFLOW_FLOW_SANDBOX="false")
    assert worker.output().count("flow sandbox: turned off") == 1
    shown = subprocess.run([sys.executable, "-m", "envflow", "worker", "status"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, **env_vars})
    assert " OFF " in shown.stdout and "flows can reach other processes" in shown.stdout, shown


def test_forked_runs_draw_numbers_of_their_own(client, start_worker, env, workdir):
    name = deploy(client, write_flow(workdir, RANDOM, "draws.py"), "draw", virtualenv=str(env))
    start(start_worker)
    drawn = {}
    for _ in range(20):
        run = client.run(name)
        value = run.result(timeout=30)
        if run.record().attempts[-1].start == "fork":
            drawn[run.id] = value
        if len(drawn) == 3:
            break
    assert len(drawn) == 3 and len(set(drawn.values())) == 3, drawn


def test_a_flow_cannot_signal_the_worker_or_envflow_processes(client, start_worker, env, workdir, holder):
    attacker = deploy(client, write_flow(workdir, ATTACKS, "attacks.py"), "signal_each", name="a",
                      virtualenv=str(env))
    worker = start(start_worker)
    assert client.run(attacker, {"pids": [worker.pid, holder.pid]}).result(timeout=30) == []
