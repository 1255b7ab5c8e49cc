"""The overview page in a real browser (Playwright driving Debian's Chromium): charts drawn
after a run of tasks, moving with the live stream and no reload, no request outside the
page's origin, no console error; the executors page's new columns, and pausing from it.
ROADIE_SCREENSHOTS: see tests/test_web_browser.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from roadie import Roadie, Status
from roadie.testing import BackgroundWorker, wait_final

from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser
from tests.webserver import ServerThread

THROUGHPUT_TITLE = "#chart-throughput-title"


def test_the_overview_draws_charts_that_follow_the_live_stream(app: Roadie) -> None:
    sync_playwright: Any = _require_browser()
    from roadie.web import create_app

    shots = Path(os.environ["ROADIE_SCREENSHOTS"]) if os.environ.get("ROADIE_SCREENSHOTS") \
        else None
    app.add_tasks([("roadie-examples:noop", {})] * 50)
    app.add_tasks([("roadie-examples:fail", {"reason": "disk full"})] * 10)
    app.run_worker(concurrency=2, until_idle=True)  # (its counts are written as it stops)
    outside: list[str] = []
    errors: list[str] = []
    with ServerThread(create_app(app)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def route(handle: Any) -> None:
                if handle.request.url.startswith(server.url + "/"):
                    handle.continue_()
                else:  # nothing may leave the page's origin: no CDN, no font, no beacon
                    outside.append(handle.request.url)
                    handle.abort()

            page.route("**/*", route)
            page.on("console", lambda message: message.type == "error"
                    and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/")
            first_link = page.locator("header nav a").first
            assert first_link.inner_text() == "Overview"
            first_link.click()
            page.wait_for_selector("svg[role=img]")
            charts = page.locator("svg[role=img]")
            assert charts.count() == 3
            label = page.locator(THROUGHPUT_TITLE).text_content() or ""
            assert "50 succeeded, 10 failed" in label, label
            assert page.locator("#chart-throughput polyline").count() == 4
            assert page.locator("#chart-times rect.bar").count() > 0
            # the table alternative, once opened
            page.locator("#chart-throughput summary").click()
            assert page.locator("#chart-throughput table tbody tr").count() >= 1
            if shots:
                page.screenshot(path=str(shots / "overview.png"), full_page=True)
            # more tasks end: the chart moves, and the page is never loaded again
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            with BackgroundWorker(app, concurrency=2):
                ids = [t.id for t in app.add_tasks([("roadie-examples:noop", {})] * 5)]
                for task_id in ids:
                    wait_final(app, task_id)
                page.wait_for_function(
                    "sel => (document.querySelector(sel).textContent || '')"
                    ".includes('55 succeeded, 10 failed')", arg=THROUGHPUT_TITLE,
                    timeout=30_000)
            assert navigations == []
            assert page.locator("#chart-throughput details").get_attribute("open") is not None
            page.goto(server.url + "/executors")
            row = page.locator("tr[data-executor='roadie-examples:fail']")
            assert row.locator("[data-field=failed-last-hour]").inner_text() == "10"
            if shots:
                page.screenshot(path=str(shots / "executors.png"))
            # pausing from the page stops new starts (a worker then finds nothing to run)
            row = page.locator("tr[data-executor='roadie-examples:noop']")
            row.locator("button:has-text('Pause')").click()
            page.wait_for_selector("tr[data-executor='roadie-examples:noop'] .executor-paused")
            held = app.add_task("roadie-examples:noop", {})
            app.run_worker(concurrency=1, until_idle=True)
            assert app.get_task(held.id).status == Status.NEW
            page.locator("tr[data-executor='roadie-examples:noop'] button:has-text('Resume')"
                         ).click()
            page.wait_for_selector("tr[data-executor='roadie-examples:noop'] .executor-running")
            app.run_worker(concurrency=1, until_idle=True)
            assert app.get_task(held.id).status == Status.SUCCESSFUL
        finally:
            browser.close()
    assert outside == []
    assert errors == []
