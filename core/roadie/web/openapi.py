"""The OpenAPI 3.1 document of the JSON API (``GET /api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from roadie.status import Status

STATUS_LABELS = [s.label for s in Status]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NULLABLE_TEXT = {"type": ["string", "null"]}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
PROGRESS = {
    "type": ["object", "null"],
    "properties": {"done": {"type": ["number", "null"]}, "total": {"type": ["number", "null"]},
                   "percent": {"type": "number", "minimum": 0, "maximum": 100}},
    "required": ["percent"],
}
TASK_SUMMARY = {
    "type": "object",
    "required": ["id", "name", "executor", "status", "status_message", "completed",
                 "attempts", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "owner": NULLABLE_TEXT,
        "group": NULLABLE_TEXT,
        "executor": {"type": "string"},
        "status": {"type": "string", "enum": STATUS_LABELS},
        "status_message": {"type": "string"},
        "note": {"type": "string", "description": "the status message, or while it runs the "
                                                  "last message it sent"},
        "completed": {"type": "boolean"},
        "cancel_requested": {"type": "boolean"},
        "progress": PROGRESS,
        "attempts": {"type": "integer"},
        "priority": {"type": "integer"},
        "node": NULLABLE_TEXT,
        "parent_id": {"type": ["integer", "null"]},
        "schedule": {**NULLABLE_TEXT, "description": "the schedule that made it"},
        "subtasks": {"type": ["object", "null"], "additionalProperties": {"type": "integer"},
                     "description": "counts of its subtasks per status"},
        "scheduled_for": {**NULLABLE_TIME, "description": "its schedule's slot"},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": NULLABLE_TIME,
        "finished_at": NULLABLE_TIME,
        "updated_at": NULLABLE_TIME,
    },
}
TASK_DETAIL = {
    "allOf": [_ref("TaskSummary"), {
        "type": "object",
        "required": ["context", "status_attributes", "recent_messages"],
        "properties": {
            "context": {"type": "object"},
            "status_attributes": {"type": "object"},
            "recent_messages": {"type": "array"},
            "error": NULLABLE_TEXT,
            "tags": {"type": "array", "items": {"type": "string"}},
            "plugins": {"type": "object", "additionalProperties": {"type": "string"}},
            "waiting_reason": NULLABLE_TEXT,
            "decode_errors": {"type": "array", "items": {"type": "string"}},
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "attempts_log": {"type": "array", "items": _ref("Attempt")},
            "panels": {"type": "array", "items": {"type": "object"}},
        },
    }],
}
NEW_TASK = {
    "type": "object",
    "required": ["executor"],
    "additionalProperties": False,
    "properties": {
        "executor": {"type": "string", "description": "a qualified name, 'dist:name'",
                     "example": "roadie-examples:count"},
        "context": {"type": "object", "description": "the context map",
                    "example": {"n": 10}},
        "name": {"type": "string", "maxLength": 255},
        "owner": {"type": ["string", "null"], "maxLength": 255},
        "group": {"type": ["string", "null"], "maxLength": 255},
        "priority": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "delay": {"type": "number", "minimum": 0, "description": "seconds before it may run"},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
    },
}
ERROR = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {"error": {"type": "string", "description": "what was wrong"},
                   "status": {"type": "integer"}},
}
ATTEMPT = {
    "type": "object",
    "required": ["attempt", "status", "message"],
    "properties": {"attempt": {"type": "integer"}, "node": NULLABLE_TEXT,
                   "status": {"type": "string"}, "message": {"type": "string"},
                   "error": NULLABLE_TEXT, "started_at": NULLABLE_TIME,
                   "finished_at": NULLABLE_TIME},
}
ATTACHMENT = {
    "type": "object",
    "required": ["name", "size", "checksum", "media_type"],
    "properties": {"name": {"type": "string"}, "size": {"type": "integer"},
                   "checksum": {"type": "string"}, "media_type": {"type": "string"},
                   "created_at": NULLABLE_TIME},
}
NODE = {
    "type": "object",
    "required": ["id", "name", "state", "running"],
    "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                   "host": {"type": "string"}, "pid": {"type": "integer"},
                   "concurrency": {"type": "integer"}, "plugins": {"type": "object"},
                   "executors": {"type": "array", "items": {"type": "string"}},
                   "tags": {"type": "array", "items": {"type": "string"}},
                   "heartbeat_at": {"type": "string"}, "heartbeat_age": {"type": "number"},
                   "state": {"type": "string", "enum": ["alive", "dead", "stopped"]},
                   "running": {"type": "integer"}},
}
SCHEDULE = {
    "type": "object",
    "required": ["name", "executor", "rule", "timezone", "paused", "state", "next_at"],
    "properties": {
        "name": {"type": "string"}, "executor": {"type": "string"},
        "origin": {"type": "string", "enum": ["api", "executor"]},
        "rule": {"type": "string", "description": "the cron expression or interval, in words"},
        "cron": NULLABLE_TEXT, "every": {"type": ["number", "null"]},
        "timezone": {"type": "string"}, "catch_up": {"type": "string"},
        "jitter": {"type": "number"}, "overlap": {"type": "boolean"},
        "paused": {"type": "boolean"},
        "state": {"type": "string", "enum": ["active", "paused", "broken"]},
        "problem": {**NULLABLE_TEXT, "description": "why it cannot fire, when it cannot"},
        "task_name": {"type": "string"}, "owner": NULLABLE_TEXT, "group": NULLABLE_TEXT,
        "priority": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
        "next_at": {**NULLABLE_TIME, "description": "the next slot, UTC (null while paused)"},
        "next_local": {**NULLABLE_TIME, "description": "the next slot in its time zone"},
        "last_slot": NULLABLE_TIME, "last_task_id": {"type": ["integer", "null"]},
        "last_fired_by": NULLABLE_TEXT, "note": {"type": "string"},
    },
}


EXECUTOR = {
    "type": "object",
    "required": ["executor", "paused", "paused_at", "paused_by", "max_running", "rate_limit",
                 "waiting", "held", "running"],
    "properties": {
        "executor": {"type": "string", "description": "its qualified name, 'dist:name'"},
        "name": {"type": "string", "description": "the same as 'executor'"},
        "installed": {"type": "boolean", "description": "installed in the web app's process"},
        "nodes": {"type": "integer", "description": "live worker nodes that run it"},
        "paused": {"type": "boolean",
                   "description": "workers start none of its tasks until it is resumed"},
        "paused_at": NULLABLE_TIME, "paused_by": NULLABLE_TEXT,
        "max_running": {"type": ["integer", "null"], "minimum": 1,
                        "description": "at most this many of its tasks run at once"},
        "rate_limit": {"type": ["object", "null"], "required": ["count", "per"],
                       "description": "at most 'count' starts in any 'per' seconds",
                       "properties": {"count": {"type": "integer", "minimum": 1},
                                      "per": {"type": "number", "exclusiveMinimum": 0}}},
        "limits": {"type": "string", "description": "the limits in words ('' for none)"},
        "waiting": {"type": "integer", "minimum": 0, "description": "its waiting tasks"},
        "held": {"type": "integer", "minimum": 0,
                 "description": "those of them parked behind a limit"},
        "running": {"type": "integer", "minimum": 0, "description": "its running tasks"},
    },
}

MS = {"type": ["number", "null"], "minimum": 0}
STATS = {
    "type": "object", "required": ["buckets", "executors"], "additionalProperties": False,
    "properties": {
        "buckets": {
            "type": "array",
            "description": "oldest first, every bucket of the window (a minute for an hour, "
                           "wider for longer windows): attempts started and tasks ended in it",
            "items": {"type": "object", "additionalProperties": False,
                      "required": ["at", "started", "succeeded", "failed", "cancelled"],
                      "properties": {
                          "at": {"type": "string", "format": "date-time",
                                 "description": "the bucket's start"},
                          "started": {"type": "integer", "minimum": 0},
                          "succeeded": {"type": "integer", "minimum": 0},
                          "failed": {"type": "integer", "minimum": 0},
                          "cancelled": {"type": "integer", "minimum": 0}}}},
        "executors": {
            "type": "array", "description": "by name",
            "items": {"type": "object", "additionalProperties": False,
                      "required": ["executor", "waiting", "running", "failed_last_hour",
                                   "wait_p50_ms", "wait_p95_ms", "run_p50_ms", "run_p95_ms"],
                      "properties": {
                          "executor": {"type": "string"},
                          "waiting": {"type": "integer", "minimum": 0},
                          "running": {"type": "integer", "minimum": 0},
                          "failed_last_hour": {"type": "integer", "minimum": 0},
                          "wait_p50_ms": MS, "wait_p95_ms": MS, "run_p50_ms": MS,
                          "run_p95_ms": MS}}},
    },
}


def _errors() -> dict[str, Any]:
    return {"default": _json(_ref("Error"), "an error, with a message saying what was wrong")}


def _task_op(summary: str, method: str, ok: dict[str, Any], op_id: str) -> dict[str, Any]:
    return {method: {"summary": summary, "operationId": op_id,
                     "parameters": [{"$ref": "#/components/parameters/TaskId"}],
                     "responses": {"200": ok, **_errors()}}}


def _schedule_op(summary: str, op_id: str) -> dict[str, Any]:
    return {"post": {"summary": summary, "operationId": op_id,
                     "parameters": [{"$ref": "#/components/parameters/ScheduleName"}],
                     "responses": {"200": _json(_ref("Schedule"), "the schedule"),
                                   **_errors()}}}


def _executor_op(summary: str, op_id: str) -> dict[str, Any]:
    return {"post": {"summary": summary, "operationId": op_id,
                     "parameters": [{"$ref": "#/components/parameters/ExecutorName"}],
                     "responses": {"200": _json(_ref("Executor"), "the executor"),
                                   **_errors()}}}


def openapi_document(root_path: str = "") -> dict[str, Any]:
    """The API description (paths relative to where the app is mounted)."""
    query = [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": STATUS_LABELS},
         "description": "a status label (repeat the parameter for several)"},
        {"name": "executor", "in": "query", "schema": {"type": "string"}},
        {"name": "owner", "in": "query", "schema": {"type": "string"}},
        {"name": "group", "in": "query", "schema": {"type": "string"}},
        {"name": "q", "in": "query", "schema": {"type": "string"},
         "description": "a part of the task name (case-insensitive)"},
        {"name": "schedule", "in": "query", "schema": {"type": "string"},
         "description": "the tasks made by this schedule"},
        {"name": "parent", "in": "query", "schema": {"type": "integer", "minimum": 0},
         "description": "the subtasks of this task"},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    ]
    task_detail = _json(_ref("TaskDetail"), "the task")
    return {
        "openapi": "3.1.0",
        "info": {"title": "roadie", "version": "1",
                 "description": "Persistent background tasks: read, add, cancel, retry and "
                                "delete them; pause and resume executors. With a token, "
                                "send 'Authorization: Bearer <token>'."},
        "servers": [{"url": root_path or "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/tasks": {
                "get": {"summary": "List tasks (filters, paging, counts per status)",
                        "operationId": "listTasks", "parameters": query,
                        "responses": {"200": _json({
                            "type": "object", "required": ["tasks", "counts"],
                            "properties": {
                                "tasks": {"type": "array", "items": _ref("TaskSummary")},
                                "counts": {"type": "object",
                                           "additionalProperties": {"type": "integer"}},
                                "limit": {"type": "integer"}, "offset": {"type": "integer"},
                                "next_offset": {"type": ["integer", "null"]}}},
                            "a page of tasks, newest first"), **_errors()}},
                "post": {"summary": "Add a task", "operationId": "addTask",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": _ref("NewTask")}}},
                         "responses": {"201": _json(_ref("TaskDetail"), "the new task"),
                                       **_errors()}},
            },
            "/api/tasks/{id}": {
                **_task_op("One task", "get", task_detail, "getTask"),
                **_task_op("Delete a task that is not running", "delete", _json(
                    {"type": "object", "required": ["deleted"],
                     "properties": {"deleted": {"type": "integer"}}}, "deleted"),
                    "deleteTask"),
            },
            "/api/tasks/{id}/cancel": _task_op("Cancel a task", "post", task_detail,
                                               "cancelTask"),
            "/api/tasks/{id}/retry": _task_op("Run a failed or cancelled task again", "post",
                                              task_detail, "retryTask"),
            "/api/tasks/{id}/resume": _task_op("Resume a failed or cancelled task", "post",
                                               task_detail, "resumeTask"),
            "/api/tasks/{id}/status": _task_op("The live status of a task", "get", _json(
                {"type": "object", "required": ["id", "status", "status_attributes"],
                 "properties": {"id": {"type": "integer"}, "status": {"type": "string"},
                                "progress": PROGRESS,
                                "status_attributes": {"type": "object"},
                                "recent_messages": {"type": "array"}}},
                "status, progress and status attributes"), "getTaskStatus"),
            "/api/tasks/{id}/attempts": _task_op("The finished attempts of a task", "get", _json(
                {"type": "object", "required": ["attempts"],
                 "properties": {"attempts": {"type": "array", "items": _ref("Attempt")}}},
                "attempts"), "getTaskAttempts"),
            "/api/tasks/{id}/attachments": _task_op("The attachments of a task", "get", _json(
                {"type": "object", "required": ["attachments"],
                 "properties": {"attachments": {"type": "array",
                                                "items": _ref("Attachment")}}},
                "attachments"), "listAttachments"),
            "/api/tasks/{id}/attachments/{name}": {"get": {
                "summary": "Download an attachment", "operationId": "getAttachment",
                "parameters": [{"$ref": "#/components/parameters/TaskId"},
                               {"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file, as a download", "content": {
                    "application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}},
                              **_errors()}}},
            "/api/nodes": {"get": {"summary": "Worker nodes", "operationId": "listNodes",
                                   "responses": {"200": _json({
                                       "type": "object", "required": ["nodes"],
                                       "properties": {"nodes": {"type": "array",
                                                                "items": _ref("Node")}}},
                                       "nodes"), **_errors()}}},
            "/api/plugins": {"get": {"summary": "Installed plugins, built-ins, broken ones",
                                     "operationId": "listPlugins",
                                     "responses": {"200": _json({
                                         "type": "object", "required": ["plugins"],
                                         "properties": {"plugins": {"type": "array"},
                                                        "builtins": {"type": "array"},
                                                        "environment_errors":
                                                            {"type": "array"}}},
                                         "plugins"), **_errors()}}},
            "/api/executors": {"get": {
                "summary": "Executors: paused or not, their limits, their waiting, held and "
                           "running tasks, and where they run",
                "operationId": "listExecutors",
                "responses": {"200": _json({
                    "type": "object", "required": ["executors"],
                    "properties": {"executors": {"type": "array",
                                                 "items": _ref("Executor")}}},
                    "executors, by name"), **_errors()}}},
            "/api/executors/{name}/pause": _executor_op(
                "Stop workers starting an executor's tasks (running ones finish)",
                "pauseExecutor"),
            "/api/executors/{name}/resume": _executor_op(
                "Let workers start a paused executor's tasks again", "resumeExecutor"),
            "/api/stats": {"get": {
                "summary": "Throughput, failures, queues and wait and run times (the overview)",
                "operationId": "getStats",
                "parameters": [{"name": "window", "in": "query",
                                "description": "how far back, in seconds (default an hour)",
                                "schema": {"type": "integer", "minimum": 60,
                                           "maximum": 604800, "default": 3600}}],
                "responses": {"200": _json(_ref("Stats"), "the statistics"),
                              "400": _json(_ref("Error"), "a bad window"), **_errors()}}},
            "/api/schedules": {"get": {"summary": "Schedules with their next runs",
                                       "operationId": "listSchedules",
                                       "responses": {"200": _json({
                                           "type": "object", "required": ["schedules"],
                                           "properties": {"schedules": {
                                               "type": "array", "items": _ref("Schedule")}}},
                                           "schedules, by name"), **_errors()}}},
            "/api/schedules/{name}": {"get": {
                "summary": "One schedule", "operationId": "getSchedule",
                "parameters": [{"$ref": "#/components/parameters/ScheduleName"}],
                "responses": {"200": _json(_ref("Schedule"), "the schedule"), **_errors()}}},
            "/api/schedules/{name}/pause": _schedule_op("Stop a schedule firing",
                                                        "pauseSchedule"),
            "/api/schedules/{name}/resume": _schedule_op("Let a paused schedule fire again",
                                                         "resumeSchedule"),
            "/api/schedules/{name}/run-now": {"post": {
                "summary": "Make one task of a schedule now, outside its slots",
                "operationId": "runScheduleNow",
                "parameters": [{"$ref": "#/components/parameters/ScheduleName"}],
                "responses": {"201": _json(_ref("TaskDetail"), "the new task"),
                              **_errors()}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {"TaskId": {"name": "id", "in": "path", "required": True,
                                      "schema": {"type": "integer", "minimum": 0}},
                           "ScheduleName": {"name": "name", "in": "path", "required": True,
                                            "schema": {"type": "string", "minLength": 1,
                                                       "maxLength": 255}},
                           "ExecutorName": {"name": "name", "in": "path", "required": True,
                                            "description": "a qualified name, 'dist:name'",
                                            "schema": {"type": "string", "minLength": 1,
                                                       "maxLength": 255},
                                            "example": "roadie-examples:count"}},
            "schemas": {"TaskSummary": TASK_SUMMARY, "TaskDetail": TASK_DETAIL,
                        "NewTask": NEW_TASK, "Error": ERROR, "Attempt": ATTEMPT,
                        "Attachment": ATTACHMENT, "Node": NODE,
                        "Schedule": SCHEDULE, "Executor": EXECUTOR, "Stats": STATS},
        },
    }
