"""Flows that print too much, too long, invalid bytes, close stdout, read stdin, or leave processes behind."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psutil
import pytest

from envflow.errors import ParameterError
from envflow.models import RunState
from envflow.store import keys

from ..support.flows import deploy, write_flow
from ..support.processes import alive, envflow_command, wait_until

HOSTILE = """
    import os, subprocess, sys, time
    from envflow import flow

    @flow
    def million(n: int = 1_000_000):
        out = sys.stdout
        for i in range(n):
            out.write(f"{i}\\n")

    @flow
    def long_line(size: int = 10 * 1024 * 1024):
        sys.stdout.write("x" * size)
        sys.stdout.flush()

    @flow
    def bad_bytes():
        os.write(1, b"ok \\xff\\xfe bytes\\nsplit \\xe2\\x82")
        os.write(1, b"\\xac euro\\n")

    @flow
    def closes_stdout():
        print("before", flush=True)
        os.close(1)
        sys.stderr.write("still here\\n")
        return "done"

    @flow
    def reads_stdin():
        data = sys.stdin.read()
        return {"stdin": data}

    @flow
    def leaves_a_process(pidfile: str):
        proc = subprocess.Popen(["sleep", "300"])
        with open(pidfile, "w") as f:
            f.write(str(proc.pid))
        return proc.pid
"""


def hostile(client, workdir, venv, flow_name):
    path = workdir / "hostile.py"
    if not path.exists():
        write_flow(workdir, HOSTILE, "hostile.py")
    return deploy(client, path, flow_name, name=flow_name.replace("_", "-"), virtualenv=str(venv), stream_output=False)


def test_a_million_lines_live_and_replayed_with_bounded_worker_memory(client, start_worker, venv, workdir):
    name = hostile(client, workdir, venv, "million")
    worker = start_worker(extra_env={"ENVFLOW_HISTORY_MAX_LINES": "2000000"})
    rss_idle = psutil.Process(worker.pid).memory_info().rss
    peak = [rss_idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], psutil.Process(worker.pid).memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run = client.run(name)
    count, last = 0, None
    for line in run.follow(timeout=120):
        assert line.text == str(count)
        count += 1
        last = line
    stop.set()
    sampler.join()
    assert count == 1_000_000 and last.seq == 999_999
    assert run.wait(30) is RunState.COMPLETED
    replay = sum(len(e.data.split("\n")) for e in run.records(timeout=60) if hasattr(e, "data"))
    assert replay == 1_000_000
    growth = (peak[0] - rss_idle) / 2**20
    assert growth < 64, f"worker RSS grew by {growth:.0f} MiB while streaming"


def test_history_is_capped(client, start_worker, venv, workdir):
    name = hostile(client, workdir, venv, "million")
    start_worker(extra_env={"ENVFLOW_HISTORY_MAX_LINES": "1000", "ENVFLOW_HISTORY_TTL": "600"})
    run = client.run(name, {"n": 50_000})
    assert run.wait(60) is RunState.COMPLETED
    kept = list(client.get_run(run.id).follow(timeout=30))
    assert 1000 <= len(kept) < 1000 + 16_384  # whole entries go: at most one entry over the cap
    assert kept[-1].text == "49999" and [int(line.text) for line in kept] == list(range(50_000 - len(kept), 50_000))
    assert 0 < client.redis.ttl(keys.output(run.id)) <= 600
    logs = subprocess.run(envflow_command("run", "logs", run.id, "--follow"), capture_output=True, text=True,
                          env={**os.environ, "ENVFLOW_REDIS_URL": client.settings.redis_url}, timeout=60)
    assert "earlier output was dropped from the history" in logs.stderr
    assert logs.stdout.splitlines()[-1] == "49999"


def test_a_10mb_line_without_newline_is_split_into_chunks(client, start_worker, venv, workdir):
    name = hostile(client, workdir, venv, "long_line")
    start_worker()
    run = client.run(name)
    lines = list(run.follow(timeout=60))
    assert run.wait(30) is RunState.COMPLETED
    assert "".join(line.text for line in lines) == "x" * (10 * 1024 * 1024)
    assert max(len(line.text) for line in lines) <= client.settings.max_line_bytes
    assert all(line.partial for line in lines)  # no chunk ends the line: it never had a newline


def test_invalid_utf8_is_replaced(client, start_worker, venv, workdir):
    name = hostile(client, workdir, venv, "bad_bytes")
    start_worker()
    run = client.run(name)
    assert [line.text for line in run.follow(timeout=30)] == ["ok \ufffd\ufffd bytes", "split € euro"]
    assert run.wait(10) is RunState.COMPLETED


def test_flow_that_closes_stdout(client, start_worker, venv, workdir):
    name = hostile(client, workdir, venv, "closes_stdout")
    start_worker()
    run = client.run(name)
    assert [(line.stream, line.text) for line in run.follow(timeout=30)] == [
        ("stdout", "before"), ("stderr", "still here")]
    assert run.result(timeout=10) == "done"


def test_flow_reading_stdin_gets_eof_at_once(client, start_worker, venv, workdir):
    name = hostile(client, workdir, venv, "reads_stdin")
    start_worker()
    started = time.monotonic()
    assert client.run(name).result(timeout=30) == {"stdin": ""}
    assert time.monotonic() - started < 10


def test_background_process_dies_with_the_run(client, start_worker, venv, workdir, tmp_path):
    name = hostile(client, workdir, venv, "leaves_a_process")
    start_worker()
    pid = client.run(name, {"pidfile": str(tmp_path / "pid")}).result(timeout=30)
    wait_until(lambda: not alive(pid), 5, what="the flow's background process to be killed")


SIZES = """
    from envflow import flow

    @flow
    def big_error(size: int, char: str = "é"):
        raise ValueError(char * size)

    @flow
    def big_result(size: int):
        return "r" * size

    @flow
    def echo(data: str = ""):
        return len(data)
