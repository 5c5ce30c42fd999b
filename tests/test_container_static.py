"""The container stack, checked without a Docker engine: Dockerfile, .dockerignore, compose.yaml, envs/*.yml.

Every check passes on the real files and catches a broken variant of them (one per mistake it
guards against), so a check that silently passes everything fails here. The checks themselves
are in tests/container/checks.py; scripts/check-container runs the tools (hadolint, the Compose
schema, ``docker-compose config``).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from .container import checks

try:
    import dockerfile_parse  # noqa: F401 - checks.Dockerfile needs it
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("dockerfile-parse is not installed (pip install -e '.[test]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text().splitlines()


def _pyproject() -> dict[str, Any]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: only the table these tests read
        table = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return {"project": {"scripts": dict(re.findall(r'^(\S+)\s*=\s*"([^"]*)"', table, re.M))}}
    return tomllib.loads(text)


PYPROJECT = _pyproject()
ENV_FILES = sorted(p.name for p in (ROOT / "envs").glob("*.yml"))
DOCS = (ROOT / "docs" / "run-with-docker.md").read_text()
README = (ROOT / "README.md").read_text()


def compose() -> dict[str, Any]:
    """compose.yaml as data; the JSON round trip unshares what YAML anchors share, so an edit stays local."""
    return json.loads(json.dumps(yaml.safe_load(COMPOSE_TEXT)))


def edited(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; the edit must apply, or the broken variant would not be broken."""
    assert old in text, f"the broken variant no longer applies: {old!r} is not in the file"
    return text.replace(old, new)


# Dockerfile: (check, edit making the real Dockerfile wrong, words the problem must contain)

STATE_LINE = " \\\n    ENVFLOW_STATE_DIR=/var/lib/envflow"
DOCKERFILE_CASES: list[tuple[str, Callable[[checks.Dockerfile], list[str]], tuple[str, str], str]] = [
    ("base pinned", checks.check_base_pinned,
     ("BASE_IMAGE=condaforge/miniforge3:25.11.0-0", "BASE_IMAGE=condaforge/miniforge3:latest"), "pin"),
    ("base is miniconda-family", checks.check_base_pinned,
     ("FROM ${BASE_IMAGE} AS envflow", "FROM python:3.12.8-slim AS envflow"), "not one of"),
    ("one stage", checks.check_one_stage,
     ("ARG BASE_IMAGE=condaforge/miniforge3:25.11.0-0\n",
      "ARG BASE_IMAGE=condaforge/miniforge3:25.11.0-0\nFROM python:3.12.8-slim-bookworm AS dashboard\n"
      "RUN pip install --no-cache-dir rq-dashboard==0.9.0\n"), "classic builder"),
    ("non-root user", checks.check_nonroot_user, ("USER 10001:10001", "USER root"), "root"),
    ("user set at all", checks.check_nonroot_user, ("USER 10001:10001\n", ""), "no USER"),
    ("numeric user", checks.check_nonroot_user, ("USER 10001:10001", "USER envflow"), "numeric"),
    ("tini entrypoint", checks.check_entrypoint,
     ('ENTRYPOINT ["/usr/bin/tini", "--"]', 'ENTRYPOINT ["conda", "run", "--no-capture-output", "-n", "base"]'),
     "conda run"),
    ("exec-form CMD", checks.check_entrypoint,
     ('CMD ["envflow", "worker", "start"]', "CMD envflow worker start"), "exec form"),
    ("healthcheck", checks.check_healthcheck, ("HEALTHCHECK ", "# HEALTHCHECK "), "no HEALTHCHECK"),
    ("healthcheck command", checks.check_healthcheck,
     ('CMD ["envflow", "worker", "health"]', 'CMD ["redis-cli", "ping"]'), "envflow worker health"),
    ("conda clean in the env layer", checks.check_envs_built, ("    && conda clean -afy \\\n", ""), "conda clean"),
    ("every env file built", checks.check_envs_built,
     ("/usr/local/share/envflow/envs/*.yml; do", "/usr/local/share/envflow/envs/py38.yml; do"), "py312.yml"),
    ("envs copied", checks.check_envs_built,
     ("COPY envs/ /usr/local/share/envflow/envs/", "COPY envs/py38.yml /usr/local/share/envflow/envs/"), "py312"),
    ("console script on PATH", checks.check_envflow_installed,
     ("PATH=/opt/envflow/bin:/opt/conda/bin:$PATH", "PATH=/opt/conda/bin:$PATH"), "not on the image's PATH"),
    ("envflow not in flow envs", checks.check_envflow_installed,
     ("WORKDIR /project", "RUN /opt/conda/envs/py38/bin/pip install --no-cache-dir envflow==0.1.0\nWORKDIR /project"),
     "flow env"),
    ("ui extra in the image", checks.check_envflow_installed,
     (' + p["optional-dependencies"]["ui"]', ""), "ui extra"),
    ("source after dependencies", checks.check_layer_order,
     ("COPY envs/ /usr/local/share/envflow/envs/",
      "COPY envflow/ /usr/local/src/envflow/envflow/\nCOPY envs/ /usr/local/share/envflow/envs/"),
     "every code change rebuilds"),
    ("writable state dir", checks.check_state_dir, (STATE_LINE, ""), "ENVFLOW_STATE_DIR"),
]


def _dockerfile_check(check: Callable[..., list[str]], text: str) -> list[str]:
    df = checks.Dockerfile(text)
    if check is checks.check_envs_built:
        return check(df, ENV_FILES)
    if check is checks.check_envflow_installed:
        return check(df, PYPROJECT)
    return check(df)


@pytest.mark.parametrize(("check", "edit", "expected"), [c[1:] for c in DOCKERFILE_CASES],
                         ids=[c[0] for c in DOCKERFILE_CASES])
def test_dockerfile_check(check: Callable[..., list[str]], edit: tuple[str, str], expected: str) -> None:
    assert _dockerfile_check(check, DOCKERFILE) == []
    problems = _dockerfile_check(check, edited(DOCKERFILE, *edit))
    assert problems and any(expected in p for p in problems), problems


def test_dashboard_base_pinned() -> None:
    """The dashboard is its own build (dashboard/Dockerfile), on a pinned base."""
    dashboard = (ROOT / "dashboard" / "Dockerfile").read_text()
    assert checks.check_dashboard_dockerfile(checks.Dockerfile(dashboard)) == []
    broken = edited(dashboard, "BASE_IMAGE=python:3.12.8-slim-bookworm", "BASE_IMAGE=python")
    assert "pin" in " ".join(checks.check_dashboard_dockerfile(checks.Dockerfile(broken)))


def test_console_script_comes_from_pyproject() -> None:
    broken = copy.deepcopy(PYPROJECT)
    del broken["project"]["scripts"]["envflow"]
    df = checks.Dockerfile(DOCKERFILE)
    assert checks.check_envflow_installed(df, PYPROJECT) == []
    assert "no `envflow` console script" in " ".join(checks.check_envflow_installed(df, broken))


# .dockerignore


def _copied_files() -> list[str]:
    """Every file of the repository that a COPY of the envflow stage names."""
    files = []
    for ins in checks.Dockerfile(DOCKERFILE).final.all("COPY"):
        for source in ins.value.split()[:-1]:
            path = ROOT / source
            found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            files += [p.relative_to(ROOT).as_posix() for p in found if "__pycache__" not in p.parts]
    return files


UNWANTED = [".git/HEAD", ".venv/bin/python", ".venv-tools/bin/hadolint", "venvs/example/pyvenv.cfg",
            "tests/conftest.py", "envflow/__pycache__/client.cpython-311.pyc"]


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else() -> None:
    needed = _copied_files()
    assert "envs/py38.yml" in needed and "pyproject.toml" in needed and "worker/flowenv/bootstrap.py" in needed
    assert checks.check_dockerignore(DOCKERIGNORE, needed, UNWANTED) == []
    excluding_envs = [*DOCKERIGNORE, "envs/"]
    assert any("envs/py38.yml" in p for p in checks.check_dockerignore(excluding_envs, needed, UNWANTED))
    everything = [line for line in DOCKERIGNORE if line.strip() != "*"]
    assert any(".git/HEAD" in p for p in checks.check_dockerignore(everything, needed, UNWANTED))


# compose.yaml: (check, edit making the real compose file wrong, words the problem must contain)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


_DELETE = object()
COMPOSE_CASES: list[tuple[str, Callable[..., list[str]], Callable[[dict[str, Any]], None], str]] = [
    ("redis port on loopback", checks.check_ports_loopback, _set("services.redis.ports", ["6379:6379"]),
     "all interfaces"),
    ("ui port on loopback", checks.check_ports_loopback, _set("services.ui.ports", ["8080:8080"]), "all interfaces"),
    ("dashboard port on loopback", checks.check_ports_loopback,
     _set("services.dashboard.ports", [{"target": 9181, "published": "9181"}]), "all interfaces"),
    ("redis pinned", checks.check_redis, _set("services.redis.image", "redis:latest"), "not pinned"),
    ("redis healthcheck", checks.check_redis, _set("services.redis.healthcheck", _DELETE), "redis-cli ping"),
    ("redis persistence", checks.check_redis, _set("services.redis.volumes", ["./redis:/data"]), "named volume"),
    ("redis append-only", checks.check_redis, _set("services.redis.command", ["redis-server"]), "appendonly"),
    ("depends on healthy redis", checks.check_depends_on_redis, _set("services.worker.depends_on", ["redis"]),
     "worker does not depend"),
    ("worker scalable", checks.check_worker_scalable, _set("services.worker.container_name", "envflow-worker"),
     "container_name"),
    ("worker publishes no port", checks.check_worker_scalable, _set("services.worker.ports", ["127.0.0.1:8000:8000"]),
     "ports"),
    ("stop grace above flow grace", checks.check_worker_scalable, _set("services.worker.stop_grace_period", "30s"),
     "SIGKILL"),
    ("stop grace follows the settings", checks.check_worker_scalable,
     _set("services.worker.environment.ENVFLOW_SHUTDOWN_GRACE", "120"), "SIGKILL"),
    ("worker command", checks.check_worker_scalable, _set("services.worker.command", "envflow worker start"),
     "exec-form"),
    ("venvs read-only in workers", checks.check_mounts, _set("services.worker.volumes.1.read_only", False),
     "read_only: true"),
    ("venvs long syntax", checks.check_mounts, _set("services.worker.volumes.1", "./venvs:/venvs:ro"), "long syntax"),
    ("project read-only", checks.check_mounts, _set("services.scheduler.volumes.0.read_only", False), "writable"),
    ("project at one path", checks.check_mounts, _set("services.scheduler.volumes.0.target", "/src"),
     "different paths"),
    ("venvs service one-shot", checks.check_mounts, _set("services.venvs.restart", "unless-stopped"), "one-shot"),
    ("example deployments registered", checks.check_deployments,
     _set("services.scheduler.environment.ENVFLOW_DEPLOYMENTS", "/elsewhere/*.py"), "not a glob inside"),
    ("a venv example among them", checks.check_deployments,
     _set("services.scheduler.environment.ENVFLOW_DEPLOYMENTS", "/project/examples/deployments/*.py"),
     "venv under /venvs"),
    ("no conda run", checks.check_no_conda_run,
     _set("services.worker.command", ["conda", "run", "-n", "base", "envflow", "worker", "start"]), "conda run"),
    ("dashboard optional", checks.check_dashboard, _set("services.dashboard.profiles", _DELETE), "--profile"),
    ("ui token from the environment", checks.check_ui, _set("services.ui.environment.ENVFLOW_UI_TOKEN", "changeme"),
     "ENVFLOW_UI_TOKEN"),
    ("ui healthcheck", checks.check_ui, _set("services.ui.healthcheck", _DELETE), "--check"),
    ("ui command", checks.check_ui, _set("services.ui.command", ["envflow", "worker", "start"]), "envflow ui"),
    ("ui depends on healthy redis", checks.check_depends_on_redis, _set("services.ui.depends_on", ["redis"]),
     "ui does not depend"),
]


