"""Bad and hostile input on the client side: every one is refused in one line, nothing else breaks."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest
from rq import Queue

from envflow.errors import ConfigError, ParameterError, RunNotFound
from envflow.jobs import RUN_FLOW
from envflow.store.jobs import SERIALIZER, is_run_job

from ..support.flows import NO_WORKER_YET, deploy, write_flow
from ..support.processes import envflow_command, wait_until

HELLO = """
    from envflow import flow

    @flow
    def hello():
        print("hello")
"""


@pytest.fixture
def cli(env_vars, workdir):
    env = {**os.environ, **env_vars}

    def run(*args: str, check: int | None = 0, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(envflow_command(*args), cwd=workdir, env={**env, **(env_extra or {})},
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done

    return run


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_run_ids_are_checked_by_shape(cli, client, start_worker, workdir, venv):
    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv))
    run = client.run(name)
    for text in (f"{run.id}:out", f"{run.id}:lease", run.id[:6] + "*", run.id.upper()):
        with pytest.raises(RunNotFound):
            client.get_run(text)
        assert "32 hex characters" in one_line_error(cli("run", "inspect", text, check=None))
    assert cli("run", "inspect", run.id[:6]).stdout.startswith("id")
    assert is_run_job(RUN_FLOW, [run.id], {}) and not is_run_job(RUN_FLOW, [f"{run.id}:out"], {})
    # A JSON job naming the run's output stream is refused; the worker lives on and runs the real run.
    Queue("default", connection=client.redis, serializer=SERIALIZER).enqueue_call(
        RUN_FLOW, args=[f"{run.id}:out"], job_id="hostile", at_front=True)
    worker = start_worker()
    assert run.wait(30).value == "COMPLETED"
    wait_until(lambda: "refused job hostile" in worker.output(), 10, what="the hostile job's refusal")
    assert worker.proc.poll() is None, worker.output()
    assert [line.text for line in run.follow(timeout=5)] == ["hello"]
    assert json.loads(cli("run", "ls", "--json").stdout)[0]["state"] == "COMPLETED"


def test_config_hides_query_passwords_and_survives_bad_ports(cli):
    for url in ("redis://127.0.0.1:1/0?password=pw-query-1", "unix:///tmp/envflow-none.sock?db=0&password=pw-query-2"):
        shown = cli("config", env_extra={"ENVFLOW_REDIS_URL": url}).stdout
        assert "pw-query" not in shown and "password=***" in shown, shown
    shown = json.loads(cli("config", "--json", env_extra={"ENVFLOW_SECRET_PATTERNS": "*TOKEN*,*DSN*"}).stdout)
    assert shown["secret_patterns"] == "*TOKEN*,*DSN*"
    for port in ("abc", "99999"):
        url = f"redis://:pw-port@127.0.0.1:{port}/0"
        shown = cli("config", env_extra={"ENVFLOW_REDIS_URL": url})
        assert f"redis://:***@127.0.0.1:{port}/0" in shown.stdout and "pw-port" not in shown.stdout + shown.stderr
        listed = cli("run", "ls", check=None, env_extra={"ENVFLOW_REDIS_URL": url})
        assert "invalid Redis URL" in one_line_error(listed) and "pw-port" not in listed.stderr


URL_ENV = {"DATABASE_URL": "postgres://u:pg-pass@db.example/app", "HOOK": "https://h.example/x?token=tk-1&a=b",
           "API_TOKEN": "tok-2", "PLAIN": "visible"}


def test_url_credentials_are_hidden_whatever_the_name(cli, client, workdir, venv, tmp_path):
    from ..support.pythons import make_conda_prefix

    name = deploy(client, write_flow(workdir, HELLO), "hello", virtualenv=str(venv), env=URL_ENV)
    shown = [cli("deployment", "inspect", name).stdout, cli("deployment", "inspect", name, "--json").stdout,
             cli("deployment", "ls", "--json").stdout, cli("deployment", "preview", name).stdout]
    for text in shown:
        assert "pg-pass" not in text and "tk-1" not in text and "tok-2" not in text, text
    inspected = json.loads(shown[1])["env_vars"]
    assert inspected == {"DATABASE_URL": "postgres://u:***@db.example/app", "HOOK": "https://h.example/x?token=***&a=b",
                         "API_TOKEN": "***", "PLAIN": "visible"}
    make_conda_prefix(tmp_path / "cenv", env_vars={"CACHE_URL": "redis://:cache-pw@h:6379/0"})
    checked = cli("env", "check", str(tmp_path / "cenv")).stdout
    assert "CACHE_URL=redis://:***@h:6379/0" in checked and "cache-pw" not in checked


HOSTILE_TEXT = """
    import sys
    from envflow import flow

    @flow
    def shouty(s: str = ""):
        print("\\x1b[31mred\\x1b[0m")
        print("\\x1b]0;from-stderr\\x07", file=sys.stderr)
        raise RuntimeError("\\x1b]0;pwned\\x07 bad\\r\\u202eevil")
