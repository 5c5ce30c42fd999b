"""The few ``.condarc`` settings that change what ``conda activate`` sets, read as conda reads them.

conda (26.7, ``conda/base/constants.py`` ``SEARCH_PATH``, ``conda/common/configuration.py``
``Configuration._expand_search_path``) reads every condarc on its search path, in order,
later files winning, then ``CONDA_<SETTING>`` environment variables, which win over files.
The same places are read here, with the variables of the worker's own environment (a flow's
lacks ``$CONDARC`` and ``$XDG_CONFIG_HOME``): ``$CONDA_ROOT`` is that variable or else the
conda root, ``$CONDA_PREFIX`` the active env (else the root), ``~`` that environment's ``HOME``.
Only ``env_prompt``, ``changeps1`` and ``envvars_force_uppercase`` are read; ``#!final``
markers are not honoured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SEARCH_PATH = (
    "/etc/conda/.condarc",
    "/etc/conda/condarc",
    "/etc/conda/condarc.d/",
    "/var/lib/conda/.condarc",
    "/var/lib/conda/condarc",
    "/var/lib/conda/condarc.d/",
    "$CONDA_ROOT/.condarc",
    "$CONDA_ROOT/condarc",
    "$CONDA_ROOT/condarc.d/",
    "$XDG_CONFIG_HOME/conda/.condarc",
    "$XDG_CONFIG_HOME/conda/condarc",
    "$XDG_CONFIG_HOME/conda/condarc.d/",
    "~/.config/conda/.condarc",
    "~/.config/conda/condarc",
    "~/.config/conda/condarc.d/",
    "~/.conda/.condarc",
    "~/.conda/condarc",
    "~/.conda/condarc.d/",
    "~/.condarc",
    "$CONDA_PREFIX/.condarc",
    "$CONDA_PREFIX/condarc",
    "$CONDA_PREFIX/condarc.d/",
    "$CONDARC",
)
CONDARC_NAMES = (".condarc", "condarc")
YAML_SUFFIXES = (".yml", ".yaml")
DEFAULT_ENV_PROMPT = "({default_env}) "
# conda/auxlib/type_coercion.py BOOLISH_TRUE / BOOLISH_FALSE
TRUE_WORDS = ("true", "yes", "on", "y")
FALSE_WORDS = ("false", "off", "n", "no", "non", "none", "")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
# The variables the search path is made of ("~" is HOME).
SEARCH_PATH_VARIABLES = ("HOME", *dict.fromkeys(m[0] or m[1] for e in SEARCH_PATH for m in _VARIABLE.findall(e)))


@dataclass
class CondaConfig:
    """The activation settings in effect (conda's defaults unless a condarc or variable says otherwise)."""

    env_prompt: str = DEFAULT_ENV_PROMPT
    changeps1: bool = True
    envvars_force_uppercase: bool = True
    warnings: list[str] = field(default_factory=list)


def _expand(template: str, variables: Mapping[str, str]) -> Path | None:
    """A search path entry with its variables filled in; None when one is not set (conda then
    looks for a literal ``$NAME`` path, which does not exist)."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = variables.get(match.group(1) or match.group(2))
        missing = missing or not value
        return value or ""

    text = _VARIABLE.sub(fill, template)
    if text.startswith("~"):
        if not variables.get("HOME"):
            return None
        text = variables["HOME"] + text[1:]
    return None if missing else Path(text)


def search_path(root: Path | None, environ: Mapping[str, str]) -> list[Path]:
    """Every file or directory conda would look at, in order (whether or not it exists)."""
    variables = dict(environ)
    if not environ.get("CONDA_ROOT") and root is not None:
        variables["CONDA_ROOT"] = str(root)  # conda/__init__.py sets it to its root when unset
    if not environ.get("CONDA_PREFIX") and root is not None:
        variables["CONDA_PREFIX"] = str(root)  # conda's default_prefix when no env is active
    places = (_expand(entry, variables) for entry in SEARCH_PATH)
    return list(dict.fromkeys(p for p in places if p is not None))


def condarc_files(places: list[Path]) -> list[Path]:
    """The condarc files among ``places``: files named condarc or *.yml, and *.yml files of directories."""
    found: list[Path] = []
    for place in places:
        if place.is_file() and (place.name in CONDARC_NAMES or place.suffix in YAML_SUFFIXES):
            found.append(place)
        elif place.is_dir():
            try:
                children = sorted(place.iterdir(), key=lambda p: p.name)
            except OSError:
                continue
            found.extend(c for c in children if c.is_file() and c.suffix in YAML_SUFFIXES)
    return list(dict.fromkeys(found))


def boolify(value: object) -> bool | None:
    """conda's reading of a boolean setting (``conda/auxlib/type_coercion.py`` ``boolify``); None if invalid."""
    if isinstance(value, (bool, int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text.replace(".", "", 1).isnumeric():
        return bool(float(text))
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    return None


def _apply(config: CondaConfig, key: str, value: object, where: str) -> None:
    if key == "env_prompt":
        try:  # conda fails on a template it cannot fill; activation keeps the default instead
            str(value).format(default_env="", stacked_env="", prefix="", name="")
        except (KeyError, IndexError, ValueError) as e:
            config.warnings.append(f"{where}: env_prompt {value!r} cannot be filled in ({e!r}); ignored")
            return
        config.env_prompt = str(value)
        return
    flag = boolify(value)
    if flag is None:
        config.warnings.append(f"{where}: {key}: {value!r} is not a boolean; ignored")
    else:
        setattr(config, key, flag)


def read_conda_config(root: Path | None, environ: Mapping[str, str]) -> CondaConfig:
    """The activation settings from the condarc files and ``CONDA_*`` variables conda would read."""
    config = CondaConfig()
    keys = ("env_prompt", "changeps1", "envvars_force_uppercase")
    for path in condarc_files(search_path(root, environ)):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            config.warnings.append(f"ignoring {path}, which conda cannot read either: {str(e).splitlines()[0]}")
            continue
        if isinstance(data, dict):
            for key in keys:
                if data.get(key) is not None:
                    _apply(config, key, data[key], str(path))
    for key in keys:
        value = environ.get(f"CONDA_{key.upper()}")
        if value is not None:
            # conda/common/configuration.py EnvRawParameter: "!important" only marks the value final
            _apply(config, key, value.split("!important")[0].strip(), f"CONDA_{key.upper()}")
    return config


def config_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that say where conda's configuration is (``$CONDARC``,
    ``$XDG_CONFIG_HOME``...): a conda started for an activation needs them, a flow does not get them."""
    return {name: environ[name] for name in SEARCH_PATH_VARIABLES if name in environ}


def watched(root: Path | None, environ: Mapping[str, str]) -> list[Path]:
    """The condarc places and files whose change (or creation) changes the settings."""
    places = search_path(root, environ)
    return [*places, *condarc_files(places)]

