"""A flow that needs its project's venv: tabulate is installed there, in no conda env."""

from envflow import flow


@flow
def hello_venv(who: str = "world"):
    import os
    import sys

    from tabulate import tabulate

    print(f"Hello {who}! Running with {sys.executable}")
    print(tabulate([["VIRTUAL_ENV", os.environ.get("VIRTUAL_ENV")], ["python", sys.version.split()[0]]]))
    return {"prefix": sys.prefix}
