"""Env resolution, activation and its cache, against real directories and interpreters (no Redis)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envflow.errors import EnvActivationError, EnvNotFound
from envflow.models import EnvKind, EnvSpec
from envflow.settings import Settings
from envflow.worker.env_cache import EnvCache
from envflow.worker.environments import SCRUBBED
from envflow.worker.environments.shell import SHELL_NOISE
from envflow.worker.resolve import EnvResolver

from .support.pythons import make_conda_prefix, pyenv_python


@pytest.fixture
def conda_root(tmp_path: Path) -> Path:
    root = make_conda_prefix(tmp_path / "miniconda", env_vars={})
    (root / "envs").mkdir()
    return root


def resolver_for(tmp_path: Path, conda_root: Path | None = None, **environ: str) -> EnvResolver:
    settings = Settings(env_roots=str(tmp_path), conda_root=conda_root, state_dir=tmp_path / "state")
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), **environ}
    return EnvResolver(settings, environ=base, cwd=tmp_path)


def test_spec_fields():
    assert EnvSpec.from_fields(condaenv="ml").kind is EnvKind.CONDA
    for prefix in ("/opt/envs/ml", "~/envs/ml", "./envs/ml"):
        assert EnvSpec.from_fields(condaenv=prefix).kind is EnvKind.CONDA_PREFIX
    assert EnvSpec.from_fields(virtualenv="venv").kind is EnvKind.VENV
    assert EnvSpec.from_fields().kind is EnvKind.WORKER
    with pytest.raises(ValueError, match="not both"):
        EnvSpec.from_fields(condaenv="a", virtualenv="b")


def test_named_envs_follow_conda_order(tmp_path, conda_root):
    first = tmp_path / "first-envs"
    first.mkdir()
    make_conda_prefix(first / "ml", env_vars={})
    make_conda_prefix(conda_root / "envs" / "ml", env_vars={})
    make_conda_prefix(conda_root / "envs" / "web", env_vars={})
    listed = make_conda_prefix(tmp_path / "elsewhere" / "listed", env_vars={})
    home = tmp_path / "home" / ".conda"
    home.mkdir(parents=True)
    (home / "environments.txt").write_text(f"{listed}\n/does/not/exist\n")
    resolver = resolver_for(tmp_path, conda_root, CONDA_ENVS_PATH=str(first))
    envs = resolver.named_envs()
    assert envs["ml"] == first / "ml"  # CONDA_ENVS_PATH comes before <root>/envs
    assert envs["web"] == conda_root / "envs" / "web"
    assert envs["listed"] == listed
    assert envs["base"] == conda_root
    env = resolver.resolve(EnvSpec(kind=EnvKind.CONDA, value="web"))
    assert env.prefix == (conda_root / "envs" / "web").resolve()


def test_named_env_not_found_lists_names_and_places(tmp_path, conda_root):
    make_conda_prefix(conda_root / "envs" / "web", env_vars={})
    with pytest.raises(EnvNotFound) as e:
        resolver_for(tmp_path, conda_root).resolve(EnvSpec(kind=EnvKind.CONDA, value="ml"))
    message = str(e.value)
    assert "no conda env named 'ml'" in message and "base, web" in message
    assert str(conda_root / "envs") in message and "environments.txt" in message


def test_conda_activation_variables_config_vars_and_scripts(tmp_path, conda_root):
    prefix = make_conda_prefix(
        conda_root / "envs" / "ml",
        env_vars={"ENVFLOW_HOME": "/data/envflow-ml", "MODE": "from-state"},
        scripts={
            "10-first.sh": 'export ORDER="first"\nexport FROM_SCRIPT="$CONDA_PREFIX/share"\n',
            "20-second.sh": 'export ORDER="$ORDER,second"\nunset DROP_ME\necho noise\n',
            "ignored.txt": "export NOT_SOURCED=1\n",
        },
    )
    resolver = resolver_for(tmp_path, conda_root)
    cache = EnvCache(resolver.settings, resolver)
    base = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "PYTHONPATH": "/leak", "DROP_ME": "x"}
    prepared = cache.prepare(EnvSpec(kind=EnvKind.CONDA, value="ml"), base, {"MODE": "deployment-wins"})
    v = prepared.variables
    assert v["PATH"].split(":")[:3] == [f"{prefix}/bin", "/usr/bin", "/bin"]
    assert v["CONDA_PREFIX"] == str(prefix) and v["CONDA_DEFAULT_ENV"] == "ml"
    assert v["CONDA_SHLVL"] == "1" and v["CONDA_PROMPT_MODIFIER"] == "(ml) "
    assert v["ENVFLOW_HOME"] == "/data/envflow-ml"
    assert v["ORDER"] == "first,second" and v["FROM_SCRIPT"] == f"{prefix}/share"
    assert "DROP_ME" not in v and "NOT_SOURCED" not in v and "PYTHONPATH" not in v
    assert v["MODE"] == "deployment-wins"
    assert prepared.python == prefix / "bin" / "python"


def test_prefix_and_venv_path_errors(tmp_path):
    resolver = resolver_for(tmp_path)
    (tmp_path / "plain").mkdir()
    conda_like = make_conda_prefix(tmp_path / "cprefix", env_vars={})
    with pytest.raises(EnvNotFound, match=r"'./nowhere' does not exist: resolved to .*/nowhere"):
        resolver.resolve(EnvSpec(kind=EnvKind.CONDA_PREFIX, value="./nowhere"))
    with pytest.raises(EnvNotFound, match="no conda-meta/ directory"):
        resolver.resolve(EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(tmp_path / "plain")))
    with pytest.raises(EnvNotFound, match="use condaenv="):
        (conda_like / "pyvenv.cfg").rename(conda_like / "pyvenv.cfg.off")
        resolver.resolve(EnvSpec(kind=EnvKind.VENV, value=str(conda_like)))


def test_env_outside_allowed_roots_is_refused(tmp_path, venv):
    resolver = resolver_for(tmp_path / "only-here")
    (tmp_path / "only-here").mkdir()
    link = tmp_path / "only-here" / "sneaky"
    link.symlink_to(venv)  # inside the root by name, outside once links are followed
    with pytest.raises(EnvActivationError, match="outside the allowed env roots"):
        resolver.resolve(EnvSpec(kind=EnvKind.VENV, value=str(link)))


def test_venv_from_another_machine_names_its_home(tmp_path):
    broken = tmp_path / "mounted-venv"
    (broken / "bin").mkdir(parents=True)
    (broken / "pyvenv.cfg").write_text("home = /Users/someone/.pyenv/versions/3.12.1/bin\nversion = 3.12.1\n")
    (broken / "bin" / "python").symlink_to("/Users/someone/.pyenv/versions/3.12.1/bin/python3.12")
    cache = EnvCache(resolver_for(tmp_path).settings, resolver_for(tmp_path))
    with pytest.raises(EnvActivationError) as e:
        cache.prepare(EnvSpec(kind=EnvKind.VENV, value=str(broken)), os.environ)
    message = str(e.value)
    assert "/Users/someone/.pyenv/versions/3.12.1/bin" in message and "envflow venv create" in message


@pytest.mark.skipif(pyenv_python("3.7") is None, reason="needs a Python 3.7 from pyenv")
def test_interpreter_too_old(tmp_path):
    old = tmp_path / "py37"
    subprocess.run([pyenv_python("3.7"), "-m", "venv", "--without-pip", str(old)], check=True)
    resolver = resolver_for(tmp_path)
    with pytest.raises(EnvActivationError, match=r"has Python 3\.7\.\d+; flows need CPython 3.8 or newer"):
        EnvCache(resolver.settings, resolver).prepare(EnvSpec(kind=EnvKind.VENV, value=str(old)), os.environ)


@pytest.mark.parametrize(
    ("script", "match"),
    [
        ("echo broken >&2\nexit 4\n", r"exited the shell \(exit status 4\) before activation finished: broken"),
        ("sleep 30\n", r"did not finish within 1s"),
    ],
)
def test_activate_script_that_exits_or_hangs(tmp_path, script, match):
    prefix = make_conda_prefix(tmp_path / "bad", env_vars={}, scripts={"bad.sh": script})
    settings = Settings(env_roots=str(tmp_path), activation_timeout=1, state_dir=tmp_path / "s")
    resolver = EnvResolver(settings, environ={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    with pytest.raises(EnvActivationError, match=match):
        EnvCache(settings, resolver).prepare(EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix)), {"PATH": "/usr/bin:/bin"})


def test_activation_is_cached_until_the_env_changes(tmp_path):
    log = tmp_path / "sourced.log"
    prefix = make_conda_prefix(
        tmp_path / "c", env_vars={"A": "1"}, scripts={"log.sh": f'echo x >> "{log}"\nexport FROM=script\n'}
    )
    resolver = resolver_for(tmp_path)
    cache = EnvCache(resolver.settings, resolver)
    spec = EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix))
    for _ in range(5):
        assert cache.prepare(spec, {"PATH": "/usr/bin"}).variables["A"] == "1"
    assert log.read_text().count("x") == 1 and cache.misses == 1
    (prefix / "conda-meta" / "state").write_text('{"env_vars": {"A": "2"}}')  # conda env config vars set A=2
    os.utime(prefix / "conda-meta" / "state", ns=(1, 1))
    assert cache.prepare(spec, {"PATH": "/usr/bin"}).variables["A"] == "2"
    assert log.read_text().count("x") == 2
    (prefix / "etc" / "conda" / "activate.d" / "log.sh").write_text('export FROM=changed\n')
    assert cache.prepare(spec, {"PATH": "/usr/bin"}).variables["FROM"] == "changed"
    assert cache.misses == 3
    (prefix / "etc" / "conda" / "activate.d" / "zz-added.sh").write_text('export ADDED=yes\n')  # a new script
    assert cache.prepare(spec, {"PATH": "/usr/bin"}).variables["ADDED"] == "yes"
    (prefix / "etc" / "conda" / "activate.d" / "zz-added.sh").unlink()
    assert "ADDED" not in cache.prepare(spec, {"PATH": "/usr/bin"}).variables
    assert cache.misses == 5


CONDA = shutil.which("conda")
DUMP = "import json, os; print(json.dumps(dict(os.environ)))"


def conda_scenario(tmp_path: Path, stacked: bool) -> tuple[Path, dict[str, str]]:
    """A conda-layout env using what activation reads, and the environment it is activated from:
    no env active, or (``stacked``) another env with deactivate.d scripts active."""
    prefix = make_conda_prefix(
        tmp_path / "envs" / "c",
        env_vars={"K": "v", "lower_var": "x", "B": "***unset***", "PATH": "/evil", "HOME_TOO": "state"},
        scripts={"a.sh": 'export S="$CONDA_PREFIX:$K"\n'},
        package_env_vars={"pkg.json": {"PKG": "p", "K": "from-package"}},
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "_CE_", "_CONDA", "__CONDA"))}
    base.pop("VIRTUAL_ENV", None)  # unset by envflow, kept by conda: documented
    base["PATH"] = os.pathsep.join(p for p in base["PATH"].split(os.pathsep) if p and not Path(p, "conda").exists())
    base.update(HOME=str(tmp_path / "home"), HOME_TOO="machine", B="machine")
    if stacked:
        old = make_conda_prefix(tmp_path / "envs" / "old", env_vars={},
                                deactivate_scripts={"d.sh": "unset OLD_ONLY\nexport DEACTIVATED=1\n"})
        base.update(CONDA_SHLVL="1", CONDA_PREFIX=str(old), CONDA_DEFAULT_ENV="old", OLD_ONLY="1",
                    PATH=f"{old}/bin{os.pathsep}{base['PATH']}")
    return prefix, base


@pytest.mark.skipif(CONDA is None, reason="conda is not installed here (not on the reachable registries)")
@pytest.mark.parametrize("stacked", [False, True])
def test_matches_conda_shell_activate(tmp_path, stacked):
    """envflow's native activation (no conda on PATH) against `conda shell.posix activate`, both
    started from the same environment: conda is called by its full path."""
    root = Path(CONDA).resolve().parent.parent
    if not (root / "bin" / "conda").exists():
        pytest.skip(f"{CONDA} is not <root>/bin/conda or <root>/condabin/conda")
    tmp_path = tmp_path.resolve()  # conda keeps a symlinked prefix's path, envflow resolves it: documented
    prefix, base = conda_scenario(tmp_path, stacked)
    assert shutil.which("conda", path=base["PATH"]) is None
    script = f'eval "$("{root}/bin/conda" shell.posix activate "{prefix}")" >&2 && exec "{sys.executable}" -c \'{DUMP}\''
    conda_env = json.loads(subprocess.run(["sh", "-c", script], env=base, capture_output=True, text=True,
                                          check=True, timeout=120).stdout)
    conda_env["PATH"] = os.pathsep.join(dict.fromkeys(p for p in conda_env["PATH"].split(os.pathsep) if p))
    settings = Settings(env_roots=str(tmp_path), conda_root=root, state_dir=tmp_path / "s")
    cache = EnvCache(settings, EnvResolver(settings, environ=base, cwd=tmp_path))
    ours = cache.prepare(EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix)), base).variables
    ignored = SHELL_NOISE | set(SCRUBBED)
    for name in sorted((set(conda_env) | set(ours)) - ignored):
        assert ours.get(name) == conda_env.get(name), name
    assert ours["LOWER_VAR"] == "x" and ours["PKG"] == "p" and ours["K"] == "v" and ours["B"] == "machine"


def test_without_env_roots_the_users_home_is_allowed_and_a_refusal_names_the_setting(tmp_path):
    """Outside the image (which sets ENVFLOW_ENV_ROOTS), a newcomer's ~/envs/x is allowed; a venv elsewhere
    is refused, naming its path and the setting that would allow it."""
    home, work, elsewhere = tmp_path / "home", tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    mine = home / "envs" / "x"
    for venv in (mine, elsewhere / "x"):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    settings = Settings(env_roots=None, state_dir=tmp_path / "state")
    resolver = EnvResolver(settings, environ={"HOME": str(home), "PATH": os.environ["PATH"]}, cwd=work)
    assert resolver.resolve(EnvSpec.from_fields(virtualenv=str(mine))).prefix == mine.resolve()
    with pytest.raises(EnvActivationError) as refused:
        resolver.resolve(EnvSpec.from_fields(virtualenv=str(elsewhere / "x")))
    assert str(elsewhere / "x") in str(refused.value) and f"add {elsewhere} to ENVFLOW_ENV_ROOTS" in str(refused.value)
