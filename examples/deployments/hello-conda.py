"""A scheduled flow in each conda env baked into the image (envs/py38.yml, envs/py312.yml).

The scheduler of compose.yaml registers this file at start (ENVFLOW_DEPLOYMENTS); its runs
print to `docker compose logs worker`. Run one by hand: envflow deployment run hello-conda/py38 --follow
"""

from envflow import flow
from envflow.deployments import DeploymentSpec
from envflow.flow_runners import SubprocessFlowRunner
from envflow.schedules import Interval


@flow
def hello_conda():
    import os
    import sys

    import pandas as pd

    print(f"Hello! Running with {sys.executable}")
    env, label = os.environ.get("CONDA_DEFAULT_ENV"), os.environ.get("FLOW_ENV_LABEL")
    print(f"pandas {pd.__version__} in conda env {env}: {label}")
    return {"python": sys.version.split()[0], "pandas": pd.__version__}


for env in ("py38", "py312"):
    DeploymentSpec(
        name=env,
        flow=hello_conda,
        schedule=Interval(seconds=60),
        tags=["example"],
        flow_runner=SubprocessFlowRunner(condaenv=env, stream_output=True),
    )
