"""``roadie web``: serve the web app (pages and JSON API) with uvicorn."""

from __future__ import annotations

import ipaddress
import os

import click

from roadie.cli.common import app_of

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another than loopback needs a token).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None,
              help="Token for the API (Authorization: Bearer) and the login page "
                   "(env ROADIE_WEB_TOKEN).")
@click.option("--read-only", is_flag=True, help="Refuse every change (cancel, retry, delete, "
              "submit).")
@click.pass_context
def web(ctx: click.Context, host: str, port: int, token: str | None, read_only: bool) -> None:
    """Serve the dashboard and the HTTP API (http://127.0.0.1:8000 by default)."""
    token = token or os.environ.get("ROADIE_WEB_TOKEN") or None
    if not is_loopback(host) and token is None:
        click.echo(f"error: refusing to listen on {host} without a token: anyone who reaches "
                   f"it could cancel and delete tasks; pass --token or set ROADIE_WEB_TOKEN",
                   err=True)
        ctx.exit(2)
    try:
        import uvicorn

        from roadie.web import create_app
    except ImportError:
        click.echo("error: the web app needs its extra: pip install 'roadie[web]'", err=True)
        ctx.exit(1)
    app = app_of(ctx)
    asgi = create_app(app, token=token, read_only=read_only)
    mode = " (read-only)" if read_only else ""
    auth = "token required" if token else "no token: loopback only"
    click.echo(f"roadie web on http://{host}:{port}{mode}, {auth}; database {app.store.safe_url}")
    # Open event streams never end by themselves: give them 2 s after Ctrl+C, then close.
    uvicorn.run(asgi, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=2)
