"""roadie's web app: server-rendered pages and a JSON API over one ``Roadie``, live over
server-sent events, safe by default.

``create_app(app)`` returns an ASGI application; ``roadie web`` serves it with uvicorn, and any
ASGI application can mount it (``Mount("/roadie", create_app(app, token=...))``). Install with
``pip install 'roadie[web]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from roadie.app import Roadie

__all__ = ["create_app"]


def create_app(
    app: Roadie,
    *,
    token: str | None = None,
    read_only: bool = False,
    allowed_hosts: Iterable[str] | None = None,
    poll_interval: float | None = None,
) -> Starlette:
    """The web app (an ASGI application) for ``app``.

    ``token``: when set, the API needs ``Authorization: Bearer <token>`` and browsers log in at
    ``/login``; without it the app answers only requests addressed to a loopback host.
    ``read_only``: refuse every state-changing request. ``allowed_hosts``: the ``Host`` names
    to answer (default: loopback names without a token, any with one). ``poll_interval``: how
    often live pages look for changes made by other processes on SQLite (default 0.25 s).
    """
    try:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "roadie's web app needs its extra: pip install 'roadie[web]'") from exc

    from roadie.web import api
    from roadie.web.extensions import collect, text_routes
    from roadie.web.live import Feed
    from roadie.web.pages import Pages
    from roadie.web.security import Security, SecurityMiddleware

    security = Security(token, read_only=read_only, allowed_hosts=allowed_hosts)
    feed = Feed(app, poll_interval=poll_interval)
    extensions = collect(app)
    security.machine_paths = frozenset(extensions.texts)  # answered like the API
    pages = Pages(app, security, feed, extensions)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        feed.close()

    static = StaticFiles(directory=Path(__file__).parent / "static")
    web = Starlette(
        routes=[*api.routes(app, extensions), *pages.routes(), *text_routes(app, extensions),
                Mount("/static", static, name="static")],
        middleware=[Middleware(SecurityMiddleware, security=security)],
        lifespan=lifespan,
    )
    web.state.roadie = app
    web.state.feed = feed
    web.state.security = security
    return web
