"""Native conda activation against conda's own behaviour (no conda here: expected values encode it).

Every expected value below was read off conda 26.7's source (``conda/activate.py`` unless a
comment names another file) and is cited where it is asserted. The envs are real: conda-layout
prefixes around real interpreters (``make_conda_prefix``), scripts sourced by a real ``sh``.
"""

from __future__ import annotations

from pathlib import Path

from worker.conda_config import condarc_files, search_path


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
