"""conda envs, named or given by their prefix (``conda-meta/`` marks one)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from envflow.errors import EnvActivationError
from envflow.models import EnvKind, EnvSpec

from .base import Environment, Locator
from .conda_config import config_variables, read_conda_config, watched
from .conda_vars import CondaSetup, activate_variables, env_vars_to_export, reactivate_variables, shlvl
from .shell import Delta, apply, diff, quote, run_in_shell, sourced


def conda_scripts(prefix: Path, folder: str) -> list[Path]:
    """The ``*.sh`` scripts of ``<prefix>/etc/conda/<folder>``, in the order conda sources them:
    by name, and by reverse name for ``deactivate.d`` (``_get_activate_scripts``,
    ``_get_deactivate_scripts`` in conda's ``activate.py``)."""
    directory = prefix / "etc" / "conda" / folder
    scripts = sorted(directory.glob("*.sh")) if directory.is_dir() else []
    return scripts[::-1] if folder == "deactivate.d" else scripts


def _read_json(path: Path, what: str) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EnvActivationError(f"{what}: cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise EnvActivationError(f"{what}: {path} does not hold a JSON object")
    return data


class CondaEnvironment(Environment):
    """A conda env, named or given by its prefix (``conda-meta/`` marks it)."""

    kinds = (EnvKind.CONDA, EnvKind.CONDA_PREFIX)
    path_kind = EnvKind.CONDA_PREFIX
    field = "condaenv"
    noun = "conda env"
    marker = "conda-meta/"
    marker_desc = "conda-meta/ directory"
    label = "conda-prefix"

    @classmethod
    def locate(cls, spec: EnvSpec, resolver: Locator) -> Environment:
        if spec.kind is EnvKind.CONDA:
            prefix = resolver.named_conda(spec.value or "")
        else:
            prefix = resolver.locate_directory(spec, cls)
        return cls(spec, prefix, resolver.real_root(), resolver.environ)

    def __init__(self, spec: EnvSpec, prefix: Path, root: Path | None, environ: Mapping[str, str] | None = None) -> None:
        """
        :param root: the conda root prefix, when known.
        :param environ: the worker's environment (its condarc files and active env are watched).
        """
        super().__init__(spec, prefix)
        self.root = root
        self.environ = dict(environ or {})

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def has_conda(self) -> bool:
        """Whether the conda root is known and has ``bin/conda``."""
        return self.root is not None and (self.root / "bin" / "conda").exists()

    def watched_paths(self) -> list[Path]:
        meta = self.prefix / "conda-meta"
        paths = [meta, meta / "state", meta / "history", self.python, *self.site_packages()]
        folders = [self.prefix / "etc" / "conda" / f for f in ("activate.d", "deactivate.d", "env_vars.d")]
        if self.environ.get("CONDA_PREFIX"):  # its deactivate.d runs when it is replaced
            folders.append(Path(self.environ["CONDA_PREFIX"]) / "etc" / "conda" / "deactivate.d")
        for folder in folders:
            paths.append(folder)
            if folder.is_dir():
                paths.extend(sorted(folder.iterdir()))
        if self.root is not None:
            paths.append(self.root / "bin" / "conda")
        return [*paths, *watched(self.root, self.environ)]

    def python_version(self) -> tuple[int, ...] | None:
        for record in (self.prefix / "conda-meta").glob("python-[0-9]*.json"):
            match = re.match(r"python-(\d+)\.(\d+)\.(\d+)", record.name)
            if match:
                return tuple(int(g) for g in match.groups())
        return None

    def env_vars(self) -> dict[str, object]:
        """The env's variables as conda reads them (``_get_environment_env_vars``): those of its
        packages (every file in ``etc/conda/env_vars.d``, in name order), then its
        ``conda env config vars`` (``conda-meta/state``), which win. Unfiltered: values may be
        ``***unset***``, null or not strings."""
        found: dict[str, object] = {}
        packages = self.prefix / "etc" / "conda" / "env_vars.d"
        if packages.is_dir():
            for path in sorted(packages.iterdir()):
                found.update(_read_json(path, self.describe()))
        state = self.prefix / "conda-meta" / "state"
        if state.exists():
            env_vars = _read_json(state, self.describe()).get("env_vars") or {}
            if not isinstance(env_vars, dict):
                raise EnvActivationError(f"{self.describe()}: env_vars in {state} is not a JSON object")
            found.update(env_vars)
        return {str(k): v for k, v in found.items()}

    def activate_scripts(self) -> list[Path]:
        return conda_scripts(self.prefix, "activate.d")

    def activation(self, base: Mapping[str, str], timeout: float) -> Delta:
        return conda_activation(self, base, timeout)


def conda_activation(env: CondaEnvironment, base: Mapping[str, str], timeout: float) -> Delta:
    """The activation delta of a conda env: conda's own answer when conda is on PATH, else computed.

    Computed as conda runs it (``_yield_commands``): the deactivate.d scripts of the env being
    replaced (or, on a reactivate, of the env itself), then conda's variables, then the env's
    activate.d scripts. Ignored settings are left in ``env.warnings``.
    """
    conda = shutil.which("conda", path=base.get("PATH"))
    if conda:
        # conda reads its configuration from the variables the flow does not get too ($CONDARC...)
        start = {**config_variables(env.environ), **base}
        command = f"{quote(conda)} shell.posix activate {quote(str(env.prefix))}"
        script = f'__envflow_conda="$({command})" || exit $?\neval "$__envflow_conda" >&2'
        after = run_in_shell(script, start, timeout, f"`conda shell.posix activate {env.prefix}`")
        env.warnings = [_ignored_message(env, name) for name in env.env_vars() if name == "PATH"]
        return diff(start, after)
    config = read_conda_config(env.root, env.environ)  # the worker's own environment, as conda's
    setup = CondaSetup(env.root, env.has_conda, config)
    active = base.get("CONDA_PREFIX")
    ignored: list[str] = []
    if shlvl(base) > 0 and active == str(env.prefix):  # as strings, as conda compares them
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


def _with_scripts(
    env: CondaEnvironment, base: Mapping[str, str], delta: Delta, replaced: list[Path], timeout: float
) -> Delta:
    """``delta`` with the changes of the deactivate.d scripts of the env being replaced (sourced
    first, on ``base``) and of the env's activate.d scripts (sourced last, after ``delta``)."""
    delta = dict(delta)
    if replaced:
        names = ", ".join(str(s) for s in replaced)
        after = run_in_shell(sourced(replaced), base, timeout, f"deactivate.d scripts ({names})")
        delta = {**diff(base, after), **delta}
    scripts = env.activate_scripts()
    if scripts:
        before = apply(base, delta)
        names = ", ".join(s.name for s in scripts)
        after = run_in_shell(sourced(scripts), before, timeout, f"activate.d scripts of {env.prefix} ({names})")
        delta.update(diff(before, after))
    return delta
