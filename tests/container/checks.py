"""Static checks of the container stack: Dockerfile, .dockerignore, compose.yaml and envs/*.yml.

Each check is a plain function returning a list of problems (empty = fine), so a test can show
it both passing on the real files and catching a broken variant. tests/test_container_static.py
runs them all; ``scripts/check-container`` runs the env-file checks through this file's command
line (``python tests/container/checks.py envs/*.yml``), with only PyYAML installed.
"""

from __future__ import annotations

import glob
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALLOWED_CHANNELS = ("conda-forge", "nodefaults")
CONDA_BASES = ("condaforge/miniforge3", "continuumio/miniconda3")
SOURCE_PACKAGES = ("envflow", "worker", "scheduler")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, variables: dict[str, str] | None = None) -> str:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$VAR`` as Compose (or a Dockerfile) would
    expand them with ``variables`` set and every other variable unset."""
    variables = variables or {}

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        if name in variables:
            return variables[name]
        return m.group(3) if m.group(2) in (":-", "-") else ""

    return _VAR.sub(one, value)


# Dockerfile


@dataclass
class Instruction:
    name: str
    value: str
    line: int


@dataclass
class Stage:
    base: str  # the FROM image with build args at their defaults
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def last(self, name: str) -> Instruction | None:
        found = self.all(name)
        return found[-1] if found else None


class Dockerfile:
    """A Dockerfile parsed with dockerfile-parse, split into stages."""

    def __init__(self, text: str) -> None:
        from dockerfile_parse import DockerfileParser

        parser = DockerfileParser(fileobj=io.BytesIO())
        parser.content = text
        self.text = text
        self.global_args: dict[str, str] = {}
        self.stages: list[Stage] = []
        for item in parser.structure:
            ins = Instruction(item["instruction"].upper(), item["value"], item["startline"] + 1)
            if ins.name == "COMMENT":
                continue
            if ins.name == "FROM":
                words = ins.value.split()
                words = [w for w in words if not w.startswith("--")]
                alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
                self.stages.append(Stage(interpolate(words[0], self.global_args), alias))
            elif not self.stages and ins.name == "ARG":
                name, _, default = ins.value.partition("=")
                self.global_args[name.strip()] = default.strip().strip("\"'")
            elif self.stages:
                self.stages[-1].instructions.append(ins)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def exec_form(value: str) -> list[str] | None:
    """The argv of an exec-form (JSON array) instruction value, or None for shell form."""
    try:
        argv = json.loads(value)
    except ValueError:
        return None
    return argv if isinstance(argv, list) and all(isinstance(a, str) for a in argv) else None


def uses_conda_run(command: Any) -> bool:
    """Whether a command (a string, an exec-form JSON string or an argv list) runs `conda run`."""
    if isinstance(command, str):
        command = exec_form(command) or command.split()
    words = [Path(str(w)).name for w in command or []]
    return any(a in ("conda", "mamba", "micromamba") and b == "run" for a, b in zip(words, words[1:]))


def image_pinned(image: str) -> bool:
    """An exact tag (with a digit, not ``latest``) or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return bool(tag) and tag != "latest" and any(c.isdigit() for c in tag)


def check_base_pinned(df: Dockerfile) -> list[str]:
    problems = [f"FROM {s.base}: pin an exact tag (or a digest)" for s in df.stages if not image_pinned(s.base)]
    if not df.stages:
        return ["no FROM"]
    if not df.final.base.split(":")[0].split("@")[0].endswith(CONDA_BASES):
        problems.append(f"the final stage is based on {df.final.base}, not one of {', '.join(CONDA_BASES)}")
    if "BASE_IMAGE" not in df.global_args:
        problems.append("no BASE_IMAGE build arg to swap miniforge3 and miniconda3")
    elif df.final.base != interpolate("${BASE_IMAGE}", df.global_args):
        problems.append("the final stage is not FROM ${BASE_IMAGE}")
    return problems


def check_one_stage(df: Dockerfile) -> list[str]:
    """The classic builder builds every stage, wanted or not: any other stage (and its base image)
    would be needed by every build of the envflow image."""
    others = [s.alias or s.base for s in df.stages[:-1]]
    return [f"stage {name} is built by the classic builder with every envflow build; give it its own Dockerfile"
            for name in others]


