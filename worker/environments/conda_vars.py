"""The variables ``conda activate`` sets, computed without conda (pure: no files, no processes).

Each function follows the conda 26.7 code its docstring names (``conda/activate.py``, class
``_Activator``, unless said otherwise), so that the result is what
``eval "$(conda shell.posix activate ENV)"`` leaves, apart from the differences the README
lists under "Environments". Scripts (``activate.d``, ``deactivate.d``) are run by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .conda_config import CondaConfig
from .shell import Delta

UNSET_MARKER = "***unset***"  # conda/base/constants.py CONDA_ENV_VARS_UNSET_VAR
RESERVED = ("PATH",)  # conda/base/constants.py RESERVED_ENV_VARS
DEFAULT_PATH = "/usr/bin"  # _get_starting_path_list, when PATH is not set


@dataclass(frozen=True)
class CondaSetup:
    """What activation needs to know about conda itself."""

    root: Path | None  # the root prefix ("base"), when known
    has_conda: bool  # <root>/bin/conda exists: a flow can call conda, as after `conda activate`
    config: CondaConfig


def shlvl(base: Mapping[str, str]) -> int:
    """``CONDA_SHLVL`` as conda reads it (a value that is not a number counts as 0 here)."""
    text = (base.get("CONDA_SHLVL") or "").strip()
    return int(text) if text.isdigit() else 0


def default_env(prefix: str, root: Path | None) -> str:
    """``_default_env``: 'base' for the root, the name for a prefix in a directory called
    ``envs`` (whichever directory that is), else the prefix itself."""
    if root is not None and os.path.abspath(prefix) == os.path.abspath(root):
        return "base"
    return os.path.basename(prefix) if os.path.basename(os.path.dirname(prefix)) == "envs" else prefix


def prompt_modifier(prefix: str, default: str, base: Mapping[str, str], setup: CondaSetup, reactivate: bool) -> str:
    """``_prompt_modifier`` (without ``--stack``): ``env_prompt`` filled in, or '' when ``changeps1`` is off."""
    if not setup.config.changeps1:
        return ""
    level = shlvl(base)
    stack: list[str] = []
    for i in range(1, level + 1):
        active = base.get("CONDA_PREFIX", "") if i == level else base.get(f"CONDA_PREFIX_{i}", "").rstrip()
        if not base.get(f"CONDA_STACKED_{i}", "").rstrip():
            stack = stack[:-1]
        stack.append(default_env(active, setup.root))
    if not reactivate:
        stack = [*stack[:-1], default]
    return setup.config.env_prompt.format(
        default_env=default, stacked_env=",".join(reversed(stack)), prefix=prefix, name=os.path.basename(prefix)
    )


def env_vars_to_export(raw: Mapping[str, object], uppercase: bool) -> tuple[dict[str, str | None], list[str]]:
    """The env vars activation sets (None: unset), and the names it ignores.

    ``_get_environment_env_vars`` drops ``PATH`` (``RESERVED_ENV_VARS``) and
    ``_build_activate_stack`` skips ``***unset***`` values. A name that ``envvars_force_uppercase``
    turns into ``PATH`` is ignored too, where conda would let ``path`` replace ``PATH``.
    """
    kept: dict[str, str | None] = {}
    ignored: list[str] = []
    for name, value in raw.items():
        if (name.upper() if uppercase else name) in RESERVED:
            if value != UNSET_MARKER:
                ignored.append(name)
        elif value != UNSET_MARKER:
            kept[name] = None if value is None else str(value)
    return kept, ignored


def _starting_path(base: Mapping[str, str]) -> list[str]:
    """``_get_starting_path_list``, normalized as ``PosixActivator.path_conversion`` (``normpath``) does."""
    return [os.path.normpath(p) for p in base.get("PATH", DEFAULT_PATH).split(os.pathsep) if p]


def _joined(parts: Iterable[str]) -> str:
    return os.pathsep.join(dict.fromkeys(p for p in parts if p))  # first of duplicates kept


def add_prefix_to_path(parts: list[str], prefix: str, condabin: str | None) -> list[str]:
    """``_add_prefix_to_path`` (no env active): the env's ``bin`` first, even if it is on PATH
    already; then ``<root>/condabin`` unless an entry ends with ``condabin``."""
    if condabin and not any(p.endswith("condabin") for p in parts):
        parts = [condabin, *parts]
    return [f"{os.path.normpath(prefix)}/bin", *parts]


def replace_prefix_in_path(parts: list[str], old: str | None, new: str) -> list[str]:
    """``_replace_prefix_in_path``: the new env's ``bin`` takes the place of the first entry equal
    to the active env's ``bin``; without one it goes first."""
    parts = list(parts)
    index = 0
    if old:
        old_bin = os.path.abspath(f"{old}/bin")
        found = next((i for i, p in enumerate(parts) if os.path.abspath(p) == old_bin), None)
        if found is not None:
            del parts[found]
            index = found
    parts.insert(index, f"{os.path.normpath(new)}/bin")
    return parts


