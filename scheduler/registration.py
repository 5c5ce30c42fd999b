"""Registering the deployment files ``ENVFLOW_DEPLOYMENTS`` names when the scheduler starts."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

from envflow.client import Client
from envflow.deployment_files import load_file
from envflow.errors import EnvflowError, QueueError

log = logging.getLogger("envflow.scheduler")

DEPLOYMENT_SUFFIXES = (".py", ".yaml", ".yml")


def register_files(client: Client, pattern: str) -> list[str]:
    """Register every valid deployment in the files matching ``pattern`` (``**`` allowed).

    Invalid deployments and unloadable files are logged, one message each, and skipped.

    :returns: the names of the deployments registered.
    :raises QueueError: Redis could not be reached (the caller retries).
    """
    matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
    # A directory's glob ("deployments/*") may match READMEs too: only deployment files are loaded.
    paths = [p for p in matches if Path(p).is_file() and Path(p).suffix in DEPLOYMENT_SUFFIXES]
    if not paths:
        log.warning("ENVFLOW_DEPLOYMENTS=%s matches no deployment file (*.py, *.yaml, *.yml)", pattern)
    registered = []
    for path in paths:
        try:
            loaded = load_file(path)
        except EnvflowError as e:
            log.error("deployment file not loaded: %s", e)
            continue
        for message in loaded.errors:
            log.error("invalid deployment: %s", message)
        for deployment in loaded.deployments:
            try:
                record = client.create_deployment(deployment)
            except QueueError:
                raise
            except EnvflowError as e:
                log.error("deployment %s (%s) not registered: %s", deployment.name, deployment.defined_at, e)
                continue
            registered.append(record.name)
            schedules = f", {len(record.schedules)} schedule(s)" if record.schedules else ""
            log.info("registered deployment %s from %s%s", record.name, deployment.defined_at, schedules)
    return registered
