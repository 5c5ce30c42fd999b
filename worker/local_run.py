"""Running a deployment's flow here and now, outside the queue (``envflow deployment execute``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from envflow.errors import DeploymentFileError
from envflow.models import DeploymentRecord

from .executor import FLOWS_PY
from .launcher import BOOTSTRAP, encode_spec


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
        control_r, control_w = os.pipe()
        result_r, result_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(record.env_vars)
        proc = subprocess.Popen(
            [python, "-u", str(BOOTSTRAP), str(control_r), str(result_w)],
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=(control_r, result_w),
            start_new_session=True,  # the bootstrap may kill its whole group; never ours
        )
        os.close(control_r)
        os.close(result_w)
        spec = {"flow_file": str(flow_file), "flow_name": record.flow_name, "parameters": parameters,
                "flows_path": str(FLOWS_PY)}
        with os.fdopen(control_w, "wb") as control, os.fdopen(result_r, "rb") as results:
            control.write(encode_spec(spec))
            control.flush()
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                code = proc.wait()
            data = results.read()
    return code, (json.loads(data) if data else None)
