"""Fixtures of the fault suite: a journal that flows write to, and the journaled flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support.flows import write_flow
from ..support.processes import JOURNALED


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "journal.jsonl"


@pytest.fixture
def work_flow(workdir: Path, journal: Path) -> Path:
    return write_flow(workdir, JOURNALED.format(journal=str(journal)), "work.py")
