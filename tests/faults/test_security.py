"""Redis with a password and with TLS; payloads only envflow's; secrets never shown."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from envflow.client import Client
from envflow.errors import QueueError

from ..support.flows import deploy, write_flow
from ..support.processes import RedisServer, envflow_command

PASSWORD = "s3cr3t-Pa55"
FLOW = """
    import os
    from envflow import flow

    @flow
    def secretive():
        print("token has", len(os.environ["API_TOKEN"]), "characters")
        return "ok"
"""


def e2e(env_vars, settings, url, start_worker, venv, workdir):
    env_vars["ENVFLOW_REDIS_URL"] = url
    client = Client(settings=settings.model_copy(update={"redis_url": url}))
    name = deploy(client, write_flow(workdir, FLOW), "secretive", virtualenv=str(venv),
                  env={"API_TOKEN": "tok-123456"})
    worker = start_worker()
    run = client.run(name)
    assert [line.text for line in run.follow(timeout=30)] == ["token has 10 characters"]
    assert run.result(timeout=30) == "ok"
    return client, worker


def test_password_protected_redis(tmp_path, env_vars, settings, start_worker, venv, workdir):
    server = RedisServer(tmp_path, "--requirepass", PASSWORD)
    server.start()
    try:
        client, worker = e2e(env_vars, settings, server.url, start_worker, venv, workdir)
        assert PASSWORD not in worker.output() and "tok-123456" not in worker.output()
        env = {**os.environ, **env_vars}
        shown = subprocess.run(envflow_command("config"), env=env, capture_output=True, text=True, check=True)
        inspected = subprocess.run(envflow_command("deployment", "inspect", "secretive/test"), env=env,
                                   capture_output=True, text=True, check=True)
        assert PASSWORD not in shown.stdout and "tok-123456" not in inspected.stdout
        wrong = server.url.replace(PASSWORD, "wrong-password")
        with pytest.raises(QueueError) as e:
            Client(wrong).deployments()
        assert "refused the credentials" in str(e.value) and "wrong-password" not in str(e.value)
        bad = subprocess.run(envflow_command("deployment", "ls"), capture_output=True, text=True,
                             env={**env, "ENVFLOW_REDIS_URL": wrong})
        assert bad.returncode == 1 and "wrong-password" not in bad.stderr and "Traceback" not in bad.stderr
    finally:
        server.stop()


def make_certs(directory):
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=envflow-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")
def test_tls_redis(tmp_path, env_vars, settings, start_worker, venv, workdir):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    server = RedisServer(tmp_path, "--requirepass", PASSWORD, tls_dir=certs)
    try:
        server.start()
    except RuntimeError:
        pytest.skip("this redis-server was built without TLS support")
    try:
        assert server.url.startswith("rediss://")
        client, worker = e2e(env_vars, settings, server.url, start_worker, venv, workdir)
        assert PASSWORD not in worker.output()
    finally:
        server.stop()
