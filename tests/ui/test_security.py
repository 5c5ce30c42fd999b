"""Who may use the UI and what a page lets through: token, CSRF, Host names, escaping, redaction."""

from __future__ import annotations

import os
import re
import subprocess

from envflow.deployment_files import build_record
from envflow.deployments import Deployment
from envflow.models import RunState

from ..support.flows import deploy, load_flows
from ..support.processes import envflow_command, free_port
from .helpers import Session, sse_events, sse_lines, wait_for

TOKEN = "s3cret-token-for-the-ui-tests"
EVIL = "<script>document.body.dataset.pwned='1'</script><img src=x onerror=\"document.body.dataset.pwned='2'\">"


def test_binding_beyond_loopback_needs_a_token(env_vars, workdir):
    env = {**os.environ, **env_vars}
    port = str(free_port())
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        done = subprocess.run(envflow_command("ui", "--host", host, "--port", port), env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "needs ENVFLOW_UI_TOKEN" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    short = subprocess.run(envflow_command("ui", "--host", "0.0.0.0", "--port", port), cwd=workdir, capture_output=True,
                           text=True, env={**env, "ENVFLOW_UI_TOKEN": "short"}, timeout=60)
    assert short.returncode == 1 and "too short" in short.stderr


def test_token_is_asked_for_and_enforced(start_ui):
    ui = start_ui(ui_token=TOKEN)
    s = Session(ui.base)
    page = s.get("/runs?state=FAILED")
    assert page.status == 303 and page.location == "/login?next=%2Fruns%3Fstate%3DFAILED"
    assert s.get("/healthz").status == 200  # for healthchecks: says only whether Redis answers
    for path in ("/metrics", "/runs/0123456789abcdef0123456789abcdef/events", "/deployments"):
        assert s.get(path, headers={"Accept": "*/*"}).status == 401
    assert s.post("/queues/default/pause", token="x").status == 401
    login = s.get("/login?next=/workers")
    assert login.status == 200 and 'type="password"' in login.text
    wrong = s.post("/login", {"token": "not-it", "next": "/workers"}, token=s.csrf("/login"))
    assert wrong.status == 401 and "wrong token" in wrong.text
    assert s.get("/runs").status == 303
    right = s.post("/login", {"token": TOKEN, "next": "/workers"}, token=s.csrf("/login"))
    assert right.status == 303 and right.location == "/workers"
    assert TOKEN not in right.headers.get("set-cookie", "")  # the cookie is derived from the token, not the token
    assert s.get("/runs").status == 200 and s.get("/workers").status == 200
    assert s.post("/logout").status == 303
    assert s.get("/runs").status == 303

    scraper = Session(ui.base)
    assert scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert scraper.get("/metrics", headers={"Authorization": "Bearer nope"}).status == 401


def test_posts_need_their_csrf_token(client, flows_file, venv, session):
    name = deploy(client, flows_file, "hello", virtualenv=str(venv))
    token = session.csrf()
    assert session.post(f"/deployments/{name}/pause", token="").status == 403
    assert session.post(f"/deployments/{name}/pause", token="0" * 64).status == 403
    other = Session(session.base)
    assert other.post(f"/deployments/{name}/pause", token=token).status == 403  # another browser's token
    cross = session.post(f"/deployments/{name}/pause", token=token, headers={"Origin": "http://evil.example"})
    assert cross.status == 403
    assert session.post(f"/deployments/{name}/run", token="").status == 403
    assert client.paused_deployments() == set() and not client.runs(name)
    assert session.request("GET", f"/deployments/{name}/pause").status in (404, 405)  # never a GET
    assert session.post(f"/deployments/{name}/pause", token=token, headers={"Origin": session.base}).status == 303
    assert client.paused_deployments() == {name}


def test_only_loopback_names_are_served_without_a_token(ui):
    s = Session(ui.base)
    assert s.get("/runs", headers={"Host": "evil.example"}).status == 403  # a rebound DNS name
    assert s.get("/runs", headers={"Host": f"localhost:{ui.port}"}).status == 200


def test_every_field_and_the_output_are_escaped(client, start_worker, flows_file, venv, workdir, session):
    flow_path = workdir / "evil.py"
    flow_path.write_text(
        "import sys\nfrom envflow import flow\n\n@flow\ndef show(text: str = ''):\n"
        "    print(text)\n    print(text, file=sys.stderr)\n    raise RuntimeError(text)\n")
    namespace = load_flows(flow_path)
    record, source = build_record(Deployment(name="evil", flow=namespace["show"], virtualenv=str(venv),
                                             env={"API_TOKEN": "hunter2", "URL": "https://u:pw@example.com/x"}),
                                  "default")
    # Names are checked when deployments are made through the API; Redis can still hold anything.
    record = record.model_copy(update={"name": f"{EVIL}/x", "description": EVIL, "tags": [EVIL]})
    client.create_deployment(record, source)
    start_worker()
    run = client.run(record.name, {"text": EVIL})
    assert run.wait(30) is RunState.FAILED

    pages = ["/runs", f"/runs/{run.id}", f"/runs/{run.id}/summary", "/deployments",
             "/deployments/" + record.name.replace("<", "%3C").replace(">", "%3E").replace('"', "%22").replace(" ", "%20"),
             "/workers"]
    for path in pages:
        page = session.get(path)
        assert page.status == 200, path
        assert "<script>document" not in page.text and "<img src=x" not in page.text, path
        assert set(re.findall(r"<script[^>]*>", page.text)) <= {'<script src="/static/app.js" defer>'}, path
    detail = session.get(pages[4]).text
    assert "&lt;script&gt;document.body.dataset.pwned=" in detail
    assert "hunter2" not in detail and "pw@" not in detail and "API_TOKEN=***" in detail  # redacted as in the CLI
    assert "&lt;img src=x onerror=" in session.get(f"/runs/{run.id}").text  # the parameter and the error
    # The output reaches the page as JSON that the script inserts as text (the browser test checks it).
    assert sse_lines(sse_events(session.base, f"/runs/{run.id}/events"))[0][1] == EVIL
    assert session.get(f"/runs/{run.id}/output.txt").headers["content-type"] == "text/plain; charset=utf-8"
    csp = session.get("/runs").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def latin1(text: str) -> str:
    """``text``'s UTF-8 bytes as the header value urllib sends (it encodes headers as latin-1)."""
    return text.encode().decode("latin-1")


def test_tokens_with_any_characters_are_compared_not_crashed_on(start_ui):
    token = "tökén-ünïcode-ツ-for-the-ui"
    ui = start_ui(ui_token=token)
    s = Session(ui.base)
    for bearer in ("ünïcode", latin1("ツ ツ"), token[:10]):
        assert s.get("/metrics", headers={"Authorization": f"Bearer {latin1(bearer)}"}).status == 401
    assert s.get("/metrics", headers={"Authorization": f"Bearer {latin1(token)}"}).status == 200
    assert s.post("/login", {"token": "wrong-ツ-token", "next": "/runs"}, token=s.csrf("/login")).status == 401
    assert s.post("/login", {"token": token, "next": "/runs"}, token=s.csrf("/login")).status == 303
    assert s.get("/runs").status == 200
    assert s.post("/queues/default/pause", token="ツ-not-the-csrf-token").status == 403
    assert s.post("/queues/default/pause", token="", headers={"X-CSRF-Token": latin1("ツ")}).status == 403
    assert "Traceback" not in ui.output()


def test_sessions_expire_and_logging_out_ends_them(start_ui):
    ui = start_ui(ui_token=TOKEN, ui_session_ttl="3")
    s = Session(ui.base)
    login = s.post("/login", {"token": TOKEN, "next": "/runs"}, token=s.csrf("/login"))
    assert "Max-Age=3" in login.headers["set-cookie"], login.headers
    cookie = next(c.value for c in s.jar if c.name == "envflow_session")
    copy = Session(ui.base)
    copy.opener.addheaders = [("Cookie", f"envflow_session={cookie}")]
    assert copy.get("/runs").status == 200  # the same cookie, replayed elsewhere
    assert s.post("/logout").status == 303
    assert copy.get("/runs").status == 303  # ended on the server, not only dropped by the browser
    again = Session(ui.base)
    again.post("/login", {"token": TOKEN, "next": "/runs"}, token=again.csrf("/login"))
    assert again.get("/runs").status == 200
    wait_for(lambda: again.get("/runs").status == 303, "the session to expire", timeout=10, interval=0.5)
    other = Session(ui.base)
    forged = cookie.rsplit(".", 2)[0].rsplit(".", 1)[0] + f".{2**40}." + cookie.rsplit(".", 1)[1]
    other.opener.addheaders = [("Cookie", f"envflow_session={forged}")]
    assert other.get("/runs").status == 303  # a later expiry breaks the signature
