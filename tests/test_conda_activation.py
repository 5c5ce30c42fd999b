"""Native conda activation against conda's own behaviour (no conda here: expected values encode it).

Every expected value below was read off conda 26.7's source (``conda/activate.py`` unless a
comment names another file) and is cited where it is asserted. The envs are real: conda-layout
prefixes around real interpreters (``make_conda_prefix``), scripts sourced by a real ``sh``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from envflow.errors import EnvActivationError
from envflow.models import EnvKind, EnvSpec
from envflow.settings import Settings
from envflow.worker.env_cache import EnvCache, Prepared
from envflow.worker.environments.conda_config import CondaConfig, condarc_files, search_path
from envflow.worker.environments.conda_vars import CondaSetup, activate_variables
from envflow.worker.environments.variables import flow_base
from envflow.worker.resolve import EnvResolver

from .support.pythons import make_conda_prefix

BASE_PATH = "/usr/bin:/bin"


def cache_for(tmp_path: Path, environ: dict[str, str], root: Path | None = None) -> EnvCache:
    settings = Settings(env_roots=str(tmp_path), conda_root=root, state_dir=tmp_path / "state")
    return EnvCache(settings, EnvResolver(settings, environ=environ, cwd=tmp_path))


def worker_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """A worker's environment without conda on PATH, its HOME (and so ~/.condarc) inside the test."""
    return {"PATH": BASE_PATH, "HOME": str(tmp_path / "home"), **variables}


def activate(tmp_path: Path, prefix: Path, root: Path | None = None, **variables: str) -> Prepared:
    environ = worker_env(tmp_path, **variables)
    return cache_for(tmp_path, environ, root).prepare(EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix)), environ)


def fake_conda_root(path: Path) -> Path:
    """A conda root with ``bin/conda`` (a stand-in file: only its existence matters) and ``condabin``."""
    (path / "bin").mkdir(parents=True)
    (path / "condabin").mkdir()
    (path / "conda-meta").mkdir()
    (path / "bin" / "conda").write_text("#!/bin/sh\nexit 1\n")
    return path.resolve()


def test_path_config_var_is_ignored_with_a_warning(tmp_path):
    # _get_environment_env_vars: PATH is in RESERVED_ENV_VARS (conda/base/constants.py); conda pops
    # it from the env vars and warns, so PATH is what _add_prefix_to_path makes of the worker's.
    prefix = make_conda_prefix(tmp_path / "c", env_vars={"PATH": "/evil", "A": "1"})
    prepared = activate(tmp_path, prefix)
    assert prepared.variables["PATH"] == f"{prefix}/bin:{BASE_PATH}"
    assert prepared.variables["A"] == "1"
    assert len(prepared.environment.warnings) == 1 and "config var PATH is ignored" in prepared.environment.warnings[0]


