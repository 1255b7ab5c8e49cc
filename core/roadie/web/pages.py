"""The server-rendered pages: tasks, one task, submit, schedules, executors, nodes, plugins,
login and plugin pages.

Every page reads without JavaScript; ``static/roadie.js`` only makes statuses and progress
bars live over one server-sent-events stream. Templates escape everything (Jinja2
autoescape), and forms carry the CSRF token.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from roadie.errors import (
    InvalidTransition,
    RoadieError,
    ScheduleNotFound,
    TaskNotFound,
    UnknownExecutor,
)
from roadie.status import Status
from roadie.web import api, charts, tree, views
from roadie.web.extensions import WebExtensions, render_panels
from roadie.web.security import SESSION_COOKIE, SESSION_MAX_AGE, Security

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.web.live import Feed

TEMPLATES = Path(__file__).parent / "templates"
LIVE_IDS = tree.TREE_ROWS + 56
"""How many tasks one live stream watches at most."""
ACTIONS = {"cancel": "cancel requested", "retry": "queued again", "resume": "queued again",
           "delete": "deleted"}


def environment() -> jinja2.Environment:
    """The Jinja2 environment (autoescaping on, always)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False,
                                                     sort_keys=True)
    env.filters["when"] = _when
    env.filters["size"] = _size
    env.filters["duration"] = charts.duration
    env.globals["STATUSES"] = [s.label for s in Status]
    return env


def _when(value: str | None) -> str:
    if not value:
        return "—"
    return value.replace("T", " ")[:19] + " UTC"


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