def _compose_check(check: Callable[..., list[str]], doc: dict[str, Any]) -> list[str]:
    return check(doc, ROOT) if check is checks.check_deployments else check(doc)


@pytest.mark.parametrize(("check", "edit", "expected"), [c[1:] for c in COMPOSE_CASES],
                         ids=[c[0] for c in COMPOSE_CASES])
def test_compose_check(check: Callable[..., list[str]], edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert _compose_check(check, compose()) == []
    broken = compose()
    edit(broken)
    problems = _compose_check(check, broken)
    assert problems and any(expected in p for p in problems), problems


# compose.fleet.yaml, merged into compose.yaml as `docker compose -f compose.yaml -f compose.fleet.yaml` does

FLEET_TEXT = (ROOT / "compose.fleet.yaml").read_text()
FLEET_UP = "docker compose -f compose.yaml -f compose.fleet.yaml up"


def fleet() -> dict[str, Any]:
    return checks.merged(compose(), json.loads(json.dumps(yaml.safe_load(FLEET_TEXT))))


LEGACY = "services.worker-legacy"
FLEET_CASES: list[tuple[str, Callable[..., list[str]], Callable[[dict[str, Any]], None], str]] = [
    ("one service builds", checks.check_fleet, _set(f"{LEGACY}.build", {"context": "."}), "only the worker service"),
    ("the worker's image", checks.check_fleet, _set(f"{LEGACY}.image", "envflow:legacy"), "not the worker's image"),
    ("its own envs", checks.check_fleet, _set(f"{LEGACY}.environment.ENVFLOW_ENV_ROOTS", _DELETE),
     "no ENVFLOW_ENV_ROOTS"),
    ("different envs", checks.check_fleet,
     _set(f"{LEGACY}.environment.ENVFLOW_ENV_ROOTS", "/opt/conda/envs/py312:/venvs"), "same ENVFLOW_ENV_ROOTS"),
    ("a second worker service", checks.check_fleet, _set(LEGACY, _DELETE), "more than one worker service"),
    ("stop grace", checks.check_fleet, _set(f"{LEGACY}.stop_grace_period", "30s"), "SIGKILL"),
    ("scalable", checks.check_fleet, _set(f"{LEGACY}.ports", ["127.0.0.1:8000:8000"]), "ports"),
    ("the image's user and tini", checks.check_fleet, _set(f"{LEGACY}.user", "0:0"), "uid 10001"),
    ("depends on healthy redis", checks.check_fleet, _set(f"{LEGACY}.depends_on", ["redis"]), "healthy"),
    ("project read-only", checks.check_fleet, _set(f"{LEGACY}.volumes.0.read_only", False), "read-only at /project"),
    ("no writable bind", checks.check_mounts, _set(f"{LEGACY}.volumes.0.read_only", False), "writable"),
    ("venvs read-only", checks.check_fleet,
     _set(f"{LEGACY}.volumes.1", {"type": "bind", "source": "./venvs", "target": "/venvs"}), "read_only: true"),
]


@pytest.mark.parametrize(("check", "edit", "expected"), [c[1:] for c in FLEET_CASES],
                         ids=[c[0] for c in FLEET_CASES])
def test_fleet_check(check: Callable[..., list[str]], edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert check(fleet()) == []
    broken = fleet()
    edit(broken)
    problems = check(broken)
    assert problems and any(expected in p for p in problems), problems


def test_the_fleet_passes_every_compose_check() -> None:
    doc = fleet()
    assert set(checks.worker_services(doc)) == {"worker", "worker-legacy"}
    for _, check, _, _ in COMPOSE_CASES:
        assert _compose_check(check, doc) == [], check.__name__
    assert "a fleet needs more than one worker service" in checks.check_fleet(compose())


def test_the_fleet_command_is_documented() -> None:
    """compose.fleet.yaml's header and docs/run-with-docker.md give the command; compose.yaml's header names it."""
    header = "".join(line for line in FLEET_TEXT.splitlines(keepends=True) if line.startswith("#"))
    assert FLEET_UP in header and FLEET_UP in DOCS and FLEET_UP in COMPOSE_TEXT
    assert "worker-legacy" in DOCS and "ENVFLOW_ENV_ROOTS" in DOCS


# compose.ha.yaml, merged into compose.yaml as `docker compose -f compose.yaml -f compose.ha.yaml` does

HA_TEXT = (ROOT / "compose.ha.yaml").read_text()
HA_UP = "docker compose -f compose.yaml -f compose.ha.yaml up"


def ha() -> dict[str, Any]:
    return checks.merged(compose(), checks.load_compose(HA_TEXT))


HA_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("a replica", _set("services.redis-replica", _DELETE), "no redis-replica service"),
    ("it replicates the primary", _set("services.redis-replica.command", ["redis-server", "--appendonly", "yes"]),
     "does not replicate"),
    ("a demoted primary reaches the new one", _set("services.redis.command", ["redis-server", "--appendonly", "yes",
     "--requirepass", "${REDIS_PASSWORD:-}"]), "--masterauth"),
    ("three Sentinels", _set("services.sentinel-3", _DELETE), "no sentinel-3 service"),
    ("on different ports", _set("services.sentinel-3.environment.SENTINEL_PORT", "${SENTINEL_PORT_1:-26379}"),
     "different ports"),
    ("a quorum of two", _set("services.sentinel-1.command", ["redis-server --sentinel"]), "quorum of 2"),
    ("the Sentinels' URL", _set("services.worker.environment.ENVFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"),
     "worker ENVFLOW_REDIS_URL"),
    ("waits for the Sentinels", _set("services.ui.depends_on", {"redis": {"condition": "service_healthy"}}),
     "ui does not wait"),
    ("host network", _set("services.sentinel-2.network_mode", _DELETE), "sentinel-2 is not on the host"),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in HA_CASES], ids=[c[0] for c in HA_CASES])