def check_dashboard_dockerfile(df: Dockerfile) -> list[str]:
    """dashboard/Dockerfile: one stage on a pinned base, not root."""
    problems = [f"FROM {s.base}: pin an exact tag (or a digest)" for s in df.stages if not image_pinned(s.base)]
    user = df.final.last("USER") if df.stages else None
    if user is None or user.value.split(":")[0] in ("root", "0"):
        problems.append("the dashboard must not run as root")
    return problems


def check_nonroot_user(df: Dockerfile) -> list[str]:
    user = df.final.last("USER")
    if user is None:
        return ["the final stage sets no USER: it would run as root"]
    uid, _, gid = user.value.strip().partition(":")
    if uid in ("root", "0") or gid in ("root", "0"):
        return [f"USER {user.value} is root"]
    if not uid.isdigit():
        return [f"USER {user.value}: use a fixed numeric uid:gid (runAsNonRoot can only verify a number)"]
    return []


def check_entrypoint(df: Dockerfile) -> list[str]:
    problems = []
    entry, cmd = df.final.last("ENTRYPOINT"), df.final.last("CMD")
    argv = exec_form(entry.value) if entry else None
    if argv is None or not argv or Path(argv[0]).name not in ("tini", "dumb-init"):
        problems.append("ENTRYPOINT must be exec-form tini (PID 1 forwarding SIGTERM and reaping zombies)")
    if cmd is None or exec_form(cmd.value) is None:
        problems.append("CMD must be exec form (a JSON array), so the signal reaches envflow, not a shell")
    for ins in df.final.instructions:
        if ins.name in ("ENTRYPOINT", "CMD", "HEALTHCHECK", "SHELL") and uses_conda_run(ins.value):
            problems.append(f"line {ins.line}: {ins.name} uses `conda run`, which does not forward SIGTERM")
    return problems


def check_healthcheck(df: Dockerfile) -> list[str]:
    hc = df.final.last("HEALTHCHECK")
    if hc is None or hc.value.strip().upper() == "NONE":
        return ["no HEALTHCHECK"]
    _, sep, command = hc.value.partition("CMD")
    argv = exec_form(command.strip()) if sep else None
    if argv is None or argv[:3] != ["envflow", "worker", "health"]:
        return [f"HEALTHCHECK must be exec-form `envflow worker health`, got {hc.value!r}"]
    return []


def _copies(stage: Stage) -> list[tuple[Instruction, list[str], str]]:
    out = []
    for ins in stage.all("COPY") + stage.all("ADD"):
        words = [w for w in shlex.split(ins.value) if not w.startswith("--")]
        out.append((ins, [w.rstrip("/") for w in words[:-1]], words[-1]))
    return out


def check_envs_built(df: Dockerfile, env_files: list[str]) -> list[str]:
    """Every envs/*.yml is copied and becomes a conda env, with the package cache cleaned in the same layer."""
    copied: dict[str, str] = {}  # env file -> its directory in the image
    for _, sources, dest in _copies(df.final):
        for source in sources:
            names = env_files if source in ("envs", "envs/*.yml", "envs/*") else [source.removeprefix("envs/")]
            if source.startswith("envs"):
                copied.update({n: dest.rstrip("/") for n in names if n in env_files})
    creates = [i for i in df.final.all("RUN") if "conda env create" in i.value]
    if not creates:
        return ["no `conda env create`"]
    problems = []
    for ins in creates:
        if not re.search(r"conda clean (-afy|-a\w*f\w*y|--all --force-pkgs-dirs --yes)", ins.value):
            problems.append(f"line {ins.line}: `conda clean -afy` is not in the layer that creates the envs")
    text = " ".join(i.value for i in creates)
    for name in env_files:
        where = copied.get(name)
        if where is None:
            problems.append(f"envs/{name} is not copied into the image")
        elif f"{where}/*.yml" not in text and f"{where}/{name}" not in text:
            problems.append(f"envs/{name} is not built (loop over {where}/*.yml or name it)")
    return problems


