"""Requirements and built env specs without a worker: parsing, refusals, keys, base interpreters, routing."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from envflow.deployment_files import load_file
from envflow.deployments import Deployment, DeploymentFields
from envflow.errors import ConfigError, DeploymentFileError, EnvNotFound
from envflow.flow_runners import SubprocessFlowRunner
from envflow.models import EnvKind, EnvSpec
from envflow.requirements import normalize_all, parse_file, read_file
from envflow.settings import Settings
from envflow.worker.environments import build_key, build_keys, can_build
from envflow.worker.environments.built import env_key
from envflow.worker.environments.interpreters import find_interpreter, probe
from envflow.worker.resolve import EnvResolver

from .support.pythons import PYENV_ROOT, pyenv_python


def test_requirements_are_normalized_sorted_and_deduplicated():
    assert normalize_all(["pandas ==2.2.*", "httpx[http2] >=0.27", "pandas==2.2.*",
                          'tomli; python_version < "3.11"']) == (
        "httpx[http2]>=0.27", "pandas==2.2.*", 'tomli; python_version < "3.11"')
    for bad, message in (("pandas==>2", r"not a valid requirement \(PEP 508\)"), ("-e .", "options are not allowed"),
                         ("x @ https://h/x.whl", "direct URL references"), ("", "empty")):
        with pytest.raises(ValueError, match=message):
            normalize_all(["ok", bad])


def test_requirements_files_keep_hashes_and_refuse_index_options():
    parsed = parse_file("# pinned\n--require-hashes\nalpha==1.0 \\\n    --hash=sha256:AB12  # the wheel\n\nbeta\n")
    assert parsed.lines == ["alpha==1.0 --hash=sha256:ab12", "beta"] and parsed.require_hashes
    assert not parse_file("alpha\n").require_hashes
    for text, message in (("alpha\n-r other.txt\n", "line 2: option '-r' is not allowed"),
                          ("--extra-index-url https://x/simple\n", "line 1: option '--extra-index-url'"),
                          ("alpha --no-deps\n", "line 1: option '--no-deps' is not allowed"),
                          ("alpha --hash=md5:00\n", "is not a hash"), ("./local-dir\n", "line 1:")):
        with pytest.raises(ValueError, match=message):
            parse_file(text)
    with pytest.raises(ValueError, match="not UTF-8"):
        read_file(b"alpha\n\xff\n")


def test_deployment_fields_and_spec():
    fields = DeploymentFields(name="d", flow_location="f.py", requirements=["b", "a==1"], python="3.12")
    spec = fields.env_spec("f" * 64)
    assert spec == EnvSpec(kind=EnvKind.REQUIREMENTS, requirements=("a==1", "b"), requirements_digest="f" * 64,
                           python="3.12")
    assert str(spec) == f"requirements: a==1, b, requirements file sha256:{'f' * 12} (python 3.12)"
    assert DeploymentFields(name="d", flow_location="f.py", python="3.8").env_spec().kind is EnvKind.REQUIREMENTS
    assert EnvSpec.model_validate_json(spec.model_dump_json()) == spec  # as a run's snapshot stores it
    with pytest.raises(ConfigError, match="requirements: item 1: 'x==>1' is not a valid requirement"):
        Deployment(name="d", flow_location="f.py", requirements=["x==>1"])
    with pytest.raises(ConfigError, match="give requirements_file and python .* or condaenv"):
        Deployment(name="d", flow_location="f.py", requirements_file="r.txt", python="3.8", condaenv="ml")
    runner = SubprocessFlowRunner(requirements=["a"], python="3.12", requirements_file="r.txt")
    assert runner.deployment_fields() == {"requirements": ["a"], "python": "3.12", "requirements_file": "r.txt"}


def test_requirements_file_is_read_beside_the_deployment_file(tmp_path):
    (tmp_path / "flows.py").write_text("from envflow import flow\n\n@flow\ndef f():\n    pass\n")
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "requirements.txt").write_text("alpha==1.0\n")
    (tmp_path / "d.yaml").write_text("- {name: a, flow_location: flows.py, requirements_file: reqs/requirements.txt}\n"
                                     "- {name: b, flow_location: flows.py, requirements_file: missing.txt}\n")
    from envflow.deployment_files import build_record, record_and_files

    good, missing = load_file(tmp_path / "d.yaml").deployments
    record, _, text = record_and_files(good, "default")
    assert text == "alpha==1.0\n" and record.env.requirements_digest == read_file(text.encode())[1]
    with pytest.raises(DeploymentFileError, match=f"requirements_file: cannot read {tmp_path / 'missing.txt'}"):
        build_record(missing, "default")


def test_keys_change_with_what_decides_an_env(tmp_path):
    base = probe(Path(sys.executable))
    settings = Settings(state_dir=tmp_path)
    spec = EnvSpec(kind=EnvKind.REQUIREMENTS, requirements=("alpha",))
    key = env_key(spec, base, settings)
    assert key == env_key(EnvSpec(kind=EnvKind.REQUIREMENTS, requirements=("alpha",)), base, settings)
    assert len(key) == 64
    others = [env_key(spec.model_copy(update={"requirements": ("alpha", "beta")}), base, settings),
              env_key(spec.model_copy(update={"requirements_digest": "0" * 64}), base, settings),
              env_key(spec, base, Settings(state_dir=tmp_path, pip_find_links="/wheels")),
              env_key(spec, base.__class__(base.path, Path("/elsewhere/python"), base.version), settings)]
    assert len({key, *others}) == 5
    # A rotated token in an index URL does not rebuild every env.
    assert env_key(spec, base, Settings(state_dir=tmp_path, pip_index_url="https://u:one@h/simple")) == \
        env_key(spec, base, Settings(state_dir=tmp_path, pip_index_url="https://u:two@h/simple"))


def test_base_interpreters_by_path_version_and_name(tmp_path):
    # pyenv's interpreters may sit under HOME (root's here): trusted once its root is an explicit env root
    roots = os.pathsep.join([str(tmp_path), str(PYENV_ROOT)])
    resolver = EnvResolver(Settings(state_dir=tmp_path, env_roots=roots), cwd=tmp_path)
    assert find_interpreter(sys.executable, resolver).version[:2] == sys.version_info[:2]
    assert find_interpreter(None, resolver).version[:2] == sys.version_info[:2]
    with pytest.raises(EnvNotFound, match=r"python '2\.1': no Python 2\.1 on this worker"):
        find_interpreter("2.1", resolver)
    with pytest.raises(EnvNotFound, match="no conda env named 'no-such-env'"):
        find_interpreter("no-such-env", resolver)
    assert can_build(None, resolver) and not can_build("2.1", resolver)
    assert build_key(EnvSpec(kind=EnvKind.REQUIREMENTS, python="py312")) == "build:py312"
    if pyenv_python("3.8"):
        assert find_interpreter("3.8", resolver).version[:2] == (3, 8)
        assert {"build:", "build:3.8"} <= build_keys(resolver)


def planted_python(home: Path, version: str, marker: Path) -> Path:
    """What a flow of the worker's uid can leave under the worker's HOME: a "python" in pyenv's place
    that records being run."""
    path = home / ".pyenv" / "versions" / version / "bin" / f"python{version.rsplit('.', 1)[0]}"
    path.parent.mkdir(parents=True)
    path.write_text(f"#!/bin/sh\necho ran >> {marker}\necho {version}; echo cpython\n")
    path.chmod(0o755)
    return path


def test_a_python_planted_under_the_flows_home_is_refused_unrun(tmp_path):
    home, marker = tmp_path / "home", tmp_path / "planted-ran"
    planted = planted_python(home, "3.11.99", marker)
    resolver = EnvResolver(Settings(state_dir=tmp_path / "state", env_roots=str(tmp_path / "envs")),
                           environ={"HOME": str(home), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    with pytest.raises(EnvNotFound, match=rf"refused {re.escape(str(planted))}: it is under {re.escape(str(home))}, "
                                          r"the flows' HOME.*ENVFLOW_ENV_ROOTS"):
        find_interpreter("3.11.99", resolver)
    if Path("/usr/bin/python3.11").exists():  # a system 3.11 is still found by version, not the planted one
        assert find_interpreter("3.11", resolver).path == Path("/usr/bin/python3.11")
    assert not marker.exists()
    trusting = EnvResolver(Settings(state_dir=tmp_path / "state", env_roots=str(home / ".pyenv")),
                           environ={"HOME": str(home), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert find_interpreter("3.11.99", trusting).path == planted  # the operator's explicit root is trusted
