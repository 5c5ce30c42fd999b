"""Requirements a built environment installs: PEP 508 strings and requirements files, checked when a
deployment is created and brought to one normal form, which is also what the worker installs.

Packages come from the workers' own indexes (``ENVFLOW_PIP_*``), so what a deployment may say is
narrow: requirement specifiers (name, extras, versions, markers) and, in a file, ``--hash`` options
and ``--require-hashes``. Direct URLs, local paths, includes (``-r``, ``-c``), editables and index
options are refused with the line that holds them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement

MAX_FILE_BYTES = 1024 * 1024  # a requirements file larger than this is refused
_HASH = re.compile(r"^(sha256|sha384|sha512):[0-9a-fA-F]+$")
_INDEX_HINT = "packages come from the workers' indexes (ENVFLOW_PIP_INDEX_URL, ENVFLOW_PIP_FIND_LINKS)"


def normalize(text: str) -> str:
    """One requirement in its normal form (``pandas==2.2.*``, ``httpx[http2]>=0.27``).

    :raises ValueError: not PEP 508, an option, or a direct URL reference.
    """
    text = text.strip()
    if not text:
        raise ValueError("an empty requirement")
    if text.startswith("-"):
        raise ValueError(f"{text!r}: options are not allowed, only requirements (PEP 508); {_INDEX_HINT}")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as e:
        reason = str(e).splitlines()[0] if str(e) else "invalid"
        raise ValueError(f"{text!r} is not a valid requirement (PEP 508): {reason}") from None
    if requirement.url:
        raise ValueError(f"{text!r}: direct URL references are not allowed; {_INDEX_HINT}")
    return str(requirement)


def normalize_all(items: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Every requirement normalized, duplicates dropped, sorted (order does not change what is installed).

    :raises ValueError: naming the first bad item by its position.
    """
    out = set()
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"item {i + 1}: expected a string, got {type(item).__name__}")
        try:
            out.add(normalize(item))
        except ValueError as e:
            raise ValueError(f"item {i + 1}: {e}") from None
    return tuple(sorted(out))


@dataclass
class RequirementsFile:
    """A requirements file, parsed: each requirement with its hashes, in file order."""

    lines: list[str] = field(default_factory=list)  # "name==1.0 --hash=sha256:..."
    require_hashes: bool = False  # hash-checking mode: a --hash anywhere, or --require-hashes


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per logical line: continuations joined, comments removed."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append((start, line))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _hashes(options: list[str], number: int) -> list[str]:
    hashes: list[str] = []
    i = 0
    while i < len(options):
        option = options[i]
        if option == "--hash" and i + 1 < len(options):
            value, i = options[i + 1], i + 2
        elif option.startswith("--hash="):
            value, i = option.removeprefix("--hash="), i + 1
        else:
            raise ValueError(f"line {number}: option {option!r} is not allowed (only --hash and --require-hashes)")
        if not _HASH.match(value):
            raise ValueError(f"line {number}: {value!r} is not a hash (sha256:<hex>)")
        hashes.append(f"--hash={value.lower()}")
    return hashes


def parse_file(text: str) -> RequirementsFile:
    """Parse a requirements file's text.

    :raises ValueError: ``line N: ...`` for the first line envflow cannot install.
    """
    parsed = RequirementsFile()
    for number, line in _logical_lines(text):
        if line == "--require-hashes":
            parsed.require_hashes = True
            continue
        options = re.search(r"\s--", line)
        head, tail = (line[: options.start()], line[options.start():]) if options else (line, "")
        if head.startswith("-"):
            option = head.split()[0].split("=")[0]
            raise ValueError(f"line {number}: option {option!r} is not allowed; {_INDEX_HINT}")
        try:
            requirement = normalize(head)
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
        hashes = _hashes(tail.split(), number)
        parsed.require_hashes |= bool(hashes)
        parsed.lines.append(" ".join([requirement, *hashes]))
    return parsed


def read_file(data: bytes) -> tuple[str, str]:
    """A requirements file's text and the sha256 of its bytes, once checked.

    :raises ValueError: too large, not UTF-8, or a line envflow cannot install.
    """
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text: {e}") from None
    if "\x00" in text:
        raise ValueError("contains a NUL byte")
    parse_file(text)
    return text, hashlib.sha256(data).hexdigest()
