"""The flow files a worker runs: stored sources cached on disk (checked on every use), or referenced paths."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from redis import Redis

from envflow.models import DeploymentRecord
from envflow.store import keys

from .identity import private_dir

CACHE_MAX_AGE = 14 * 24 * 3600  # seconds an unused cached flow source is kept
DIGEST = re.compile(r"[0-9a-f]{64}")


class FlowSources:
    """Flow sources of one worker, cached in ``<state dir>/sources/<sha256>/<file name>``."""

    def __init__(self, redis: Redis, state_dir: Path, worker_name: str) -> None:
        self.redis = redis
        self.dir = state_dir / "sources"
        self.worker_name = worker_name

    def get(self, spec: DeploymentRecord) -> tuple[Path, str | None]:
        """The flow file on this worker and the source to run: the stored source (checked against its
        digest, and its cached copy with it, on every use: flows can write to the cache), or the
        referenced path (read by the flow process itself).

        :raises FileNotFoundError: the file or the stored source is missing, or does not match its digest.
        """
        if spec.flow_storage == "path":
            path = Path(spec.flow_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"flow file {path} does not exist on worker {self.worker_name}; deployments with "
                    "flow_storage='path' need the file mounted at the same path on every worker"
                )
            return path, None
        digest = spec.source_digest or ""
        if not DIGEST.fullmatch(digest):
            raise FileNotFoundError(f"the deployment's source digest {digest[:80]!r} is not a sha256 hex digest")
        folder = self.dir / digest
        target = folder / Path(spec.flow_path).name
        try:
            data = target.read_bytes()
            intact = hashlib.sha256(data).hexdigest() == digest and os.listdir(folder) == [target.name]
        except OSError:
            intact = False
        if intact:
            os.utime(target)  # last use, for pruning
        else:
            data = self._fetch(spec, digest)
            shutil.rmtree(folder, ignore_errors=True)  # whatever else a flow left beside it goes too
            private_dir(self.dir)
            private_dir(folder)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return target, data.decode("utf-8")

    def search_dir(self, spec: DeploymentRecord) -> str | None:
        """What a run puts first on ``sys.path``: the flow file's directory, as for ``python flow.py``.
        A stored source's cached copy sits in a directory flows could plant modules in: its run gets
        the directory the file was registered from, where this worker has it, else nothing."""
        folder = os.path.dirname(os.path.abspath(spec.flow_path))
        if spec.flow_storage == "path":
            return folder
        real = os.path.realpath(folder)
        state = os.path.realpath(self.dir.parent)
        if not os.path.isdir(real) or real == state or real.startswith(state + os.sep):
            return None
        return folder

    def _fetch(self, spec: DeploymentRecord, digest: str) -> bytes:
        source = self.redis.get(keys.source(digest))
        if source is None:
            raise FileNotFoundError(
                f"the source of {spec.flow_path} (sha256 {digest[:12]}) is missing from Redis; "
                "register the deployment again with `envflow deployment create`"
            )
        if hashlib.sha256(source).hexdigest() != digest:
            raise FileNotFoundError(f"the source of {spec.flow_path} in Redis does not match its digest {digest[:12]}")
        return source

    def prune(self, older_than: float = CACHE_MAX_AGE) -> int:
        """Delete cached flow sources untouched for ``older_than`` seconds (they come back from
        Redis on demand); returns the count."""
        cutoff = time.time() - older_than
        removed = 0
        if not self.dir.is_dir():
            return 0
        for path in sorted(self.dir.rglob("*"), reverse=True):  # files before their directories
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
            except OSError:
                pass
        return removed
