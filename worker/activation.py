"""Computing a conda env's activation without ``conda run``.

The variables ``conda activate`` sets are computed here (pure), then the env's config
vars and ``etc/conda/activate.d/*.sh`` scripts are applied; the scripts are sourced once
in a POSIX shell and their variable changes recorded. When ``conda`` is on PATH its own
``conda shell.posix activate`` is evaluated instead: its answer is authoritative.
Results are cached per env by the caller (see ``worker/env_cache.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from envflow.errors import EnvActivationError

if TYPE_CHECKING:
    from .environments import CondaEnvironment, Delta

# Shell bookkeeping that is not part of an activation.
SHELL_NOISE = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2"})
DUMP_ENVIRONMENT = "import json, os, sys; sys.stdout.write(json.dumps(dict(os.environ)))"


def conda_variables(prefix: Path, default_env: str, base: Mapping[str, str]) -> Delta:
    """What ``conda activate PREFIX`` sets, starting from the ``base`` environment.

    Like conda (without ``--stack``), an active env's ``bin`` is replaced in PATH by the
    new one and remembered in ``CONDA_PREFIX_<level>``. ``VIRTUAL_ENV`` of a worker that
    itself runs in a venv is unset: tools such as uv would otherwise install into it.
    """
    level = int(base.get("CONDA_SHLVL") or 0)
    old_prefix = base.get("CONDA_PREFIX")
    new_bin = str(prefix / "bin")
    parts = [p for p in (base.get("PATH") or "").split(os.pathsep) if p]
    delta: Delta = {}
    if level > 0 and old_prefix:
        old_bin = str(Path(old_prefix) / "bin")
        parts = [new_bin if p == old_bin else p for p in parts]
        delta[f"CONDA_PREFIX_{level}"] = old_prefix
    if new_bin not in parts:
        parts.insert(0, new_bin)
    delta.update(
        {
            "PATH": os.pathsep.join(dict.fromkeys(parts)),
            "CONDA_PREFIX": str(prefix),
            "CONDA_SHLVL": str(level + 1),
            "CONDA_DEFAULT_ENV": default_env,
            "CONDA_PROMPT_MODIFIER": f"({default_env}) ",
        }
    )
    if "VIRTUAL_ENV" in base:
        delta["VIRTUAL_ENV"] = None
    return delta


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


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def run_in_shell(script: str, env: Mapping[str, str], timeout: float, what: str) -> dict[str, str]:
    """Run ``script`` in ``sh`` (its output goes to stderr), then return the resulting environment."""
    shell = shutil.which("sh", path=env.get("PATH")) or "/bin/sh"
    command = f"{script}\nexec {_quote(sys.executable)} -c {_quote(DUMP_ENVIRONMENT)}"
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
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        detail = "; ".join(tail) or "no output"
        raise EnvActivationError(f"{what} failed with exit status {done.returncode}: {detail}")
    return json.loads(done.stdout)


def conda_activation(env: CondaEnvironment, base: Mapping[str, str], timeout: float) -> Delta:
    """The activation delta of a conda env: conda's own answer when conda is on PATH, else computed."""
    conda = shutil.which("conda", path=base.get("PATH"))
    if conda:
        script = f'eval "$({_quote(conda)} shell.posix activate {_quote(str(env.prefix))})" >&2'
        after = run_in_shell(script, base, timeout, f"`conda shell.posix activate {env.prefix}`")
        return diff(base, after)
    delta = conda_variables(env.prefix, env.default_env, base)
    delta.update(env.config_vars())
    scripts = env.activate_scripts()
    if not scripts:
        return delta
    before = apply(base, delta)
    lines = [f". {_quote(str(path))} >&2 || exit $?" for path in scripts]
    after = run_in_shell(
        "\n".join(lines), before, timeout, f"activate.d scripts of {env.prefix} ({', '.join(s.name for s in scripts)})"
    )
    delta.update(diff(before, after))
    return delta
