"""The JSON API under ``/api/`` (described by ``/api/openapi.json``).

Every error is JSON, ``{"error": "...", "status": N}``, with a message that says what was
wrong; bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from roadie.errors import (
    AttachmentError,
    ContextError,
    DatabaseError,
    InvalidTransition,
    RoadieError,
    ScheduleError,
    ScheduleNotFound,
    TaskNotFound,
    UnknownExecutor,
)
from roadie.status import Status
from roadie.web import views
from roadie.web.extensions import WebExtensions, render_panels
from roadie.web.openapi import openapi_document
from roadie.web.security import actor_of

if TYPE_CHECKING:
    from roadie.app import Roadie

MAX_ID = 2**63 - 1
MAX_TEXT = 255
MAX_LIMIT = 500


class BadRequest(Exception):
    """Input the API refuses; becomes a 4xx with the message."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    """A JSON error response."""
    return JSONResponse({"error": message, "status": status}, status_code=status)


def errors_as_json(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn roadie's exceptions into JSON errors with the right status code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except (TaskNotFound, AttachmentError, ScheduleNotFound) as exc:
            return error(404, str(exc))
        except InvalidTransition as exc:
            return error(409, str(exc))
        except (UnknownExecutor, ContextError, ScheduleError) as exc:
            return error(422, str(exc))
        except DatabaseError as exc:
            return error(503, str(exc))
        except (RoadieError, ValueError, TypeError, UnicodeError, OverflowError) as exc:
            return error(422, str(exc))

    return wrapper


def text_value(value: Any, what: str, *, required: bool = False) -> str | None:
    """A short text field: a string of at most 255 characters without NUL."""
    if value is None or value == "":
        if required:
            raise BadRequest(f"{what} is required")
        return None if value is None else ""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{what} is longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise BadRequest(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeError:
        raise BadRequest(f"{what} is not valid Unicode text") from None
    return value


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be between {low} and {high}")
    return value


def task_id_of(request: Request) -> int:
    """The ``{id}`` of the path (a task id that cannot exist is simply not found)."""
    task_id: int = request.path_params["id"]
    if task_id > MAX_ID:
        raise TaskNotFound(task_id)
    return task_id


SCHEDULE_ACTIONS = ("pause", "resume", "run-now")


def schedule_name_of(request: Request) -> str:
    """The ``{name}`` of a schedule path, checked like any short text."""
    return str(text_value(request.path_params["name"], "the schedule name", required=True))


def executor_name_of(request: Request) -> str:
    """The ``{name}`` of an executor path (``dist:name``), checked like any short text."""
    return str(text_value(request.path_params["name"], "the executor name", required=True))


def change_executor(app: Roadie, request: Request, paused: bool) -> dict[str, Any]:
    """Pause or resume the executor of the path (by the request's user, or "web"); its
    view. An unknown name raises UnknownExecutor."""
    name = executor_name_of(request)
    if paused:
        state = app.pause_executor(name, by=actor_of(request.scope))
    else:
        state = app.resume_executor(name)
    return views.executor_states_view(app, [state])[0]


def list_filters(request: Request) -> dict[str, Any]:
    """``list_tasks`` arguments from query parameters (shared with the tasks page)."""
    params = request.query_params
    filters: dict[str, Any] = {}
    statuses = [s for s in params.getlist("status") if s]
    if statuses:
        try:
            filters["status"] = [Status.parse(s) for s in statuses]
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    for key in ("executor", "owner", "group"):
        value = text_value(params.get(key) or None, f"query parameter {key!r}")
        if value:
            filters[key] = value
    search = text_value(params.get("q") or None, "query parameter 'q'")
    if search:
        filters["name_contains"] = search
    schedule = text_value(params.get("schedule") or None, "query parameter 'schedule'")
    if schedule:
        filters["schedule"] = schedule
    if params.get("parent"):
        filters["parent_id"] = int_param(request, "parent", 0, 0, MAX_ID)
    filters["limit"] = int_param(request, "limit", 50, 1, MAX_LIMIT)
    filters["offset"] = int_param(request, "offset", 0, 0, 10**9)
    return filters


def list_tasks(app: Roadie, request: Request) -> dict[str, Any]:
    """The tasks matching the request's filters, with counts per status and paging."""
    filters = list_filters(request)
    tasks = app.list_tasks(**filters)
    limit, offset = filters["limit"], filters["offset"]
    return {
        "tasks": [views.task_summary(t) for t in tasks],
        "counts": views.counts_view(app),
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(tasks) == limit else None,
    }


def new_task_arguments(body: Any) -> dict[str, Any]:
    """``add_task`` arguments from a JSON body, checked."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object like "
                         '{"executor": "dist:name", "context": {...}}')
    known = {"executor", "context", "name", "owner", "group", "priority", "tags", "delay",
             "timeout"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(known))}")
    executor = text_value(body.get("executor"), "'executor'", required=True)
    context = body.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, Mapping):
        raise BadRequest("'context' must be a JSON object (a map of names to values)")
    _check_json_text(context, "context")
    arguments: dict[str, Any] = {"executor": executor, "context": dict(context)}
    arguments["name"] = text_value(body.get("name"), "'name'") or ""
    for key in ("owner", "group"):
        arguments[key] = text_value(body.get(key), f"'{key}'") or None
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or \
            not -(2**31) <= priority < 2**31:
        raise BadRequest("'priority' must be an integer between -2147483648 and 2147483647")
    arguments["priority"] = priority
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("'tags' must be a list of strings")
    for tag in tags:
        text_value(tag, "a tag")
    if sum(len(t) + 1 for t in tags) > 500:
        raise BadRequest("'tags' are too long together (500 characters at most)")
    arguments["tags"] = tags
    for key, high in (("delay", 10 * 365 * 86400.0), ("timeout", 365 * 86400.0)):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or not (0 if key == "delay" else 0.001) <= value <= high:
            raise BadRequest(f"'{key}' must be a number of seconds between "
                             f"{0 if key == 'delay' else 0.001} and {high:.0f}")
        arguments[key] = float(value)
    return arguments


def _check_json_text(value: Any, where: str, depth: int = 0) -> None:
    """Refuse strings a database cannot keep (NUL, lone surrogates) anywhere in a value."""
    if depth > 64:
        raise BadRequest(f"{where} is nested too deeply (64 levels at most)")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeError:
            raise BadRequest(f"{where} holds text that is not valid Unicode") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_json_text(key, where, depth + 1)
            _check_json_text(item, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_text(item, f"{where}[{index}]", depth + 1)


def add_task(app: Roadie, body: Any) -> dict[str, Any]:
    """Validate and add a task from a JSON body; returns its detail."""
    arguments = new_task_arguments(body)
    task = app.add_task(arguments.pop("executor"), arguments.pop("context"), **arguments)
    return views.task_detail(app, task)


def routes(app: Roadie, extensions: WebExtensions | None = None) -> list[Route]:
    """The API's routes, bound to ``app`` (``extensions``: plugins' task panels)."""

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            raise BadRequest("the body is empty; send a JSON object", 400)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeError) as exc:
            raise BadRequest(f"the body is not valid JSON ({exc})", 400) from None

    @errors_as_json
    def tasks_get(request: Request) -> Response:
        return JSONResponse(list_tasks(app, request))

    async def tasks_post(request: Request) -> Response:
        try:
            body = await read_json(request)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        from starlette.concurrency import run_in_threadpool

        response = await run_in_threadpool(errors_as_json(add_task), app, body)
        if isinstance(response, Response):
            return response
        return JSONResponse(response, status_code=201)

    @errors_as_json
    def task_get(request: Request) -> Response:
        task = app.get_task(task_id_of(request))
        detail = views.task_detail(app, task)
        detail["attachments"] = [views.attachment_view(a)
                                 for a in app.list_attachments(task.id)]
        detail["attempts_log"] = [views.attempt_view(a) for a in app.attempts(task.id)]
        if extensions is not None:
            detail["panels"] = render_panels(app, extensions, task)
        return JSONResponse(detail)

    @errors_as_json
    def task_delete(request: Request) -> Response:
        task_id = task_id_of(request)
        app.delete_task(task_id)
        return JSONResponse({"deleted": task_id})

    @errors_as_json
    def task_cancel(request: Request) -> Response:
        task = app.cancel_task(task_id_of(request), by="web")
        return JSONResponse(views.task_detail(app, task))

    @errors_as_json
    def task_resume(request: Request) -> Response:
        task = app.resume_task(task_id_of(request))
        return JSONResponse(views.task_detail(app, task))

    @errors_as_json
    def task_status(request: Request) -> Response:
        task = app.get_task(task_id_of(request))
        detail = views.task_detail(app, task)
        return JSONResponse({key: detail[key] for key in (
            "id", "status", "status_message", "completed", "cancel_requested", "progress",
            "status_attributes", "recent_messages", "updated_at")})

    @errors_as_json
    def task_attempts(request: Request) -> Response:
        attempts = app.attempts(task_id_of(request))
        return JSONResponse({"attempts": [views.attempt_view(a) for a in attempts]})

    @errors_as_json
    def task_attachments(request: Request) -> Response:
        attachments = app.list_attachments(task_id_of(request))
        return JSONResponse({"attachments": [views.attachment_view(a) for a in attachments]})

    @errors_as_json
    def attachment_get(request: Request) -> Response:
        return download(app, task_id_of(request), request.path_params["name"])

    @errors_as_json
    def nodes_get(request: Request) -> Response:
        return JSONResponse({"nodes": views.nodes_view(app)})

    @errors_as_json
    def plugins_get(request: Request) -> Response:
        return JSONResponse(views.plugins_view(app))

    @errors_as_json
    def executors_get(request: Request) -> Response:
        return JSONResponse({"executors": views.executor_states_view(app)})

    @errors_as_json
    def stats_get(request: Request) -> Response:
        try:
            stats = app.stats(window=request.query_params.get("window", "3600"))
        except ValueError as exc:
            raise BadRequest(str(exc), 400) from None
        return JSONResponse(stats.as_json())

    def executor_change(paused: bool) -> Callable[[Request], Response]:
        @errors_as_json
        def change(request: Request) -> Response:
            try:
                return JSONResponse(change_executor(app, request, paused))
            except UnknownExecutor as exc:
                return error(404, str(exc))

        return change

    @errors_as_json
    def schedules_get(request: Request) -> Response:
        return JSONResponse({"schedules": views.schedules_view(app)})

    @errors_as_json
    def schedule_get(request: Request) -> Response:
        return JSONResponse(views.schedule_view(app.get_schedule(schedule_name_of(request))))

    @errors_as_json
    def schedule_action(request: Request) -> Response:
        name = schedule_name_of(request)
        action = request.path_params["action"]
        if action not in SCHEDULE_ACTIONS:
            raise BadRequest(f"no schedule action {action!r}; use one of "
                             f"{', '.join(SCHEDULE_ACTIONS)}", 404)
        if action == "run-now":
            task = app.run_schedule_now(name)
            return JSONResponse(views.task_detail(app, task), status_code=201)
        info = app.pause_schedule(name) if action == "pause" else app.resume_schedule(name)
        return JSONResponse(views.schedule_view(info))

    def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(request.scope.get("root_path", "")))

    async def not_found(request: Request) -> Response:
        return error(404, f"no API endpoint {request.method} {request.url.path}; see "
                          f"/api/openapi.json")

    tid = "/api/tasks/{id:int}"
    return [
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/api/tasks", tasks_get, methods=["GET"]),
        Route("/api/tasks", tasks_post, methods=["POST"]),
        Route(tid, task_get, methods=["GET"]),
        Route(tid, task_delete, methods=["DELETE"]),
        Route(tid + "/cancel", task_cancel, methods=["POST"]),
        Route(tid + "/retry", task_resume, methods=["POST"]),
        Route(tid + "/resume", task_resume, methods=["POST"]),
        Route(tid + "/status", task_status, methods=["GET"]),
        Route(tid + "/attempts", task_attempts, methods=["GET"]),
        Route(tid + "/attachments", task_attachments, methods=["GET"]),
        Route(tid + "/attachments/{name}", attachment_get, methods=["GET"]),
        Route("/api/nodes", nodes_get, methods=["GET"]),
        Route("/api/plugins", plugins_get, methods=["GET"]),
        Route("/api/executors", executors_get, methods=["GET"]),
        Route("/api/executors/{name}/pause", executor_change(True), methods=["POST"]),
        Route("/api/executors/{name}/resume", executor_change(False), methods=["POST"]),
        Route("/api/stats", stats_get, methods=["GET"]),
        Route("/api/schedules", schedules_get, methods=["GET"]),
        Route("/api/schedules/{name}", schedule_get, methods=["GET"]),
        Route("/api/schedules/{name}/{action}", schedule_action, methods=["POST"]),
        Route("/api/{rest:path}", not_found,
              methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]


def download(app: Roadie, task_id: int, name: str) -> Response:
    """An attachment as a download (``Content-Disposition: attachment``, safe file name)."""
    from roadie.attachments import check_name

    try:
        check_name(name)
    except AttachmentError as exc:
        raise BadRequest(str(exc), 404) from None
    info = next((a for a in app.list_attachments(task_id) if a.name == name), None)
    if info is None:
        raise AttachmentError(f"task {task_id} has no attachment {name!r}")
    stream = app.open_attachment(task_id, name)

    def chunks() -> Any:
        with stream:
            while chunk := stream.read(64 * 1024):
                yield chunk

    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:200] or "attachment"
    from urllib.parse import quote

    headers = {
        "content-disposition": f"attachment; filename=\"{safe}\"; "
                               f"filename*=UTF-8''{quote(name, safe='')}",
        "content-length": str(info.size),
        "x-content-type-options": "nosniff",
    }
    # Served as bytes whatever they claim to be: a stored HTML file must never render here.
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)
