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