def test_env_check_shows_an_ignored_path_config_var(tmp_path):
    prefix = make_conda_prefix(tmp_path / "c", env_vars={"PATH": "/evil"})
    env = {**worker_env(tmp_path), "ENVFLOW_ENV_ROOTS": str(tmp_path), "ENVFLOW_STATE_DIR": str(tmp_path / "s")}
    out = subprocess.run([sys.executable, "-m", "envflow", "env", "check", str(prefix)], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert "warning  config var PATH is ignored" in out and "/evil" not in out
    checked = subprocess.run([sys.executable, "-m", "envflow", "env", "check", "--json", str(prefix)], env=env,
                             capture_output=True, text=True, check=True, timeout=60).stdout
    assert ["config var PATH is ignored" in w for w in json.loads(checked)["warnings"]] == [True]


def test_unset_config_vars_are_skipped(tmp_path):
    # `conda env config vars unset B` stores "***unset***" (CONDA_ENV_VARS_UNSET_VAR,
    # conda/core/prefix_data.py unset_environment_env_vars); _build_activate_stack skips those
    # values: the worker's own B stays, and nothing is saved for it.
    prefix = make_conda_prefix(tmp_path / "c", env_vars={"B": "***unset***", "C": "c"})
    v = activate(tmp_path, prefix, B="machine").variables
    assert v["B"] == "machine" and v["C"] == "c"
    assert "__CONDA_SHLVL_0_B" not in v


def test_env_bin_goes_first_even_when_already_on_path(tmp_path):
    # _add_prefix_to_path inserts <prefix>/bin at index 0 whatever PATH holds (conda keeps the
    # later duplicate; envflow drops duplicates, a documented difference).
    prefix = make_conda_prefix(tmp_path / "c", env_vars={})
    v = activate(tmp_path, prefix, PATH=f"/usr/local/bin:{prefix}/bin:/usr/bin").variables
    assert v["PATH"] == f"{prefix}/bin:/usr/local/bin:/usr/bin"


def test_package_env_vars_then_state_env_vars(tmp_path):
    # _get_environment_env_vars: every file of etc/conda/env_vars.d (PACKAGE_ENV_VARS_DIR), in
    # sorted order, then conda-meta/state's env_vars, which overwrite them.
    prefix = make_conda_prefix(
        tmp_path / "c",
        env_vars={"BOTH": "from-state"},
        package_env_vars={
            "20-b.json": {"PKG": "b"},
            "10-a.json": {"PKG": "a", "BOTH": "from-package", "ONLY_A": "a"},
        },
    )
    v = activate(tmp_path, prefix).variables
    assert (v["PKG"], v["BOTH"], v["ONLY_A"]) == ("b", "from-state", "a")


def test_config_var_names_are_uppercased_unless_a_condarc_says_not(tmp_path):
    # get_export_unset_vars uppercases every exported name when context.envvars_force_uppercase,
    # which defaults to True (conda/base/context.py). condarc files are read in SEARCH_PATH order
    # (conda/base/constants.py), later ones winning (PrimitiveLoadedParameter.merge), and
    # CONDA_ENVVARS_FORCE_UPPERCASE wins over them all (Configuration._set_env_vars).
    root = fake_conda_root(tmp_path / "miniconda")
    prefix = make_conda_prefix(tmp_path / "c", env_vars={"lower_var": "x", "Mixed": "y"})
    environ = worker_env(tmp_path)
    cache = cache_for(tmp_path, environ, root)
    spec = EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix))
    v = cache.prepare(spec, environ).variables
    assert v["LOWER_VAR"] == "x" and v["MIXED"] == "y" and "lower_var" not in v

    (root / ".condarc").write_text("envvars_force_uppercase: false\n")  # $CONDA_ROOT/.condarc
    v = cache.prepare(spec, environ).variables  # a new condarc invalidates the cached activation
    assert v["lower_var"] == "x" and "LOWER_VAR" not in v

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".condarc").write_text("envvars_force_uppercase: true\n")  # ~/.condarc comes later
    assert cache.prepare(spec, environ).variables["LOWER_VAR"] == "x"

    overridden = {**environ, "CONDA_ENVVARS_FORCE_UPPERCASE": "no"}  # boolify("no") is False
    v = cache_for(tmp_path, overridden, root).prepare(spec, overridden).variables
    assert v["lower_var"] == "x" and "LOWER_VAR" not in v


def test_condarc_places_follow_conda_search_path(tmp_path):
    # SEARCH_PATH (conda/base/constants.py, POSIX), expanded by Configuration._expand_search_path
    # (conda/common/configuration.py): a file counts if named .condarc/condarc or *.yml/*.yaml;
    # a directory gives its *.yml/*.yaml files by name. $CONDA_PREFIX is the active env, else
    # the root (Context.default_prefix); an unset variable leaves no usable place.
    root, home, xdg, active = (tmp_path / n for n in ("root", "home", "xdg", "active"))
    environ = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg), "CONDA_PREFIX": str(active), "CONDARC": str(tmp_path / "my.yaml")}
    places = search_path(root, environ)
    assert places[:6] == [Path(p) for p in ("/etc/conda/.condarc", "/etc/conda/condarc", "/etc/conda/condarc.d",
                                             "/var/lib/conda/.condarc", "/var/lib/conda/condarc", "/var/lib/conda/condarc.d")]
    assert places[6:] == [
        root / ".condarc", root / "condarc", root / "condarc.d",
        xdg / "conda" / ".condarc", xdg / "conda" / "condarc", xdg / "conda" / "condarc.d",
        home / ".config" / "conda" / ".condarc", home / ".config" / "conda" / "condarc", home / ".config" / "conda" / "condarc.d",
        home / ".conda" / ".condarc", home / ".conda" / "condarc", home / ".conda" / "condarc.d",
        home / ".condarc",
        active / ".condarc", active / "condarc", active / "condarc.d",
        tmp_path / "my.yaml",
    ]
    bare = search_path(root, {"HOME": str(home)})  # no XDG_CONFIG_HOME, no env active, no CONDARC
    assert bare[6:9] == [root / ".condarc", root / "condarc", root / "condarc.d"] and bare[-1] == home / ".condarc"
    assert len(bare) == 6 + 3 + 3 + 3 + 1
    (root / "condarc.d").mkdir(parents=True)
    for name in ("b.yaml", "a.yml", "notes.txt"):
        (root / "condarc.d" / name).write_text("changeps1: true\n")
    home.mkdir()
    (home / ".condarc").write_text("changeps1: true\n")
    (tmp_path / "my.yaml").write_text("changeps1: true\n")
    found = [root / "condarc.d" / "a.yml", root / "condarc.d" / "b.yaml", home / ".condarc", tmp_path / "my.yaml"]
    assert condarc_files(places) == found
    (tmp_path / "myrc").write_text("changeps1: true\n")  # $CONDARC must be named like a condarc too
    assert condarc_files(search_path(root, {**environ, "CONDARC": str(tmp_path / "myrc")})) == found[:3]


