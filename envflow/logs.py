"""Logging setup shared by the services (worker, scheduler)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """envflow's loggers to stderr as ``HH:MM:SS LEVEL message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("envflow")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
