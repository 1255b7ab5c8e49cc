"""The FastAPI example of docs/async-client.md, end to end through an ASGI client."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.fastapi_app import create_app


def test_the_fastapi_example_adds_follows_and_cancels_tasks(app: roadie.Roadie) -> None:
    api = create_app(app.aio)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=api)
        async with api.router.lifespan_context(api), httpx.AsyncClient(
                transport=transport, base_url="http://test") as http:
            created = await http.post("/counts", json={"n": 3, "owner": "ann"})
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            assert created.json()["status"] == "new"

            bad = await http.post("/counts", json={"n": 0})
            assert bad.status_code == 422
            assert (await http.get("/counts/9999")).status_code == 404

            with BackgroundWorker(app, concurrency=1):
                events = await http.get(f"/counts/{task_id}/events")
            lines = [json.loads(line) for line in events.text.splitlines()]
            assert lines[-1]["status"] == "successful"
            assert lines[-1]["progress"]["done"] == 3
            assert lines[-1]["message"] == "counted to 3"

            shown = await http.get(f"/counts/{task_id}")
            assert shown.json()["completed"] is True
            listed = await http.get("/counts", params={"owner": "ann"})
            assert [t["id"] for t in listed.json()] == [task_id]

            waiting = (await http.post("/counts", json={"n": 5})).json()["id"]
            cancelled = await http.post(f"/counts/{waiting}/cancel")
            assert cancelled.json()["status"] == "cancelled"
            again = await http.post(f"/counts/{waiting}/cancel")
            assert again.status_code == 409
            assert "already ended" in again.json()["detail"]

    asyncio.run(scenario())
    assert app.get_task(1).status is Status.SUCCESSFUL
