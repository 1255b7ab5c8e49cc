"""``python -m django task_result --backend ALIAS ID ...``: results as JSON, read in another
process than the one that enqueued and the worker."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from roadie_django.compat import TaskResultStatus, task_backends


class Command(BaseCommand):
    help = "Print task results as JSON lines."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default")
        parser.add_argument("ids", nargs="+")

    def handle(self, *args: Any, backend: str, ids: list[str], **options: Any) -> None:
        for result_id in ids:
            result = task_backends[backend].get_result(result_id)
            self.stdout.write(json.dumps({
                "id": result.id, "status": str(result.status), "task": result.task.module_path,
                "return_value": result.return_value
                if result.status == TaskResultStatus.SUCCESSFUL else None,
                "errors": [e.exception_class_path for e in result.errors],
                "worker_ids": result.worker_ids, "args": result.args,
                "finished": result.finished_at is not None,
            }))
