"""The context codec (msgpack with roadie's type registry) against json and pickle.

One typical context map of about 50 keys (strings, ints, floats, timezone-aware datetimes, a
nested list, a registered dataclass) is encoded and decoded many times by:

- roadie: ``TypeRegistry.encode`` / ``TypeRegistry.decode(namespaces=[...])``, as the engine
  does for a task's context;
- json: ``json.dumps(default=...)`` turning datetimes and the dataclass into plain data, and
  ``json.loads`` (which does not rebuild them: it does less work than the others);
- json round-trip: the same with tagged values and an ``object_hook`` that rebuilds them;
- pickle: protocol 5.

    python bench/codec.py [--seconds 1.0]

The issue's target: roadie within 2x of pickle's speed (encode+decode), and smaller than json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import pickle
import time
import zoneinfo
from collections.abc import Callable
from typing import Any

from _results import table, write_section
from roadie.codec import TypeRegistry

UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


@dataclasses.dataclass
class Batch:
    """A small plugin-defined value, as plugins put in contexts."""

    unit: str
    start: int
    size: int
    weights: list[float]


def typical_context() -> dict[str, Any]:
    """About 50 keys, the mix a real task carries."""
    base = dt.datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)
    context: dict[str, Any] = {
        "site": "example.com", "owner": "alice@example.com", "locale": "fr_FR",
        "batch": Batch("pages", 1000, 250, [0.5, 0.25, 0.125]),
        "started": base, "deadline": base.astimezone(PARIS) + dt.timedelta(days=2),
        "rows": [{"id": i, "path": f"/docs/{i}", "score": i / 7, "seen": base} for i in range(5)],
        "flags": [True, False, True], "retry": None,
    }
    for i in range(14):
        context[f"name_{i}"] = f"value number {i} for the task"
        context[f"count_{i}"] = i * 1_234_567
        context[f"ratio_{i}"] = i / 3
    for i in range(2):
        context[f"when_{i}"] = base + dt.timedelta(hours=i)
    return context


def json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_tagged(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        zone = value.tzinfo.key if isinstance(value.tzinfo, zoneinfo.ZoneInfo) else None
        return {"__dt__": value.isoformat(), "zone": zone}
    if isinstance(value, Batch):
        return {"__batch__": dataclasses.asdict(value)}
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_hook(obj: dict[str, Any]) -> Any:
    if "__dt__" in obj:
        value = dt.datetime.fromisoformat(obj["__dt__"])
        return value.astimezone(zoneinfo.ZoneInfo(obj["zone"])) if obj["zone"] else value
    if "__batch__" in obj:
        return Batch(**obj["__batch__"])
    return obj


def rates(functions: dict[str, Callable[[], Any]], seconds: float) -> dict[str, float]:
    """Calls per second of each function: the best of five rounds, the functions taking turns
    in each round (so that a busy moment of the machine hits them all alike)."""
    counts = {}
    for name, fn in functions.items():  # calibrate: about seconds / 5 per round
        count = 1
        while True:
            started = time.perf_counter()
            for _ in range(count):
                fn()
            elapsed = time.perf_counter() - started
            if elapsed > 0.02:
                break
            count *= 2
        counts[name] = max(1, int(count * seconds / 5 / elapsed))
    best = dict.fromkeys(functions, 0.0)
    for _ in range(5):
        for name, fn in functions.items():
            count = counts[name]
            started = time.perf_counter()
            for _ in range(count):
                fn()
            best[name] = max(best[name], count / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    args = parser.parse_args()

    registry = TypeRegistry()
    registry.register(Batch, namespace="bench")
    context = typical_context()
    namespaces = ["bench"]

    codecs: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "roadie (msgpack + registry)": (
            registry.encode,
            lambda data: registry.decode(data, namespaces=namespaces),
        ),
        "json (default hook; loads gives plain data)": (
            lambda v: json.dumps(v, default=json_default).encode(),
            json.loads,
        ),
        "json round-trip (tagged + object_hook)": (
            lambda v: json.dumps(v, default=json_tagged).encode(),
            lambda data: json.loads(data, object_hook=json_hook),
        ),
        "pickle (protocol 5)": (
            lambda v: pickle.dumps(v, protocol=5),
            pickle.loads,
        ),
    }
    decoded = registry.decode(registry.encode(context), namespaces=namespaces)
    assert decoded == context, "roadie's codec does not round-trip the context"

    results: dict[str, dict[str, float]] = {
        name: {"bytes": len(encode(context))} for name, (encode, _) in codecs.items()
    }
    for kind in ("encode", "decode", "both"):
        functions = {}
        for name, (encode, decode) in codecs.items():
            data = encode(context)
            functions[name] = {
                "encode": lambda encode=encode: encode(context),
                "decode": lambda decode=decode, data=data: decode(data),
                "both": lambda encode=encode, decode=decode: decode(encode(context)),
            }[kind]
        for name, value in rates(functions, args.seconds).items():
            results[name][kind] = value
        print(f"  measured {kind}", flush=True)

    ours = results["roadie (msgpack + registry)"]
    pickled = results["pickle (protocol 5)"]
    plain_json = results["json (default hook; loads gives plain data)"]
    header = ["codec", "encode/s", "decode/s", "encode+decode/s", "µs per round trip", "bytes",
              "vs pickle (time)"]
    rows = [
        [name, f"{r['encode']:,.0f}", f"{r['decode']:,.0f}", f"{r['both']:,.0f}",
         f"{1e6 / r['both']:.1f}", f"{r['bytes']:,.0f}", f"{pickled['both'] / r['both']:.2f}x"]
        for name, r in results.items()
    ]
    text = table(header, rows)
    slowdown = pickled["both"] / ours["both"]
    speed_met = slowdown <= 2.0
    size_met = ours["bytes"] < plain_json["bytes"]
    verdict = "\n".join([
        f"Target (the issue): within 2x of pickle's speed — "
        f"{'met' if speed_met else 'NOT met'} ({slowdown:.2f}x pickle's time per round trip); "
        f"smaller than json — {'met' if size_met else 'NOT met'} "
        f"({ours['bytes']:,.0f} bytes vs {plain_json['bytes']:,.0f}, "
        f"{100 * ours['bytes'] / plain_json['bytes']:.0f}%).",
    ])
    print()
    print(text)
    print()
    print(verdict)
    if args.no_write:
        return
    keys = len(context)
    notes = (
        f"One context map of {keys} keys: 17 strings, 14 ints, 14 floats, 4 timezone-aware "
        "datetimes (UTC and Europe/Paris), a list of 5 dicts that hold 5 more datetimes, a "
        "list of bools, None, and a dataclass registered with "
        "`registry.register(Batch, namespace=\"bench\")` (10 typed values in all). Rates are "
        "the best of 5 rounds, the codecs taking turns; roadie decodes with "
        "`namespaces=[\"bench\"]` as the worker does. Plain json's decode does not rebuild the "
        "datetimes or the dataclass (it does less work); the json round-trip "
        "row does."
    )
    write_section("Context codec", "\n\n".join([notes, text, verdict]))


if __name__ == "__main__":
    main()