class Pages:
    """The page endpoints of one web app."""

    def __init__(self, app: Roadie, security: Security, feed: Feed,
                 extensions: WebExtensions) -> None:
        self.app = app
        self.security = security
        self.feed = feed
        self.extensions = extensions
        self.env = environment()

    # -- helpers -------------------------------------------------------------------------

    def render(self, request: Request, template: str, status_code: int = 200,
               **values: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        state = request.scope.get("state", {})
        page = self.env.get_template(template).render(
            base=base, csrf_token=state.get("csrf_token", ""),
            read_only=self.security.read_only,
            logged_in=self.security.token is not None and state.get("authenticated", False),
            extra_pages=sorted(self.extensions.pages.values(), key=lambda p: p.title),
            path=request.url.path[len(base):], **values)
        return HTMLResponse(page, status_code=status_code)

    def problem(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status_code=status, status=status,
                           message=message, title=f"Error {status}")

    async def form(self, request: Request) -> dict[str, str]:
        """The submitted form, after its CSRF token is checked (raises PermissionError)."""
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        state = request.scope.get("state", {})
        if state.get("csrf_form_required", True) and not self.security.check_csrf(
                state.get("csrf_nonce"), values.get("csrf_token")):
            raise PermissionError("the form's CSRF token does not match; reload the page "
                                  "and try again")
        return values

    # -- pages ---------------------------------------------------------------------------

    def tasks(self, request: Request) -> Response:
        try:
            data = api.list_tasks(self.app, request)
        except api.BadRequest as exc:
            return self.problem(request, exc.status, str(exc))
        params = request.query_params
        filters = {k: params.get(k, "") for k in ("status", "executor", "owner", "group", "q",
                                                  "schedule", "parent")}
        keep = {k: v for k, v in filters.items() if v}
        pages = {}
        if data["offset"] > 0:
            pages["newer"] = urlencode({**keep, "offset": max(0, data["offset"] -
                                                               data["limit"])})
        if data["next_offset"] is not None:
            pages["older"] = urlencode({**keep, "offset": data["next_offset"]})
        executors = [e["name"] for e in views.executors_view(self.app)]
        return self.render(request, "tasks.html", title="Tasks", data=data, filters=filters,
                           pages=pages, executors=executors,
                           live_ids=" ".join(str(t["id"]) for t in data["tasks"]),
                           api_query=urlencode(keep), notice=_notice(request))

    def task(self, request: Request) -> Response:
        try:
            task_id = api.task_id_of(request)
            task = self.app.get_task(task_id)
        except TaskNotFound as exc:
            return self.problem(request, 404, str(exc))
        detail = views.task_detail(self.app, task)
        attachments = [views.attachment_view(a) for a in self.app.list_attachments(task.id)]
        attempts = [views.attempt_view(a) for a in self.app.attempts(task.id)]
        panels = render_panels(self.app, self.extensions, task)
        subtree = tree.tree_view(self.app, task, detail["subtasks"] or {})
        timeline = None
        if subtree is not None:
            drawn = tree.records_of(subtree)
            timeline = tree.timeline_view(self.app, task, drawn, subtree["total"] - len(drawn))
        live = [task.id, *tree.shown_ids(subtree)]
        return self.render(request, "task.html", title=f"Task {task.id}", task=detail,
                           attachments=attachments, attempts=attempts, panels=panels,
                           tree=subtree, timeline=timeline,
                           live_ids=" ".join(str(i) for i in live), notice=_notice(request))

    async def action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return self.problem(request, 404, f"no task action {action!r}")
        try:
            values = await self.form(request)
        except PermissionError as exc:
            return self.problem(request, 403, str(exc))
        base = request.scope.get("root_path", "")
        try:
            task_id = api.task_id_of(request)
            if action == "cancel":
                await run_in_threadpool(self.app.cancel_task, task_id, by="web")
            elif action in ("retry", "resume"):
                await run_in_threadpool(self.app.resume_task, task_id)
            else:
                await run_in_threadpool(functools.partial(
                    self.app.delete_task, task_id, tree=values.get("tree") == "1"))
                return RedirectResponse(f"{base}/?done=deleted", status_code=303)
        except TaskNotFound as exc:
            return self.problem(request, 404, str(exc))
        except InvalidTransition as exc:
            return self.problem(request, 409, str(exc))
        return RedirectResponse(f"{base}/tasks/{task_id}?done={action}", status_code=303)

    def attachment(self, request: Request) -> Response:
        try:
            return api.errors_as_json(api.download)(self.app, api.task_id_of(request),
                                                    request.path_params["name"])
        except TaskNotFound as exc:
            return self.problem(request, 404, str(exc))

    def submit_page(self, request: Request) -> Response:
        return self.render(request, "submit.html", title="Submit a task",
                           executors=views.executors_view(self.app), values={}, problem=None)

    async def submit(self, request: Request) -> Response:
        try:
            values = await self.form(request)
        except PermissionError as exc:
            return self.problem(request, 403, str(exc))
        body: dict[str, Any] = {"executor": values.get("executor", "").strip(),
                                "name": values.get("name", ""),
                                "owner": values.get("owner") or None,
                                "group": values.get("group") or None}
        problem = None
        try:
            body["context"] = json.loads(values.get("context") or "{}")
        except ValueError as exc:
            problem = f"the context is not valid JSON: {exc}"
        if problem is None:
            result = await run_in_threadpool(api.errors_as_json(api.add_task), self.app, body)
            if isinstance(result, dict):
                base = request.scope.get("root_path", "")
                return RedirectResponse(f"{base}/tasks/{result['id']}?done=added",
                                        status_code=303)
            problem = json.loads(bytes(result.body))["error"]
        executors = await run_in_threadpool(views.executors_view, self.app)
        return self.render(request, "submit.html", status_code=422, title="Submit a task",
                           executors=executors, values=values, problem=problem)

    def _overview_values(self, request: Request) -> dict[str, Any]:
        range_key = request.query_params.get("range", "1h")
        if range_key not in charts.RANGES:
            range_key = "1h"
        window = charts.RANGES[range_key]
        stats = self.app.stats(window=window)
        return {"stats": stats, "charts": charts.charts(stats, range_key), "range": range_key,
                "window": window, "ranges": list(charts.RANGES)}

    def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", title="Overview", live_changes=True,
                           **self._overview_values(request))

    def overview_charts(self, request: Request) -> Response:
        """The charts alone, for the page's live refresh."""
        response = self.render(request, "_overview_charts.html",
                               **self._overview_values(request))
        response.headers["cache-control"] = "no-store"
        return response

    def nodes(self, request: Request) -> Response:
        return self.render(request, "nodes.html", title="Nodes",
                           nodes=views.nodes_view(self.app))

    def schedules(self, request: Request) -> Response:
        return self.render(request, "schedules.html", title="Schedules",
                           schedules=views.schedules_view(self.app), notice=_notice(request))

    async def schedule_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in api.SCHEDULE_ACTIONS:
            return self.problem(request, 404, f"no schedule action {action!r}")
        try:
            await self.form(request)
        except PermissionError as exc:
            return self.problem(request, 403, str(exc))
        name: str = request.path_params["name"]
        base = request.scope.get("root_path", "")
        try:
            if action == "run-now":
                task = await run_in_threadpool(self.app.run_schedule_now, name)
                return RedirectResponse(f"{base}/tasks/{task.id}?done=added", status_code=303)
            change = self.app.pause_schedule if action == "pause" else self.app.resume_schedule
            await run_in_threadpool(change, name)
        except ScheduleNotFound as exc:
            return self.problem(request, 404, str(exc))
        except RoadieError as exc:
            return self.problem(request, 409, str(exc))
        return RedirectResponse(f"{base}/schedules?done=schedule-{action}", status_code=303)

    def executors(self, request: Request) -> Response:
        recent = {e.executor: e for e in self.app.stats(window=3600).executors}
        return self.render(request, "executors.html", title="Executors",
                           executors=views.executor_states_view(self.app), recent=recent,
                           notice=_notice(request))

    async def executor_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            return self.problem(request, 404, f"no executor action {action!r}")
        try:
            await self.form(request)
        except PermissionError as exc:
            return self.problem(request, 403, str(exc))
        try:
            await run_in_threadpool(api.change_executor, self.app, request, action == "pause")
        except UnknownExecutor as exc:
            return self.problem(request, 404, str(exc))
        except api.BadRequest as exc:
            return self.problem(request, exc.status, str(exc))
        base = request.scope.get("root_path", "")
        return RedirectResponse(f"{base}/executors?done=executor-{action}", status_code=303)

    def plugins(self, request: Request) -> Response:
        return self.render(request, "plugins.html", title="Plugins",
                           data=views.plugins_view(self.app),
                           environments=views.environments_view(self.app),
                           web_pages=sorted(self.extensions.pages.values(),
                                            key=lambda p: p.title),
                           panels=[p.title for p in self.extensions.panels])

    def plugin_page(self, request: Request) -> Response:
        slug: str = request.path_params["slug"]
        as_json = slug.endswith(".json")
        slug = slug.removesuffix(".json")
        page = self.extensions.pages.get(slug)
        if page is None:
            return self.problem(request, 404, f"no plugin page {slug!r}")
        try:
            data = views.jsonable(page.render(self.app))
        except Exception as exc:
            message = f"the page {slug!r} failed: {type(exc).__name__}: {exc}"
            if as_json:
                return api.error(500, message)
            return self.problem(request, 500, message)
        if as_json:
            return JSONResponse({"title": page.title, "data": data})
        rows = data if isinstance(data, list) else None
        columns: list[str] = []
        for row in rows or []:
            for key in (row if isinstance(row, dict) else {}):
                if key not in columns:
                    columns.append(key)
        return self.render(request, "page.html", title=page.title, page=page, rows=rows,
                           columns=columns, mapping=data if isinstance(data, dict) else None)

    # -- login ---------------------------------------------------------------------------

    def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html", title="Log in",
                           next=_safe_next(request.query_params.get("next")), problem=None,
                           needs_token=self.security.token is not None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = form.get("token")
        raw_next = form.get("next")
        target = _safe_next(raw_next if isinstance(raw_next, str) else None)
        base = request.scope.get("root_path", "")
        if self.security.token is None:
            return RedirectResponse(base + target, status_code=303)
        if not self.security.check_token(token if isinstance(token, str) else None):
            return self.render(request, "login.html", status_code=401, title="Log in",
                               next=target, problem="That token is not right.",
                               needs_token=True)
        response = RedirectResponse(base + target, status_code=303)
        response.set_cookie(SESSION_COOKIE, self.security.new_session(), max_age=SESSION_MAX_AGE,
                            path=base or "/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base or "/")
        return response

    # -- live ----------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        from starlette.responses import StreamingResponse

        ids: list[int] = []
        for raw in request.query_params.getlist("id")[:LIVE_IDS]:
            for part in raw.replace(",", " ").split():
                if part.isdigit() and int(part) <= api.MAX_ID:
                    ids.append(int(part))
        ids = ids[:LIVE_IDS]  # a parent's page watches itself and the subtasks it lists
        counts = request.query_params.get("counts") == "1"
        changes = request.query_params.get("changes") == "1"
        subscriber = self.feed.subscribe(ids, counts=counts, changes=changes)
        return StreamingResponse(self.feed.stream(subscriber), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    def routes(self) -> list[Route]:
        """The page routes."""
        return [
            Route("/", self.tasks, methods=["GET"], name="tasks"),
            Route("/tasks/{id:int}", self.task, methods=["GET"], name="task"),
            Route("/tasks/{id:int}/attachments/{name}", self.attachment, methods=["GET"]),
            Route("/tasks/{id:int}/{action}", self.action, methods=["POST"]),
            Route("/submit", self.submit_page, methods=["GET"], name="submit"),
            Route("/submit", self.submit, methods=["POST"]),
            Route("/nodes", self.nodes, methods=["GET"], name="nodes"),
            Route("/schedules", self.schedules, methods=["GET"], name="schedules"),
            Route("/schedules/{name}/{action}", self.schedule_action, methods=["POST"]),
            Route("/overview", self.overview, methods=["GET"], name="overview"),
            Route("/overview/charts", self.overview_charts, methods=["GET"]),
            Route("/executors", self.executors, methods=["GET"], name="executors"),
            Route("/executors/{name}/{action}", self.executor_action, methods=["POST"]),
            Route("/plugins", self.plugins, methods=["GET"], name="plugins"),
            Route("/x/{slug}", self.plugin_page, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/events", self.events, methods=["GET"]),
        ]


def _notice(request: Request) -> str | None:
    done = request.query_params.get("done")
    return {"cancel": "Cancel requested.", "retry": "The task waits for a worker again.",
            "resume": "The task waits for a worker again.", "deleted": "The task was deleted.",
            "added": "The task was added.", "schedule-pause": "The schedule is paused.",
            "schedule-resume": "The schedule fires again from its next slot.",
            "executor-pause": "The executor is paused: workers start none of its tasks until "
                              "it is resumed.",
            "executor-resume": "The executor is resumed: workers start its tasks again.",
            }.get(done or "")


def _safe_next(target: str | None) -> str:
    """A local path to go back to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


__all__ = ["Pages", "RoadieError"]