"""
RAW = ("\x1b]", "\x07", "\r", "\u202e")


def test_displays_escape_control_characters_but_output_stays_verbatim(cli, client, start_worker, workdir, venv):
    name = deploy(client, write_flow(workdir, HOSTILE_TEXT), "shouty", virtualenv=str(venv),
                  tags=["t\x1b]0;tag\x07"], description="d\x1b]0;desc\x07", parameters={"s": "\x1b]0;p\x07"},
                  env={"MODE": "m\x1b]0;env\x07"})
    start_worker()
    followed = cli("deployment", "run", name, "--follow", check=3)
    assert followed.stdout == "\x1b[31mred\x1b[0m\n"  # the flow's own output: verbatim
    assert "\x1b]0;from-stderr\x07\n" in followed.stderr
    status_lines = "\n".join(line for line in followed.stderr.splitlines() if line.startswith("» "))
    assert "\\x1b]0;pwned\\x07 bad\\r\\u202eevil" in status_lines and not any(c in status_lines for c in RAW)
    run_id = client.runs()[0].id
    logs = cli("run", "logs", run_id, check=3)  # a failed run: exit 3, as with --follow
    assert logs.stdout == followed.stdout and logs.stderr.startswith("\x1b]0;from-stderr\x07\n")
    shown = [cli("run", "inspect", run_id), cli("run", "ls"), cli("run", "wait", run_id, check=3),
             cli("deployment", "ls"), cli("deployment", "inspect", name), cli("deployment", "preview", name),
             cli("queue", "ls"), cli("run", "inspect", run_id, "--json")]
    for done in shown:
        text = done.stdout + done.stderr
        assert not any(c in text for c in RAW), text
    assert "\\x1b]0;pwned\\x07" in shown[0].stdout and "t\\x1b]0;tag\\x07" in shown[4].stdout
    assert "MODE=m\\x1b]0;env\\x07" in shown[4].stdout + shown[5].stdout
    (workdir / "d.yaml").write_text("- name: y\n  flow_location: flows.py\n  condaenv: \"/x\\e]0;c\\a\"\n"
                                    "- name: \"bad\\e]0;n\\a\"\n  flow_location: flows.py\n")
    created = cli("deployment", "create", "d.yaml", check=1)
    assert "conda-prefix:/x\\x1b]0;c\\x07" in created.stdout and "bad\\x1b]0;n\\x07" in created.stderr
    assert not any(c in created.stdout + created.stderr for c in RAW)


GREETER = """
    from envflow import flow

    @flow
    def greet(name):
        print(f"hello {name}")
"""
BAD_YAML = """\
- name: nul-location
  flow_location: "greeter.py\\0x"
- name: nul-env
  flow_location: greeter.py
  env: {A: "x\\0y"}
- name: surrogate-env
  flow_location: greeter.py
  env: {A: "\\uD800"}
- name: nul-tag
  flow_location: greeter.py
  tags: ["t\\0"]
- name: surrogate-param
  flow_location: greeter.py
  parameters: {name: "\\uD800"}
- name: "nul\\0name"
  flow_location: greeter.py
- name: nul-queue
  flow_location: greeter.py
  queue: "q\\0"
- name: not-a-path
  flow_location: 5
- name: good
  flow_location: greeter.py
"""
BAD_PY = """
    from envflow import Deployment

    Deployment(name="nul-env", flow_location="greeter.py", env={"A": "x\\0y"})
    Deployment(name="surrogate-env", flow_location="greeter.py", env={"A": "\\ud800"})
    Deployment(name="nul-location", flow_location="greeter.py\\0")
    Deployment(name="surrogate-desc", flow_location="greeter.py", description="\\udc80")
    Deployment(name="good", flow_location="greeter.py")