def test_activating_the_active_env_is_a_reactivate(tmp_path):
    # _build_activate_stack: CONDA_PREFIX == prefix and CONDA_SHLVL > 0 -> build_reactivate:
    # CONDA_SHLVL stays, no CONDA_PREFIX_<n>, PATH via _replace_prefix_in_path(prefix, prefix),
    # env vars not exported again; _yield_commands sources the env's deactivate.d scripts, then
    # its activate.d scripts.
    log = tmp_path / "scripts.log"
    prefix = make_conda_prefix(
        tmp_path / "envs" / "x",
        env_vars={"K": "v"},
        scripts={"a.sh": f'echo activate >> "{log}"\n'},
        deactivate_scripts={"d.sh": f'echo deactivate >> "{log}"\n'},
    )
    path = f"/usr/local/bin:{prefix}/bin:/usr/bin"
    v = activate(tmp_path, prefix, PATH=path, CONDA_SHLVL="1", CONDA_PREFIX=str(prefix), CONDA_DEFAULT_ENV="x").variables
    assert v["CONDA_SHLVL"] == "1" and "CONDA_PREFIX_1" not in v and v["CONDA_PREFIX"] == str(prefix)
    assert v["PATH"] == path and v["CONDA_PROMPT_MODIFIER"] == "(x) " and "K" not in v
    assert log.read_text().split() == ["deactivate", "activate"]


def test_stacked_activation_runs_the_old_envs_deactivate_scripts_first(tmp_path):
    # _build_activate_stack without --stack, CONDA_SHLVL 1 -> 2: PATH via _replace_prefix_in_path
    # (the new bin takes the old bin's place), CONDA_PREFIX_1 = the old env; _yield_commands
    # sources the old env's deactivate.d scripts (_get_deactivate_scripts: reverse name order)
    # before exporting anything, then the new env's activate.d scripts.
    log = tmp_path / "scripts.log"
    old = make_conda_prefix(
        tmp_path / "envs" / "old",
        env_vars={},
        deactivate_scripts={
            "10-a.sh": f'echo "deactivate-a $CONDA_PREFIX" >> "{log}"\nunset OLD_ONLY\n',
            "20-b.sh": f'echo deactivate-b >> "{log}"\n',
        },
    )
    new = make_conda_prefix(
        tmp_path / "envs" / "new", env_vars={"N": "1"}, scripts={"a.sh": f'echo "activate $CONDA_PREFIX" >> "{log}"\n'}
    )
    base = {"PATH": f"/usr/local/bin:{old}/bin:/usr/bin", "CONDA_SHLVL": "1", "CONDA_PREFIX": str(old),
            "CONDA_DEFAULT_ENV": "old", "CONDA_PROMPT_MODIFIER": "(old) ", "OLD_ONLY": "1"}
    v = activate(tmp_path, new, **base).variables
    assert log.read_text().splitlines() == ["deactivate-b", f"deactivate-a {old}", f"activate {new}"]
    assert "OLD_ONLY" not in v
    assert v["CONDA_SHLVL"] == "2" and v["CONDA_PREFIX_1"] == str(old) and v["CONDA_PREFIX"] == str(new)
    assert v["PATH"] == f"/usr/local/bin:{new}/bin:/usr/bin"
    assert v["CONDA_DEFAULT_ENV"] == "new" and v["CONDA_PROMPT_MODIFIER"] == "(new) " and v["N"] == "1"


