"""The web app's HTTP API and pages through an ASGI test client, on SQLite and PostgreSQL:
authentication, every endpoint, errors, CSRF, read-only, escaping and headers."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from roadie import Roadie, Status
from roadie.testing import BackgroundWorker, make_app, wait_final, wait_for

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)
pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT_NAME = "<img src=x onerror=alert(1)>"


def client_for(app: Roadie, **options: Any) -> TestClient:
    from roadie.web import create_app

    return TestClient(create_app(app, **options), follow_redirects=False)


@pytest.fixture
def web(app: Roadie) -> Iterator[TestClient]:
    with client_for(app, token=TOKEN) as client:
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login(client: TestClient) -> None:
    response = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert response.status_code == 303


# -- authentication ---------------------------------------------------------------------


def test_the_api_needs_the_bearer_token(web: TestClient) -> None:
    response = web.get("/api/tasks")
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert web.get("/api/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/api/tasks", headers=AUTH).status_code == 200
    assert web.get("/api/openapi.json").status_code == 200  # the description is public


def test_browsers_log_in_with_a_signed_strict_httponly_cookie(web: TestClient) -> None:
    response = web.get("/tasks/1?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Ftasks%2F1%3Fx%3D1"
    page = web.get("/login")
    assert 'name="token"' in page.text
    wrong = web.post("/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    right = web.post("/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert right.status_code == 303 and right.headers["location"] == "/"  # never off-site
    cookie = next(c for c in right.headers.get_list("set-cookie")
                  if c.startswith("roadie_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    assert web.get("/").status_code == 200
    assert web.get("/api/tasks").status_code == 200  # the cookie also reads the API
    forged = web.cookies.get("roadie_session")[:-3] + "abc"
    web.cookies.set("roadie_session", forged)
    assert web.get("/").status_code == 303


def test_without_a_token_only_loopback_hosts_are_answered(app: Roadie) -> None:
    with client_for(app) as client:
        assert client.get("/api/tasks").status_code == 200
        rebound = client.get("/api/tasks", headers={"Host": "evil.example"})
        assert rebound.status_code == 400
        assert "loopback" in rebound.json()["error"]
        assert client.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200


# -- every endpoint ---------------------------------------------------------------------


def test_add_list_filter_and_read_tasks(web: TestClient) -> None:
    created = web.post("/api/tasks", headers=AUTH, json={
        "executor": "roadie-examples:count", "context": {"n": 3}, "name": "count to 3",
        "owner": "alice", "group": "site-1"})
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["id"] > 0 and task["status"] == "new" and task["context"] == {"n": 3}
    web.post("/api/tasks", headers=AUTH, json={"executor": "roadie-examples:echo",
                                               "name": "Echo Me", "owner": "bob"})
    listing = web.get("/api/tasks", headers=AUTH).json()
    assert [t["name"] for t in listing["tasks"]] == ["Echo Me", "count to 3"]
    assert listing["counts"]["new"] == 2 and listing["counts"]["failed"] == 0

    def names(**params: Any) -> list[str]:
        response = web.get("/api/tasks", headers=AUTH, params=params)
        assert response.status_code == 200, response.text
        return [t["name"] for t in response.json()["tasks"]]

    assert names(owner="alice") == ["count to 3"]
    assert names(group="site-1") == ["count to 3"]
    assert names(executor="roadie-examples:echo") == ["Echo Me"]
    assert names(q="echo") == ["Echo Me"]
    assert names(q="%") == []  # LIKE wildcards are plain text
    assert names(status="new") == ["Echo Me", "count to 3"]
    assert names(status="failed") == []
    page = web.get("/api/tasks", headers=AUTH, params={"limit": 1}).json()
    assert len(page["tasks"]) == 1 and page["next_offset"] == 1
    assert names(limit=1, offset=1) == ["count to 3"]
    one = web.get(f"/api/tasks/{task['id']}", headers=AUTH).json()
    assert one["owner"] == "alice" and one["attachments"] == [] and one["attempts_log"] == []


def test_cancel_retry_resume_and_delete(web: TestClient, app: Roadie) -> None:
    task = app.add_task("roadie-examples:count", {"n": 2}, name="c")
    cancelled = web.post(f"/api/tasks/{task.id}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = web.post(f"/api/tasks/{task.id}/cancel", headers=AUTH)
    assert again.status_code == 409 and "already ended" in again.json()["error"]
    retried = web.post(f"/api/tasks/{task.id}/retry", headers=AUTH)
    assert retried.status_code == 200 and retried.json()["status"] == "new"
    refused = web.post(f"/api/tasks/{task.id}/resume", headers=AUTH)
    assert refused.status_code == 409 and "only failed or cancelled" in refused.json()["error"]
    web.post(f"/api/tasks/{task.id}/cancel", headers=AUTH)
    assert web.post(f"/api/tasks/{task.id}/resume", headers=AUTH).json()["status"] == "new"
    deleted = web.delete(f"/api/tasks/{task.id}", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": task.id}
    gone = web.get(f"/api/tasks/{task.id}", headers=AUTH)
    assert gone.status_code == 404 and f"{task.id}" in gone.json()["error"]


def test_status_attempts_attachments_nodes_plugins_executors(web: TestClient,
                                                             app: Roadie) -> None:
    task = app.add_task("roadie-examples:count", {"n": 4, "delay": 0}, name="c")
    app.run_worker(concurrency=1, until_idle=True)
    app.add_attachment(task.id, "report.html", b"<script>alert(1)</script>",
                       media_type="text/html")
    status = web.get(f"/api/tasks/{task.id}/status", headers=AUTH).json()
    assert status["status"] == "successful" and status["progress"]["percent"] == 100
    assert status["status_attributes"]["done"] == 4
    attempts = web.get(f"/api/tasks/{task.id}/attempts", headers=AUTH).json()["attempts"]
    assert [a["status"] for a in attempts] == ["successful"]
    files = web.get(f"/api/tasks/{task.id}/attachments", headers=AUTH).json()["attachments"]
    assert [f["name"] for f in files] == ["report.html"]
    download = web.get(f"/api/tasks/{task.id}/attachments/report.html", headers=AUTH)
    assert download.status_code == 200 and download.content == b"<script>alert(1)</script>"
    assert download.headers["content-disposition"].startswith('attachment; filename="report')
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["x-content-type-options"] == "nosniff"
    missing = web.get(f"/api/tasks/{task.id}/attachments/nope.txt", headers=AUTH)
    assert missing.status_code == 404 and "nope.txt" in missing.json()["error"]
    nodes = web.get("/api/nodes", headers=AUTH).json()["nodes"]
    assert len(nodes) == 1 and nodes[0]["state"] == "stopped"
    plugins = web.get("/api/plugins", headers=AUTH).json()
    examples = next(p for p in plugins["plugins"] if p["name"] == "roadie-examples")
    assert "roadie-examples:count" in [e["name"] for e in examples["executors"]]
    executors = web.get("/api/executors", headers=AUTH).json()["executors"]
    count = next(e for e in executors if e["name"] == "roadie-examples:count")
    assert {"installed": True, "nodes": 0, "executor": "roadie-examples:count"}.items() <= \
        count.items()


def test_bad_input_gets_a_4xx_with_a_message(web: TestClient) -> None:
    def post(body: Any, **kwargs: Any) -> Any:
        return web.post("/api/tasks", headers=AUTH, content=body if isinstance(body, bytes)
                        else json.dumps(body).encode(), **kwargs)

    cases = {
        b"{not json": (400, "not valid JSON"),
        b"": (400, "empty"),
        json.dumps([1, 2]).encode(): (422, "JSON object"),
        json.dumps({"context": {}}).encode(): (422, "'executor' is required"),
        json.dumps({"executor": "roadie-examples:cont"}).encode(): (422, "Did you mean"),
        json.dumps({"executor": "nodist"}).encode(): (422, "nodist"),
        json.dumps({"executor": "roadie-examples:count", "context": [1]}).encode():
            (422, "'context' must be a JSON object"),
        json.dumps({"executor": "roadie-examples:count", "priority": "high"}).encode():
            (422, "'priority'"),
        json.dumps({"executor": "roadie-examples:count", "name": "a\x00b"}).encode():
            (422, "NUL"),
        json.dumps({"executor": "roadie-examples:count", "name": "x" * 300}).encode():
            (422, "longer than 255"),
        json.dumps({"executor": "roadie-examples:count", "bogus": 1}).encode():
            (422, "unknown field"),
        json.dumps({"executor": "roadie-examples:count", "delay": -1}).encode():
            (422, "'delay'"),
    }
    for body, (status, text) in cases.items():
        response = post(body)
        assert response.status_code == status, (body, response.text)
        assert text in response.json()["error"], (body, response.json())
    assert web.get("/api/tasks", headers=AUTH, params={"limit": "x"}).status_code == 422
    assert web.get("/api/tasks", headers=AUTH, params={"status": "bogus"}).status_code == 422
    assert web.get("/api/tasks/99999999999999999999999", headers=AUTH).status_code == 404
    assert web.get("/api/tasks/abc", headers=AUTH).status_code == 404
    assert web.get("/api/nothing", headers=AUTH).json()["status"] == 404


# -- CSRF, read-only, escaping, headers ---------------------------------------------------


def test_state_changing_requests_need_a_csrf_token(app: Roadie) -> None:
    task = app.add_task("roadie-examples:count", {"n": 2}, name="c")
    with client_for(app, token=TOKEN) as web:
        login(web)
        assert web.post(f"/tasks/{task.id}/cancel").status_code == 403  # no form token
        assert web.post(f"/tasks/{task.id}/cancel",
                        data={"csrf_token": "0" * 64}).status_code == 403
        assert web.post(f"/api/tasks/{task.id}/cancel").status_code == 403  # cookie alone
        token = csrf_of(web.get(f"/tasks/{task.id}").text)
        foreign = web.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token},
                           headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        header_only = web.post(f"/tasks/{task.id}/retry", headers={"X-CSRF-Token": token})
        assert header_only.status_code == 409  # past the CSRF check: a new task has no retry
        done = web.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token})
        assert done.status_code == 303 and done.headers["location"].endswith("done=cancel")
        assert app.get_task(task.id).status == Status.CANCELLED
    with client_for(app) as local:  # no token: JSON bodies only (a cross-site form cannot)
        assert local.post(f"/api/tasks/{task.id}/retry").status_code == 403
        assert local.post(f"/api/tasks/{task.id}/retry",
                          headers={"Content-Type": "application/json"}).status_code == 200


def test_read_only_refuses_every_change(app: Roadie) -> None:
    task = app.add_task("roadie-examples:count", {"n": 2}, name="c")
    with client_for(app, token=TOKEN, read_only=True) as web:
        for method, path in (("POST", "/api/tasks"), ("DELETE", f"/api/tasks/{task.id}"),
                             ("POST", f"/api/tasks/{task.id}/cancel"),
                             ("POST", f"/tasks/{task.id}/cancel")):
            response = web.request(method, path, headers=AUTH, json={})
            assert response.status_code == 403, path
            assert "read-only" in response.text
        assert web.get("/api/tasks", headers=AUTH).status_code == 200
        login(web)
        assert "Cancel</button>" not in web.get(f"/tasks/{task.id}").text
    assert app.get_task(task.id).status == Status.NEW


def test_everything_is_escaped_and_headers_are_safe(web: TestClient, app: Roadie) -> None:
    task = app.add_task("roadie-examples:echo", {SCRIPT_NAME: SCRIPT_NAME}, name=SCRIPT_NAME,
                        owner=SCRIPT_NAME)
    login(web)
    app.pause_executor("roadie-examples:echo", by=SCRIPT_NAME)
    for path in ("/", f"/tasks/{task.id}", "/plugins", "/nodes", "/submit", "/x/examples",
                 "/executors"):
        response = web.get(path)
        assert response.status_code == 200, path
        assert "<img" not in response.text, path
        assert response.headers["x-content-type-options"] == "nosniff"
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "&lt;img src=x onerror=alert(1)&gt;" in web.get(f"/tasks/{task.id}").text
    assert "by &lt;img src=x onerror=alert(1)&gt;" in web.get("/executors").text
    for path in ("/api/tasks", "/api/openapi.json", "/static/roadie.js", "/login"):
        assert web.get(path, headers=AUTH).headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in web.get("/").text.replace('<script src="/static/roadie.js" '
                                                       'defer></script>', "")


def test_pages_submit_act_and_show_plugins_extensions(web: TestClient, app: Roadie) -> None:
    login(web)
    form = web.get("/submit").text
    assert '<option value="roadie-examples:count"' in form
    token = csrf_of(form)
    bad = web.post("/submit", data={"csrf_token": token, "executor": "roadie-examples:count",
                                    "context": "{oops"})
    assert bad.status_code == 422 and "not valid JSON" in bad.text
    wrong = web.post("/submit", data={"csrf_token": token, "executor": "roadie-examples:cnt",
                                      "context": "{}"})
    assert wrong.status_code == 422 and "Did you mean" in wrong.text
    added = web.post("/submit", data={"csrf_token": token, "executor": "roadie-examples:count",
                                      "context": '{"n": 2, "delay": 0}', "name": "from form"})
    assert added.status_code == 303
    task_id = int(added.headers["location"].split("/")[-1].split("?")[0])
    app.run_worker(concurrency=1, until_idle=True)
    page = web.get(f"/tasks/{task_id}").text
    assert "roadie-examples timing" in page and "seconds in execute" in page  # plugin panel
    assert 'role="progressbar"' in page or "<progress" in page
    detail = web.get(f"/api/tasks/{task_id}").json()
    assert detail["panels"][0]["title"] == "roadie-examples timing"
    examples = web.get("/x/examples.json").json()
    assert {"executor": "roadie-examples:count"}.items() <= examples["data"][0].items() or \
        any(row["executor"] == "roadie-examples:count" for row in examples["data"])
    token = csrf_of(page)
    assert web.post(f"/tasks/{task_id}/delete", data={"csrf_token": token}).status_code == 303
    assert web.get(f"/tasks/{task_id}").status_code == 404


def test_mounted_inside_another_asgi_app(app: Roadie) -> None:
    from roadie.web import create_app
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    task = app.add_task("roadie-examples:count", {"n": 2}, name="mounted")
    outer = Starlette(routes=[
        Route("/", lambda request: PlainTextResponse("the host app")),
        Mount("/ops/roadie", app=create_app(app, token=TOKEN)),
    ])
    with TestClient(outer, follow_redirects=False) as client:
        assert client.get("/").text == "the host app"
        assert client.get("/ops/roadie/").headers["location"].startswith("/ops/roadie/login")
        response = client.post("/ops/roadie/login", data={"token": TOKEN, "next": "/"})
        assert response.headers["location"] == "/ops/roadie/"
        page = client.get("/ops/roadie/")
        assert f'href="/ops/roadie/tasks/{task.id}"' in page.text
        assert 'src="/ops/roadie/static/roadie.js"' in page.text
        assert client.get("/ops/roadie/static/roadie.css").status_code == 200
        api = client.get(f"/ops/roadie/api/tasks/{task.id}", headers=AUTH)
        assert api.json()["name"] == "mounted"


# -- live updates --------------------------------------------------------------------------


def test_one_feed_serves_every_stream_with_one_listener(app: Roadie) -> None:
    """Two SSE streams on a real server see a running task's progress and end; the process
    has one hub subscription for the web app however many streams are open."""
    import httpx
    from roadie.web import create_app

    from tests.webserver import ServerThread

    task = app.add_task("roadie-examples:count", {"n": 30, "delay": 0.05}, name="live")
    asgi = create_app(app, token=TOKEN, poll_interval=0.2)
    hub = app.store.listen()
    seen: list[list[dict[str, Any]]] = [[], []]
    with ServerThread(asgi) as server, \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        streams = [http.stream("GET", f"/events?id={task.id}") for _ in range(2)]
        responses = [s.__enter__() for s in streams]
        try:
            assert responses[0].headers["content-type"].startswith("text/event-stream")
            assert asgi.state.feed.clients == 2
            feeds = [cb for cb in list(hub._subscribers.values())
                     if getattr(cb, "__self__", None) is asgi.state.feed]
            assert len(feeds) == 1  # one subscription to the database's changes, two streams
            with BackgroundWorker(app, concurrency=1):  # the task starts once both watch
                for index, response in enumerate(responses):
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            seen[index].append(json.loads(line[6:]))
                            if seen[index][-1]["status"] == "successful":
                                break
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
    wait_final(app, task.id)
    for events in seen:
        percents = [e["progress"]["percent"] for e in events if e.get("progress")]
        assert len(percents) >= 2 and percents == sorted(percents)
        assert events[-1]["status"] == "successful"
    wait_for(lambda: asgi.state.feed.clients == 0, message="the streams to close")


def test_a_stream_opened_while_the_feed_reads_gets_the_state_that_read_found(
        app: Roadie, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that opens while the feed is reading (after it listed the streams, before it
    kept what it read) is given the state from before that read. The next read must still
    send it the new one: a cancel that landed then used to be lost, and the task's page kept
    showing it in progress (the browser test's cancel, now and then on a loaded machine)."""
    import asyncio

    from roadie.web.live import Feed

    task = app.add_task("roadie-examples:noop", {}, delay=3600)
    feed = Feed(app, poll_interval=3600)
    monkeypatch.setattr(feed, "_ensure_started", lambda: None)  # the test does the reads
    joined = []
    list_tasks = app.store.list_tasks

    def read_while_a_stream_opens(*args: Any, **kwargs: Any) -> Any:
        found = list_tasks(*args, **kwargs)
        joined.append(feed.subscribe([task.id]))
        return found

    async def scenario() -> list[dict[str, Any]]:
        first = feed.subscribe([task.id])
        feed._refresh()
        await asyncio.sleep(0)
        assert [json.loads(data)["status"] for _, data in first.take()] == ["new"]
        app.cancel_task(task.id)
        with monkeypatch.context() as patched:
            patched.setattr(app.store, "list_tasks", read_while_a_stream_opens)
            feed._refresh()
        feed._refresh()  # the read the new stream asked for
        await asyncio.sleep(0)
        assert [json.loads(data)["status"] for _, data in first.take()] == ["cancelled"]
        return [json.loads(data) for _, data in joined[0].take()]

    given = asyncio.run(scenario())
    assert given[-1]["status"] == "cancelled", given