"""


def test_nul_bytes_and_surrogates_are_refused_at_create_with_file_line_and_field(cli, workdir):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "bad.yaml").write_text(BAD_YAML)
    write_flow(workdir, BAD_PY, "bad_py.py")
    for file, expected in (("bad.yaml", {
        1: "flow_location: the value contains a NUL byte", 3: "env: the value of A contains a NUL byte",
        6: "env: the value of A holds a lone surrogate", 9: "tags: tag 't\\x00' contains a NUL byte",
        12: "parameters: parameter 'name' holds a lone surrogate", 15: "name: invalid deployment name",
        17: "queue: invalid queue name", 20: "flow_location: Input should be a valid string",
    }), ("bad_py.py", {
        4: "env: the value of A contains a NUL byte", 5: "env: the value of A holds a lone surrogate",
        6: "flow_location: the value contains a NUL byte", 7: "description: the value holds a lone surrogate",
    })):
        done = cli("deployment", "create", file, check=1)
        assert "Traceback" not in done.stderr and f"{len(expected)} deployments not registered" in done.stderr
        lines = done.stderr.splitlines()[:-1]
        assert len(lines) == len(expected), done.stderr
        for line, (number, message) in zip(lines, expected.items()):
            assert line.startswith(f"invalid: {workdir / file}:{number}: deployment ") and message in line, line
        assert "registered greet/good" in done.stdout
    assert [d["name"] for d in json.loads(cli("deployment", "ls", "--json").stdout)] == ["greet/good"]


def test_deeply_nested_parameters_are_one_line_errors(cli, client, workdir):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text("- name: d\n  flow_location: greeter.py\n")
    cli("deployment", "create", "d.yaml")
    deep = "[" * 5_000 + "]" * 5_000
    for args in (("--params-json", '{"name": ' + deep + "}"), ("-p", "name=" + deep)):
        assert "nested too deeply" in one_line_error(cli("deployment", "run", "greet/d", *args, check=None))
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ParameterError, match="nested too deeply"):
        client.run("greet/d", {"name": nested})
    assert client.runs() == []


def alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes of YAML whose aliases expand to 9**levels strings ("billion laughs")."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, "deployments:", "  - name: bomb", "    flow_location: greeter.py",
                      f"    parameters: {{name: *l{levels - 1}}}", ""])


def limited_memory() -> None:
    """Run in the child: at most 512 MiB of address space, so a regression fails instead of eating the machine."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))


def test_yaml_alias_bombs_are_refused_in_bounded_memory(env_vars, workdir, tmp_path):
    write_flow(workdir, GREETER, "greeter.py")
    bomb = workdir / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert len(bomb.read_bytes()) < 700
    merged = workdir / "merged.yaml"  # aliases that expand to little stay usable (merge keys)
    merged.write_text("base: &base {flow_location: greeter.py, parameters: {name: m}}\n"
                      "deployments:\n  - {<<: *base, name: m1}\n  - {<<: *base, name: m2}\n")
    env = {**os.environ, **env_vars}
    done = subprocess.run(envflow_command("deployment", "create", str(bomb), str(merged)), cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60, preexec_fn=limited_memory)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[0].startswith(f"invalid: {bomb}:")  # that file only: merged.yaml is registered
    assert "aliases (*name) expand to more than 100,000 values" in done.stderr
    loop = tmp_path / "loop.yaml"
    loop.write_text("- &loop\n  name: loop\n  flow_location: greeter.py\n  parameters: {name: *loop}\n")
    done = subprocess.run(envflow_command("deployment", "create", str(loop)), cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60, preexec_fn=limited_memory)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "refers to a value that contains it" in done.stderr.splitlines()[0]
    # The scheduler loads ENVFLOW_DEPLOYMENTS the same way: it logs the refusal and registers the rest.
    log = tmp_path / "scheduler.log"
    with open(log, "wb") as out:
        scheduler = subprocess.Popen(envflow_command("scheduler", "start"), cwd=workdir, stdout=out,
                                     stderr=subprocess.STDOUT, preexec_fn=limited_memory,
                                     env={**env, "ENVFLOW_DEPLOYMENTS": str(workdir / "*.yaml")})
    try:
        wait_until(lambda: "registered deployment greet/m2" in log.read_text(), 30, what="the scheduler's registrations")
        assert "aliases (*name) expand to more than" in log.read_text() and scheduler.poll() is None
    finally:
        scheduler.terminate()
        scheduler.wait(20)


TYPED = """
    from typing import Optional
    from envflow import flow

    class Config:
        pass

    @flow
    def typed(n: int, name: str = "x", xs: "list[int]" = (), when: Optional[float] = None, cfg: Config = None,
              raw=None):
        print(type(n).__name__, n, type(name).__name__, name, xs, when, cfg, raw)
"""
TYPED_DEPLOYMENTS = """
    from envflow import Deployment
    from typed import typed

    Deployment(name="live", flow=typed)
"""


