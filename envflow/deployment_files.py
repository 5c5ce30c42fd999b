"""Loading deployment files (Python or YAML) and turning deployments into stored records."""

from __future__ import annotations

import inspect
import runpy
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import flows as flows_module
from .deployments import Deployment, DeploymentFields, _Collector, _collectors, format_validation_error
from .errors import DeploymentFileError
from .flowfile import MAX_SOURCE_BYTES, flows_in_source, pick_flow, read_bounded, read_source
from .models import DeploymentRecord

YAML_SUFFIXES = (".yaml", ".yml")
# Values a YAML document may hold once its aliases are expanded: far above any real deployment
# file, far below what a "billion laughs" file of a few hundred bytes expands to.
MAX_YAML_VALUES = 100_000


@dataclass
class LoadedFile:
    """What a deployment file defines: valid deployments, and one message per invalid one."""

    path: Path
    deployments: list[Deployment] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_file(path: str | Path) -> LoadedFile:
    """Load every deployment a ``.py`` or ``.yaml`` file defines.

    :raises DeploymentFileError: the file is missing or cannot be executed/parsed at all.
    """
    p = Path(path).expanduser().resolve()
    try:
        read_bounded(p, MAX_SOURCE_BYTES, "deployment file")  # a regular file, not /dev/zero nor a huge one
    except FileNotFoundError:
        raise DeploymentFileError(f"deployment file {path} does not exist") from None
    if p.suffix in YAML_SUFFIXES:
        return _load_yaml(p)
    return _load_python(p)


