"""The raw-RQ baseline's job: the same subprocess work an envflow run does, nothing else.

RQ needs an importable function; its workers (``bench/rqworker.py``) import this module.
"""

from __future__ import annotations

import subprocess


def spawn_flow(python: str, flow_file: str) -> str:
    """Run ``python -u flow_file`` (the floor's command) and return what it printed."""
    done = subprocess.run([python, "-u", flow_file], capture_output=True, check=True, timeout=60)
    return done.stdout.decode()
