"""The Pythons and envs tests run flows in: venvs made once per machine, pyenv's interpreters, and
prefixes in conda's on-disk layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

VENV_ROOT = Path(os.environ.get("ENVFLOW_TEST_VENVS", "/tmp/envflow-test-venvs"))


def make_venv(name: str, python: str = sys.executable) -> Path:
    """A real venv (no pip, made once per machine and reused), under VENV_ROOT."""
    path = VENV_ROOT / name
    if not (path / "pyvenv.cfg").is_file() or not (path / "bin" / "python").exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


PYENV_ROOT = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() or "/nonexistent") \
    if shutil.which("pyenv") else Path("/nonexistent")


def pyenv_python(minor: str) -> str | None:
    matches = sorted(PYENV_ROOT.glob(f"versions/{minor}.*/bin/python{minor}"))
    return str(matches[-1]) if matches else None


def make_conda_prefix(
    path: Path,
    env_vars: dict[str, str] | None = None,
    scripts: dict[str, str] | None = None,
    python: str = sys.executable,
    deactivate_scripts: dict[str, str] | None = None,
    package_env_vars: dict[str, dict[str, str]] | None = None,
) -> Path:
    """A directory in conda's on-disk layout around a real interpreter.

    conda cannot be installed here, so the interpreter comes from a venv of ``python``
    (so that sys.prefix is the prefix, as in a real conda env), and the conda metadata
    (conda-meta/history, conda-meta/state with config vars, a python-*.json record,
    etc/conda/activate.d and deactivate.d scripts, packages' etc/conda/env_vars.d/*.json)
    is written as conda writes it.
    """
    subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True)
    version = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, check=True, text=True,
    ).stdout.strip()
    meta = path / "conda-meta"
    meta.mkdir()
    (meta / "history").write_text(f"==> 2026-01-01 00:00:00 <==\n# cmd: conda create -p {path} python={version}\n")
    (meta / f"python-{version}-h0_0_cpython.json").write_text(json.dumps({"name": "python", "version": version}))
    if env_vars is not None:
        (meta / "state").write_text(json.dumps({"env_vars": env_vars}))
    for folder, files in (("activate.d", scripts), ("deactivate.d", deactivate_scripts)):
        for name, text in (files or {}).items():
            (path / "etc" / "conda" / folder).mkdir(parents=True, exist_ok=True)
            (path / "etc" / "conda" / folder / name).write_text(textwrap.dedent(text))
    for name, variables in (package_env_vars or {}).items():
        (path / "etc" / "conda" / "env_vars.d").mkdir(parents=True, exist_ok=True)
        (path / "etc" / "conda" / "env_vars.d" / name).write_text(json.dumps(variables))
    return path


# A module that starts a thread when imported: a preload that makes forking unsafe.
THREADED = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"


def venv_with_modules(path: Path, modules: dict[str, str]) -> Path:
    """A venv of its own at ``path`` whose interpreter can import ``modules`` (name -> source), from a
    directory beside it put on its path by a ``.pth`` (no PYTHONPATH: flows never get one)."""
    lib = path.parent / f"{path.name}-lib"
    lib.mkdir()
    for name, source in modules.items():
        (lib / f"{name}.py").write_text(source)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (next(path.glob("lib/python3*/site-packages")) / "lib.pth").write_text(f"{lib}\n")
    return path