@pytest.mark.filterwarnings(NO_WORKER_YET)  # submitted before any worker runs, on purpose
def test_parameters_are_checked_and_coerced_against_annotations(cli, client, start_worker, workdir, venv, tmp_path):
    write_flow(workdir, TYPED, "typed.py")
    write_flow(workdir, TYPED_DEPLOYMENTS, "typed_deployments.py")
    (workdir / "d.yaml").write_text(f"- name: parsed\n  flow_location: typed.py\n  virtualenv: {venv}\n")
    cli("deployment", "create", "d.yaml", "typed_deployments.py")
    for name in ("typed/parsed", "typed/live"):  # annotations read from the file's AST, or from the function
        spec = {p["name"]: p.get("annotation") for p in client.get_deployment(name).parameter_spec}
        assert spec["n"] == "int" and spec["xs"] == "list[int]" and spec["raw"] is None, spec
        refused = cli("deployment", "run", name, "-p", "n=three", check=None)
        assert "parameter 'n' expects int, got \"three\"" in one_line_error(refused)
        with pytest.raises(ParameterError, match="parameter 'xs' expects list\\[int\\]"):
            client.run(name, {"n": 1, "xs": ["a"]})
        assert client.runs(deployment=name) == []
        run_id = cli("deployment", "run", name, "-p", "n=3", "-p", "name=3", "-p", "xs=[1, \"2\"]", "-p", "when=2",
                     "-p", "cfg=[\"anything\"]", "-p", "raw={\"a\": 1}").stdout.strip()
        assert client.get_run(run_id).record().parameters == {
            "n": 3, "name": "3", "xs": [1, 2], "when": 2.0, "cfg": ["anything"], "raw": {"a": 1}}
        assert client.run(name, {"n": "4", "when": None}).record().parameters == {"n": 4, "when": None}
    start_worker()
    run = client.run("typed/live", {"n": "5"})
    assert [line.text for line in run.follow(timeout=30)] == ["int 5 str x () None None None"]
    # Parameters that come with a schedule are checked (and coerced) when the deployment is created.
    (workdir / "s.yaml").write_text(f"- name: bad\n  flow_location: typed.py\n  virtualenv: {venv}\n"
                                    "  schedule: {interval: 60}\n  parameters: {n: three}\n"
                                    f"- name: good\n  flow_location: typed.py\n  virtualenv: {venv}\n"
                                    "  schedule: {interval: 60}\n  parameters: {n: '7'}\n")
    created = cli("deployment", "create", "s.yaml", check=1)
    assert "s.yaml:1: flow 'typed': parameter 'n' expects int" in created.stderr and "typed/good" in created.stdout
    assert client.get_deployment("typed/good").parameters == {"n": 7}
    # An annotation is read, never evaluated: a hostile one in a stored record runs nothing.
    record = client.get_deployment("typed/good")
    marker = tmp_path / "evaluated"
    hostile = f"__import__('pathlib').Path({str(marker)!r}).touch() or int"
    spec = [dict(p, annotation=hostile) if p["name"] == "n" else p for p in record.parameter_spec]
    client.create_deployment(record.model_copy(update={"parameter_spec": spec}))
    assert client.run("typed/good", {"n": "x"}).record().parameters == {"n": "x"} and not marker.exists()


def test_only_finite_delays_timeouts_and_bounded_retries_are_taken(cli, client, workdir):
    write_flow(workdir, HELLO)
    lines = [f"- {{name: d{i}, flow_location: flows.py, {field}}}" for i, field in enumerate(
        ("retry_delay: .nan", "retry_delay: [1, .inf]", "timeout: .inf", "timeout: .nan", "retries: 100000000000000000000",
         "schedule: {interval: 0.000001}"))]
    (workdir / "bad.yaml").write_text("\n".join(lines) + "\n")
    done = cli("deployment", "create", "bad.yaml", check=None)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    expected = ["retry_delay: give a finite", "retry_delay: give a finite", "timeout: Input should be a finite",
                "timeout: Input should be a finite", "retries: Input should be less than or equal to 1000",
                "an interval must be at least 1 second"]
    for i, text in enumerate(expected):
        assert f"deployment 'd{i}': {text}" in done.stderr or (i == 5 and text in done.stderr), done.stderr
    assert client.deployments() == []
    name = deploy(client, write_flow(workdir, HELLO), "hello")
    for text in ("nan", "inf", "1e400", "-inf"):
        refused = cli("deployment", "run", name, "--timeout", text, check=2)
        assert "Invalid value for '--timeout'" in refused.stderr and "Traceback" not in refused.stderr
    for value in (math.nan, math.inf):
        with pytest.raises(ConfigError, match="timeout must be a finite number"):
            client.run(name, timeout=value)
    assert client.runs(name) == []


