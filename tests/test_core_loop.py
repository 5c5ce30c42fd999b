"""End to end: enqueue from Python, run in a venv on a real worker process, stream output back."""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path

import pytest
from rq import Queue

from envflow.errors import DeploymentNotFound, EnvflowWarning, FlowFailed, ParameterError
from envflow.models import RunState
from envflow.store import keys
from envflow.store.jobs import SERIALIZER

from .support.flows import NO_WORKER_YET, deploy, write_flow

HELLO = """
    import sys
    from envflow import flow

    @flow
    def hello(name="world"):
        print(f"hello {name}")
        print(f"python {sys.executable}", file=sys.stderr)
        return {"greeted": name, "prefix": sys.prefix}
"""


def test_hello_flow_output_and_result(client, start_worker, venv, workdir):
    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv))
    start_worker()
    run = client.run(name, {"name": "ada"})
    lines = list(run.follow(timeout=30))
    assert [(line.stream, line.text) for line in lines] == [
        ("stdout", "hello ada"),
        ("stderr", f"python {venv}/bin/python"),
    ]
    assert run.wait(30) is RunState.COMPLETED
    assert run.result() == {"greeted": "ada", "prefix": str(venv)}
    record = run.record()
    assert [t[0] for t in record.transitions] == ["PENDING", "RUNNING", "COMPLETED"]
    assert record.exit_code == 0 and record.attempts[0].state == "COMPLETED"


@pytest.mark.filterwarnings(NO_WORKER_YET)
def test_output_order_and_late_follower_match(client, start_worker, venv, workdir):
    flow = write_flow(
        workdir,
        """
        import sys
        from envflow import flow

        @flow
        def chatty(n=10000):
            for i in range(n):
                stream = sys.stderr if i % 3 == 0 else sys.stdout
                stream.write(f"line {i}\\n")
        """,
    )
    name = deploy(client, flow, "chatty", virtualenv=str(venv))
    run = client.run(name)
    live: list = []
    follower = threading.Thread(target=lambda: live.extend(run.follow(timeout=60)))
    follower.start()
    channel = keys.output(run.id)
    deadline = time.monotonic() + 10
    while client.redis.pubsub_numsub(channel)[0][1] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.redis.pubsub_numsub(channel)[0][1] == 1  # subscribed before any worker exists
    start_worker()
    follower.join(60)
    assert run.wait(30) is RunState.COMPLETED
    late = list(client.get_run(run.id).follow(timeout=30))
    notes, live = [line for line in live if line.stream == "envflow"], [line for line in live if line.stream != "envflow"]
    assert [n.text for n in notes] == ["envflow: waiting: no live worker on queue default"]  # said while it waited
    assert len(live) == 10000
    assert [(line.stream, line.text, line.seq) for line in late] == [(line.stream, line.text, line.seq) for line in live]
    for stream, every in (("stdout", lambda i: i % 3), ("stderr", lambda i: not i % 3)):
        texts = [line.text for line in live if line.stream == stream]
        assert texts == [f"line {i}" for i in range(10000) if every(i)]
    assert [line.seq for line in live] == list(range(10000))


def test_lines_arrive_while_the_flow_runs(client, start_worker, venv, workdir):
    flow = write_flow(
        workdir,
        """
        import time
        from envflow import flow

        @flow
        def slow():
            print(f"first {time.time()}")
            time.sleep(1)
            print(f"second {time.time()}")
        """,
    )
    name = deploy(client, flow, "slow", virtualenv=str(venv))
    start_worker()
    received = []
    for line in client.run(name).follow(timeout=30):
        received.append((time.time(), line.text))
    assert [text.split()[0] for _, text in received] == ["first", "second"]
    first_received_at = received[0][0]
    second_printed_at = float(received[1][1].split()[1])
    assert first_received_at < second_printed_at


def test_flow_that_raises_fails_with_traceback(client, start_worker, venv, workdir):
    flow = write_flow(
        workdir,
        """
        from envflow import flow

        @flow
        def broken():
            print("about to fail")
            raise ValueError("no good")
        """,
    )
    name = deploy(client, flow, "broken", virtualenv=str(venv))
    start_worker()
    run = client.run(name)
    lines = [line.text for line in run.follow(timeout=30)]
    assert run.wait(30) is RunState.FAILED
    assert lines[0] == "about to fail"
    assert "Traceback (most recent call last):" in lines
    assert lines[-1] == "ValueError: no good"
    assert not any("bootstrap.py" in line for line in lines)
    record = run.record()
    assert (record.error_type, record.error) == ("ValueError", "no good")
    with pytest.raises(FlowFailed) as failure:
        run.result()
    assert failure.value.error_type == "ValueError" and failure.value.state == "FAILED"


