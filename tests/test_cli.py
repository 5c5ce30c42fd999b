"""Every CLI command, through the real entry point (`python -m envflow`), against a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support.flows import write_flow
from .support.processes import envflow_command, free_port
from .support.pythons import make_conda_prefix

REFERENCE_DEPLOYMENT = """
    import sys
    from envflow import flow
    from envflow.deployments import DeploymentSpec
    from envflow.flow_runners import SubprocessFlowRunner

    @flow
    def my_flow():
        print(f"Hello! Running with {{sys.executable}}")


    DeploymentSpec(
        name="example",
        flow=my_flow,
        flow_runner=SubprocessFlowRunner({runner}, stream_output=True)
    )
"""

GREETER = """
    import sys
    from envflow import flow

    @flow
    def greet(name, times: int = 1):
        for _ in range(times):
            print(f"hello {name}")
        print("to stderr", file=sys.stderr)
        if name == "fail":
            raise RuntimeError("asked to fail")
        return {"name": name, "times": times}
"""


@pytest.fixture
def cli(env_vars, workdir):
    env = {**os.environ, **env_vars}

    def run(*args: str, check: int | None = 0, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(envflow_command(*args), cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done

    return run


def no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2, done.stderr


@pytest.mark.parametrize("kind", ["venv", "conda"])
def test_reference_page_workflow(cli, start_worker, workdir, venv, kind):
    if kind == "venv":
        runner = f'virtualenv="{venv}"'
        python = f"{venv}/bin/python"
    else:
        make_conda_prefix(workdir / "conda" / "envs" / "prefect-dev", env_vars={"ENVFLOW_HOME": "/tmp/x"})
        runner = 'condaenv="prefect-dev"'
        python = f"{workdir}/conda/envs/prefect-dev/bin/python"
    write_flow(workdir, REFERENCE_DEPLOYMENT.format(runner=runner), "example-deployment.py")
    example = write_flow(workdir, "from envflow import flow\n\n@flow\ndef my_flow():\n    print('Hello world!')\n\nmy_flow()\n",
                         "example.py")
    adhoc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True)
    assert adhoc.stdout == "Hello world!\n"
    created = cli("deployment", "create", "./example-deployment.py")
    assert "registered my-flow/example" in created.stdout
    start_worker(wait_ready=True) if kind == "venv" else start_worker(
        extra_env={"ENVFLOW_CONDA_ROOT": str(workdir / "conda")})
    done = cli("deployment", "run", "my-flow/example", "--follow")
    assert done.stdout == f"Hello! Running with {python}\n"
    assert "» run" in done.stderr and "COMPLETED" in done.stderr


def test_agent_start_is_an_alias(cli):
    assert "Start a worker" in cli("agent", "start", "--help").stdout


def test_create_reports_each_invalid_deployment_with_file_and_line(cli, workdir, venv):
    write_flow(workdir, GREETER + f"""
    from envflow import Deployment
    Deployment(name="good", flow=greet, virtualenv="{venv}")
    Deployment(name="both", flow=greet, virtualenv="a", condaenv="b")
    Deployment(name="neg", flow=greet, retries=-1)
    """, "deps.py")
    lines = (workdir / "deps.py").read_text().splitlines()
    both, neg = (next(i + 1 for i, line in enumerate(lines) if f'name="{n}"' in line) for n in ("both", "neg"))
    done = cli("deployment", "create", "deps.py", check=1)
    assert "registered greet/good" in done.stdout
    assert f"{workdir}/deps.py:{both}: deployment 'both'" in done.stderr and "not both" in done.stderr
    assert f"{workdir}/deps.py:{neg}: deployment 'neg': retries" in done.stderr
    assert "2 deployments not registered" in done.stderr
    assert [d["name"] for d in json.loads(cli("deployment", "ls", "--json").stdout)] == ["greet/good"]


def test_yaml_deployments(cli, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "deps.yaml").write_text(f"""
deployments:
  - name: yml
    flow_location: greeter.py
    virtualenv: {venv}
    parameters: {{name: ada}}
    env: {{API_TOKEN: s3cret, LEVEL: debug}}
    tags: [nightly]
    schedule: {{interval: 3600}}
  - name: broken
    flow_location: greeter.py
    timeout: -5
