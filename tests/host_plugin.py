"""A throwaway plugin whose executors run in host processes (``out_of_process = True``)."""

DIST = "hosty"
MODULE = "hosty_plugin"
SOURCE = '''
import ctypes
import os
import time

import roadie


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def roadie_register_types(register):
    register(Point, name="Point", encode=lambda p: [p.x, p.y], decode=lambda d: Point(*d))


class Hosted(roadie.Executor):
    out_of_process = True


class Noop(Hosted):
    def execute(self, task):
        return roadie.Result.SUCCESS


class Where(Hosted):
    """Says which process ran it, and round-trips a plugin type."""

    def execute(self, task):
        point = task.context.get("point")
        task.progress(1, 2)
        assert roadie.current_task() is task
        value = Point(point.x + 1, point.y + 1) if point is not None else None
        return roadie.Result.success(f"pid {os.getpid()}", value)


class Steps(Hosted):
    """Checkpoints each step; fails once at step 3 (then resumes from the checkpoint)."""

    crash_policy = roadie.CrashPolicy.RESUME

    def execute(self, task):
        start = (task.last_checkpoint or {}).get("step", 0)
        for step in range(start, 5):
            task.progress(step + 1, 5)
            task.checkpoint({"step": step + 1})
            if step == 2 and task.attempt == 1:
                time.sleep(0.3)  # let the checkpoint reach the worker
                os.abort()
        squares = task.map(lambda n: n * n, range(4))
        task.attach("report.txt", f"from step {start}: {squares}".encode())
        return roadie.Result.success(f"resumed at {start}")


class Abort(Hosted):
    def execute(self, task):
        os.abort()


class AbortOnce(Hosted):
    """Crash policy RETRY: the second attempt starts over, without the first's checkpoint."""

    crash_policy = roadie.CrashPolicy.RETRY

    def execute(self, task):
        if task.attempt == 1:
            task.checkpoint({"half": True})
            time.sleep(0.3)
            os._exit(3)
        return roadie.Result.success(f"checkpoint {task.last_checkpoint}")


class Sleep(Hosted):
    """Stuck in a call that never reaches a safe point."""

    def execute(self, task):
        time.sleep(3600)
        return roadie.Result.SUCCESS


class Stuck(Hosted):
    """Reports progress once, then never reaches a safe point again."""

    def execute(self, task):
        task.progress(1, 2)
        time.sleep(3600)
        return roadie.Result.SUCCESS


class Polite(Hosted):
    """Waits at a safe point until cancelled."""

    def execute(self, task):
        while True:
            task.progress(1, 2, "waiting")
            if task.wait_cancelled(0.05):
                task.raise_if_cancelled()


class Hog(Hosted):
    def execute(self, task):
        blocks = []
        while True:
            blocks.append(bytearray(16 * 1024 * 1024))
            time.sleep(0.02)


class AsyncWhere(Hosted):
    """An async executor in a host: awaits, reports progress, says which process ran it."""

    async def execute(self, task):
        import asyncio

        await asyncio.sleep(0.01)
        task.progress(1, 1)
        assert roadie.current_task() is task
        return roadie.Result.success(f"pid {os.getpid()}")


class AsyncStuck(Hosted):
    """An async executor that awaits for an hour: a cancel ends it at its await."""

    async def execute(self, task):
        import asyncio

        task.progress(1, 2)
        await asyncio.sleep(3600)
        return roadie.Result.SUCCESS


class Tree(Hosted):
    """Fans out into subtasks from a host (a plugin type in their context), then sums them."""

    def execute(self, task):
        one = task.add_subtask("hosty:leaf", {"point": Point(1, 2)}, name="leaf 0")
        ids = task.add_subtasks({"executor": "hosty:leaf", "context": {"point": Point(i, i)},
                                 "name": f"leaf {i}"} for i in range(1, 4))
        assert one.parent_id == task.id and one.context["point"].x == 1
        task.progress(0, 1 + len(ids))
        return roadie.Result.wait_for_subtasks()

    def subtasks_done(self, task, subtasks):
        total = sum(s.result.x + s.result.y for s in subtasks)
        task.progress(1, 1)
        return roadie.Result.success(f"sum {total} in pid {os.getpid()}", Point(total, 0))


class TreeTwice(Tree):
    """Tree, whose fan-in (in a host) reads its subtasks twice, by position and reversed."""

    def subtasks_done(self, task, subtasks):
        failed = [s.id for s in subtasks if s.status != roadie.Status.SUCCESSFUL]
        if failed:
            return roadie.Result.failed(f"subtasks failed: {failed}")
        seen = {"pid": os.getpid(), "is_subtasks": isinstance(subtasks, roadie.Subtasks),
                "len": len(subtasks), "first": subtasks[0].name, "last": subtasks[-1].name,
                "slice": [s.name for s in subtasks[1:3]],
                "once": [s.name for s in subtasks], "twice": [s.name for s in list(subtasks)],
                "reversed": [s.name for s in reversed(subtasks)]}
        return roadie.Result.success(f"sum={sum(s.result.x for s in subtasks)}", seen)


class Leaf(Hosted):
    def execute(self, task):
        point = task.context["point"]
        return roadie.Result.success("", Point(point.x, point.y))


class Nap(Hosted):
    """Reports progress, then takes a nap without safe points, then succeeds."""

    def execute(self, task):
        task.progress(1, 2)
        time.sleep(float(task.context.get("seconds", 1.0)))
        return roadie.Result.success(f"pid {os.getpid()}")


class Modules(Hosted):
    """Names the modules of ``context["watched"]`` that its host process has loaded."""

    def execute(self, task):
        import sys

        loaded = [name for name in task.context["watched"] if name in sys.modules]
        return roadie.Result.success(f"pid {os.getpid()} loaded {sorted(loaded)}")


class Retrying(Hosted):
    retry = roadie.Retry(on=(ValueError,), max_attempts=2, backoff=0.01)

    def execute(self, task):
        if task.attempt == 1:
            raise ValueError("first try fails")
        return roadie.Result.success("second try")
'''
EXECUTORS = {name: f"{MODULE}:{cls}" for name, cls in {
    "noop": "Noop", "where": "Where", "steps": "Steps", "abort": "Abort",
    "abort-once": "AbortOnce", "sleep": "Sleep",
    "stuck": "Stuck", "polite": "Polite", "hog": "Hog", "retrying": "Retrying",
    "async-where": "AsyncWhere", "async-stuck": "AsyncStuck", "tree": "Tree", "leaf": "Leaf",
    "tree-twice": "TreeTwice",
    "nap": "Nap", "modules": "Modules",
}.items()}
