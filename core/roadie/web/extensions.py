"""What plugins add to the web app through the ``roadie_web_extend`` hook: pages and panels
on the task page. Both return plain data (rows, or a map of labels to values) that the web app
escapes and renders, and shows as JSON too: a plugin never writes HTML."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import TaskRecord

log = logging.getLogger("roadie.web")

PageRender = Callable[["Roadie"], "list[Mapping[str, Any]] | Mapping[str, Any]"]
PanelRender = Callable[["Roadie", "TaskRecord"], "Mapping[str, Any] | None"]
TextRender = Callable[["Roadie"], "str | bytes"]
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TEXT_PATH = re.compile(r"/[a-z0-9][a-z0-9._-]{0,62}")
_RESERVED = frozenset({"api", "x", "static", "tasks", "submit", "nodes", "plugins", "login",
                       "logout", "events"})  # the web app's own first path segments


@dataclass
class Page:
    """A page a plugin adds at ``/x/<slug>`` (and its JSON twin ``/x/<slug>.json``)."""

    slug: str
    title: str
    render: PageRender
    description: str = ""


@dataclass
class TaskPanel:
    """A section a plugin adds to the task page (and to the task's JSON under ``panels``)."""

    title: str
    render: PanelRender


@dataclass
class TextEndpoint:
    """A plain-text endpoint a plugin adds (for machines: metrics, health)."""

    path: str
    render: TextRender
    media_type: str


@dataclass
class WebExtensions:
    """The registry handed to ``roadie_web_extend(web)``."""

    pages: dict[str, Page] = field(default_factory=dict)
    panels: list[TaskPanel] = field(default_factory=list)
    texts: dict[str, TextEndpoint] = field(default_factory=dict)

    def add_page(self, slug: str, title: str, render: PageRender, *,
                 description: str = "") -> None:
        """Add a page at ``/x/<slug>``: ``render(app)`` returns rows (a list of maps, shown
        as a table) or one map (shown as a list of labels and values)."""
        if not _SLUG.fullmatch(slug):
            raise ValueError(f"web page slug {slug!r} must be lower-case letters, digits and "
                             f"dashes (at most 63)")
        if slug in self.pages:
            raise ValueError(f"web page slug {slug!r} is already taken")
        self.pages[slug] = Page(slug, title, render, description)

    def add_task_panel(self, title: str, render: PanelRender) -> None:
        """Add a section to the task page: ``render(app, task)`` returns a map of labels to
        values for that task, or None to show nothing."""
        self.panels.append(TaskPanel(title, render))

    def add_text(self, path: str, render: TextRender, *,
                 media_type: str = "text/plain; charset=utf-8") -> None:
        """Serve ``render(app)`` (text or bytes) at ``path`` (one segment, like
        ``/metrics``) for machines such as a Prometheus scraper: with a token it asks for the
        bearer token as the API does."""
        if not _TEXT_PATH.fullmatch(path) or path[1:] in _RESERVED:
            raise ValueError(f"web text path {path!r} must be one lower-case segment like "
                             f"'/metrics', not one of the web app's own "
                             f"({', '.join(sorted(_RESERVED))})")
        if path in self.texts:
            raise ValueError(f"web text path {path!r} is already taken")
        self.texts[path] = TextEndpoint(path, render, media_type)


def collect(app: Roadie) -> WebExtensions:
    """Ask every plugin what it adds; a failing plugin is logged and skipped."""
    web = WebExtensions()
    app.plugins.load()
    hook = app.plugins.hook.roadie_web_extend
    for impl in hook.get_hookimpls():
        try:
            impl.function(web=web)
        except Exception as exc:
            log.warning("roadie web: plugin %s failed in roadie_web_extend: %s",
                        impl.plugin_name, exc)
    return web


def render_panels(app: Roadie, web: WebExtensions, task: TaskRecord) -> list[dict[str, Any]]:
    """The plugin panels of one task, as ``{"title", "values"}`` or ``{"title", "error"}``."""
    from roadie.web.views import jsonable

    panels = []
    for panel in web.panels:
        try:
            values = panel.render(app, task)
        except Exception as exc:
            panels.append({"title": panel.title, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if values:
            panels.append({"title": panel.title, "values": jsonable(dict(values))})
    return panels


def text_routes(app: Roadie, web: WebExtensions) -> list[Any]:
    """Starlette routes for the plugins' text endpoints; a failing render answers 500 naming
    the error."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    def endpoint(text: TextEndpoint) -> Callable[[Request], Response]:
        def serve(_request: Request) -> Response:  # sync: Starlette runs it in a thread
            try:
                body = text.render(app)
            except Exception as exc:
                log.warning("roadie web: %s failed: %s", text.path, exc)
                return PlainTextResponse(f"{text.path} failed: {type(exc).__name__}: {exc}\n",
                                         status_code=500)
            return Response(body, media_type=text.media_type)

        return serve

    return [Route(t.path, endpoint(t), methods=["GET"]) for t in web.texts.values()]