def test_a_waiting_parent_streams_its_subtask_counts(app: Roadie, tmp_path: Any) -> None:
    """A waiting parent's row does not change as its subtasks end; its live state counts them
    anyway, so its page's bar and counts move. Each subtask ends only once the stream showed
    the previous end (gate files), so the test needs no timing."""
    import httpx
    from roadie.web import create_app

    from tests.webserver import ServerThread

    gate = tmp_path / "gate"
    gate.mkdir()
    parent = app.add_task("tests:fanout", {"parts": 3, "gate": str(gate)})
    asgi = create_app(app, token=TOKEN, poll_interval=0.1)
    ended_seen: list[int] = []
    with ServerThread(asgi) as server, BackgroundWorker(app, concurrency=2), \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http, \
            http.stream("GET", f"/events?id={parent.id}") as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            state = json.loads(line[6:])
            if state["status"] == "successful":
                break
            if state["status"] != "waiting" or not state.get("subtasks"):
                continue
            ended = state["subtasks"].get("successful", 0)
            assert sum(state["subtasks"].values()) == 3
            assert state["progress"] == {"done": ended, "total": 3,
                                         "percent": round(100 * ended / 3, 1)}
            if not ended_seen or ended_seen[-1] != ended:
                ended_seen.append(ended)
                (gate / str(ended)).touch()  # let the next subtask end
    assert ended_seen in ([0, 1, 2], [0, 1, 2, 3])  # 3: seen before the fan-in began
    assert wait_final(app, parent.id).status == Status.SUCCESSFUL
    page = client_for(app).get(f"/tasks/{parent.id}").text
    assert '<span data-field="subtasks">successful 3</span>' in page


