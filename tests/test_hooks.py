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
