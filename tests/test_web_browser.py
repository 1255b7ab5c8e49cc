"""The web app in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Skips locally when Chromium or Playwright is missing; fails under CI=true. Set
ROADIE_SCREENSHOTS to a folder to keep the screenshots the docs use.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def _require_browser() -> object:
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
