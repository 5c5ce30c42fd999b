"""The UI's stack stays out of the worker, the scheduler and the CLI's other commands."""

from __future__ import annotations

import json
import subprocess
import sys

UI_STACK = ("starlette", "uvicorn", "jinja2", "prometheus_client", "envflow.ui")

PROBE = """
import json, sys
from click.testing import CliRunner
from envflow.cli.main import cli
for argv in (["--help"], ["run", "ls", "--help"], ["worker", "start", "--help"], ["scheduler", "start", "--help"]):
    assert CliRunner().invoke(cli, argv).exit_code == 0, argv
import envflow.client, envflow.worker.worker, envflow.scheduler.service
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {s.split(".")[0] for s in STACK}
                        and (m.split(".")[0] != "envflow" or m.startswith("envflow.ui")))))
"""


def test_worker_scheduler_and_cli_never_import_the_ui_stack():
    code = f"STACK = {UI_STACK!r}\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []
