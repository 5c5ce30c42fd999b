"""Helpers for the fault suite: flows that report their processes, and process-tree checks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

# A flow that records each attempt's start and end (with its pid and the pid of a child it
# starts) in a shared journal, so tests can prove no run ran twice at once and nothing survived.
JOURNALED = """
    import fcntl, json, os, subprocess, sys, time
    from envflow import flow

    JOURNAL = {journal!r}

    def note(event, **extra):
        with open(JOURNAL, "a") as f:
            f.write(json.dumps({{"event": event, "run": os.environ.get("RUN_TAG", ""), "pid": os.getpid(),
                                "t": time.time(), **extra}}) + "\\n")

    @flow
    def work(tag: str = "", seconds: float = 0.0, lines: int = 0, child: bool = False):
        os.environ["RUN_TAG"] = tag
        # Held until this process dies: a second attempt of the same run alive at once cannot take it.
        lock = open(JOURNAL + "." + tag + ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            overlap = False
        except BlockingIOError:
            overlap = True
        kid = subprocess.Popen(["sleep", "300"]) if child else None
        note("start", child=kid.pid if kid else None, overlap=overlap)
        print(f"started {{tag}}", flush=True)
        for i in range(lines):
            print(f"{{tag}} line {{i}}", flush=True)
        time.sleep(seconds)
        note("end")
        print(f"done {{tag}}")
        return tag
"""


def journal_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def survivors(events: list[dict]) -> list[int]:
    """Pids (flows and the children they started) from a journal that are still alive."""
    pids = set()
    for e in events:
        pids.add(e["pid"])
        if e.get("child"):
            pids.add(e["child"])
    return sorted(p for p in pids if alive(p))


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def no_overlap(events: list[dict]) -> None:
    """Assert no attempt found another attempt of its run still alive (see the lock in JOURNALED)."""
    overlapping = [e for e in events if e["event"] == "start" and e.get("overlap")]
    assert not overlapping, f"attempts started while an earlier attempt of the same run was alive: {overlapping}"


# Runs a command as a flow really runs: no capabilities at all. As root, CAP_SYS_PTRACE and
# CAP_DAC_OVERRIDE would open every /proc entry and every 0600 file whatever envflow does.
CAPLESS = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--")