def test_root_variables_when_the_root_has_conda(tmp_path):
    # get_export_unset_vars adds Context.conda_exe_vars_dict (conda/base/context.py): CONDA_EXE and
    # _CONDA_EXE = <root>/bin/conda, CONDA_PYTHON_EXE = its interpreter, _CONDA_ROOT = <root>,
    # _CE_M/_CE_CONDA unset, which PosixActivator.unset_var_tmpl writes as `export _CE_M=''`.
    # _add_prefix_to_path at CONDA_SHLVL 0 puts <root>/condabin after the env's bin unless an
    # entry already ends with "condabin".
    root = fake_conda_root(tmp_path / "miniconda")
    prefix = make_conda_prefix(root / "envs" / "x", env_vars={})
    v = activate(tmp_path, prefix, root).variables
    assert v["PATH"] == f"{prefix}/bin:{root}/condabin:{BASE_PATH}"
    assert v["CONDA_EXE"] == v["_CONDA_EXE"] == f"{root}/bin/conda"
    assert v["CONDA_PYTHON_EXE"] == f"{root}/bin/python" and v["_CONDA_ROOT"] == str(root)
    assert v["_CE_M"] == "" and v["_CE_CONDA"] == ""
    v = activate(tmp_path, prefix, root, PATH="/usr/bin:/opt/other/condabin").variables
    assert v["PATH"] == f"{prefix}/bin:/usr/bin:/opt/other/condabin"

    (root / "bin" / "conda").unlink()  # no conda there: nothing points at it
    v = activate(tmp_path, prefix, root).variables
    assert v["PATH"] == f"{prefix}/bin:{BASE_PATH}"
    assert not {"CONDA_EXE", "_CONDA_EXE", "CONDA_PYTHON_EXE", "_CONDA_ROOT", "_CE_M", "_CE_CONDA"} & set(v)


def test_default_env_is_the_name_for_a_prefix_in_a_directory_named_envs(tmp_path):
    # _default_env: basename(prefix) if basename(dirname(prefix)) == "envs" else prefix; the
    # configured envs dirs play no part (conda's tests/test_activate.py test_default_env).
    # _prompt_modifier fills env_prompt, "({default_env}) " by default, with it.
    in_envs = make_conda_prefix(tmp_path / "project" / "envs" / "foo", env_vars={})
    v = activate(tmp_path, in_envs).variables
    assert v["CONDA_DEFAULT_ENV"] == "foo" and v["CONDA_PROMPT_MODIFIER"] == "(foo) "
    configured = make_conda_prefix(tmp_path / "first-envs" / "ml", env_vars={})
    v = activate(tmp_path, configured, CONDA_ENVS_PATH=str(tmp_path / "first-envs")).variables
    assert v["CONDA_DEFAULT_ENV"] == str(configured) and v["CONDA_PROMPT_MODIFIER"] == f"({configured}) "


def test_env_prompt_and_changeps1_from_condarc(tmp_path):
    # _prompt_modifier: context.env_prompt.format(default_env=, stacked_env=, prefix=, name=) when
    # context.changeps1, else "" (conda/base/context.py: env_prompt, changeps1). stacked_env is
    # the prompt stack, newest first; without --stack the active env's entry is replaced.
    root = tmp_path / "miniconda"
    prefix = make_conda_prefix(root / "envs" / "foo", env_vars={})
    (tmp_path / "home" / ".config" / "conda").mkdir(parents=True)
    rc = tmp_path / "home" / ".config" / "conda" / "condarc"  # ~/.config/conda/condarc
    rc.write_text("env_prompt: '[{name}|{default_env}|{stacked_env}] '\n")
    assert activate(tmp_path, prefix, root).variables["CONDA_PROMPT_MODIFIER"] == "[foo|foo|foo] "
    rc.write_text("changeps1: false\n")
    assert activate(tmp_path, prefix, root).variables["CONDA_PROMPT_MODIFIER"] == ""