def check_envflow_installed(df: Dockerfile, pyproject: dict[str, Any]) -> list[str]:
    """envflow (its console script) is installed into the image's Python, on PATH, and into no flow env."""
    problems = []
    if "envflow" not in pyproject.get("project", {}).get("scripts", {}):
        problems.append("pyproject.toml has no `envflow` console script")
    source_dirs = {dest.rstrip("/").rsplit("/", 1)[0] for _, src, dest in _copies(df.final) if "envflow" in src}
    installs = [i for i in df.final.all("RUN") if "pip install" in i.value and any(d in i.value for d in source_dirs)]
    if not source_dirs or not installs:
        return [*problems, "the envflow source is not copied and pip-installed in the final stage"]
    pip = re.search(r"(\S+)/pip install", installs[-1].value)
    bindir = pip.group(1) if pip else ""
    paths = [m.group(1) for e in df.final.all("ENV") for m in [re.search(r"(?:^|\s)PATH=(\S+)", e.value)] if m]
    path = interpolate(paths[-1], {"PATH": ""}).split(":") if paths else []
    if not bindir or bindir not in path:
        problems.append(f"envflow's console script ({bindir or '?'}/envflow) is not on the image's PATH")
    elif "/opt/conda/bin" in path and path.index(bindir) > path.index("/opt/conda/bin"):
        problems.append(f"{bindir} must come before /opt/conda/bin on PATH")
    for ins in df.final.all("RUN"):
        if re.search(r"/envs/[^/\s]+/bin/(pip\S*|python\S* -m pip) install|conda run [^&;|]*pip install"
                     r"|conda install [^&;|]*envflow", ins.value):
            problems.append(f"line {ins.line}: installs into a flow env by hand; list packages in envs/*.yml "
                            "(and never envflow: flows run without it)")
    if not any('["optional-dependencies"]["ui"]' in i.value for i in df.final.all("RUN")):
        problems.append("the image does not install envflow's ui extra (the ui service runs `envflow ui`)")
    cmd = exec_form(df.final.last("CMD").value) if df.final.last("CMD") else None
    if not cmd or cmd[0] != "envflow":
        problems.append("CMD does not run the envflow console script")
    return problems


def check_layer_order(df: Dockerfile) -> list[str]:
    """Dependencies (conda envs, envflow's requirements) before the source, so a code change rebuilds little."""
    order = df.final.instructions
    source = [order.index(i) for i, src, _ in _copies(df.final) if set(src) & set(SOURCE_PACKAGES)]
    if not source:
        return ["the envflow source is never copied"]
    problems = []
    for label, pattern in (("conda env create", "conda env create"), ("envflow's requirements", "-r ")):
        at = [order.index(i) for i in df.final.all("RUN") if pattern in i.value]
        if not at:
            problems.append(f"no layer installs {label}")
        elif max(at) > min(source):
            problems.append(f"{label} is installed after the source is copied: every code change rebuilds it")
    return problems


def check_state_dir(df: Dockerfile) -> list[str]:
    envs = " ".join(e.value for e in df.final.all("ENV"))
    m = re.search(r"ENVFLOW_STATE_DIR=(\S+)", envs)
    if not m:
        return ["ENVFLOW_STATE_DIR is not set (its default, ~/.cache/envflow, may not be writable)"]
    user = df.final.last("USER")
    uid = user.value.split(":")[0] if user else "?"
    owned = any(m.group(1) in i.value and uid in i.value for i in df.final.all("RUN"))
    return [] if owned else [f"ENVFLOW_STATE_DIR {m.group(1)} is not created owned by uid {uid}"]