def test_ha_check(edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert checks.check_ha(ha()) == []
    broken = ha()
    edit(broken)
    problems = checks.check_ha(broken)
    assert problems and any(expected in p for p in problems), problems


def test_the_ha_stack_passes_every_compose_check() -> None:
    doc = ha()
    for _, check, _, _ in COMPOSE_CASES:
        problems = _compose_check(check, doc)
        # On the host's network the UI listens on 127.0.0.1:UI_PORT itself; nothing is published.
        assert problems == (["ui publishes no port"] if check is checks.check_ui else []), check.__name__


def test_the_ha_url_is_one_envflow_reads() -> None:
    from envflow.sentinel import SentinelURL

    url = checks.interpolate(ha()["services"]["worker"]["environment"]["ENVFLOW_REDIS_URL"], {"REDIS_PASSWORD": "pw"})
    parsed = SentinelURL.parse(url)
    assert parsed.sentinels == (("127.0.0.1", 26379), ("127.0.0.1", 26380), ("127.0.0.1", 26381))
    assert (parsed.service, parsed.password) == (checks.HA_SERVICE, "pw")


def test_the_ha_command_is_documented() -> None:
    header = "".join(line for line in HA_TEXT.splitlines(keepends=True) if line.startswith("#"))
    ha_docs = (ROOT / "docs" / "high-availability.md").read_text()
    assert HA_UP in header and HA_UP in ha_docs


def test_compose_uses_real_settings() -> None:
    """Every ENVFLOW_* variable compose.yaml, compose.fleet.yaml and the Dockerfile set is a real setting
    (a typo would be ignored)."""
    from envflow.settings import Settings

    known = {f"ENVFLOW_{name.upper()}" for name in Settings.model_fields}
    used = {key for service in fleet()["services"].values() for key in service.get("environment") or {}}
    for ins in checks.Dockerfile(DOCKERFILE).final.all("ENV"):
        used |= set(re.findall(r"(?:^|\s)(\w+)=", ins.value))
    used = {name for name in used if name.startswith("ENVFLOW_")}
    assert "ENVFLOW_STATE_DIR" in used and used <= known, sorted(used - known)


# envs/*.yml

ENV_CASES = [
    ("defaults channel", ("  - nodefaults\n", "  - defaults\n"), "channels"),
    ("name is the file name", ("name: py38", "name: legacy"), "file's name"),
    ("python version", ("  - python=3.8\n", "  - python\n"), "python version"),
    ("no envflow in flow envs", ("  - pandas=1.5.3\n", "  - pandas=1.5.3\n  - pip:\n      - envflow\n"), "envflow"),
    ("variables are strings", ("variables:\n", "variables:\n  RETRIES: 3\n"), "string"),
    ("valid YAML", ("channels:\n", "channels: [\n"), "invalid YAML"),
]


@pytest.mark.parametrize("filename", ENV_FILES)
def test_env_files_valid(filename: str) -> None:
    assert checks.check_env_file(filename, (ROOT / "envs" / filename).read_text()) == []


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_env_file_check_catches(edit: tuple[str, str], expected: str) -> None:
    problems = checks.check_env_file("py38.yml", edited((ROOT / "envs" / "py38.yml").read_text(), *edit))
    assert problems and any(expected in p for p in problems), problems


def test_env_set() -> None:
    envs = {Path(f).stem: yaml.safe_load((ROOT / "envs" / f).read_text()) for f in ENV_FILES}
    assert checks.check_env_set(envs) == []
    without_38 = {k: v for k, v in envs.items() if checks.python_version(v) != (3, 8)}
    assert "no env on Python 3.8" in checks.check_env_set(without_38)
    no_vars = copy.deepcopy(envs)
    no_vars["py312"].pop("variables")
    assert "envs/py312.yml has no variables:" in checks.check_env_set(no_vars)


def test_env_file_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The entry point scripts/check-container runs."""
    assert checks.main([str(ROOT / "envs" / f) for f in ENV_FILES]) == 0
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\nchannels: [defaults]\ndependencies: [pandas]\n")
    assert checks.main([str(bad)]) == 1
    assert "channels must be conda-forge" in capsys.readouterr().err


# The container runs the same envflow commands as everything else


def _command(argv: list[str]) -> click.Command:
    from envflow.cli.main import cli

    command: click.Command = cli
    for word in argv:
        assert isinstance(command, click.Group), f"`envflow {' '.join(argv)}`: {word} has no subcommands"
        sub = command.get_command(click.Context(command), word)  # commands load lazily
        assert sub is not None, f"the container runs `envflow {' '.join(argv)}`, which does not exist"
        command = sub
    return command


def test_container_commands_exist() -> None:
    doc = compose()
    df = checks.Dockerfile(DOCKERFILE)
    cmd, healthcheck = df.final.last("CMD"), df.final.last("HEALTHCHECK")
    assert cmd and healthcheck
    argvs = [checks.exec_form(cmd.value), checks.exec_form(healthcheck.value.split("CMD", 1)[1])]
    argvs += [s["command"] for s in doc["services"].values()
              if isinstance(s.get("command"), list) and s["command"][0] == "envflow"]
    venvs = doc["services"]["venvs"]["command"][-1]
    argvs.append(venvs.split("exec ", 1)[1].split())
    for argv in argvs:
        words = [w for w in argv[1:] if not w.startswith("-")][:2]
        command = _command(words)
        options = {o for p in command.params for o in p.opts}
        assert {w for w in argv if w.startswith("-")} <= options, (argv, options)


def test_example_deployments_load_and_match_the_image() -> None:
    """The examples compose.yaml registers load, use envs the image builds and the venv the venvs service makes."""
    from envflow.deployment_files import build_record, load_file

    envs = {Path(f).stem for f in ENV_FILES}
    records = []
    for path in sorted((ROOT / "examples" / "deployments").iterdir()):
        loaded = load_file(path)
        assert loaded.errors == [], loaded.errors
        records += [build_record(d, "default")[0] for d in loaded.deployments]
    conda = [r for r in records if r.env.kind.value == "conda"]
    venv = [r for r in records if r.env.kind.value == "venv"]
    assert conda and venv and all(r.schedules for r in records)
    assert {r.env.value for r in conda} <= envs
    made = compose()["services"]["venvs"]["command"][-1]
    for r in venv:
        assert r.env.value.startswith("/venvs/") and f"venv create {r.env.value} " in made
    python = re.search(r"--python (\S+)", made)
    requirements = re.search(r"-r /project/(\S+)", made)
    assert python and python.group(1) in envs
    assert requirements and (ROOT / requirements.group(1)).is_file()


# The "Run with Docker" docs match compose.yaml


def _docker_docs() -> list[tuple[str, bool]]:
    """docs/run-with-docker.md (complete), and README.md's "Run with Docker" section once it has one
    (which may be a summary pointing at the docs: what it names must exist)."""
    texts = [(DOCS, True)]
    if "## Run with Docker" in README:
        texts.append((README.split("## Run with Docker", 1)[1].split("\n## ", 1)[0], False))
    return texts


@pytest.mark.parametrize(("text", "complete"), _docker_docs(), ids=["docs", "readme"][: len(_docker_docs())])
def test_docs_commands_match_compose(text: str, complete: bool) -> None:
    services = set(compose()["services"])
    verbs = r"(?:run --rm|logs(?: -f)?|exec|stop|restart|up -d --scale|up -d)"
    named = re.findall(rf"docker compose (?:--profile \S+ )?{verbs} (\w+)", text)
    scaled = re.findall(r"--scale (\w+)=", text)
    assert set(named + scaled) <= services, sorted(set(named + scaled) - services)
    profiles = {p for s in compose()["services"].values() for p in s.get("profiles", [])}
    assert set(re.findall(r"--profile (\w+)", text)) <= profiles
    mentioned = set(re.findall(r"\b((?:ENVFLOW|REDIS|DASHBOARD|UI)_[A-Z_]+)", text))
    mentioned = {m for m in mentioned if not m.startswith("ENVFLOW_TEST_")}  # the container suite's own knobs
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)", COMPOSE_TEXT))  # $${...} is the container's own
    from envflow.settings import Settings

    settings = {f"ENVFLOW_{name.upper()}" for name in Settings.model_fields}
    assert mentioned <= variables | settings | {"REDIS_PASSWORD"}, sorted(mentioned - variables - settings)
    if complete:
        assert named and scaled and "venv create" in text and "nodefaults" in text
        assert variables <= mentioned, sorted(variables - mentioned)
        for name in ENV_FILES:
            assert Path(name).stem in text


def test_readme_docker_commands_are_the_suites() -> None:
    """README's "Run with Docker" shows the commands tests/container runs, no others."""
    from .container.stack import README_SCALE, README_UP, README_VENV

    section = README.split("## Run with Docker", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [tuple(line.split("#", 1)[0].split()[2:]) for line in block.splitlines() if line.strip()]
    assert commands == [README_UP, README_SCALE, README_VENV]
