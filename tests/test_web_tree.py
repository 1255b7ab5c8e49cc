"""A parent's task page: its subtasks as a tree, and the timeline of its attempts and
subtasks, through an ASGI test client on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
import time
import warnings
from typing import Any

import pytest
from roadie import Roadie, Status
from roadie.testing import wait_final

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)
pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)>"


def page_of(app: Roadie, task_id: int) -> str:
    from roadie.web import create_app

    with TestClient(create_app(app)) as client:
        response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.text


def tree_rows(page: str) -> dict[int, str]:
    """The tree's rows by task id: the status each shows."""
    section = re.search(r'<section class="subtree".*?</section>', page, re.S)
    assert section, "the page has no tree"
    return {int(i): status for i, status in re.findall(
        r'<li data-task-id="(\d+)">\s*<(?:div class="leaf"|details[^>]*>\s*<summary)>.*?'
        r'data-field="status">([a-z-]+)<', section.group(0), re.S)}


def bars(page: str) -> list[str]:
    """The timeline's bars: the class of each ``<rect>``."""
    return re.findall(r'<rect class="gantt-bar ([^"]*)"', page)


def test_a_parent_shows_its_tree_and_timeline_escaped(app: Roadie) -> None:
    parent = app.add_task("tests:tree", {"children": [
        {"name": f"part {HOSTILE}", "message": f"done {HOSTILE}"},
        {"name": "broken", "message": "disk <full>", "fail": True},
        {"name": "nested", "children": [{"name": "leaf a"}, {"name": "leaf b"}]},
    ]}, name=f"parent {HOSTILE}")
    app.run_worker(concurrency=2, until_idle=True)
    assert wait_final(app, parent.id).status == Status.FAILED
    children = sorted(app.list_tasks(parent_id=parent.id), key=lambda t: t.id)
    nested = children[2]
    leaves = sorted(app.list_tasks(parent_id=nested.id), key=lambda t: t.id)
    page = page_of(app, parent.id)
    rows = tree_rows(page)
    assert rows == {children[0].id: "successful", children[1].id: "failed",
                    nested.id: "successful", leaves[0].id: "successful",
                    leaves[1].id: "successful"}
    # every row is live: the page watches the parent and each row it lists
    live = re.search(r'data-live-ids="([\d ]+)"', page)
    assert live and sorted(map(int, live.group(1).split())) == sorted([parent.id, *rows])
    assert "(<span data-field=\"subtasks\">successful 2</span>)" in page  # nested counts
    # names and messages are text, never markup (in the tree, the SVG and the table)
    assert HOSTILE not in page and "<img" not in page
    assert html.escape(HOSTILE, quote=False) in page
    assert "disk &lt;full&gt;" in page
    # the timeline: one bar per attempt of the parent and of each subtask, one per subtask
    attempts = sum(len(app.attempts(t.id)) for t in [parent, *children])
    assert len(app.attempts(parent.id)) == 2  # waiting, then its fan-in
    drawn = bars(page)
    assert len(drawn) == attempts + len(children)
    assert sum(b.startswith("span ") for b in drawn) == len(children)
    assert "span status-failed" in drawn and "attempt status-waiting" in drawn
    svg = re.search(r"<svg class=\"gantt\"[^>]*>", page)
    assert svg and 'role="img"' in svg.group(0) and 'aria-labelledby="timeline-title"' in \
        svg.group(0)
    title = re.search(r'<title id="timeline-title">([^<]*)</title>', page)
    assert title and title.group(1) == (f"Timeline of task {parent.id}: 2 attempts and 3 "
                                        f"subtasks over {title.group(1).split(' over ')[1]}")
    # the same figures as a table, with no script; the page asks no other origin
    table = re.search(r'<table class="timeline-table">.*?</table>', page, re.S)
    assert table and table.group(0).count("<tr>") == 1 + len(drawn)
    assert "Show as table" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_a_big_tree_is_capped_with_links_to_the_rest(app: Roadie) -> None:
    from roadie.web import tree

    late = 3600.0  # the subtasks wait: only the parent and the first child run
    children: list[dict[str, Any]] = [
        {"name": "first", "children": [{"name": f"grandchild {i}", "delay": late}
                                       for i in range(10)]}]
    children += [{"name": f"child {i}", "delay": late} for i in range(1, 230)]
    parent = app.add_task("tests:tree", {"children": children})
    app.run_worker(concurrency=1, until_idle=True)
    first = app.list_tasks(parent_id=parent.id, name="first")[0]
    assert app.get_task(first.id).status == Status.WAITING
    page = page_of(app, parent.id)
    rows = tree_rows(page)
    assert len(rows) == tree.TREE_ROWS == 200  # the first 200 children, oldest first
    assert min(rows) == first.id and rows[first.id] == "waiting"
    assert f'<a href="/?parent={parent.id}">30 more subtasks</a>' in page
    assert f'<a href="/?parent={first.id}">10 more subtasks</a>' in page  # no room left
    assert "230 subtasks, the first 200 listed" in page
    live = re.search(r'data-live-ids="([\d ]+)"', page)
    assert live and len(live.group(1).split()) == 201
    # the timeline draws the parent and its first 100 subtasks
    assert len(re.findall(r'<g class="row"', page)) == 1 + tree.TIMELINE_ROWS
    assert f'<a href="/?parent={parent.id}">130 more</a>' in page


def test_a_task_without_subtasks_has_no_tree(app: Roadie) -> None:
    task = app.add_task("tests:tree", {"message": "alone"})
    app.run_worker(concurrency=1, until_idle=True)
    page = page_of(app, task.id)
    assert 'class="subtree"' not in page and "<svg" not in page


def test_one_stream_watches_a_full_tree(app: Roadie) -> None:
    """A capped tree's page watches 201 tasks (the parent and 200 rows): one stream takes
    them all (ids that do not exist come back as deleted)."""
    import json

    import httpx
    from roadie.web import create_app, tree

    from tests.webserver import ServerThread

    ids = list(range(900_001, 900_002 + tree.TREE_ROWS))
    query = "&".join(f"id={i}" for i in ids)
    seen: set[int] = set()
    deadline = time.monotonic() + 10  # the stream pings every 15 s: the loop wakes then
    with ServerThread(create_app(app, poll_interval=0.1)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http, \
            http.stream("GET", f"/events?{query}") as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                state = json.loads(line[6:])
                assert state["status"] == "deleted"
                seen.add(state["id"])
            if len(seen) == len(ids) or time.monotonic() > deadline:
                break
    assert seen == set(ids)