def test_conda_saves_the_variables_an_env_overwrites(tmp_path):
    # _build_activate_stack: an env var the shell already has is saved in
    # __CONDA_SHLVL_<old shlvl>_<name>, for build_deactivate to restore.
    prefix = make_conda_prefix(tmp_path / "c", env_vars={"MODE": "env"})
    v = activate(tmp_path, prefix, MODE="machine").variables
    assert v["MODE"] == "env" and v["__CONDA_SHLVL_0_MODE"] == "machine"


def test_activate_variables_is_pure():
    # The pure core, without files: the active base env's bin replaced in place (_replace_prefix_in_path).
    base = {"PATH": "/opt/conda/bin:/usr/bin", "CONDA_PREFIX": "/opt/conda", "CONDA_SHLVL": "1"}
    setup = CondaSetup(root=Path("/opt/conda"), has_conda=False, config=CondaConfig())
    delta = activate_variables(Path("/opt/conda/envs/x"), base, setup, {"k": "v"})
    assert delta["PATH"] == "/opt/conda/envs/x/bin:/usr/bin" and delta["K"] == "v"
    assert delta["CONDA_SHLVL"] == "2" and delta["CONDA_PREFIX_1"] == "/opt/conda"
    assert delta["CONDA_PROMPT_MODIFIER"] == "(x) "


def test_a_script_whose_last_command_fails_does_not_fail_activation(tmp_path):
    # PosixActivator.run_script_tmpl is `. "%s"`, one line per script in the eval'd text
    # (_yield_commands), so a script's exit status is ignored and the next line still runs.
    # Common in packages: `[ -n "$X" ] && export Y=1` returns 1 when X is unset.
    log = tmp_path / "scripts.log"
    old = make_conda_prefix(tmp_path / "envs" / "old", env_vars={},
                            deactivate_scripts={"d.sh": f'echo deactivate >> "{log}"\n[ -n "$NOPE" ] && unset KEEP\n'})
    prefix = make_conda_prefix(
        tmp_path / "envs" / "x",
        env_vars={},
        scripts={"10-a.sh": '[ -n "$NOPE" ] && export NEVER=1\n', "20-b.sh": "export AFTER=1\nfalse\n"},
    )
    v = activate(tmp_path, prefix, CONDA_SHLVL="1", CONDA_PREFIX=str(old), KEEP="1").variables
    assert v["AFTER"] == "1" and "NEVER" not in v and v["KEEP"] == "1" and v["CONDA_PREFIX"] == str(prefix)
    assert log.read_text().split() == ["deactivate"]


def test_a_script_that_exits_the_shell_fails_activation(tmp_path):
    # `exit` in a sourced script ends the shell conda activates in (an interactive one closes):
    # activation did not finish, whatever the status.
    prefix = make_conda_prefix(tmp_path / "envs" / "x", env_vars={}, scripts={"a.sh": "echo leaving >&2\nexit 0\n"})
    with pytest.raises(EnvActivationError, match=r"a\.sh\) exited the shell \(exit status 0\).*: leaving"):
        activate(tmp_path, prefix)


def test_condarc_and_xdg_config_home_are_read_from_the_workers_environment(tmp_path):
    # SEARCH_PATH (conda/base/constants.py) names $XDG_CONFIG_HOME/conda/condarc and $CONDARC;
    # neither variable reaches a flow, but conda (run by the worker) would see both.
    prefix = make_conda_prefix(tmp_path / "envs" / "foo", env_vars={})
    xdg = tmp_path / "xdg"
    (xdg / "conda").mkdir(parents=True)
    (xdg / "conda" / "condarc").write_text("env_prompt: 'xdg:{name} '\n")
    environ = worker_env(tmp_path, XDG_CONFIG_HOME=str(xdg))
    cache = cache_for(tmp_path, environ)
    spec = EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix))
    base = flow_base(environ, cache.settings)  # what the worker activates from
    assert "XDG_CONFIG_HOME" not in base
    assert cache.prepare(spec, base).variables["CONDA_PROMPT_MODIFIER"] == "xdg:foo "
    rc = tmp_path / "mine.yml"
    rc.write_text("env_prompt: 'rc:{name} '\n")  # $CONDARC comes last, so it wins
    environ["CONDARC"] = str(rc)
    cache = cache_for(tmp_path, environ)
    assert cache.prepare(spec, flow_base(environ, cache.settings)).variables["CONDA_PROMPT_MODIFIER"] == "rc:foo "