def test_roadie_web_refuses_another_address_without_a_token(monkeypatch: Any) -> None:
    from click.testing import CliRunner
    from roadie.cli import cli
    from roadie.cli.web import is_loopback

    monkeypatch.delenv("ROADIE_WEB_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["web", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0 without a token" in lines[0]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


# -- schedules, subtasks, environments, delete confirmation --------------------------------


def test_schedules_through_the_api(web: TestClient, app: Roadie) -> None:
    app.add_schedule("nightly", "roadie-examples:count", {"n": 1}, cron="30 2 * * *",
                     timezone="Europe/Berlin")
    listed = web.get("/api/schedules", headers=AUTH).json()["schedules"]
    assert [s["name"] for s in listed] == ["nightly"]
    nightly = listed[0]
    assert nightly["state"] == "active" and nightly["next_at"] is not None
    assert "02:30" in nightly["next_local"] and nightly["timezone"] == "Europe/Berlin"
    assert web.get("/api/schedules/nightly", headers=AUTH).json() == nightly

    paused = web.post("/api/schedules/nightly/pause", headers=AUTH)
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert paused.json()["next_at"] is None and app.get_schedule("nightly").paused
    resumed = web.post("/api/schedules/nightly/resume", headers=AUTH).json()
    assert resumed["state"] == "active" and resumed["next_at"] is not None

    made = web.post("/api/schedules/nightly/run-now", headers=AUTH)
    assert made.status_code == 201 and made.json()["schedule"] == "nightly"
    mine = web.get("/api/tasks?schedule=nightly", headers=AUTH).json()["tasks"]
    assert [t["id"] for t in mine] == [made.json()["id"]]
    assert web.get("/api/tasks?schedule=other", headers=AUTH).json()["tasks"] == []

    missing = web.get("/api/schedules/nope", headers=AUTH)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert web.post("/api/schedules/nope/pause", headers=AUTH).status_code == 404
    bad = web.post("/api/schedules/nightly/explode", headers=AUTH)
    assert bad.status_code == 404 and "run-now" in bad.json()["error"]


def test_schedules_page_lists_next_runs_and_acts(web: TestClient, app: Roadie) -> None:
    app.add_schedule("every-minute", "roadie-examples:count", {"n": 1}, every=60)
    login(web)
    page = web.get("/schedules")
    assert page.status_code == 200
    assert "every-minute" in page.text and "every 1 min" in page.text
    assert 'href="/schedules" aria-current="page"' in page.text
    token = csrf_of(page.text)
    assert web.post("/schedules/every-minute/pause", data={}).status_code == 403  # no CSRF
    paused = web.post("/schedules/every-minute/pause", data={"csrf_token": token})
    assert paused.status_code == 303 and app.get_schedule("every-minute").paused
    assert "is paused" in web.get(paused.headers["location"]).text
    ran = web.post("/schedules/every-minute/run-now", data={"csrf_token": token})
    assert ran.status_code == 303
    task_id = int(ran.headers["location"].split("/")[-1].split("?")[0])
    task_page = web.get(f"/tasks/{task_id}").text
    assert "/?schedule=every-minute" in task_page
    listed = web.get("/?schedule=every-minute").text
    assert f'data-task-id="{task_id}"' in listed and "made by schedule" in listed
    assert web.post("/schedules/nope/resume", data={"csrf_token": token}).status_code == 404


def test_a_schedule_whose_executor_is_missing_shows_why(app: Roadie, tmp_path: Any) -> None:
    app.add_schedule("ghost", "tests:sleep", every=60)
    other = make_app(app.url, tmp_path / "other")  # a process without the tests executors
    try:
        with client_for(other) as client:
            page = client.get("/schedules").text
            assert 'class="broken"' in page and "not installed here" in page
            assert "Run now" not in page
            ghost = client.get("/api/schedules/ghost").json()
            assert ghost["state"] == "broken" and "tests:sleep" in ghost["problem"]
    finally:
        other.close()


def test_read_only_schedules_page_has_no_actions(app: Roadie) -> None:
    app.add_schedule("hourly", "roadie-examples:count", every=3600)
    with client_for(app, read_only=True) as client:
        page = client.get("/schedules").text
        assert "hourly" in page and "Pause" not in page and "Run now" not in page
        refused = client.post("/api/schedules/hourly/pause",
                              headers={"content-type": "application/json"})
        assert refused.status_code == 403 and not app.get_schedule("hourly").paused


def test_subtasks_of_a_task_are_listed_and_deleted_with_their_tree(
        web: TestClient, app: Roadie) -> None:
    parent = app.add_task("roadie-examples:split", {"parts": 3})
    app.run_worker(concurrency=2, until_idle=True)
    assert wait_final(app, parent.id).status == Status.SUCCESSFUL
    subtasks = web.get(f"/api/tasks?parent={parent.id}", headers=AUTH).json()["tasks"]
    assert sorted(t["name"] for t in subtasks) == ["part 0", "part 1", "part 2"]
    assert {t["parent_id"] for t in subtasks} == {parent.id}
    assert web.get("/api/tasks?parent=x", headers=AUTH).status_code == 422
    login(web)
    page = web.get(f"/tasks/{parent.id}").text
    assert f'href="/?parent={parent.id}"' in page
    assert "<details class=\"confirm\">" in page and "and its whole tree" in page
    listed = web.get(f"/?parent={parent.id}").text
    assert "the subtasks of" in listed and listed.count("data-task-id=") == 3
    token = csrf_of(page)
    deleted = web.post(f"/tasks/{parent.id}/delete", data={"csrf_token": token, "tree": "1"})
    assert deleted.status_code == 303
    assert app.list_tasks(parent_id=parent.id) == []
    assert web.get(f"/tasks/{parent.id}").status_code == 404


def test_plugins_page_shows_environments(web: TestClient, app: Roadie) -> None:
    login(web)
    page = web.get("/plugins").text
    assert "<h2>Environments</h2>" in page and "roadie env create" in page


# -- executors: flow control -----------------------------------------------------------------


def executor_of(client: TestClient, name: str, **headers: str) -> dict[str, Any]:
    """``name``'s entry of ``GET /api/executors``."""
    response = client.get("/api/executors", headers=headers)
    assert response.status_code == 200, response.text
    return next(e for e in response.json()["executors"] if e["executor"] == name)


def test_executors_through_the_api(web: TestClient, app: Roadie) -> None:
    for _ in range(5):
        app.add_task("tests:limited", {})
    limited = executor_of(web, "tests:limited", **AUTH)
    assert limited == {"name": "tests:limited", "executor": "tests:limited", "installed": True,
                       "nodes": 0, "paused": False, "paused_at": None, "paused_by": None,
                       "max_running": 3, "rate_limit": None, "limits": "max_running 3",
                       "waiting": 5, "held": 2, "running": 0}
    rated = executor_of(web, "tests:rated", **AUTH)
    assert rated["rate_limit"] == {"count": 5, "per": 1} and rated["max_running"] is None
    assert rated["limits"] == "rate 5 per second"

    paused = web.post("/api/executors/tests:limited/pause", headers=AUTH)
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["executor"] == "tests:limited" and body["paused"] is True
    assert body["paused_by"] == "web" and body["paused_at"] is not None
    assert body["waiting"] == 5 and body["max_running"] == 3
    state = {s.executor: s for s in app.list_executors()}["tests:limited"]
    assert state.paused and state.paused_by == "web"
    assert executor_of(web, "tests:limited", **AUTH)["paused"] is True

    resumed = web.post("/api/executors/tests%3Alimited/resume", headers=AUTH)  # encoded ':'
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False and resumed.json()["paused_by"] is None
    assert not {s.executor: s for s in app.list_executors()}["tests:limited"].paused

    for name in ("tests:nope", "nodist"):
        missing = web.post(f"/api/executors/{name}/pause", headers=AUTH)
        assert missing.status_code == 404, missing.text
        assert name in missing.json()["error"] and missing.json()["status"] == 404
    assert "known: " in web.post("/api/executors/tests:nope/resume", headers=AUTH).json()[
        "error"]
    assert web.post("/api/executors/tests:sleep/explode", headers=AUTH).status_code == 404
    assert web.get("/api/executors/tests:sleep/pause", headers=AUTH).status_code in (404, 405)
    assert not any(s.paused for s in app.list_executors())


def test_executor_changes_need_auth_and_csrf(app: Roadie) -> None:
    with client_for(app, token=TOKEN) as web:
        assert web.get("/api/executors").status_code == 401
        for action in ("pause", "resume"):
            refused = web.post(f"/api/executors/tests:sleep/{action}")
            assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
        login(web)
        assert web.get("/api/executors").status_code == 200  # the cookie reads
        cookie_only = web.post("/api/executors/tests:sleep/pause")
        assert cookie_only.status_code == 403  # but does not change without a CSRF token
        wrong = web.post("/api/executors/tests:sleep/pause", headers={"X-CSRF-Token": "0" * 64})
        assert wrong.status_code == 403 and "CSRF" in wrong.json()["error"]
        foreign = web.post("/api/executors/tests:sleep/pause", headers=AUTH | {
            "Origin": "https://evil.example"})
        assert foreign.status_code == 403
        assert not {s.executor: s for s in app.list_executors()}["tests:sleep"].paused
        token = csrf_of(web.get("/executors").text)
        done = web.post("/api/executors/tests:sleep/pause", headers={"X-CSRF-Token": token})
        assert done.status_code == 200 and done.json()["paused"] is True
    with client_for(app) as local:  # no token: JSON bodies only (a cross-site form cannot)
        assert local.post("/api/executors/tests:sleep/resume").status_code == 403
        resumed = local.post("/api/executors/tests:sleep/resume",
                             headers={"Content-Type": "application/json"})
        assert resumed.status_code == 200 and resumed.json()["paused"] is False


def test_read_only_refuses_executor_changes_and_hides_the_buttons(app: Roadie) -> None:
    app.pause_executor("tests:serial", by="ops")
    with client_for(app, token=TOKEN, read_only=True) as web:
        for path in ("/api/executors/tests:sleep/pause", "/api/executors/tests:serial/resume"):
            refused = web.post(path, headers=AUTH)
            assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert executor_of(web, "tests:serial", **AUTH)["paused"] is True
        login(web)
        page = web.get("/executors").text
        assert ">running</span>" in row_html(page, "tests:sleep")
        assert "by ops" in row_html(page, "tests:serial")
        assert "<form" not in page.split("<main", 1)[1]  # (the log-out form is above it)
        assert "Pause</button>" not in page and "Resume</button>" not in page
        assert web.post("/executors/tests:sleep/pause").status_code == 403
    states = {s.executor: s for s in app.list_executors()}
    assert states["tests:serial"].paused and not states["tests:sleep"].paused


def test_executors_page_lists_and_pauses_and_resumes(web: TestClient, app: Roadie) -> None:
    for _ in range(4):
        app.add_task("tests:limited", {})
    login(web)
    page = web.get("/executors")
    assert page.status_code == 200
    assert 'href="/executors" aria-current="page"' in page.text
    row = row_html(page.text, "tests:limited")
    assert "max_running 3" in row and ">running</span>" in row
    assert [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row)] == [4, 1, 0]
    assert "rate 5 per second" in row_html(page.text, "tests:rated")
    assert 'action="/executors/tests%3Alimited/pause"' in row
    token = csrf_of(page.text)
    assert web.post("/executors/tests:limited/pause", data={}).status_code == 403  # no CSRF
    assert web.post("/executors/tests:limited/pause",
                    data={"csrf_token": "0" * 64}).status_code == 403
    paused = web.post("/executors/tests%3Alimited/pause", data={"csrf_token": token})
    assert paused.status_code == 303
    assert paused.headers["location"] == "/executors?done=executor-pause"
    state = {s.executor: s for s in app.list_executors()}["tests:limited"]
    assert state.paused and state.paused_by == "web"
    after = web.get(paused.headers["location"]).text
    assert "The executor is paused" in after
    row = row_html(after, "tests:limited")
    assert 'class="paused"' in row and ">paused</span>" in row and "by web" in row
    assert "Resume</button>" in row and "Pause</button>" not in row
    resumed = web.post("/executors/tests:limited/resume", data={"csrf_token": token})
    assert resumed.status_code == 303
    assert not {s.executor: s for s in app.list_executors()}["tests:limited"].paused
    row = row_html(web.get("/executors").text, "tests:limited")
    assert ">running</span>" in row and "Pause</button>" in row
    missing = web.post("/executors/tests:nope/pause", data={"csrf_token": token})
    assert missing.status_code == 404 and "tests:nope" in missing.text
    assert web.post("/executors/tests:sleep/explode",
                    data={"csrf_token": token}).status_code == 404


def row_html(page: str, executor: str) -> str:
    """The ``<tr>`` of ``executor`` on the executors page."""
    match = re.search(rf'<tr data-executor="{re.escape(executor)}".*?</tr>', page, re.S)
    assert match, f"no row for {executor}"
    return match.group(0)


def test_a_host_apps_user_is_who_paused(app: Roadie) -> None:
    """Mounted in an application that authenticates its users, the user pauses."""
    from roadie.web import create_app
    from starlette.applications import Starlette
    from starlette.authentication import SimpleUser
    from starlette.routing import Mount

    roadie_web = create_app(app, token=TOKEN)

    async def with_user(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["user"] = SimpleUser("alice")
        await roadie_web(scope, receive, send)

    outer = Starlette(routes=[Mount("/ops", app=with_user)])
    with TestClient(outer, follow_redirects=False) as client:
        paused = client.post("/ops/api/executors/tests:sleep/pause", headers=AUTH)
        assert paused.status_code == 200 and paused.json()["paused_by"] == "alice"
    assert {s.executor: s for s in app.list_executors()}["tests:sleep"].paused_by == "alice"
