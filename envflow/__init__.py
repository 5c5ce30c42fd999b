"""envflow: run Python flows in the conda env or venv each one needs, on RQ workers, with live output.

``from envflow import flow`` stays cheap (stdlib only): flow files import it inside their
own environments. Everything else is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .flows import Flow, flow

if TYPE_CHECKING:
    from .client import Client
    from .deployments import Deployment, DeploymentSpec
    from .errors import (
        ConfigError,
        DeploymentFileError,
        DeploymentNotFound,
        EnvActivationError,
        EnvflowError,
        EnvflowWarning,
        EnvNotFound,
        FlowFailed,
        LimitNotFound,
        ParameterError,
        QueueError,
        RunNotFound,
        RunTimeout,
    )
    from .flow_run import FlowRun
    from .models import RunRecord, RunState
    from .output import OutputLine
    from .schedules import Cron, Interval
    from .settings import Settings

__version__ = "0.1.0"

# name -> module that defines it, imported on first use
_LAZY = {
    "Client": "client",
    "FlowRun": "flow_run",
    "OutputLine": "output",
    "RunRecord": "models",
    "RunState": "models",
    "Deployment": "deployments",
    "DeploymentSpec": "deployments",
    "Cron": "schedules",
    "Interval": "schedules",
    "Settings": "settings",
    "EnvflowError": "errors",
    "EnvflowWarning": "errors",
    "ConfigError": "errors",
    "DeploymentFileError": "errors",
    "DeploymentNotFound": "errors",
    "EnvActivationError": "errors",
    "EnvNotFound": "errors",
    "FlowFailed": "errors",
    "LimitNotFound": "errors",
    "ParameterError": "errors",
    "QueueError": "errors",
    "RunNotFound": "errors",
    "RunTimeout": "errors",
}

__all__ = [
    # flows
    "flow",
    "Flow",
    # client API
    "Client",
    "FlowRun",
    "OutputLine",
    "RunRecord",
    "RunState",
    # deployments and schedules
    "Deployment",
    "DeploymentSpec",
    "Cron",
    "Interval",
    "Settings",
    # errors
    "EnvflowError",
    "EnvflowWarning",
    "ConfigError",
    "DeploymentFileError",
    "DeploymentNotFound",
    "EnvActivationError",
    "EnvNotFound",
    "FlowFailed",
    "LimitNotFound",
    "ParameterError",
    "QueueError",
    "RunNotFound",
    "RunTimeout",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'envflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
