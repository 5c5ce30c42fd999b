"""Run hooks: their validation, the outbox the transition scripts write, delivery (signed webhooks with
retries, handed on when a deliverer dies), run hooks started once, and LATE events. Against a real
redis-server, real workers and a real HTTP receiver on loopback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from envflow.deployment_files import load_file
from envflow.deployments import Deployment
from envflow.errors import ConfigError
from envflow.flow_runners import SubprocessFlowRunner
from envflow.hook_spec import Hook, hooked_events

FLOW = "from envflow import flow\n\n@flow\ndef boom():\n    raise RuntimeError('no')\n"


def test_yaml_hooks_take_on_as_written_and_errors_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text(FLOW)
    (tmp_path / "d.yaml").write_text(textwrap.dedent("""\
        - name: good
          flow_location: f.py
          late_after: 30
          hooks:
            - on: [FAILED, crashed]
              webhook: https://user:pw@hooks.example/x
            - on: [COMPLETED]
              run: other/nightly
              parameters: {source: warehouse}
        - name: bad
          flow_location: f.py
          hooks:
            - on: [FAILED, EXPLODED]
              webhook: ftp://hooks.example/x
            - on: [LATE]
              webhook: http://a.example
              run: other/nightly
    """))
    loaded = load_file(tmp_path / "d.yaml")
    (good,) = loaded.deployments
    assert good.fields is not None and good.fields.late_after == 30
    assert [h.on for h in good.fields.hooks] == [["FAILED", "CRASHED"], ["COMPLETED"]]
    assert good.fields.hooks[1].parameters == {"source": "warehouse"}
    assert hooked_events(good.fields.hooks) == "|COMPLETED|CRASHED|FAILED|"
    errors = "\n".join(loaded.errors).splitlines()
    assert len(errors) == 3, errors
    assert "hooks.0.on" in errors[0] and "'EXPLODED' is not an event" in errors[0]
    assert "hooks.0.webhook" in errors[1] and "http:// or https://" in errors[1]
    assert "hooks.1" in errors[2] and "one action" in errors[2]


def test_python_and_flow_runner_hooks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="late_after"):
        Deployment(name="x", flow_location="f.py", late_after=0)
    with pytest.raises(ConfigError, match="only site-wide hooks"):
        Deployment(name="x", flow_location="f.py", hooks=[{"on": ["FAILED"], "webhook": "http://a", "tags": ["t"]}])
    with pytest.raises(ConfigError, match="is not an event"):
        Deployment(name="x", flow_location="f.py", hooks=[{"on": "RUNNING", "webhook": "http://a"}])
    runner = SubprocessFlowRunner(hooks=[Hook(on=["TIMED_OUT"], webhook="http://a.example/h")], late_after=5)
    d = Deployment(name="x", flow_location="f.py", **runner.deployment_fields())
    assert d.fields is not None and d.fields.hooks[0].on == ["TIMED_OUT"] and d.fields.late_after == 5
    assert Hook.model_validate({True: "FAILED,completed", "webhook": "http://a"}).on == ["FAILED", "COMPLETED"]


# The outbox: written by the transition scripts, for final states only


def _outbox(client) -> list[tuple[str, str]]:
    from envflow.store import keys

    return [(f[b"run"].decode(), f[b"state"].decode()) for _, f in client.redis.xrange(keys.HOOK_OUTBOX)]


def _hooked(name: str = "flow/dep", on=("FAILED", "COMPLETED", "CANCELLED", "CRASHED"), **fields):
    from tests.helpers_runs import record

    hooks = [Hook(on=list(on), webhook="http://127.0.0.1:9/h")]
    return record(name).model_copy(update={"hooks": hooks, **fields})


def test_final_transitions_write_one_outbox_event_and_retried_attempts_none(client) -> None:
    from envflow.models import Attempt, RunState
    from envflow.store.protocol import Ending
    from tests.helpers_runs import claim, drive

    record = client.create_deployment(_hooked())
    failed = client.store.create(record, {})
    drive(client, failed, state=RunState.FAILED)
    # A retried attempt fires nothing; the run's final state fires once.
    retried = client.store.create(record, {})
    claimed = claim(client, retried)
    attempt = Attempt(n=claimed.attempt, worker="w1", started_at=claimed.started_at, ended_at=claimed.started_at + 1,
                      state="FAILED", exit_code=1)
    assert client.store.scripts.finish(retried, Ending(attempt, RunState.PENDING)).run()
    assert _outbox(client) == [(failed, "FAILED")]
    drive(client, retried, state=RunState.COMPLETED)
    # Cancelled before it started; crashed (its lease gone, no retry left); one that never had a hook.
    cancelled = client.store.create(record, {})
    client.cancel(cancelled)
    crashed = client.store.create(record, {})
    claimed = claim(client, crashed)
    client.redis.delete(f"envflow:run:{crashed}:lease")
    assert client.store.scripts.crash(crashed, claimed.attempt, False, "worker lost").run() is RunState.CRASHED
    plain = client.store.create(client.create_deployment(_hooked("flow/plain", hooks=[])), {})
    drive(client, plain, state=RunState.FAILED)
    assert _outbox(client) == [(failed, "FAILED"), (retried, "COMPLETED"), (cancelled, "CANCELLED"),
                               (crashed, "CRASHED")]


def test_claims_end_now_and_unrunnable_write_events_and_site_hooks_cover_every_run(client) -> None:
    from envflow.store.hooks import SiteHooks
    from tests.helpers_runs import register

    plain = register(client, "flow/plain")  # no hooks of its own
    cancelled = client.store.create(plain, {})
    client.redis.hset(f"envflow:run:{cancelled}", "cancel_requested_at", "1")  # requested as it was claimed
    failed = client.store.create(plain, {})
    assert client.store.scripts.unrunnable(failed, "no worker has its env").run()
    assert _outbox(client) == []
    site = SiteHooks(client.redis)
    hook_id = site.add(Hook(on=["FAILED", "CANCELLED"], webhook="http://127.0.0.1:9/site", tags=["nightly"]))
    assert list(site.all()) == [hook_id]
    claimed = client.store.scripts.claim(cancelled, "w1", "default").run()
    assert getattr(claimed, "detail", None) == "CANCELLED"
    other = client.store.create(plain, {})
    assert client.store.scripts.unrunnable(other, "no worker has its env").run()
    assert _outbox(client) == [(cancelled, "CANCELLED"), (other, "FAILED")]
    assert site.remove(hook_id) and not site.all()


def test_hook_add_ls_rm_commands(env_vars, workdir) -> None:
    import json
    import os
    import subprocess

    from tests.conftest import envflow_command

    env = {**os.environ, **env_vars}

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(envflow_command("hook", *args), cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == code, done.stderr
        return done

    added = cli("add", "--on", "failed,CRASHED", "--webhook", "https://bot:s3cret@chat.example/hook", "--tag", "etl")
    assert "s3cret" not in added.stdout and "bot:***@chat.example" in added.stdout
    (row,) = json.loads(cli("ls", "--json").stdout)
    assert row["on"] == ["FAILED", "CRASHED"] and row["tags"] == ["etl"] and "s3cret" not in row["webhook"]
    bad = cli("add", "--on", "RUNNING", "--webhook", "http://a.example", code=1)
    assert "'RUNNING' is not an event" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "http:// or https://" in cli("add", "--on", "FAILED", "--webhook", "file:///etc/passwd", code=1).stderr
    cli("rm", row["id"])
    assert json.loads(cli("ls", "--json").stdout) == []
    assert "no site-wide hook" in cli("rm", row["id"], code=1).stderr
