"""Small real wheels written on the spot, for installs that must not reach any index.

A wheel is a zip file with a ``.dist-info`` folder (``METADATA``, ``WHEEL``, ``RECORD``); writing one
needs no build backend, so the tests and the benchmark make their wheelhouses offline, in
milliseconds, and install them with ``--no-index --find-links``.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(directory: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = (),
                body: str = "") -> Path:
    """A pure-Python wheel of ``name`` (module ``name`` with ``-`` as ``_``) in ``directory``.

    :param requires: its ``Requires-Dist`` lines.
    :param body: the module's source; by default it defines ``VERSION``.
    """
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = "".join(
        [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", *(f"Requires-Dist: {r}\n" for r in requires)]
    )
    files = {
        f"{module}/__init__.py": body or f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: envflow-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(text.encode())},{len(text.encode())}\n" for path, text in files.items())
    files[f"{dist_info}/RECORD"] = record + f"{dist_info}/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name_in_zip, text in files.items():
            archive.writestr(zipfile.ZipInfo(name_in_zip, date_time=(2026, 1, 1, 0, 0, 0)), text)
    return path


def wheel_hash(path: Path) -> str:
    """``sha256:<hex>`` of a wheel, as a hash-pinned requirements file gives it."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
