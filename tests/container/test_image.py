"""The image on its own: user, PID 1, baked conda envs and their variables, envflow and its commands."""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import env_names, output_of, read_env_file, run_in_image


def test_runs_as_fixed_non_root_user(image, docker_client) -> None:  # type: ignore[no-untyped-def]
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert output_of(docker_client, "id", "-u").strip() == "10001"
    output_of(docker_client, "touch", "/var/lib/envflow/writable")  # ENVFLOW_STATE_DIR


def test_tini_is_pid_1_and_the_worker_is_the_default_command(image, docker_client) -> None:  # type: ignore[no-untyped-def]
    assert output_of(docker_client, "cat", "/proc/1/cmdline").split("\0")[0] == "/usr/bin/tini"
    assert image.attrs["Config"]["Cmd"] == ["envflow", "worker", "start"]
    assert image.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "envflow", "worker", "health"]


def test_output_of_a_short_container_is_read_every_time(image, docker_client) -> None:  # type: ignore[no-untyped-def]
    """Docker 20.10 lost the output of `docker run --rm` style reads about one time in three."""
    reads = [output_of(docker_client, "cat", "/proc/1/cmdline") for _ in range(10)]
    assert all("tini" in read for read in reads), reads


def test_envflow_commands_and_settings(image, docker_client) -> None:  # type: ignore[no-untyped-def]
    assert "version" in output_of(docker_client, "envflow", "--version")
    settings = json.loads(output_of(docker_client, "envflow", "config", "--json"))
    assert settings["state_dir"] == "/var/lib/envflow" and settings["env_roots"] == "/opt/conda:/venvs"
    listed = output_of(docker_client, "envflow", "env", "ls")
    for name in env_names():
        assert name in listed


@pytest.mark.parametrize("name", env_names())
def test_each_env_file_is_a_conda_env_with_its_variables(image, docker_client, name: str) -> None:  # type: ignore[no-untyped-def]
    envs = json.loads(output_of(docker_client, "conda", "env", "list", "--json"))["envs"]
    assert f"/opt/conda/envs/{name}" in envs
    variables = json.loads(output_of(docker_client, "conda", "env", "config", "vars", "list", "-n", name, "--json"))
    assert variables == read_env_file(name).get("variables", {})


@pytest.mark.parametrize("name", env_names())
def test_flow_envs_do_not_have_envflow(image, docker_client, name: str) -> None:  # type: ignore[no-untyped-def]
    status, _ = run_in_image(docker_client, f"/opt/conda/envs/{name}/bin/python", "-c", "import envflow")
    assert status != 0


def test_image_size_per_layer(image) -> None:  # type: ignore[no-untyped-def]
    """Prints the size of each layer (docs/run-with-docker.md lists them) and guards against a runaway image."""
    total = 0
    for layer in reversed(image.history()):
        total += layer["Size"]
        sys.stderr.write(f"{layer['Size'] / 1e6:9.1f} MB  {layer['CreatedBy'][:110]}\n")
    sys.stderr.write(f"{total / 1e6:9.1f} MB  total\n")
    assert total < 2.5e9
