"""The overview's charts: SVG drawn on the server (no script, no request elsewhere), each with
an accessible name that states its latest figures and a table with the same numbers.

Colours come from classes in ``static/roadie.css`` (the Content-Security-Policy allows no
inline style); everything written from data is escaped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from roadie.rollup import Stats, duration

WIDTH, HEIGHT = 720, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
RANGE_WORDS = {"1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days"}


@dataclass(frozen=True)
class Chart:
    """One chart: its id, heading, accessible name, SVG and table (head, rows)."""

    id: str
    heading: str
    label: str
    svg: Markup
    head: list[str]
    rows: list[list[str]]


def _nice(value: float) -> float:
    """A round number at least ``value`` (the top of an axis)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.1f}"


def _clock(when: dt.datetime, window: int) -> str:
    return when.strftime("%H:%M" if window <= 86400 else "%m-%d %H:%M")


def _lines(id_: str, label: str, times: Sequence[dt.datetime],
           series: Sequence[tuple[str, str, Sequence[float]]], start: dt.datetime,
           end: dt.datetime, window: int) -> Markup:
    """A line chart of ``series`` (name, css class, values at ``times``) over [start, end]."""
    top = _nice(max((v for _, _, values in series for v in values), default=0.0))
    span = max((end - start).total_seconds(), 1.0)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(when: dt.datetime) -> float:
        return LEFT + inner_w * min(max((when - start).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return TOP + inner_h * (1 - value / top)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{id_}-title" focusable="false">'
             f'<title id="{id_}-title">{escape(label)}</title>']
    for fraction in (0.0, 0.5, 1.0):
        gy = y(top * fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" '
                     f'y2="{gy:.1f}"/><text class="tick" x="{LEFT - 4}" y="{gy + 4:.1f}" '
                     f'text-anchor="end">{escape(_number(top * fraction))}</text>')
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        when = start + dt.timedelta(seconds=span * fraction)
        parts.append(f'<text class="tick" x="{LEFT + inner_w * fraction:.1f}" '
                     f'y="{HEIGHT - 6}" text-anchor="{anchor}">'
                     f'{escape(_clock(when, window))}</text>')
    for name, css, values in series:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=True))
        if len(times) == 1:  # one point: a dot
            parts.append(f'<circle class="dot {css}" cx="{x(times[0]):.1f}" '
                         f'cy="{y(values[0]):.1f}" r="3"><title>{escape(name)}</title></circle>')
        elif times:
            parts.append(f'<polyline class="line {css}" points="{points}">'
                         f'<title>{escape(name)}</title></polyline>')
    parts.append("</svg>")
    return Markup("".join(parts))


def throughput_chart(stats: Stats, range_key: str) -> Chart:
    """Tasks started, succeeded and failed per bucket over the window."""
    buckets = stats.buckets
    per = {60: "minute", 3600: "hour", 86400: "day"}.get(
        stats.step, f"{stats.step // 60} minutes" if stats.step < 3600
        else f"{stats.step // 3600} hours")
    series = [("started", "series-started", [float(b.started) for b in buckets]),
              ("succeeded", "series-succeeded", [float(b.succeeded) for b in buckets]),
              ("failed", "series-failed", [float(b.failed) for b in buckets]),
              ("cancelled", "series-cancelled", [float(b.cancelled) for b in buckets])]
    totals = {name: int(sum(values)) for name, _, values in series}
    last = buckets[-1] if buckets else None
    latest = (f"latest {per}: {last.started} started, {last.succeeded} succeeded, "
              f"{last.failed} failed" if last else "no data")
    label = (f"Tasks per {per} over {RANGE_WORDS[range_key]}: {latest}; in all "
             f"{totals['started']} started, {totals['succeeded']} succeeded, "
             f"{totals['failed']} failed, {totals['cancelled']} cancelled")
    end = buckets[-1].at + dt.timedelta(seconds=stats.step) if buckets else stats.now
    start = buckets[0].at if buckets else stats.now
    times = [b.at + dt.timedelta(seconds=stats.step / 2) for b in buckets]
    svg = _lines("chart-throughput", label, times, series, start, end, stats.window)
    rows = [[_clock(b.at, stats.window), str(b.started), str(b.succeeded), str(b.failed),
             str(b.cancelled)] for b in reversed(buckets) if b.started or b.succeeded
            or b.failed or b.cancelled]
    return Chart("chart-throughput", f"Tasks per {per}", label, svg,
                 ["from", "started", "succeeded", "failed", "cancelled"], rows)