# .dockerignore


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, '/'-separated) out of the build context."""
    excluded = False
    parts = path.split("/")
    for raw in patterns:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.compile(
            "^" + re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
            .replace(r"\?", "[^/]") + "$"
        )
        if any(regex.match("/".join(parts[: n + 1])) for n in range(len(parts))):
            excluded = not negate
    return excluded


def check_dockerignore(patterns: list[str], needed: list[str], unwanted: list[str]) -> list[str]:
    problems = [f".dockerignore leaves out {p}, which the Dockerfile copies" for p in needed
                if dockerignore_excludes(patterns, p)]
    problems += [f".dockerignore sends {p} to the build context" for p in unwanted
                 if not dockerignore_excludes(patterns, p)]
    return problems


# compose.yaml


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def _argv(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value or "")


def _duration(value: Any) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def _mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            mounts.append({"long": True, **v})
        else:
            source, _, rest = interpolate(v).partition(":")
            target, _, mode = rest.partition(":")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            mounts.append({"long": False, "type": kind, "source": source, "target": target,
                           "read_only": "ro" in mode.split(",")})
    return mounts


def _published(port: Any) -> tuple[str, str] | None:
    """(host ip, host port) of a published port, or None when only a container port is given."""
    if isinstance(port, dict):
        return (str(port.get("host_ip", "")), str(port.get("published", ""))) if port.get("published") else None
    parts = interpolate(str(port)).split(":")
    if len(parts) == 1:
        return None
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])


def check_ports_loopback(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in _services(compose).items():
        for port in service.get("ports") or []:
            published = _published(port)
            if published and published[0] not in ("127.0.0.1", "::1", "[::1]"):
                problems.append(f"{name}: port {port} is published on all interfaces; bind it to 127.0.0.1")
    return problems


def check_redis(compose: dict[str, Any]) -> list[str]:
    redis = _services(compose).get("redis")
    if redis is None:
        return ["no redis service"]
    problems = []
    if not image_pinned(str(redis.get("image", ""))):
        problems.append(f"redis image {redis.get('image')} is not pinned to an exact tag")
    test = _argv((redis.get("healthcheck") or {}).get("test"))
    if "redis-cli" not in test or "ping" not in test:
        problems.append("redis has no `redis-cli ping` healthcheck")
    named = compose.get("volumes") or {}
    if not any(m["type"] == "volume" and m["source"] in named and m["target"] == "/data" for m in _mounts(redis)):
        problems.append("redis /data is not on a named volume: queued runs would not survive a restart")
    command = _argv(redis.get("command"))
    if "--appendonly yes" not in command:
        problems.append("redis runs without --appendonly yes")
    if "REDIS_PASSWORD" not in command:
        problems.append("redis takes no password from REDIS_PASSWORD")
    return problems


def check_depends_on_redis(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = _services(compose)
    for name in ("scheduler", "worker", *(n for n in ("ui", "dashboard") if n in services)):
        depends = (services.get(name) or {}).get("depends_on") or {}
        if not isinstance(depends, dict) or (depends.get("redis") or {}).get("condition") != "service_healthy":
            problems.append(f"{name} does not depend on redis being healthy")
    return problems


def check_worker_scalable(compose: dict[str, Any]) -> list[str]:
    worker = _services(compose).get("worker")
    if worker is None:
        return ["no worker service"]
    return _worker_problems("worker", worker)


def _worker_problems(name: str, worker: dict[str, Any]) -> list[str]:
    """A worker service: scalable, stopped gracefully, exec-form, pointed at the redis service."""
    problems = [f"{name} sets {key}: two replicas cannot share it" for key in ("container_name", "hostname", "ports")
                if worker.get(key)]
    env = _env(worker)
    needed = float(env.get("ENVFLOW_SHUTDOWN_GRACE", 30)) + float(env.get("ENVFLOW_CANCEL_GRACE", 10))
    grace = _duration(worker.get("stop_grace_period", "10s"))
    if grace <= needed:
        problems.append(f"{name} stop_grace_period {grace:g}s is not above shutdown + cancel grace ({needed:g}s): "
                        "Docker would SIGKILL a stopping worker's flow")
    command = worker.get("command")
    if not isinstance(command, list) or command[:3] != ["envflow", "worker", "start"]:
        problems.append(f"{name} command must be exec-form `envflow worker start`")
    if "redis" not in env.get("ENVFLOW_REDIS_URL", ""):
        problems.append(f"{name} ENVFLOW_REDIS_URL does not point at the redis service")
    return problems


def merged(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """Compose files merged as ``docker compose -f base -f override`` does for what these checks read:
    mappings key by key, anything else (lists too) replaced by the later file."""
    out = dict(base)
    for override in overrides:
        for key, value in override.items():
            old = out.get(key)
            out[key] = merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run ``envflow worker start``: the worker, and a fleet's other worker services."""
    return {name: s for name, s in _services(compose).items()
            if _argv(s.get("command")).split()[:3] == ["envflow", "worker", "start"]}


