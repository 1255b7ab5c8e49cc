"""Run inside an environment's Python: print its roadie plugins and executors as JSON.

The worker never imports an environment's plugin code; it runs this module there instead.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Any


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def probe() -> dict[str, Any]:
    """Every distribution with roadie entry points, with each executor's class attributes."""
    import importlib_metadata

    plugins: dict[str, Any] = {}
    for group in ("roadie.executors", "roadie.plugins"):
        for ep in importlib_metadata.entry_points(group=group):
            if ep.dist is None:
                continue
            dist = _canonical(ep.dist.name)
            info = plugins.setdefault(dist, {"version": ep.dist.version or "0",
                                             "executors": {}, "hook_modules": []})
            if group == "roadie.plugins":
                info["hook_modules"].append(ep.value)
                continue
            meta: dict[str, Any] = {"target": ep.value}
            try:
                cls = ep.load()
                meta.update(
                    isolation=cls.isolation.value, crash_policy=cls.crash_policy.value,
                    max_crash_attempts=int(cls.max_crash_attempts
                                           if hasattr(cls, "max_crash_attempts")
                                           else cls.max_attempts),  # roadie before 0.2
                    timeout=cls.timeout,
                    max_running=getattr(cls, "max_running", None),  # roadie 0.3 on
                )
                rate = getattr(cls, "rate_limit", None)
                if rate is not None:
                    meta["rate_limit"] = [rate.count, rate.per]
            except Exception as exc:
                meta["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            info["executors"][ep.name] = meta
    return {"python": sys.executable, "version": sys.version.split()[0], "plugins": plugins}


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
