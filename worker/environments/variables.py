"""Which of the worker's own variables a flow starts from: an allowlist, never the whole environment."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping

from envflow.settings import Settings

log = logging.getLogger("envflow.worker")

# Variables of the worker's own process that never reach a flow, even where passed on purpose.
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")
# The worker's variables a flow gets (an allowlist: the worker's Redis URL, REDIS_*/REDISCLI_AUTH and
# every other setting stay out). ENVFLOW_PASS_ENV adds names; a deployment's env={...} adds values.
PASSED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TEMP", "TMP",
    "HOSTNAME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
})
PASSED_PREFIXES = ("LC_", "CONDA_", "_CE_", "_CONDA_", "MAMBA_")  # locale and conda's own bookkeeping
# Never passed, whatever ENVFLOW_PASS_ENV says: envflow's settings (the Redis URL among them) and
# Redis clients' credentials (REDISCLI_AUTH, REDIS_PASSWORD, ...).
NEVER_PASSED_PREFIXES = ("ENVFLOW_", "REDIS")
_warned: set[str] = set()  # never-passed names ENVFLOW_PASS_ENV named outright, already logged


def never_passed(name: str) -> bool:
    """Whether the worker's variable ``name`` is kept from flows even where ENVFLOW_PASS_ENV names it."""
    return name.upper().startswith(NEVER_PASSED_PREFIXES)  # any case: settings are read in any case


def flow_base(environ: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The part of the worker's environment a flow starts from (before its env's activation)."""
    extra = [g.strip() for g in settings.pass_env.split(",") if g.strip()]
    for name in extra:
        if never_passed(name) and name not in _warned:  # a glob may match them; a plain name is a mistake
            _warned.add(name)
            log.warning("ENVFLOW_PASS_ENV names %s, which never reaches a flow (envflow's settings and Redis "
                        "credentials stay with the worker); ignored", name)
    base = {}
    for name, value in environ.items():
        if never_passed(name):
            continue
        if name in PASSED or (name.startswith(PASSED_PREFIXES) and not settings.is_secret_name(name)):
            base[name] = value
        elif extra and any(fnmatch.fnmatchcase(name, glob) for glob in extra):
            base[name] = value
    return base
