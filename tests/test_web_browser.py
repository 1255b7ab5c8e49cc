"""The web app in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Skips locally when Chromium or Playwright is missing; fails under CI=true. Set
ROADIE_SCREENSHOTS to a folder to keep the screenshots the docs use.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from roadie import Roadie, Status
from roadie.testing import BackgroundWorker, wait_final, wait_for

from tests.webserver import ServerThread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TOKEN = "browser-test-token"
SCRIPT_NAME = "<img src=x onerror=alert(1)>"


def _shots() -> Path | None:
    """Where to keep screenshots for the docs (ROADIE_SCREENSHOTS), if anywhere."""
    folder = os.environ.get("ROADIE_SCREENSHOTS")
    return Path(folder) if folder else None


def _require_browser() -> Any:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = problem or "playwright is not installed (pip install playwright)"
        sync_playwright = None
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem + " (CI=true: the browser test must run)")
        pytest.skip(problem)
    return sync_playwright


def test_browser_login_live_progress_cancel_and_escaping(app: Roadie) -> None:
    sync_playwright = _require_browser()
    from roadie.web import create_app

    shots = Path(os.environ["ROADIE_SCREENSHOTS"]) if os.environ.get("ROADIE_SCREENSHOTS") \
        else None
    hostile = app.add_task("roadie-examples:echo", {"text": SCRIPT_NAME}, name=SCRIPT_NAME,
                           owner="mallory")
    done = app.add_task("roadie-examples:count", {"n": 3, "delay": 0}, name="count to 3",
                        owner="alice", group="site-1")
    app.run_worker(concurrency=1, until_idle=True)
    app.add_task("roadie-examples:fail", {"reason": "disk full"}, name="nightly export",
                 owner="bob")
    app.run_worker(concurrency=1, until_idle=True)
    # Long enough to still run on a loaded machine (75 s); the test cancels it.
    running = app.add_task("roadie-examples:count", {"n": 1500, "delay": 0.05},
                           name="count to 1500", owner="alice", group="site-1")
    app.add_task("roadie-examples:count", {"n": 10}, name="waiting for a worker",
                 owner="carol", delay=3600)
    app.add_schedule("nightly export", "roadie-examples:count", {"n": 5}, cron="30 2 * * *",
                     timezone="Europe/Berlin")
    app.add_schedule("heartbeat", "roadie-examples:noop", every=300)
    dialogs: list[str] = []
    with ServerThread(create_app(app, token=TOKEN)) as server, \
            BackgroundWorker(app, concurrency=1), sync_playwright() as playwright:
        wait_for(lambda: app.get_task(running.id).task_status.get("done"),
                 message="the count to start")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                              dialog.dismiss()))
            # Not logged in: the list sends the browser to the login form.
            page.goto(server.url + "/")
            assert "/login" in page.url
            page.fill("input[name=token]", "wrong")
            page.click("button:has-text('Log in')")
            assert page.locator("[role=alert]").inner_text() == "That token is not right."
            page.fill("input[name=token]", TOKEN)
            page.click("button:has-text('Log in')")
            page.wait_for_selector("table.tasks")
            assert page.url.rstrip("/") == server.url
            # The list: every task, the hostile name as text, counts per status.
            row = page.locator(f"tr[data-task-id='{hostile.id}'] td.name")
            assert row.inner_text() == SCRIPT_NAME
            assert page.locator("img").count() == 0
            assert page.locator(f"tr[data-task-id='{done.id}'] [data-field=status]"
                                ).inner_text() == "successful"
            assert page.locator("[data-count=failed]").inner_text() == "1"
            bar = page.locator(f"tr[data-task-id='{running.id}'] progress")
            first = float(bar.get_attribute("value") or 0)
            page.wait_for_function(
                "([id, first]) => document.querySelector(`tr[data-task-id='${id}'] progress`)"
                ".value > first", arg=[running.id, first], timeout=20_000)
            if shots:
                page.screenshot(path=str(shots / "tasks.png"), full_page=True)
            # The task page: the bar moves with no reload, over the live stream.
            navigations: list[str] = []
            page.goto(f"{server.url}/tasks/{running.id}")
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            bar = page.locator(".live progress")
            assert bar.get_attribute("max") == "100"
            first = float(bar.get_attribute("value") or 0)
            page.wait_for_function(
                "first => document.querySelector('.live progress').value > first + 1",
                arg=first, timeout=20_000)
            assert navigations == []
            if shots:
                page.screenshot(path=str(shots / "task.png"), full_page=True)
            # Cancel it from its page.
            page.click("button:has-text('Cancel')")
            page.wait_for_function(
                "() => document.querySelector('article [data-field=status]').textContent"
                " === 'cancelled'", timeout=20_000)
            assert wait_final(app, running.id).status == Status.CANCELLED
            # The schedules page: next runs, and pausing one from the browser.
            page.goto(f"{server.url}/schedules")
            nightly = page.locator("tr[data-schedule='nightly export']")
            assert "Europe/Berlin" in nightly.inner_text()
            if shots:
                page.screenshot(path=str(shots / "schedules.png"), full_page=True)
            nightly.locator("button:has-text('Pause')").click()
            page.wait_for_selector("text=The schedule is paused.")
            assert page.locator("tr[data-schedule='nightly export'] .badge").inner_text() == \
                "paused"
            assert app.get_schedule("nightly export").paused
            # The hostile task's own page shows its name as text too.
            page.goto(f"{server.url}/tasks/{hostile.id}")
            assert page.locator("h1").inner_text().endswith(SCRIPT_NAME)
            assert page.locator("img").count() == 0
        finally:
            browser.close()
    assert dialogs == []


class _Guard:
    """What a page did that it must not: console errors, uncaught exceptions, requests to
    another origin (aborted by route interception) and navigations."""

    def __init__(self, page: Any, origin: str) -> None:
        self.origin = origin.rstrip("/") + "/"
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", lambda request: self.requests.append(request.url))
        # only other origins are routed (the live stream is never buffered by a route)
        page.route(re.compile("^(?!" + re.escape(self.origin) + ")"), self._abort)

    def _abort(self, route: Any) -> None:
        self.foreign.append(route.request.url)
        route.abort()

    def check(self) -> None:
        assert self.errors == []
        assert self.foreign == []
        assert self.requests and all(u.startswith(self.origin) for u in self.requests)


def test_browser_tree_rows_change_live_and_the_timeline_draws(app: Roadie,
                                                              tmp_path: Path) -> None:
    """A parent's page: a subtask's row in the tree turns from in-progress to successful
    over the live stream, without a reload; no console error, no request off the origin."""
    sync_playwright = _require_browser()
    from roadie.web import create_app

    shots = _shots()
    gate = tmp_path / "gate"
    parent = app.add_task("tests:tree", {"children": [
        {"name": "extract", "seconds": 0.3, "message": "1,204 rows"},
        {"name": "transform", "children": [
            {"name": "clean", "seconds": 0.2}, {"name": f"enrich {SCRIPT_NAME}",
                                                "seconds": 0.3}]},
        {"name": "report", "seconds": 0.1, "fail": True, "message": "no rows for <EU>"},
        {"name": "load", "gate": str(gate), "message": "loaded"},
        {"name": "archive", "seconds": 0.4},
    ]}, name="nightly import")
    with ServerThread(create_app(app, poll_interval=0.2)) as server, \
            BackgroundWorker(app, concurrency=2), sync_playwright() as playwright:
        children = wait_for(lambda: (lambda found: found if len(found) == 5 else None)(
            sorted(app.list_tasks(parent_id=parent.id), key=lambda t: t.id)),
            message="the five subtasks")
        load = next(t for t in children if t.name == "load")
        wait_for(lambda: app.get_task(load.id).status == Status.IN_PROGRESS and all(
            app.get_task(t.id).status.is_final for t in children if t.id != load.id),
            message="every subtask but 'load' to end")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            guard = _Guard(page, server.url)
            page.goto(f"{server.url}/tasks/{parent.id}")
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            row = f"li[data-task-id='{load.id}'] > .leaf [data-field=status]"
            assert page.locator(row).inner_text() == "in-progress"
            assert page.locator("svg.gantt").get_attribute("role") == "img"
            assert page.locator("svg.gantt rect.gantt-bar").count() >= 10
            assert page.locator("img").count() == 0  # the hostile name is text
            page.wait_for_selector("footer .live-state:has-text('live')")
            gate.touch()  # 'load' ends: its row, then the parent, change in place
            page.wait_for_function(
                "sel => document.querySelector(sel).textContent === 'successful'", arg=row,
                timeout=20_000)
            assert page.locator(f"li[data-task-id='{load.id}'] > .leaf [data-field=message]"
                                ).inner_text() == "loaded"
            page.wait_for_function(
                "() => document.querySelector('.heading [data-field=status]').textContent"
                " === 'failed'", timeout=20_000)
            assert navigations == []
            # the other rows kept their own statuses (a parent's update never reaches them)
            report = next(t for t in children if t.name == "report")
            assert page.locator(f"li[data-task-id='{report.id}'] > .leaf [data-field=status]"
                                ).inner_text() == "failed"
            assert wait_final(app, parent.id).status == Status.FAILED
            page.reload()
            page.click("summary:has-text('Show as table')")
            assert page.locator("table.timeline-table tbody tr").count() == \
                page.locator("svg.gantt rect.gantt-bar").count()
            page.click("summary:has-text('Show as table')")
            if shots:  # the tree and the timeline, in the page's coordinates
                top, bottom = page.evaluate(
                    "() => [document.querySelector('section.subtree'), document.querySelector("
                    "'section.timeline')].map(e => e.getBoundingClientRect()).map("
                    "(r, i) => (i ? r.bottom : r.top) + window.scrollY)")
                page.screenshot(path=str(shots / "tree.png"), full_page=True, clip={
                    "x": 0, "y": top - 12, "width": 1280, "height": bottom - top + 24})
            guard.check()
        finally:
            browser.close()


def test_browser_pausing_an_executor_stops_its_new_starts(app: Roadie,
                                                          tmp_path: Path) -> None:
    """Pause from the executors page while a worker runs: once the worker has read the pause
    it starts none of that executor's tasks (another executor's tasks still run); Resume
    lets them run again. Each task waits for its gate file, so the test needs no timing."""
    sync_playwright = _require_browser()
    from roadie.web import create_app

    gates = tmp_path / "gates"
    gates.mkdir()
    tasks = [app.add_task("tests:tree", {"gate": str(gates / str(i))}) for i in range(6)]
    seen = threading.Event()

    class Paused(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "executor tests:tree is paused" in record.getMessage():
                seen.set()

    logger = logging.getLogger("roadie.worker")  # the worker says when it reads a pause
    handler, level, disabled = Paused(), logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False  # another test's logging configuration may have disabled it

    def claimed() -> set[int]:
        return {t.id for t in tasks if app.get_task(t.id).status != Status.NEW}

    try:
        with ServerThread(create_app(app, token=TOKEN)) as server, \
                BackgroundWorker(app, concurrency=1), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                guard = _Guard(page, server.url)
                page.goto(f"{server.url}/login?next=/executors")
                page.fill("input[name=token]", TOKEN)
                page.click("button:has-text('Log in')")
                row = page.locator("tr[data-executor='tests:tree']")
                wait_for(lambda: app.get_task(tasks[0].id).status == Status.IN_PROGRESS,
                         message="the worker to start the first task")
                row.locator("button:has-text('Pause')").click()
                page.wait_for_selector("text=The executor is paused")
                assert row.locator(".badge").inner_text() == "paused"
                assert seen.wait(20), "the worker never read the pause"
                before = claimed()
                for i in range(len(tasks)):
                    (gates / str(i)).touch()
                for task_id in before:  # what it took before the pause ends...
                    assert wait_final(app, task_id).status == Status.SUCCESSFUL
                marker = app.add_task("tests:chatty", {})  # ...the worker still claims...
                assert wait_final(app, marker.id).status == Status.SUCCESSFUL
                assert claimed() == before  # ...but starts no more of tests:tree
                assert len(before) < len(tasks)
                page.reload()
                assert int(row.locator("td.num").first.inner_text()) == \
                    len(tasks) - len(before)
                row.locator("button:has-text('Resume')").click()
                page.wait_for_selector("text=The executor is resumed")
                for task in tasks:
                    assert wait_final(app, task.id).status == Status.SUCCESSFUL
                guard.check()
            finally:
                browser.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