def check_fleet(compose: dict[str, Any]) -> list[str]:
    """compose.yaml with compose.fleet.yaml merged in: several worker services, each with its own envs
    (ENVFLOW_ENV_ROOTS), all on the worker's image, which only the worker service builds, and each as
    scalable, stoppable and read-only as the worker."""
    services = _services(compose)
    workers = worker_services(compose)
    image = (services.get("worker") or {}).get("image")
    problems = [] if len(workers) > 1 else ["a fleet needs more than one worker service"]
    roots: dict[str, str] = {}
    for name, service in workers.items():
        if name != "worker":
            if service.get("build"):
                problems.append(f"{name} builds the image: only the worker service builds it (another build "
                                "would leave an untagged copy)")
            if service.get("image") != image:
                problems.append(f"{name} runs {service.get('image')!r}, not the worker's image {image!r}")
            problems += _worker_problems(name, service)
            depends = service.get("depends_on") or {}
            if not isinstance(depends, dict) or (depends.get("redis") or {}).get("condition") != "service_healthy":
                problems.append(f"{name} does not depend on redis being healthy")
            if service.get("user") or service.get("entrypoint"):
                problems.append(f"{name} sets its own user or entrypoint: the image's (uid 10001, tini) must stay")
        mounts = {m["target"]: m for m in _mounts(service)}
        project = mounts.get("/project")
        if project is None or project["type"] != "bind" or project.get("read_only") is not True:
            problems.append(f"{name} must mount the project read-only at /project")
        if service.get("working_dir") != "/project":
            problems.append(f"{name} working_dir is not the project mount")
        venvs = mounts.get("/venvs")
        if venvs is not None and (not venvs["long"] or venvs.get("read_only") is not True):
            problems.append(f"{name} must mount /venvs with the long syntax and read_only: true")
        roots[name] = _env(service).get("ENVFLOW_ENV_ROOTS", "")
        if not roots[name]:
            problems.append(f"{name} sets no ENVFLOW_ENV_ROOTS: it would have every env of the image")
    if len(set(roots.values())) < len(roots):
        problems.append(f"worker services with the same ENVFLOW_ENV_ROOTS have the same envs: {roots}")
    return problems


def check_mounts(compose: dict[str, Any]) -> list[str]:
    """The project read-only at one path in scheduler and workers; /venvs read-only (long syntax) but
    for the one-shot `venvs` service; no other writable bind mount."""
    services = _services(compose)
    problems, project_targets = [], set()
    for name in ("scheduler", "worker"):
        mounts = _mounts(services.get(name) or {})
        project = [m for m in mounts if m["type"] == "bind" and m["target"] not in ("/venvs",)]
        if not project:
            problems.append(f"{name} does not mount the project")
        project_targets |= {m["target"] for m in project}
        venvs = [m for m in mounts if m["target"] == "/venvs"]
        if not venvs or not venvs[0]["long"] or venvs[0].get("read_only") is not True:
            problems.append(f"{name} must mount /venvs with the long syntax and read_only: true")
        if (services.get(name) or {}).get("working_dir") not in {m["target"] for m in project}:
            problems.append(f"{name} working_dir is not the project mount")
    if len(project_targets) > 1:
        problems.append(f"scheduler and worker mount the project at different paths: {sorted(project_targets)}")
    for name, service in services.items():
        for m in _mounts(service):
            if m["type"] == "bind" and not m.get("read_only") and not (name == "venvs" and m["target"] == "/venvs"):
                problems.append(f"{name}: bind mount {m['target']} is writable")
    venvs = services.get("venvs") or {}
    if venvs and str(venvs.get("restart", "no")) != "no":
        problems.append("the venvs service (writable /venvs) must be one-shot: restart \"no\"")
    return problems


def check_deployments(compose: dict[str, Any], root: Path) -> list[str]:
    """ENVFLOW_DEPLOYMENTS registers example files that run a flow in a conda env and in a /venvs venv."""
    scheduler = _services(compose).get("scheduler") or {}
    pattern = _env(scheduler).get("ENVFLOW_DEPLOYMENTS", "")
    targets = [m["target"] for m in _mounts(scheduler) if m["type"] == "bind" and m["target"] != "/venvs"]
    target = next((t for t in targets if pattern.startswith(t.rstrip("/") + "/")), None)
    if not pattern or target is None:
        return [f"scheduler ENVFLOW_DEPLOYMENTS={pattern!r} is not a glob inside the project mount"]
    files = [Path(p) for p in glob.glob(str(root / pattern[len(target):].lstrip("/")), recursive=True)]
    texts = [p.read_text(errors="replace") for p in files if p.is_file()]
    problems = []
    if not any(re.search(r"condaenv\s*[=:]", t) for t in texts):
        problems.append(f"no deployment matching {pattern} runs in a conda env")
    if not any(re.search(r"virtualenv\s*[=:]\s*['\"]?/venvs/", t) for t in texts):
        problems.append(f"no deployment matching {pattern} runs in a venv under /venvs")
    return problems


