"""Which of the worker's own variables a flow starts from: an allowlist, never the whole environment."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from envflow.settings import Settings

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
def flow_base(environ: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The part of the worker's environment a flow starts from (before its env's activation)."""
    extra = [g.strip() for g in settings.pass_env.split(",") if g.strip()]
    base = {}
    for name, value in environ.items():
        if name in PASSED or (name.startswith(PASSED_PREFIXES) and not settings.is_secret_name(name)):
            base[name] = value
        elif extra and any(fnmatch.fnmatchcase(name, glob) for glob in extra):
            base[name] = value
    return base
