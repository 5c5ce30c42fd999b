"""The developer scripts: what `scripts/test` ends with, and the bench's one-line summary it prints."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_scripts_test_ends_with_pytests_summary_and_prints_the_bench_in_one_line():
    commands = [line for line in (ROOT / "scripts" / "test").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1].startswith(".venv/bin/python -m pytest")  # its summary line is the last thing printed
    bench = next(line for line in commands if "-m bench" in line)
    assert "--quick" in bench and "--summary" in bench


def test_the_bench_summary_flag_exists_and_the_docs_agree_on_its_duration():
    from bench.__main__ import parse

    assert parse(["--quick", "--summary"]).summary
    for doc in (ROOT / "README.md", ROOT / "bench" / "README.md"):
        assert "under a minute" not in doc.read_text(), doc


def test_ensure_venv_skips_pip_when_the_install_is_current(tmp_path):
    """A rerun of scripts/demo or scripts/test does not reinstall: the stamp says what is installed."""
    import subprocess

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "envflow").write_text("#!/bin/sh\n")
    (tmp_path / ".venv" / "bin" / "envflow").chmod(0o755)
    checksum = subprocess.run("cksum < pyproject.toml", shell=True, cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout.strip()
    (tmp_path / ".venv" / ".envflow-installed").write_text(f"{tmp_path} {checksum}\ntest,ui\n")

    def ensure(extras: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f". {ROOT}/scripts/lib.sh && ensure_venv {extras}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    for extras in ("", "test", "ui,test"):  # installed already: no pip (there is no .venv/bin/python to run it)
        done = ensure(extras)
        assert done.returncode == 0 and "installing" not in done.stderr, (extras, done.stderr)
    assert "installing envflow[test,ui,docs] into .venv" in ensure("docs").stderr  # a new extra: pip, keeping the others