def check_no_conda_run(compose: dict[str, Any]) -> list[str]:
    return [f"{name}: {key} uses `conda run`, which does not forward SIGTERM"
            for name, service in _services(compose).items() for key in ("command", "entrypoint")
            if uses_conda_run(_argv(service.get(key)).split())]


def check_ui(compose: dict[str, Any]) -> list[str]:
    """The web UI: `envflow ui`, its token from the environment, a port, the UI's own healthcheck."""
    ui = _services(compose).get("ui")
    if ui is None:
        return ["no ui service"]
    problems = []
    if _argv(ui.get("command")).split()[:2] != ["envflow", "ui"]:
        problems.append("ui command must be exec-form `envflow ui`")
    raw = ui.get("environment") or {}
    token = str(raw.get("ENVFLOW_UI_TOKEN", "")) if isinstance(raw, dict) else ""
    if "${ENVFLOW_UI_TOKEN" not in token:
        problems.append("ui does not take ENVFLOW_UI_TOKEN from the environment (.env): in its container it "
                        "binds beyond loopback, which needs the token")
    if "envflow ui --check" not in _argv((ui.get("healthcheck") or {}).get("test")):
        problems.append("ui has no `envflow ui --check` healthcheck")
    if not ui.get("ports"):
        problems.append("ui publishes no port")
    return problems


def check_dashboard(compose: dict[str, Any]) -> list[str]:
    dashboard = _services(compose).get("dashboard")
    if dashboard is None:
        return ["no dashboard service"]
    return [] if dashboard.get("profiles") == ["dashboard"] else ["dashboard must only start with --profile dashboard"]


