"""Computing a conda env's activation without ``conda run``.

The variables ``conda activate`` sets are computed by ``conda_vars`` (pure); the
``deactivate.d`` scripts of an env being replaced and the env's ``activate.d/*.sh`` scripts
are sourced in a POSIX shell around them, and their variable changes recorded. When
``conda`` is on PATH its own ``conda shell.posix activate`` is evaluated instead: its answer
is authoritative.
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

from .conda_config import read_conda_config
from .conda_vars import CondaSetup, activate_variables, env_vars_to_export, reactivate_variables, shlvl
from .environments import conda_scripts

if TYPE_CHECKING:
    from .environments import CondaEnvironment, Delta

# Shell bookkeeping that is not part of an activation.
SHELL_NOISE = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2"})
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
    """The activation delta of a conda env: conda's own answer when conda is on PATH, else computed.

    Computed as conda runs it (``_yield_commands``): the deactivate.d scripts of the env being
    replaced (or, on a reactivate, of the env itself), then conda's variables, then the env's
    activate.d scripts. Ignored settings are left in ``env.warnings``.
    """
    conda = shutil.which("conda", path=base.get("PATH"))
    if conda:
        script = f'eval "$({_quote(conda)} shell.posix activate {_quote(str(env.prefix))})" >&2'
        after = run_in_shell(script, base, timeout, f"`conda shell.posix activate {env.prefix}`")
        env.warnings = [_ignored_message(env, name) for name in env.env_vars() if name == "PATH"]
        return diff(base, after)
    config = read_conda_config(env.root, base)
    setup = CondaSetup(env.root, env.has_conda, config)
    active = base.get("CONDA_PREFIX")
    ignored: list[str] = []
    if shlvl(base) > 0 and active and _same_dir(active, env.prefix):
        delta = reactivate_variables(base, setup)
        replaced = conda_scripts(env.prefix, "deactivate.d")
    else:
        env_vars, ignored = env_vars_to_export(env.env_vars(), config.envvars_force_uppercase)
        delta = activate_variables(env.prefix, base, setup, env_vars)
        replaced = conda_scripts(Path(active), "deactivate.d") if shlvl(base) > 0 and active else []
    env.warnings = [*config.warnings, *(_ignored_message(env, name) for name in ignored)]
    return _with_scripts(env, base, delta, replaced, timeout)


def _ignored_message(env: CondaEnvironment, name: str) -> str:
    return (
        f"config var {name} is ignored: conda ignores PATH in an env's variables "
        f"(remove it with `conda env config vars unset -p {env.prefix} {name}`)"
    )


def _same_dir(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _sourced(scripts: list[Path]) -> str:
    return "\n".join(f". {_quote(str(path))} >&2 || exit $?" for path in scripts)


def _with_scripts(
    env: CondaEnvironment, base: Mapping[str, str], delta: Delta, replaced: list[Path], timeout: float
) -> Delta:
    """``delta`` with the changes of the deactivate.d scripts of the env being replaced (sourced
    first, on ``base``) and of the env's activate.d scripts (sourced last, after ``delta``)."""
    delta = dict(delta)
    if replaced:
        names = ", ".join(str(s) for s in replaced)
        after = run_in_shell(_sourced(replaced), base, timeout, f"deactivate.d scripts ({names})")
        delta = {**diff(base, after), **delta}
    scripts = env.activate_scripts()
    if scripts:
        before = apply(base, delta)
        names = ", ".join(s.name for s in scripts)
        after = run_in_shell(_sourced(scripts), before, timeout, f"activate.d scripts of {env.prefix} ({names})")
        delta.update(diff(before, after))
    return delta