def test_a_stored_record_that_does_not_validate_is_skipped_and_can_be_deleted(cli, client, workdir, start_worker):
    good = deploy(client, write_flow(workdir, HELLO), "hello", warm=True)
    # As an earlier version stored retry_delay: .nan (JSON has no nan: null).
    raw = json.loads(client.redis.get(f"envflow:deployment:{good}"))
    broken = {**raw, "name": "hello/broken", "deployment": "broken", "retry_delay": [None]}
    client.redis.set("envflow:deployment:hello/broken", json.dumps(broken))
    client.redis.zadd("envflow:deployments", {"hello/broken": 0})
    listed = cli("deployment", "ls")
    assert good in listed.stdout and "hello/broken" not in listed.stdout, listed.stdout
    assert "hello/broken" in listed.stderr and "delete it" in listed.stderr and "Traceback" not in listed.stderr
    assert [d.name for d in client.deployments()] == [good]
    assert "retry_delay" in one_line_error(cli("deployment", "inspect", "hello/broken", check=None))
    worker = start_worker()  # its maintenance (keeping warm deployments warm) passes the record by
    wait_until(lambda: "hello/broken" in worker.output(), 20, what="the worker's warning")
    assert "Traceback" not in worker.output() and worker.proc.poll() is None, worker.output()
    assert client.run(good).wait(30).value == "COMPLETED"
    cli("deployment", "delete", "hello/broken")
    assert not client.redis.exists("envflow:deployment:hello/broken")
    assert "hello/broken" not in cli("deployment", "ls").stderr
    client.redis.set("envflow:deployment:hello/again", json.dumps({**broken, "name": "hello/again"}))
    client.redis.zadd("envflow:deployments", {"hello/again": 0})
    deploy(client, workdir / "flows.py", "hello", name="again")  # registering it again replaces it
    assert [d.name for d in client.deployments()] == ["hello/again", good]


def test_an_invalid_setting_is_one_line(cli):
    for name, value in (("ENVFLOW_LEASE_TTL", "abc"), ("ENVFLOW_UI_PORT", "0"), ("ENVFLOW_HISTORY_MAX_BYTES", "1")):
        for command in (("config",), ("worker", "start"), ("scheduler", "start"), ("ui",), ("deployment", "ls")):
            done = cli(*command, check=None, env_extra={name: value})
            assert name in one_line_error(done), (command, done.stderr)


def test_yaml_flow_names_are_checked_like_python_ones(cli, client, workdir):
    write_flow(workdir, """
        from envflow import flow

        @flow(name="a/b")
        def slashed():
            pass
    """, "slashed.py")
    (workdir / "d.yaml").write_text("- {name: d, flow_location: slashed.py}\n")
    done = cli("deployment", "create", "d.yaml", check=None)
    assert done.returncode == 1 and "slashed.py:4: invalid flow name 'a/b'" in done.stderr, done.stderr
    assert client.deployments() == []


def test_devices_and_huge_files_are_refused_not_read(cli, client, workdir, tmp_path):
    write_flow(workdir, HELLO)
    huge = workdir / "huge.py"
    with open(huge, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    (workdir / "reqs.txt").symlink_to("/dev/zero")
    (workdir / "devices.yaml").write_text(
        "- {name: zero, flow_location: /dev/zero}\n- {name: huge, flow_location: huge.py}\n"
        "- {name: zero-reqs, flow_location: flows.py, requirements_file: reqs.txt}\n"
        "- {name: fine, flow_location: flows.py}\n")
    done = cli("deployment", "create", "devices.yaml", "/dev/zero", str(huge), check=None)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("is not a regular file") == 3 and done.stderr.count("bytes; refused") == 2, done.stderr
    assert [d.name for d in client.deployments()] == ["hello/fine"]
    from envflow.scheduler.registration import register_files

    client.delete_deployment("hello/fine")
    assert register_files(client, str(workdir / "*.yaml")) == ["hello/fine"]  # as the scheduler does at start


def test_a_deployment_file_that_exits_stops_only_itself(cli, client, workdir):
    write_flow(workdir, HELLO)
    (workdir / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (workdir / "raises.py").write_text("class Odd(BaseException):\n    pass\n\nraise Odd('odd')\n")
    (workdir / "good.yaml").write_text("- {name: good, flow_location: flows.py}\n")
    done = cli("deployment", "create", "exits.py", "raises.py", "good.yaml", check=None)
    assert done.returncode == 1, done
    assert "exits.py:2: SystemExit: 3" in done.stderr and "raises.py:4: Odd: odd" in done.stderr, done.stderr
    assert [d.name for d in client.deployments()] == ["hello/good"]
