"""The reference page's example deployment, with envflow's imports.

`scripts/demo` makes the venv ./.demo/venv and runs this flow in it; relative env paths
resolve against the worker's working directory (the repository root there).
"""

import sys
import time

from envflow import flow
from envflow.deployments import DeploymentSpec
from envflow.flow_runners import SubprocessFlowRunner


@flow
def my_flow(name: str = "world"):
    print(f"Hello {name}! Running with {sys.executable}")
    for step in range(1, 4):
        time.sleep(0.5)
        print(f"step {step}/3", flush=True)
    return {"greeted": name}


DeploymentSpec(
    name="example",
    flow=my_flow,
    flow_runner=SubprocessFlowRunner(virtualenv="./.demo/venv", stream_output=True),
)
