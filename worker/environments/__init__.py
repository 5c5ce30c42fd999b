"""Flow environments: finding the env a deployment names, and what activating it sets.

One contract, :class:`Environment` (``base.py``), with a class per kind: the worker's own
interpreter, a venv/virtualenv directory, a conda env (by name or prefix), and a venv built from
requirements (``built.py``). Each knows
its interpreter, the files whose change invalidates a cached activation, and how to compute
its activation: the variables to set and unset, as ``conda activate`` or a venv's
``bin/activate`` would. Importing this package registers every kind.
"""

from .base import MIN_PYTHON, Environment, Locator, Progress, detect, directory_kinds, kind_for
from .conda import CondaEnvironment, conda_scripts
from .shell import Delta, apply
from .variables import PASSED, SCRUBBED, flow_base
from .venv import VenvEnvironment, read_pyvenv_cfg
from .worker_env import WorkerEnvironment

# isort: split
# Registered after conda's kinds: detect() asks kinds in registration order, and a conda prefix can
# hold a pyvenv.cfg too.
from .built import BuiltEnvironment, build_key, build_keys, can_build

__all__ = [
    "MIN_PYTHON", "PASSED", "BuiltEnvironment", "Locator", "Progress", "apply", "SCRUBBED", "CondaEnvironment",
    "Delta", "Environment", "VenvEnvironment", "build_key", "build_keys", "can_build",
    "WorkerEnvironment", "conda_scripts", "detect", "directory_kinds", "flow_base", "kind_for", "read_pyvenv_cfg",
]
