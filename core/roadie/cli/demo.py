"""``roadie demo``: a few example tasks run by a worker, with a live view."""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING, Any

import click

from roadie.cli.common import console, new_table, styled_status, with_app
from roadie.cli.watch import watch_tasks

if TYPE_CHECKING:
    from roadie.app import Roadie


@click.command()
@click.option("--tasks", "count", type=int, default=6, show_default=True)
@with_app
def demo(app: Roadie, count: int) -> None:
    """Add a few example tasks to the embedded database and run them with a live view."""
    if "roadie-examples:count" not in app.plugins.executor_names():
        raise click.ClickException(
            "roadie demo needs the roadie-examples plugin: pip install -e plugins/roadie-examples"
        )
    from roadie_examples.types import Batch  # the plugin is installed: its type is too

    out = console()
    out.print(f"[bold]roadie demo[/bold] on {app.store.safe_url}")
    plan: list[dict[str, Any]] = [
        {"executor": "roadie-examples:count", "context": {"n": 30 + 10 * i, "delay": 0.04},
         "name": f"count to {30 + 10 * i}"} for i in range(max(count - 5, 1))
    ]
    plan += [
        {"executor": "roadie-examples:fanout", "context": {"items": 48, "width": 8,
                                                           "delay": 0.03},
         "name": "48 children, 8 at a time"},
        {"executor": "roadie-examples:serial", "context": {"seconds": 0.6}, "name": "serial A"},
        {"executor": "roadie-examples:serial", "context": {"seconds": 0.6}, "name": "serial B"},
        {"executor": "roadie-examples:report",
         "context": {"batch": Batch(0, 5, planned=dt.datetime.now(dt.timezone.utc))},
         "name": "report with a Batch"},
        {"executor": "roadie-examples:fail", "context": {"reason": "a demo of a failure"},
         "name": "fails on purpose"},
    ]
    tasks = app.add_tasks(plan)
    out.print(f"added {len(tasks)} tasks; a worker with 4 threads runs them:")
    worker = app.worker(concurrency=4, until_idle=True, handle_signals=False)
    thread = threading.Thread(target=worker.run, name="roadie-demo-worker", daemon=True)
    thread.start()
    try:
        final = watch_tasks(app, [t.id for t in tasks], timeout=120)
    finally:
        worker.stop()
        thread.join(timeout=30)
    out.print()
    table = new_table("id", "name", "status", "message")
    for task in final:
        table.add_row(str(task.id), task.name, styled_status(task.status),
                      task.status_message[:70])
    out.print(table)
    out.print("next: [bold]roadie list[/bold], [bold]roadie show ID[/bold], "
              f"[bold]roadie attachments {tasks[-2].id}[/bold]")


# -- plugins, nodes, database -------------------------------------------------------------
