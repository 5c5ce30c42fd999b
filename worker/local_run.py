"""Running a deployment's flow here and now, outside the queue (``envflow deployment execute``)."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from envflow.errors import DeploymentFileError
from envflow.models import DeploymentRecord
from envflow.settings import get_settings

from .environments import flow_base
from .launcher import spawn


def flow_file_here(record: DeploymentRecord, source: str | None, scratch: Path) -> Path:
    """The deployment's flow file on this machine: its stored source, or the path it references."""
    if record.flow_storage == "path" or source is None:
        path = Path(record.flow_path)
        if not path.is_file():
            raise DeploymentFileError(f"flow file {path} of {record.name} does not exist here")
        return path
    path = scratch / Path(record.flow_path).name
    path.write_text(source, encoding="utf-8")
    return path


def execute_here(record: DeploymentRecord, source: str | None, parameters: dict[str, Any],
                 python: str = sys.executable) -> tuple[int, dict[str, Any] | None]:
    """Run the flow with ``python``, its output going straight to this terminal.

    Returns the bootstrap's exit status and its outcome (``{"ok": ..., "result": ...}``).
    """
    with tempfile.TemporaryDirectory(prefix="envflow-execute-") as scratch:
        flow_file = flow_file_here(record, source, Path(scratch))
        env = {**flow_base(os.environ, get_settings()), **record.env_vars}
        # The bootstrap kills its own process group when it ends; spawn gives it a new one, never ours.
        flow = spawn(Path(python), env, (), tuple(record.preload), capture=False)
        flow.send({"flow_file": str(flow_file), "flow_source": None, "flow_name": record.flow_name,
                   "parameters": parameters})
        data = b""
        try:
            with os.fdopen(flow.result_r, "rb", closefd=False) as results:
                data = results.read()  # until the flow closes it: read before waiting, a result may fill the pipe
            code = flow.proc.wait()
        except KeyboardInterrupt:
            os.kill(flow.proc.pid, signal.SIGTERM)
            code = flow.proc.wait()
        finally:
            flow.close()
    return code, (json.loads(data) if data else None)