def _load_python(path: Path) -> LoadedFile:
    collector = _Collector(path)
    _collectors.append(collector)
    sys.path.insert(0, str(path.parent))
    try:
        with flows_module.loading():
            runpy.run_path(str(path), run_name="__envflow_deployments__")
    except ImportError as e:
        raise DeploymentFileError(
            f"{path}: importing it failed: {e}. envflow runs deployment files in this environment; "
            "move imports the flow needs into the flow function, or describe the deployment in YAML"
        ) from None
    except SyntaxError as e:
        raise DeploymentFileError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit and the like too: they stop this file, not the command
        tb = traceback.extract_tb(e.__traceback__)
        here = next((f for f in reversed(tb) if Path(f.filename) == path), None)
        where = f"{path}:{here.lineno}" if here else str(path)
        raise DeploymentFileError(f"{where}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.parent))
        _collectors.remove(collector)
    loaded = LoadedFile(path, collector.deployments, collector.errors)
    if not loaded.deployments and not loaded.errors:
        loaded.errors.append(f"{path}: defines no deployments (create them with Deployment(...) or DeploymentSpec(...))")
    return loaded


class _ExpandsTooMuch(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand to more than MAX_YAML_VALUES values, or refer to themselves.

    Counts without expanding: each node's expanded size is computed once, from its children's.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # entered, not finished: the path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_YAML_VALUES:
                raise _ExpandsTooMuch(node.start_mark.line + 1, f"its aliases (*name) expand to more than "
                                      f"{MAX_YAML_VALUES:,} values; repeat less through aliases")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _ExpandsTooMuch(node.start_mark.line + 1, "an alias (*name) refers to a value that contains it")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line each mapping starts on, and bounds what aliases expand to."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _schedule_from_yaml(value: Any) -> Any:
    """YAML schedules: ``{cron: "...", timezone: ...}`` or ``{interval: 30}`` / ``{seconds: 30}``."""
    from .schedules import Cron, Interval

    items = value if isinstance(value, list) else [value]
    out: list[Cron | Interval] = []
    for item in items:
        if isinstance(item, dict) and "cron" in item:
            out.append(Cron(item["cron"], **{k: v for k, v in item.items() if k != "cron"}))
        elif isinstance(item, dict) and "interval" in item:
            out.append(Interval(seconds=item["interval"], **{k: v for k, v in item.items() if k != "interval"}))
        elif isinstance(item, dict):
            out.append(Interval(**item))
        else:
            raise ValueError(f"a schedule is {{cron: '*/5 * * * *'}} or {{interval: 30}}, got {item!r}")
    return out if isinstance(value, list) else out[0]


def _load_yaml(path: Path) -> LoadedFile:
    try:
        text = read_bounded(path, MAX_SOURCE_BYTES, "deployment file").decode("utf-8")
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except _ExpandsTooMuch as e:
        raise DeploymentFileError(f"{path}:{e.line}: refused: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise DeploymentFileError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise DeploymentFileError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise DeploymentFileError(f"{path}: refused: its values are nested too deeply") from None
    except UnicodeDecodeError as e:
        raise DeploymentFileError(f"{path}: not UTF-8 text: {e}") from None
    items = data.get("deployments") if isinstance(data, dict) and "deployments" in data else data
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise DeploymentFileError(f"{path}: expected a list of deployments (or a 'deployments:' key)")
    loaded = LoadedFile(path)
    for i, raw in enumerate(items):
        line = raw.get("__line__", "?") if isinstance(raw, dict) else "?"
        label = f"{path}:{line}: deployment {raw.get('name', f'#{i + 1}') if isinstance(raw, dict) else f'#{i + 1}'!r}"
        if not isinstance(raw, dict):
            loaded.errors.append(f"{label}: expected a mapping of fields")
            continue
        fields = {str(k): v for k, v in _strip_lines(raw).items()}
        try:
            if "schedule" in fields and fields["schedule"] is not None:
                fields["schedule"] = _schedule_from_yaml(fields["schedule"])
        except (TypeError, ValueError) as e:
            loaded.errors.append(f"{label}: schedule: {e}")
            continue
        fields.pop("flow", None)
        # flow_location stays as written: build_record resolves it against this file's directory.
        deployment = Deployment.__new__(Deployment)
        deployment.defined_at = f"{path}:{line}"
        try:
            deployment.fields = DeploymentFields(**fields)
        except ValidationError as e:
            loaded.errors.append(format_validation_error(e, label))
            continue
        loaded.deployments.append(deployment)
    return loaded


def _beside_definition(deployment: Deployment, given: str) -> Path:
    """``given`` resolved against the directory of the file that defines the deployment."""
    location = Path(given).expanduser()
    if not location.is_absolute():
        base = Path(deployment.defined_at.rsplit(":", 1)[0]).parent if ":" in deployment.defined_at else Path.cwd()
        location = base / location
    return location


def read_requirements_file(deployment: Deployment) -> tuple[str, str] | None:
    """The text of the deployment's ``requirements_file`` and its sha256, once every line is checked.

    :raises DeploymentFileError: ``requirements_file: <path>:<line>: <what is wrong>``.
    """
    f = deployment.fields
    assert f is not None
    if f.requirements_file is None:
        return None
    from .requirements import MAX_FILE_BYTES, read_file

    path = _beside_definition(deployment, f.requirements_file)
    try:
        text, digest = read_file(read_bounded(path, MAX_FILE_BYTES, "requirements file"))
    except FileNotFoundError as e:
        raise DeploymentFileError(f"requirements_file: cannot read {path}: {e.strerror}") from None
    except DeploymentFileError as e:
        raise DeploymentFileError(f"requirements_file: {e}") from None
    except ValueError as e:
        where = f"{path}:{str(e)[5:]}" if str(e).startswith("line ") else f"{path}: {e}"
        raise DeploymentFileError(f"requirements_file: {where}") from None
    return text, digest


def build_record(deployment: Deployment, default_queue: str) -> tuple[DeploymentRecord, str]:
    """The stored record of a deployment and its flow file's source (see :func:`record_and_files`)."""
    record, source, _ = record_and_files(deployment, default_queue)
    return record, source


def record_and_files(deployment: Deployment, default_queue: str) -> tuple[DeploymentRecord, str, str | None]:
    """The stored record of a deployment, its flow file's source and its requirements file's text.

    :raises DeploymentFileError: the flow file is missing or does not define the flow, or the
        requirements file is missing or holds a line the workers cannot install.
    """
    f = deployment.fields
    assert f is not None
    requirements = read_requirements_file(deployment)
    if f.flow is not None:
        file = inspect.getsourcefile(f.flow.fn)
        if file is None:
            raise DeploymentFileError(f"{deployment.defined_at}: cannot find the source file of flow {f.flow.name!r}")
        path = Path(file).resolve()
        source, digest = read_source(path)
        flow_name, spec = f.flow.name, f.flow.parameter_spec()
    else:
        assert f.flow_location is not None
        location = _beside_definition(deployment, f.flow_location)
        try:
            path = location.resolve()
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
            raise DeploymentFileError(f"flow_location {f.flow_location!r}: {e}") from None
        source, digest = read_source(path)
        info = pick_flow(flows_in_source(source, str(path)), f.flow_name, str(path))
        flow_name, spec = info.name, info.parameter_spec
    now = time.time()
    delays = f.retry_delay if isinstance(f.retry_delay, list) else ([f.retry_delay] if f.retry_delay else [])
    record = DeploymentRecord(
        name=f"{flow_name}/{f.name}",
        deployment=f.name,
        flow_name=flow_name,
        flow_storage=f.flow_storage,
        source_digest=digest if f.flow_storage == "source" else None,
        flow_path=str(path),
        env=f.env_spec(requirements[1] if requirements else None),
        env_vars=f.env,
        parameters=f.parameters,
        parameter_spec=spec,
        tags=f.tags,
        queue=f.queue or default_queue,
        stream_output=f.stream_output,
        preload=f.preload,
        warm=f.warm,
        timeout=f.timeout,
        retries=f.retries,
        retry_delay=delays,
        concurrency_limit=f.concurrency_limit,
        on_limit=f.on_limit,
        schedules=[s.to_record() for s in f.schedules],
        missed_runs=f.missed_runs,
        catch_up_limit=f.catch_up_limit,
        hooks=f.hooks,
        late_after=f.late_after,
        description=f.description if f.description is not None else (f.flow.description if f.flow else ""),
        defined_at=deployment.defined_at,
        created_at=now,
        updated_at=now,
    )
    return record, source, requirements[0] if requirements else None