def conda_exe_variables(root: Path) -> dict[str, str | None]:
    """``Context.conda_exe_vars_dict`` (``conda/base/context.py``) of conda run as ``<root>/bin/conda``:
    its interpreter is ``<root>/bin/python``; ``_CE_M`` and ``_CE_CONDA`` are unset."""
    exe = f"{root}/bin/conda"
    return {
        "CONDA_EXE": exe,
        "_CONDA_EXE": exe,
        "_CE_M": None,
        "_CE_CONDA": None,
        "CONDA_PYTHON_EXE": f"{root}/bin/python",
        "_CONDA_ROOT": str(root),
    }


def _finish(export: dict[str, str | None], base: Mapping[str, str], setup: CondaSetup) -> Delta:
    """``get_export_unset_vars``: conda's own variables added, names uppercased when
    ``envvars_force_uppercase``. Unsets come first (``_yield_commands``), written
    ``export NAME=''`` (``PosixActivator.unset_var_tmpl``), so they leave the variable empty,
    and an export of the same name (a config var ``_CE_M``) wins over them."""
    unset = [k for k, v in export.items() if v is None]
    exported = {k: v for k, v in export.items() if v is not None}
    if setup.has_conda and setup.root is not None:
        for name, value in conda_exe_variables(setup.root).items():
            if value is None:
                unset.append(name)
            else:
                exported[name] = value
    upper = setup.config.envvars_force_uppercase
    delta: Delta = {(k.upper() if upper else k): "" for k in unset}
    delta.update({(k.upper() if upper else k): v for k, v in exported.items()})
    if "VIRTUAL_ENV" in base and "VIRTUAL_ENV" not in delta:
        delta["VIRTUAL_ENV"] = None  # envflow's own rule: see activate_variables
    return delta


def activate_variables(prefix: Path, base: Mapping[str, str], setup: CondaSetup, env_vars: dict[str, str | None]) -> Delta:
    """What ``conda activate PREFIX`` sets, starting from ``base``, when PREFIX is not the active env.

    ``_build_activate_stack`` without ``--stack``: with no env active (``CONDA_SHLVL`` 0) the
    env's ``bin`` goes first in PATH; otherwise it replaces the active env's ``bin`` and the
    active env is remembered in ``CONDA_PREFIX_<level>``. A variable the env sets that ``base``
    has too is saved in ``__CONDA_SHLVL_<level>_<name>``, for ``conda deactivate``.
    ``VIRTUAL_ENV`` of a worker that itself runs in a venv is unset (envflow's rule, not conda's):
    tools such as uv would otherwise install into it.

    :param env_vars: from :func:`env_vars_to_export`.
    """
    level = shlvl(base)
    old = base.get("CONDA_PREFIX")
    target = str(prefix)
    default = default_env(target, setup.root)
    if level == 0:
        condabin = f"{setup.root}/condabin" if setup.has_conda else None
        path = add_prefix_to_path(_starting_path(base), target, condabin)
    else:
        path = replace_prefix_in_path(_starting_path(base), old, target)
    export: dict[str, str | None] = {
        "PATH": _joined(path),
        "CONDA_PREFIX": target,
        "CONDA_SHLVL": str(level + 1),
        "CONDA_DEFAULT_ENV": default,
        "CONDA_PROMPT_MODIFIER": prompt_modifier(target, default, base, setup, reactivate=False),
        **env_vars,
    }
    export.update({f"__CONDA_SHLVL_{level}_{name}": base[name] for name in env_vars if name in base})
    if level > 0:
        export[f"CONDA_PREFIX_{level}"] = old
    return _finish(export, base, setup)


def reactivate_variables(base: Mapping[str, str], setup: CondaSetup) -> Delta:
    """What ``conda activate`` sets for the env that is active already (``CONDA_PREFIX``).

    ``_build_activate_stack`` turns it into ``build_reactivate``: ``CONDA_SHLVL`` stays, no
    ``CONDA_PREFIX_<n>`` is set, the env vars are not exported again, and the env's ``bin``
    keeps its place in PATH (or goes first, if missing).
    """
    prefix = base.get("CONDA_PREFIX", "")
    default = base.get("CONDA_DEFAULT_ENV", default_env(prefix, setup.root))
    export: dict[str, str | None] = {
        "PATH": _joined(replace_prefix_in_path(_starting_path(base), prefix, prefix)),
        "CONDA_SHLVL": str(shlvl(base)),
        "CONDA_PROMPT_MODIFIER": prompt_modifier(prefix, default, base, setup, reactivate=True),
    }
    return _finish(export, base, setup)
