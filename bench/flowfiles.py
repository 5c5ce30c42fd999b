"""The flows the cases run, written out as files, and their by-hand twins for the floors.

Each flow file is an ordinary envflow flow file that also runs as a script
(``python flows.py ARGS``). The floors run it exactly that way, from a directory where
``envflow`` is the same stdlib-only ``flows.py`` the worker's bootstrap gives a flow
environment without envflow: so floor and envflow import the same code, and the
difference between them is what envflow adds.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import envflow.flows

SOURCES = {
    "hello": """
        from envflow import flow

        @flow
        def hello(name="world"):
            print(f"hello {name}")

        if __name__ == "__main__":
            hello()
    """,
    # 1,000,000 short lines, printed the ordinary way.
    "lines": """
        import sys
        from envflow import flow

        @flow
        def lines(n=1000000):
            for i in range(n):
                print(f"line {i}")

        if __name__ == "__main__":
            lines(int(sys.argv[1]))
    """,
    # CPU work for about ``ms`` milliseconds (the published sequential benchmark's light task).
    "busy": """
        import sys
        import time
        from envflow import flow

        @flow
        def busy(ms=10):
            end = time.process_time() + ms / 1000
            n = 0
            while time.process_time() < end:
                n += 1
            print(f"done {n}")

        if __name__ == "__main__":
            busy(float(sys.argv[1]) if len(sys.argv) > 1 else 10)
    """,
    # Lines at a steady rate, each carrying the time it was printed.
    "ticker": """
        import time
        from envflow import flow

        @flow
        def ticker(n=1000, rate=100.0):
            start = time.time()
            for i in range(n):
                delay = start + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                print(f"{i} {time.time():.6f}")
    """,
}


class FlowFiles:
    """Flow files under ``root/flows`` (deployed) and ``root/floor`` (run by hand)."""

    def __init__(self, root: Path) -> None:
        self.deployed = root / "flows"
        self.floor = root / "floor"
        self.deployed.mkdir(parents=True, exist_ok=True)
        stub = self.floor / "envflow"
        stub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(envflow.flows.__file__, stub / "flows.py")
        (stub / "__init__.py").write_text("from .flows import Flow, flow\n")
        for name, source in SOURCES.items():
            text = textwrap.dedent(source).lstrip()
            (self.deployed / f"{name}.py").write_text(text)
            (self.floor / f"{name}.py").write_text(text)

    def path(self, name: str) -> Path:
        return self.deployed / f"{name}.py"

    def floor_path(self, name: str) -> Path:
        return self.floor / f"{name}.py"