"""


def test_results_errors_and_parameters_are_capped(client, start_worker, venv, workdir):
    path = write_flow(workdir, SIZES, "sizes.py")
    errors = deploy(client, path, "big_error", name="errors", virtualenv=str(venv))
    results = deploy(client, path, "big_result", name="results", virtualenv=str(venv))
    worker = start_worker()
    rss_idle = psutil.Process(worker.pid).memory_info().rss
    peak = [rss_idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], psutil.Process(worker.pid).memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    # Past what the worker reads (in two and one bytes a character), and within it.
    for size, char, whole in ((15_000_000, "é", False), (40_000_000, "x", False), (200_000, "é", True)):
        run = client.run(errors, {"size": size, "char": char})
        assert run.wait(120) is RunState.FAILED
        record = run.record()
        assert record.error_type == "ValueError" and record.error.startswith(char * 1000), record.error[:100]
        assert len(record.error.encode()) < 64 * 1024 + 200 and "over ENVFLOW_ERROR_MAX_BYTES (65,536)" in record.error
        shown = int(record.error.rsplit("[cut: ", 1)[1].split(" bytes")[0].replace(",", ""))
        size_bytes = len((char * size).encode())
        assert shown == size_bytes if whole else shown >= size_bytes, record.error[-200:]  # past it: the report's
        assert client.redis.memory_usage(keys.run(run.id)) < 512 * 1024
    stop.set()
    sampler.join()
    growth = (peak[0] - rss_idle) / 2**20
    assert growth < 96, f"worker RSS grew by {growth:.0f} MiB at its peak for errors of 30 and 40 MB"
    ends = [line for line in worker.output().splitlines() if ": FAILED in " in line]
    assert len(ends) == 3 and max(map(len, ends)) < 4000, [len(e) for e in ends]  # the log line is cut too
    run = client.run(results, {"size": 17 * 2**20})
    assert run.wait(60) is RunState.COMPLETED
    assert "over ENVFLOW_RESULT_MAX_BYTES (16,777,216): not stored" in run.record().result_error
    assert client.run(results, {"size": 1000}).result(timeout=60) == "r" * 1000
    echo = deploy(client, path, "echo", name="echo", virtualenv=str(venv))
    with pytest.raises(ParameterError, match="ENVFLOW_PARAMETERS_MAX_BYTES"):
        client.run(echo, {"data": "d" * 2 * 2**20})
    with pytest.raises(ParameterError, match="copied into each of its runs"):
        deploy(client, path, "echo", name="echo", virtualenv=str(venv), parameters={"data": "d" * 2 * 2**20})
    assert client.run(echo, {"data": "d" * 1000}).result(timeout=60) == 1000
