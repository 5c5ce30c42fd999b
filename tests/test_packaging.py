"""What a non-editable install (the image's) holds: every package of the tree, and the Lua scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_tree_is_installed():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes Python 3.11's tomllib")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {package: ROOT / folder for package, folder in tool["package-dir"].items()}
    found = set()
    for package, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            inner = init.parent.relative_to(folder).parts
            name = ".".join([package, *inner])
            if not any(name.startswith(other + ".") for other in roots if other != package and other.startswith(package)):
                found.add(name)
    lua = {".".join(["envflow", *p.parent.relative_to(ROOT / "envflow").parts]) for p in (ROOT / "envflow").rglob("*.lua")}
    assert found | lua <= set(tool["packages"]), sorted(found | lua - set(tool["packages"]))
    assert all(name in tool["package-data"] for name in lua)