def load_compose(text: str) -> dict[str, Any]:
    """A compose file as data, its ``!reset`` tags read as the value they reset to (``!reset []``: [])."""

    class Loader(yaml.SafeLoader):
        pass

    def reset(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        return None

    Loader.add_constructor("!reset", reset)
    return json.loads(json.dumps(yaml.load(text, Loader=Loader)))  # noqa: S506 - a SafeLoader with one tag more


HA_SERVICE = "envflow"
HA_DATA = ("redis", "redis-replica")
HA_SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
HA_CLIENTS = ("scheduler", "worker", "venvs", "ui")


def check_ha(compose: dict[str, Any]) -> list[str]:
    """compose.ha.yaml merged over compose.yaml: a primary and a replica, three Sentinels with a quorum of
    two, every envflow service on the Sentinels' URL, all of it on the host's network (loopback)."""
    services = _services(compose)
    problems = [f"no {name} service" for name in (*HA_DATA, *HA_SENTINELS, *HA_CLIENTS) if name not in services]
    if problems:
        return problems
    for name, service in services.items():
        if service.get("network_mode") != "host" and not service.get("profiles"):
            problems.append(f"{name} is not on the host's network: the Sentinels name the primary by a loopback address")
        if service.get("ports") and service.get("network_mode") == "host":
            problems.append(f"{name} publishes ports on the host's network, where they mean nothing")
    replica = _argv(services["redis-replica"].get("command"))
    if "--replicaof 127.0.0.1 ${REDIS_PORT" not in replica:
        problems.append("redis-replica does not replicate the redis service")
    for name in HA_DATA:
        command = _argv(services[name].get("command"))
        for flag in ("--appendonly yes", "--requirepass ${REDIS_PASSWORD", "--masterauth ${REDIS_PASSWORD"):
            if flag not in command:
                problems.append(f"{name} runs without {flag.split(' ')[0]} (a demoted primary must reach the new one)")
    ports = set()
    for name in HA_SENTINELS:
        sentinel = services[name]
        script = _argv(sentinel.get("command"))
        if f"sentinel monitor {HA_SERVICE} 127.0.0.1 ${{REDIS_PORT" not in script or " 2\"" not in script:
            problems.append(f"{name} does not monitor the redis service as {HA_SENTINELS!r}'s quorum of 2")
        if "auth-pass" not in script or "--sentinel" not in script:
            problems.append(f"{name} must run redis-server --sentinel with the data nodes' password (auth-pass)")
        if "sentinel get-master-addr-by-name" not in _argv((sentinel.get("healthcheck") or {}).get("test")):
            problems.append(f"{name} has no healthcheck asking it for the primary")
        ports.add(_env(sentinel).get("SENTINEL_PORT"))
    if len(ports) != len(HA_SENTINELS):
        problems.append(f"the Sentinels do not listen on {len(HA_SENTINELS)} different ports")
    for name in HA_CLIENTS:
        url = _env(services[name]).get("ENVFLOW_REDIS_URL", "")
        if not url.startswith("redis+sentinel://") or not url.endswith(f"/{HA_SERVICE}/0") or url.count(",") != 2:
            problems.append(f"{name} ENVFLOW_REDIS_URL is not the three Sentinels' URL for {HA_SERVICE}")
        depends = services[name].get("depends_on") or {}
        if name != "venvs" and not all((depends.get(s) or {}).get("condition") == "service_healthy" for s in HA_SENTINELS):
            problems.append(f"{name} does not wait for the Sentinels to be healthy")
    return problems


# envs/*.yml


def _python_spec(dependencies: list[Any]) -> str | None:
    for dep in dependencies:
        if isinstance(dep, str) and re.match(r"^python(\s*[=<>!~]|$)", dep.strip()):
            return dep.strip()
    return None


def check_env_file(filename: str, text: str) -> list[str]:
    """One conda environment file: parses, names itself after its file, conda-forge only, a python version."""
    where = f"envs/{filename}"
    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"{where}: invalid YAML: {e}"]
    if not isinstance(env, dict):
        return [f"{where}: expected a mapping with name, channels, dependencies"]
    problems = []
    stem = Path(filename).stem
    if env.get("name") != stem:
        problems.append(f"{where}: name is {env.get('name')!r}; it must be {stem!r}, the file's name")
    channels = env.get("channels") or []
    bad = [c for c in channels if c not in ALLOWED_CHANNELS]
    if bad or "nodefaults" not in channels or "conda-forge" not in channels:
        problems.append(f"{where}: channels must be conda-forge and nodefaults only (got {channels})")
    deps = env.get("dependencies") or []
    spec = _python_spec(deps)
    if spec is None or not re.search(r"\d", spec):
        problems.append(f"{where}: name a python version in dependencies (python=3.X)")
    pip_deps = [d for dep in deps if isinstance(dep, dict) for d in dep.get("pip", [])]
    if any(re.match(r"^envflow\b", str(d)) for d in [*deps, *pip_deps]):
        problems.append(f"{where}: flow envs must not install envflow (flows run without it)")
    variables = env.get("variables")
    if variables is not None and (
        not isinstance(variables, dict)
        or not all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(k)) and isinstance(v, str) for k, v in variables.items())
    ):
        problems.append(f"{where}: variables must map NAME to a string (quote numbers)")
    return problems


def python_version(env: dict[str, Any]) -> tuple[int, ...]:
    spec = _python_spec(env.get("dependencies") or []) or ""
    m = re.search(r"(\d+)\.(\d+)", spec)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def check_env_set(envs: dict[str, dict[str, Any]]) -> list[str]:
    """The shipped envs: one on Python 3.8, one on a current Python with pandas, each with variables."""
    problems = []
    if not any(python_version(e) == (3, 8) for e in envs.values()):
        problems.append("no env on Python 3.8")
    current = [e for e in envs.values() if python_version(e) >= (3, 11)
               and any(str(d).startswith("pandas") for d in e.get("dependencies") or [])]
    if not current:
        problems.append("no env on a current Python (>= 3.11) with pandas")
    problems += [f"envs/{name}.yml has no variables:" for name, e in envs.items() if not e.get("variables")]
    return problems


def main(argv: list[str]) -> int:
    problems, parsed = [], {}
    for name in argv:
        path = Path(name)
        text = path.read_text()
        found = check_env_file(path.name, text)
        problems += found
        if not found:
            parsed[path.stem] = yaml.safe_load(text)
    if not argv:
        problems.append("no env files given")
    elif not problems:
        problems += check_env_set(parsed)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"env files ok: {', '.join(sorted(parsed))}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