""")
    done = cli("deployment", "create", "deps.yaml", check=1)
    assert "registered greet/yml" in done.stdout
    assert f"{workdir}/deps.yaml:10: deployment 'broken': timeout" in done.stderr
    listing = cli("deployment", "ls").stdout
    assert "greet/yml" in listing and "nightly" in listing and "in " in listing  # next run "in 59m"
    inspected = json.loads(cli("deployment", "inspect", "greet/yml", "--json").stdout)
    assert inspected["env_vars"] == {"API_TOKEN": "***", "LEVEL": "debug"}
    assert inspected["parameter_spec"][0] == {"name": "name", "kind": "POSITIONAL_OR_KEYWORD", "required": True}
    assert len(inspected["next_runs"]) == 3
    human = cli("deployment", "inspect", "greet/yml").stdout
    assert "s3cret" not in human and "API_TOKEN=***" in human


def test_run_follow_params_streams_and_exit_codes(cli, client, start_worker, workdir, venv):
    path = write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: {path}\n  virtualenv: {venv}\n")
    cli("deployment", "create", "d.yaml")
    start_worker()
    ok = cli("deployment", "run", "greet/d", "--param", "name=ada", "-p", "times=2", "--follow")
    assert ok.stdout == "hello ada\nhello ada\n"
    assert ok.stderr.splitlines()[1] == "to stderr"
    failed = cli("deployment", "run", "greet/d", "--params-json", '{"name": "fail"}', "--follow", check=3)
    assert "RuntimeError: asked to fail" in failed.stderr and "FAILED" in failed.stderr
    run_id = cli("deployment", "run", "greet/d", "-p", "name=bo").stdout.strip()
    assert cli("run", "wait", run_id[:8]).stdout.strip() == "COMPLETED"
    logs = cli("run", "logs", run_id)
    assert logs.stdout == "hello bo\n" and logs.stderr == "to stderr\n"
    inspected = json.loads(cli("run", "inspect", run_id[:6], "--json").stdout)
    assert inspected["result"] == {"name": "bo", "times": 1}
    assert [t[0] for t in inspected["transitions"]] == ["PENDING", "RUNNING", "COMPLETED"]
    human = cli("run", "inspect", run_id).stdout
    assert "COMPLETED" in human and "attempts" in human
    listed = json.loads(cli("run", "ls", "--deployment", "greet/d", "--state", "failed", "--json").stdout)
    assert len(listed) == 1 and listed[0]["error_type"] == "RuntimeError"
    assert "greet/d" in cli("run", "ls", "--limit", "2").stdout


def test_user_errors_are_one_or_two_lines(cli, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n")
    cli("deployment", "create", "d.yaml")
    cases = [
        (("deployment", "run", "greet/dd"), "did you mean greet/d"),
        (("deployment", "run", "greet/d"), "needs parameter name"),
        (("deployment", "run", "greet/d", "-p", "nope=1", "-p", "name=x"), "has no parameter nope"),
        (("deployment", "run", "greet/d", "--params-json", "{bad"), "not valid JSON"),
        (("run", "inspect", "abcd"), "no run starts with 'abcd'"),
        (("run", "inspect", "zzzz"), "a run id is 32 hex characters"),
        (("deployment", "create", "missing.py"), "does not exist"),
        (("env", "check", "conda:nope"), "no conda env named 'nope'"),
    ]
    for args, expected in cases:
        done = cli(*args, check=1)
        assert expected in done.stderr, (args, done.stderr)
        no_traceback(done)
    debug = cli("--debug", "run", "inspect", "zzzz", check=1)
    assert "Traceback" in debug.stderr


def test_unreachable_redis_is_one_line(cli, env_vars):
    env = {**os.environ, **env_vars, "ENVFLOW_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = subprocess.run(envflow_command("deployment", "ls"), env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "cannot reach Redis" in done.stderr
    no_traceback(done)


def test_cancel_queued_run_and_queue_pause(cli, client, start_worker, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n  queue: slow\n")
    cli("deployment", "create", "d.yaml")
    assert cli("queue", "pause", "slow").stdout.strip() == "paused queue slow"
    start_worker("--queue", "slow")
    first = cli("deployment", "run", "greet/d", "-p", "name=a").stdout.strip()
    second = cli("deployment", "run", "greet/d", "-p", "name=b").stdout.strip()
    assert "cancelled before it started" in cli("run", "cancel", second).stdout
    time.sleep(1.5)
    assert client.get_run(first).state.value == "PENDING"  # paused: kept, not started
    queues = json.loads(cli("queue", "ls", "--json").stdout)
    slow = next(q for q in queues if q["name"] == "slow")
    assert slow["paused"] and slow["queued"] == 1 and len(slow["workers"]) == 1
    cli("queue", "resume", "slow")
    assert cli("run", "wait", first, "--timeout", "30").stdout.strip() == "COMPLETED"
    assert cli("run", "wait", second, check=6).stdout.strip() == "CANCELLED"
    assert "already ended" in cli("run", "cancel", first).stdout


def test_pause_resume_delete(cli, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n"
                                    "  schedule: {interval: 60}\n")
    refused = cli("deployment", "create", "d.yaml", check=1)
    assert "has a schedule, but flow 'greet' needs parameter name" in refused.stderr
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n"
                                    "  schedule: {interval: 60}\n  parameters: {name: cron}\n")
    cli("deployment", "create", "d.yaml")
    cli("deployment", "pause", "greet/d")
    assert "paused" in cli("deployment", "ls").stdout
    assert json.loads(cli("deployment", "inspect", "greet/d", "--json").stdout)["paused"] is True
    cli("deployment", "resume", "greet/d")
    assert json.loads(cli("deployment", "inspect", "greet/d", "--json").stdout)["paused"] is False
    cli("deployment", "delete", "greet/d")
    assert "no deployment" in cli("deployment", "inspect", "greet/d", check=1).stderr


def test_config_redacts_secrets(cli, env_vars):
    env = {**os.environ, **env_vars, "ENVFLOW_REDIS_URL": "redis://user:hunter2@127.0.0.1:1/0"}
    done = subprocess.run(envflow_command("config", "--json"), env=env, capture_output=True, text=True, check=True)
    assert "hunter2" not in done.stdout
    assert json.loads(done.stdout)["redis_url"] == "redis://user:***@127.0.0.1:1/0"
    human = subprocess.run(envflow_command("config"), env=env, capture_output=True, text=True, check=True).stdout
    assert "ENVFLOW_REDIS_URL" in human and "hunter2" not in human
    env.pop("ENVFLOW_UI_TOKEN", None)
    unset = subprocess.run(envflow_command("config"), env=env, capture_output=True, text=True, check=True).stdout
    assert next(line for line in unset.splitlines() if line.startswith("ENVFLOW_UI_TOKEN")).split()[1] == "(unset)"
    token = {**env, "ENVFLOW_UI_TOKEN": "a-token-of-sixteen-chars"}
    shown = subprocess.run(envflow_command("config"), env=token, capture_output=True, text=True, check=True).stdout
    assert "a-token" not in shown and "ENVFLOW_UI_TOKEN" in shown and "***" in shown


def test_env_ls_check_and_venv_create(cli, tmp_path):
    make_conda_prefix(tmp_path / "cenv", env_vars={"SECRET_TOKEN": "abc", "PLAIN": "v"})
    made = cli("venv", "create", str(tmp_path / "made"), "--python", sys.executable, timeout=120)
    assert "venv ready" in made.stdout
    listing = json.loads(cli("env", "ls", "--json").stdout)
    kinds = {Path(e["path"]).name: (e["kind"], e["python"]) for e in listing}
    version = ".".join(map(str, sys.version_info[:3]))
    assert kinds["cenv"] == ("conda-prefix", version) and kinds["made"] == ("venv", version)
    checked = cli("env", "check", str(tmp_path / "cenv")).stdout
    assert "SECRET_TOKEN=***" in checked and "PLAIN=v" in checked and "abc" not in checked
    assert f"CONDA_PREFIX={tmp_path / 'cenv'}" in checked
    assert "already a venv" in cli("venv", "create", str(tmp_path / "made"), check=1).stderr


def test_preview_and_execute(cli, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n"
                                    "  env: {DB_PASSWORD: pw, MODE: x}\n  parameters: {name: ada}\n")
    cli("deployment", "create", "d.yaml")
    preview = cli("deployment", "preview", "greet/d").stdout
    assert f"{venv}/bin/python" in preview and f"VIRTUAL_ENV={venv}" in preview
    assert "DB_PASSWORD=***" in preview and "MODE=x" in preview and "pw\n" not in preview
    executed = cli("deployment", "execute", "greet/d", "-p", "times=2")
    assert executed.stdout == "hello ada\nhello ada\n"
    assert 'returned {"name": "ada", "times": 2}' in executed.stderr
    assert cli("deployment", "execute", "greet/d", "-p", "name=fail", check=3).returncode == 3


def test_ctrl_c_while_following_detaches(env_vars, workdir, venv, start_worker, cli, client):
    write_flow(workdir, """
        import time
        from envflow import flow

        @flow
        def slow():
            print("started", flush=True)
            time.sleep(3)
            print("done")
    """, "slow.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: slow.py\n  virtualenv: {venv}\n")
    cli("deployment", "create", "d.yaml")
    start_worker()
    proc = subprocess.Popen(envflow_command("deployment", "run", "slow/d", "--follow"), cwd=workdir,
                            env={**os.environ, **env_vars}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "detached; the run goes on" in err
    run = client.runs()[0]
    assert client.get_run(run.id).wait(30).value == "COMPLETED"


def test_up_starts_a_private_redis_scheduler_and_worker(env_vars, workdir, venv, tmp_path):
    port = free_port()
    env = {**os.environ, **env_vars, "ENVFLOW_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "ENVFLOW_STATE_DIR": str(tmp_path / "up-state")}
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen(envflow_command("up", "--workers", "2"), cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while Path(tmp_path / "up.log").read_text().count("ready on queue") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, Path(tmp_path / "up.log").read_text()
            time.sleep(0.1)
        write_flow(workdir, GREETER, "greeter.py")
        (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n")
        subprocess.run(envflow_command("deployment", "create", "d.yaml"), cwd=workdir, env=env, check=True,
                       capture_output=True)
        done = subprocess.run(envflow_command("deployment", "run", "greet/d", "-p", "name=up", "--follow"),
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout == "hello up\n"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    text = Path(tmp_path / "up.log").read_text()
    for prefix in ("redis ", "scheduler", "worker-1", "worker-2"):
        assert prefix in text
    assert "[" in text and "hello up" in text  # the worker echoes flow output, prefixed with the run id
    assert "stack stopped" in text


def test_health_commands(cli, env_vars, workdir, start_worker):
    assert "no worker of host" in cli("worker", "health", check=1).stderr
    assert "no scheduler of host" in cli("scheduler", "health", check=1).stderr
    start_worker()
    assert ": " in cli("worker", "health").stdout  # "<name>: <state>"
    scheduler = subprocess.Popen(envflow_command("scheduler", "start"), cwd=workdir, env={**os.environ, **env_vars},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while cli("scheduler", "health", check=None).returncode != 0:
            assert time.monotonic() < deadline and scheduler.poll() is None
            time.sleep(0.2)
    finally:
        scheduler.terminate()
        scheduler.wait(20)


def test_only_envflow_is_claimed_as_an_import_name(tmp_path, env_vars):
    """A flows directory with its own worker.py and scheduler.py: envflow's commands still load."""
    (tmp_path / "worker.py").write_text("raise SystemExit('the user worker.py was imported')\n")
    (tmp_path / "scheduler.py").write_text("raise SystemExit('the user scheduler.py was imported')\n")
    env = {**os.environ, **env_vars}
    for args in (("--help",), ("worker", "start", "--help"), ("scheduler", "start", "--help"), ("env", "--help")):
        done = subprocess.run(envflow_command(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stderr)
        assert "Usage:" in done.stdout


def test_deployment_create_warns_when_the_live_workers_lack_its_env(cli, start_worker, workdir, venv):
    start_worker()
    good = REFERENCE_DEPLOYMENT.format(runner=f'virtualenv="{venv}"')
    write_flow(workdir, good, "good.py")
    write_flow(workdir, good.replace('name="example"', 'name="typo"').replace(str(venv), "./no-such-venv"), "typo.py")
    done = cli("deployment", "create", "good.py", "typo.py")
    assert "warning: my-flow/typo: waiting for a worker with venv:./no-such-venv" in done.stderr, done.stderr
    assert "'./no-such-venv' does not exist" in done.stderr and "my-flow/example:" not in done.stderr


FLAKY = """
    import os, time
    from envflow import flow

    @flow
    def flaky(seconds: float = 0):
        time.sleep(seconds)
        print("attempt", os.environ["ENVFLOW_RUN_ATTEMPT"])
        raise RuntimeError("always fails")
"""


def test_follow_says_where_a_run_is_and_how_it_ended(cli, start_worker, workdir, venv):
    """The queued notice, the retry line (error, delay, attempts left), the end line (time ran against the
    timeout, time waited), attempts kept apart by `run logs`, whose exit status says how the run ended."""
    path = write_flow(workdir, FLAKY, "flaky.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: {path}\n  virtualenv: {venv}\n"
                                    f"  retries: 1\n  retry_delay: 1\n")
    cli("deployment", "create", "d.yaml")
    start_worker()
    busy = cli("deployment", "run", "flaky/d", "-p", "seconds=3").stdout.strip()
    time.sleep(1)
    done = cli("deployment", "run", "flaky/d", "--follow", "--timeout", "30", check=3)
    assert "queued: 0 runs ahead on queue default, 1 worker, busy" in done.stderr, done.stderr
    assert "attempt 1 FAILED (RuntimeError: always fails); retrying in 1s, 1 attempt left" in done.stderr, done.stderr
    end = next(line for line in done.stderr.splitlines() if "FAILED: ran" in line)
    assert "of its 30s timeout, waited" in end and "s to start" in end, end
    cli("run", "wait", busy, check=3)
    logs = cli("run", "logs", busy, check=None)
    assert logs.returncode == 3 and logs.stdout == "attempt 1\nattempt 2\n"  # `run logs` exits as --follow does
    assert "attempt 1 FAILED (RuntimeError: always fails); retrying in 1s" in logs.stderr, logs.stderr


def test_run_cancel_takes_several_ids(cli, start_worker, workdir, venv):
    path = write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: {path}\n  virtualenv: {venv}\n  queue: none\n")
    cli("deployment", "create", "d.yaml")
    ids = [cli("deployment", "run", "greet/d", "-p", f"name={n}").stdout.strip() for n in "ab"]
    done = cli("run", "cancel", ids[0][:8], ids[1], "ffffffff", check=1)
    assert done.stdout.count("cancelled before it started") == 2 and "no run starts with 'ffffffff'" in done.stderr


def _readme_block(language: str, containing: str) -> str:
    import re

    text = (Path(__file__).parent.parent / "README.md").read_text()
    return next(b for b in re.findall(rf"```{language}\n(.*?)```", text, re.S) if containing in b)


def test_the_readmes_first_example_works_as_printed_without_conda(cli, env_vars, workdir, tmp_path):
    """The venv it names, in the user's home, made as it says; a worker with no ENVFLOW_ENV_ROOTS."""
    home = tmp_path / "home"
    home.mkdir()
    (workdir / "example-deployment.py").write_text(_readme_block("python", "DeploymentSpec("))
    commands = _readme_block("bash", "python3 -m venv").splitlines()
    make = commands[0].split("#")[0].split()
    subprocess.run([sys.executable, *make[1:-1], str(home / make[-1].removeprefix("~/"))], check=True)
    env = {**os.environ, **env_vars, "HOME": str(home)}
    env.pop("ENVFLOW_ENV_ROOTS", None)
    worker = subprocess.Popen(envflow_command("worker", "start"), cwd=workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for line in commands[2:]:
            args = line.split("#")[0].split()[1:]
            done = subprocess.run(envflow_command(*args), cwd=workdir, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, (line, done.stderr)
        assert done.stdout == f"Hello! Running with {home}/envs/hello/bin/python\n", done.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_run_and_preview_warn_when_the_flow_file_differs_from_the_stored_source(cli, workdir, venv):
    path = write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: {path}\n  virtualenv: {venv}\n  queue: none\n")
    cli("deployment", "create", "d.yaml")
    assert "changed since" not in cli("deployment", "run", "greet/d", "-p", "name=a").stderr
    path.write_text(path.read_text() + "\n# edited\n")
    for args in (("deployment", "run", "greet/d", "-p", "name=a"), ("deployment", "preview", "greet/d")):
        done = cli(*args)
        assert f"warning: {path} changed since greet/d was registered; its runs use the stored source" in done.stderr, (
            args, done.stderr)


def test_help_listings_show_whole_summaries_and_plain_words(cli):
    for group in ((), ("run",), ("deployment",), ("worker",), ("agent",), ("env",), ("venv",), ("queue",),
                  ("scheduler",)):
        listing = cli(*group, "--help").stdout.split("Commands:")[1]
        assert "..." not in listing, (group, listing)  # click cuts a long summary mid-phrase with "..."
    assert "reference tool" not in cli("--help").stdout and "reference tool" not in cli("agent", "--help").stdout
    assert "Show at most this many runs" in cli("run", "ls", "--help").stdout


def test_an_unknown_deployment_says_when_the_list_of_names_is_cut(cli, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text("".join(f"- name: d{i:02}\n  flow_location: greeter.py\n  virtualenv: {venv}\n"
                                            f"  queue: none\n" for i in range(13)))
    cli("deployment", "create", "d.yaml")
    done = cli("deployment", "run", "nope/x", check=1)
    assert "greet/d09 and 3 more (`envflow deployment ls`)" in done.stderr, done.stderr


def test_inspect_shows_the_signatures_defaults(cli, workdir, venv):
    write_flow(workdir, GREETER, "greeter.py")
    (workdir / "d.yaml").write_text(f"- name: d\n  flow_location: greeter.py\n  virtualenv: {venv}\n  queue: none\n")
    cli("deployment", "create", "d.yaml")
    assert "name, times: int=1" in cli("deployment", "inspect", "greet/d").stdout
