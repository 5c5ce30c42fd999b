"""Activations as variable deltas: applying one, diffing two environments, and sourcing scripts in ``sh``
to see what they change."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from envflow.errors import EnvActivationError

Delta = dict[str, str | None]  # variable -> new value, or None to unset it

# Shell bookkeeping that is not part of an activation.
SHELL_NOISE = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2"})
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what sh keeps of its environment
DUMP_ENVIRONMENT = "import json, os, sys; sys.stdout.write(json.dumps(dict(os.environ)))"


def apply(base: Mapping[str, str], delta: Delta) -> dict[str, str]:
    env = dict(base)
    for name, value in delta.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def diff(before: Mapping[str, str], after: Mapping[str, str]) -> Delta:
    delta: Delta = {k: v for k, v in after.items() if before.get(k) != v and k not in SHELL_NOISE}
    delta.update({k: None for k in before if k not in after and k not in SHELL_NOISE})
    return delta


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def run_in_shell(script: str, env: Mapping[str, str], timeout: float, what: str) -> dict[str, str]:
    """Run ``script`` in ``sh`` (its output goes to stderr), then return the resulting environment.

    The script's own exit status does not matter (conda ignores it too); a script that ends the
    shell (``exit``, an error ``sh`` cannot go on from) or does not finish within ``timeout`` is an
    error. Variables whose names ``sh`` cannot hold (``MY-VAR``) are dropped by ``sh``, so they
    keep their value from ``env``.
    """
    shell = shutil.which("sh", path=env.get("PATH")) or "/bin/sh"
    command = f"{script}\nexec {quote(sys.executable)} -c {quote(DUMP_ENVIRONMENT)}"
    proc = subprocess.Popen(
        [shell, "-c", command],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a hung script's children are killed with it
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise EnvActivationError(f"{what} did not finish within {timeout:g}s (ENVFLOW_ACTIVATION_TIMEOUT)") from None
    try:
        after = json.loads(stdout) if proc.returncode == 0 else None
    except ValueError:
        after = None  # the dump never ran: the shell ended first
    if not isinstance(after, dict):
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        detail = "; ".join(tail) or "no output"
        raise EnvActivationError(
            f"{what} exited the shell (exit status {proc.returncode}) before activation finished: {detail}"
        )
    after.update({k: v for k, v in env.items() if not SHELL_NAME.fullmatch(k)})
    return after


def sourced(scripts: list[Path]) -> str:
    """Shell lines sourcing each script (its output to stderr), as conda's ``. "script"`` lines:
    a script's exit status is ignored."""
    return "\n".join(f". {quote(str(path))} >&2" for path in scripts)