def test_conda_on_path_gets_the_workers_config_variables_and_its_failure_fails(tmp_path):
    # With conda on PATH its own answer is used: it must see the config the worker has, and a
    # conda that fails (an env it does not know) must not leave an activation that did nothing.
    bindir = tmp_path / "standin" / "bin"
    bindir.mkdir(parents=True)
    conda = bindir / "conda"
    conda.write_text('#!/bin/sh\nprintf "export SEEN=\'%s|%s\'\\n" "$CONDARC" "$XDG_CONFIG_HOME"\n')
    conda.chmod(0o755)
    prefix = make_conda_prefix(tmp_path / "envs" / "x", env_vars={})
    environ = worker_env(tmp_path, PATH=f"{bindir}:{BASE_PATH}", CONDARC=str(tmp_path / "rc.yml"),
                         XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    cache = cache_for(tmp_path, environ)
    spec = EnvSpec(kind=EnvKind.CONDA_PREFIX, value=str(prefix))
    v = cache.prepare(spec, flow_base(environ, cache.settings)).variables
    assert v["SEEN"] == f"{tmp_path / 'rc.yml'}|{tmp_path / 'xdg'}" and "CONDARC" not in v
    conda.write_text("#!/bin/sh\necho 'EnvironmentLocationNotFound: Not a conda environment' >&2\nexit 1\n")
    with pytest.raises(EnvActivationError, match=r"exit status 1.*EnvironmentLocationNotFound"):
        cache_for(tmp_path, environ).prepare(spec, flow_base(environ, cache.settings))


def test_an_active_prefix_given_otherwise_is_another_env_as_in_conda(tmp_path):
    # _build_activate_stack reactivates only when os.getenv("CONDA_PREFIX") == prefix, as
    # strings: a trailing slash or a symlink to the env makes it a stacked activation, and
    # _replace_prefix_in_path (paths_equal: abspath, no link resolution) swaps that entry's bin
    # for the env's, normalized (PosixActivator.path_conversion is os.path.normpath).
    prefix = make_conda_prefix(tmp_path / "envs" / "x", env_vars={"K": "v"})
    link = tmp_path / "link"
    link.symlink_to(prefix)
    for active in (f"{prefix}/", str(link)):
        path = f"/usr/local/bin:{active}/bin:/usr/bin"
        v = activate(tmp_path, prefix, PATH=path, CONDA_SHLVL="1", CONDA_PREFIX=active).variables
        assert (v["CONDA_SHLVL"], v["CONDA_PREFIX_1"], v["CONDA_PREFIX"]) == ("2", active, str(prefix))
        assert v["PATH"] == f"/usr/local/bin:{prefix}/bin:/usr/bin" and v["K"] == "v"
    path = f"/usr/bin/:{prefix}/bin:/bin"  # the bin not last: conda fails on that (IndexError)
    v = activate(tmp_path, prefix, PATH=path, CONDA_SHLVL="1", CONDA_PREFIX=str(prefix)).variables
    assert v["CONDA_SHLVL"] == "1" and v["PATH"] == f"/usr/bin:{prefix}/bin:/bin"  # a reactivate; entries normalized


def test_a_config_var_named_ce_m_keeps_its_value(tmp_path):
    # get_export_unset_vars: _CE_M of conda_exe_vars_dict (None) goes to unset_vars, the config
    # var to export_vars; _yield_commands emits the unsets first, so the config var's value stays.
    root = fake_conda_root(tmp_path / "miniconda")
    prefix = make_conda_prefix(root / "envs" / "x", env_vars={"_CE_M": "-m", "CONDA_EXE": "/mine"})
    v = activate(tmp_path, prefix, root).variables
    assert v["_CE_M"] == "-m" and v["_CE_CONDA"] == ""
    assert v["CONDA_EXE"] == f"{root}/bin/conda"  # a set meta variable is exported after, and wins


def test_names_sh_cannot_hold_survive_activate_scripts(tmp_path):
    # conda's eval breaks on `export MY-VAR=...`; envflow sets such a config var (a documented
    # difference), and the sh that sources activate.d scripts, which drops such names from its
    # environment, must not unset it.
    prefix = make_conda_prefix(tmp_path / "envs" / "x", env_vars={"MY-VAR": "1"}, scripts={"a.sh": "export S=1\n"})
    v = activate(tmp_path, prefix).variables
    assert v["MY-VAR"] == "1" and v["S"] == "1"
