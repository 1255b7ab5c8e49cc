"""The executors that run Django tasks on roadie workers: ``roadie-django:task`` for
functions, ``roadie-django:async-task`` for coroutine functions (on the worker's event loop).

The backend picks one when it enqueues; each task's name is the Django task's module path
(``myapp.tasks.send_email``), so that ``roadie list``, the dashboard and the metrics show it.
Importing this module imports neither Django nor the project: a worker loads it at start.
"""

from __future__ import annotations

import roadie


class DjangoTask(roadie.Executor):
    """Runs a Django ``@task`` function: ``django.setup()`` once per process, Django's
    connection handling before and after (as around a request), the return value as the
    task's result, an exception failing it with its traceback kept."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        """Call the task function (a coroutine function runs to its end here too)."""
        from roadie_django.runtime import run_sync

        return run_sync(task)

    def handle_exception(self, task: roadie.RunningTask, exc: BaseException) -> str:
        """``module.Exception: message``: the class path, which Django's ``errors`` keep."""
        from roadie_django.results import failure_message

        return failure_message(exc)


class AsyncDjangoTask(roadie.Executor):
    """Runs a Django ``@task`` coroutine function on the worker's event loop (cancelled at
    any ``await`` by ``roadie cancel``); otherwise as ``DjangoTask``."""

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:  # type: ignore[override]
        """Await the task function."""
        from roadie_django.runtime import run_async

        return await run_async(task)

    def handle_exception(self, task: roadie.RunningTask, exc: BaseException) -> str:
        """As ``DjangoTask.handle_exception``."""
        from roadie_django.results import failure_message

        return failure_message(exc)