def depth_chart(stats: Stats, range_key: str) -> Chart:
    """The queue's depth (waiting, running) over the window, from the samples."""
    samples = stats.depth
    now = samples[-1]
    label = (f"Queue depth over {RANGE_WORDS[range_key]}: now {now.waiting} waiting and "
             f"{now.running} running; at most {max(s.waiting for s in samples)} waiting")
    start = stats.now - dt.timedelta(seconds=stats.window)
    svg = _lines("chart-depth", label, [s.at for s in samples],
                 [("waiting", "series-waiting", [float(s.waiting) for s in samples]),
                  ("running", "series-running", [float(s.running) for s in samples])],
                 start, stats.now, stats.window)
    rows = [[_clock(s.at, stats.window) + (" (now)" if s is now else ""), str(s.waiting),
             str(s.running)] for s in reversed(samples)]
    return Chart("chart-depth", "Queue depth", label, svg, ["at", "waiting", "running"], rows)


def times_chart(stats: Stats, range_key: str) -> Chart:
    """Wait and run times, p50 and p95, per executor (bars on a log scale)."""
    measured = [e for e in stats.executors
                if e.wait_p50_ms is not None or e.run_p50_ms is not None]
    values = [v for e in measured for v in (e.wait_p95_ms, e.run_p95_ms) if v is not None]
    top = max(max(values, default=1.0), 10.0)
    decades = math.log10(top) + 1  # from 0.1 ms
    row_h, name_w = 22, 230
    height = max(len(measured), 1) * row_h * 2 + 24
    inner_w = WIDTH - name_w - 175

    def w(ms: float | None) -> float:
        if ms is None or ms <= 0.1:
            return 0.0
        return inner_w * min(math.log10(ms * 10) / decades, 1.0)

    if measured:
        figures = "; ".join(f"{e.executor}: wait p50 {duration(e.wait_p50_ms)}, p95 "
                            f"{duration(e.wait_p95_ms)}, run p50 {duration(e.run_p50_ms)}, "
                            f"p95 {duration(e.run_p95_ms)}" for e in measured)
    else:
        figures = "no task started in this window"
    label = f"Wait and run times per executor over {RANGE_WORDS[range_key]}: {figures}"
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-labelledby="chart-times-title" focusable="false">'
             f'<title id="chart-times-title">{escape(label)}</title>']
    y = 4
    for e in measured:
        for kind, p50, p95 in (("wait", e.wait_p50_ms, e.wait_p95_ms),
                               ("run", e.run_p50_ms, e.run_p95_ms)):
            name = e.executor if kind == "wait" else ""
            parts.append(f'<text class="tick name" x="0" y="{y + 15}">{escape(name[:34])}</text>'
                         f'<text class="tick" x="{name_w - 6}" y="{y + 15}" '
                         f'text-anchor="end">{kind}</text>'
                         f'<rect class="bar p95 series-{kind}" x="{name_w}" y="{y + 3}" '
                         f'width="{w(p95):.1f}" height="14"/>'
                         f'<rect class="bar p50 series-{kind}" x="{name_w}" y="{y + 3}" '
                         f'width="{w(p50):.1f}" height="14"/>'
                         f'<text class="tick" x="{name_w + max(w(p95), w(p50)) + 6:.1f}" '
                         f'y="{y + 15}">p50 {escape(duration(p50))} · p95 '
                         f'{escape(duration(p95))}</text>')
            y += row_h
    if not measured:
        parts.append(f'<text class="tick" x="0" y="20">{escape(figures)}</text>')
    parts.append("</svg>")
    rows = [[e.executor, duration(e.wait_p50_ms), duration(e.wait_p95_ms),
             duration(e.run_p50_ms), duration(e.run_p95_ms)] for e in measured]
    return Chart("chart-times", "Wait and run times", label, Markup("".join(parts)),
                 ["executor", "wait p50", "wait p95", "run p50", "run p95"], rows)


def charts(stats: Stats, range_key: str) -> list[Chart]:
    """The overview's charts, in page order."""
    return [throughput_chart(stats, range_key), depth_chart(stats, range_key),
            times_chart(stats, range_key)]