@pytest.mark.parametrize("kind", ["missing", "not-a-venv"])
def test_bad_venv_fails_with_paths(client, start_worker, venv, workdir, kind):
    if kind == "not-a-venv":
        (workdir / "plain").mkdir()
    given = "missing-venv" if kind == "missing" else "plain"
    flow = write_flow(workdir, HELLO)
    name = deploy(client, flow, "hello", virtualenv=given)
    start_worker(extra_env={"ENVFLOW_ENV_WAIT": "1"})  # no worker has it: the run waits, then fails saying why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnvflowWarning)  # said at submit once the worker has looked: meant here
        run = client.run(name)
    lines = [line.text for line in run.follow(timeout=30)]
    assert run.wait(30) is RunState.FAILED
    record = run.record()
    assert record.error_type == "EnvNotFound"
    if kind == "missing":
        assert f"'{given}'" in record.error and str(workdir / given) in record.error
        assert f"worker's directory, {workdir}" in record.error
    else:
        assert "no pyvenv.cfg" in record.error
    assert lines[-1] == f"envflow: {record.error}" and "ENVFLOW_ENV_WAIT=1" in record.error
    assert all(line.startswith("envflow: waiting for a worker with venv:") for line in lines[:-1])


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_unknown_deployment_and_bad_parameters_enqueue_nothing(client, venv, workdir):
    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv))
    queue = Queue("default", connection=client.redis, serializer=SERIALIZER)
    with pytest.raises(DeploymentNotFound, match="did you mean hello/test"):
        client.run("hello/tset")
    with pytest.raises(ParameterError, match="no parameter colour"):
        client.run(name, {"colour": "red"})
    with pytest.raises(ParameterError, match="JSON-serialisable"):
        client.run(name, {"name": object()})
    assert queue.count == 0 and client.runs() == []


def test_worker_refuses_foreign_jobs_without_running_them(client, start_worker, workdir, tmp_path):
    marker = tmp_path / "pwned"
    queue = Queue("default", connection=client.redis, serializer=SERIALIZER)
    job = queue.enqueue("os.system", f"touch {marker}")
    worker = start_worker("--burst", wait_ready=False)
    assert worker.proc.wait(30) == 0
    assert not marker.exists()
    assert job.get_status(refresh=True) == "failed"
    assert "not an envflow run" in worker.output()


def test_flow_sees_only_its_own_environment(client, start_worker, venv, workdir, monkeypatch):
    flow = write_flow(
        workdir,
        """
        import json, os, sys
        from envflow import flow

        @flow
        def probe():
            try:
                import rq  # noqa: F401
                has_rq = True
            except ImportError:
                has_rq = False
            return {"has_rq": has_rq, "path": sys.path, "env": dict(os.environ)}
        """,
    )
    name = deploy(client, flow, "probe", virtualenv=str(venv), env={"FROM_DEPLOYMENT": "yes"})
    start_worker(extra_env={"PYTHONPATH": "/leaked/path"})
    result = client.run(name).result(timeout=30)
    assert result["has_rq"] is False
    import rq

    worker_site = str(Path(rq.__file__).parent.parent)
    assert not any(p.startswith(worker_site) for p in result["path"])
    env = result["env"]
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env
    assert env["VIRTUAL_ENV"] == str(venv)
    assert env["PATH"].split(":")[0] == f"{venv}/bin"
    assert env["FROM_DEPLOYMENT"] == "yes"
    assert env["ENVFLOW_RUN_ATTEMPT"] == "1" and len(env["ENVFLOW_RUN_ID"]) == 32


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_nothing_is_unpickled_job_payload_is_json(client, venv, workdir):
    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv))
    run = client.run(name, {"name": "x"})
    raw = client.redis.hget(f"rq:job:{run.id}", "data")
    import zlib

    payload = json.loads(zlib.decompress(raw))
    assert payload[0] == "envflow.jobs.run_flow" and payload[2] == [run.id]


def test_every_bad_parameter_is_reported_at_once_and_a_flow_without_any_takes_none(client, venv, workdir):
    flow = write_flow(workdir, """
        from envflow import flow

        @flow
        def typed(n: int, when: str):
            return n

        @flow
        def bare():
            return 1
    """)
    typed = deploy(client, flow, "typed", virtualenv=str(venv))
    with pytest.raises(ParameterError) as raised:
        client.run(typed, {"n": "x", "colour": "red"})
    message = str(raised.value)
    assert "no parameter colour" in message and "needs parameter when" in message and "-p when=…" in message
    assert "parameter 'n' expects int" in message
    bare = deploy(client, flow, "bare", virtualenv=str(venv), name="bare")
    with pytest.raises(ParameterError, match=r"has no parameter x \(it accepts: none\)"):
        client.run(bare, {"x": 1})
