"""A FastAPI service that starts roadie tasks and follows them without blocking its event loop.

Every call goes through ``roadie.AsyncRoadie`` (an async database driver), so a slow database
never stalls the other requests. Run it with a worker beside it::

    pip install roadie roadie-examples fastapi uvicorn
    export ROADIE_URL=postgresql+psycopg://user@host/db   # or leave unset: a SQLite file
    roadie db upgrade                                      # PostgreSQL only
    uvicorn examples.fastapi_app:app &
    roadie worker &
    curl -X POST localhost:8000/counts -H 'content-type: application/json' -d '{"n": 5}'
    curl localhost:8000/counts/1/events                    # one JSON line per change
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi
import pydantic
import roadie
from fastapi.responses import StreamingResponse


class CountRequest(pydantic.BaseModel):
    """The body of ``POST /counts``."""

    n: int = pydantic.Field(gt=0, le=100_000)
    owner: str | None = None


def task_view(task: roadie.TaskRecord) -> dict[str, Any]:
    """What the service shows of a task."""
    return {
        "id": task.id,
        "name": task.name,
        "status": task.status.label,
        "message": task.status_message,
        "progress": task.task_status,
        "completed": task.completed,
    }


def create_app(tasks: roadie.AsyncRoadie | None = None) -> fastapi.FastAPI:
    """The service; ``tasks`` defaults to ``roadie.AsyncRoadie()`` (``ROADIE_URL``)."""

    @asynccontextmanager
    async def lifespan(api: fastapi.FastAPI) -> AsyncIterator[None]:
        client = tasks or roadie.AsyncRoadie()
        api.state.tasks = client
        yield
        await client.close()  # this loop's connections

    api = fastapi.FastAPI(title="counting service", lifespan=lifespan)

    def client(request: fastapi.Request) -> roadie.AsyncRoadie:
        return request.app.state.tasks  # type: ignore[no-any-return]

    async def find(request: fastapi.Request, task_id: int) -> roadie.TaskRecord:
        try:
            return await client(request).get_task(task_id)
        except roadie.TaskNotFound:
            raise fastapi.HTTPException(404, f"there is no task {task_id}") from None

    @api.post("/counts", status_code=201)
    async def start_count(body: CountRequest, request: fastapi.Request) -> dict[str, Any]:
        task = await client(request).add_task(
            "roadie-examples:count", {"n": body.n}, name=f"count to {body.n}", owner=body.owner)
        return task_view(task)

    @api.get("/counts")
    async def list_counts(request: fastapi.Request, owner: str | None = None,
                          status: str | None = None) -> list[dict[str, Any]]:
        try:
            found = await client(request).list_tasks(
                executor="roadie-examples:count", owner=owner, status=status, limit=50)
        except ValueError as exc:  # an unknown status name
            raise fastapi.HTTPException(422, str(exc)) from None
        return [task_view(t) for t in found]

    @api.get("/counts/{task_id}")
    async def show_count(task_id: int, request: fastapi.Request) -> dict[str, Any]:
        return task_view(await find(request, task_id))

    @api.post("/counts/{task_id}/cancel")
    async def cancel_count(task_id: int, request: fastapi.Request) -> dict[str, Any]:
        await find(request, task_id)
        try:
            task = await client(request).cancel_task(task_id, by="counting service")
        except roadie.InvalidTransition as exc:
            raise fastapi.HTTPException(409, str(exc)) from None
        return task_view(task)

    @api.get("/counts/{task_id}/events")
    async def follow_count(task_id: int, request: fastapi.Request) -> StreamingResponse:
        await find(request, task_id)

        async def lines() -> AsyncIterator[str]:
            async for task in client(request).watch([task_id], timeout=3600):
                yield json.dumps(task_view(task)) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return api


app = create_app()
