"""Authentication, CSRF and safety headers for the web app.

- Without a token the app only answers requests whose ``Host`` is a loopback name (so a web
  page cannot reach it by DNS rebinding); ``roadie web`` binds 127.0.0.1.
- With a token the API takes ``Authorization: Bearer <token>``; browsers log in at ``/login``
  and get a signed, HttpOnly, SameSite=Strict cookie (the token itself never goes in it).
- Every state-changing request passes a CSRF check: a bearer token (browsers never add one by
  themselves), or the page's CSRF token (a form field ``csrf_token`` or an ``X-CSRF-Token``
  header) that matches the browser's CSRF cookie. Without a token, API clients may instead send
  ``Content-Type: application/json``, which a cross-site page cannot send without a CORS
  preflight that this app never grants. A foreign ``Origin`` is always refused.
- ``read_only`` refuses every state-changing request.
- A change records its maker (a pause's ``paused_by``) as ``web``, or as the user an
  application that mounts this one authenticated (``actor_of``).
- Every response says ``X-Content-Type-Options: nosniff`` and carries a Content-Security-Policy
  that allows no inline script.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from itsdangerous import BadSignature, TimestampSigner

SESSION_COOKIE = "roadie_session"
CSRF_COOKIE = "roadie_csrf"
SESSION_MAX_AGE = 7 * 24 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "testserver"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
PUBLIC_PATHS = ("/login", "/static/", "/api/openapi.json")


class Security:
    """The token, the signing keys and the checks built on them."""

    def __init__(self, token: str | None, *, read_only: bool = False,
                 allowed_hosts: Iterable[str] | None = None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the web token is empty: give a long random string, or no token")
        self.token = token
        self.read_only = read_only
        self.machine_paths: frozenset[str] = frozenset()  # plugins' text endpoints
        self.allowed_hosts = None if allowed_hosts is None else frozenset(
            h.lower() for h in allowed_hosts)
        # Keys derive from the token, so sessions survive a restart and die with a new token;
        # without a token only the CSRF key matters, and a random one per process does.
        seed = (b"roadie-web\0" + token.encode()) if token else secrets.token_bytes(32)
        self._key = hashlib.sha256(seed).digest()
        self._signer = TimestampSigner(self._key, salt="roadie-session")

    # -- sessions ------------------------------------------------------------------------

    def check_token(self, given: str | None) -> bool:
        """Whether ``given`` is the token (in constant time)."""
        if self.token is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self) -> str:
        """A signed session cookie value."""
        return self._signer.sign(secrets.token_urlsafe(16)).decode()

    def check_session(self, value: str | None) -> bool:
        """Whether a session cookie is ours and fresh."""
        if not value or self.token is None:
            return False
        try:
            self._signer.unsign(value, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return False
        return True

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token forms carry for the browser whose CSRF cookie is ``nonce``."""
        return hmac.new(self._key, b"csrf\0" + nonce.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, nonce: str | None, given: str | None) -> bool:
        """Whether a submitted CSRF token matches the browser's CSRF cookie."""
        if not nonce or not given:
            return False
        return hmac.compare_digest(self.csrf_token(nonce), given)

    def host_allowed(self, host: str) -> bool:
        """Without a token, only loopback names (DNS rebinding defence); with one, any host
        unless ``allowed_hosts`` says otherwise."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.lower()
        if self.allowed_hosts is not None:
            return name in self.allowed_hosts or "*" in self.allowed_hosts
        return self.token is not None or name in LOOPBACK_HOSTS


def actor_of(scope: Mapping[str, Any]) -> str:
    """Who makes a change through the web app, as records name them (``paused_by``): the
    user a host application authenticated (Starlette's ``scope["user"]``, when this app is
    mounted inside one that sets it), else ``"web"``."""
    user = scope.get("user")
    if getattr(user, "is_authenticated", False):
        name = getattr(user, "display_name", None)
        if isinstance(name, str) and name.strip():
            return name.strip()[:255]
    return "web"


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    return cookies


def relative_path(scope: dict[str, Any]) -> str:
    """The request path below where the app is mounted."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


class SecurityMiddleware:
    """ASGI middleware: host check, authentication, read-only, CSRF, headers."""

    def __init__(self, app: Any, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        security = self.security
        headers = _headers(scope)
        cookies = _cookies(headers)
        path = relative_path(scope)
        is_api = path.startswith("/api/") or path == "/api" or path in security.machine_paths
        method = scope["method"].upper()
        state = scope.setdefault("state", {})
        nonce = cookies.get(CSRF_COOKIE) or ""
        new_nonce = None
        if len(nonce) < 16 or len(nonce) > 64:
            new_nonce = nonce = secrets.token_urlsafe(24)
        state["csrf_nonce"] = nonce
        state["csrf_token"] = security.csrf_token(nonce)
        state["security"] = security

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if new_nonce is not None:
                    base = scope.get("root_path", "") or "/"
                    extra.append((b"set-cookie", (
                        f"{CSRF_COOKIE}={new_nonce}; Path={base}; HttpOnly; SameSite=Strict"
                    ).encode()))
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in names or k == b"set-cookie"]
            await send(message)

        async def refuse(status: int, text: str,
                         extra: list[tuple[bytes, bytes]] | None = None) -> None:
            wants_json = is_api or "application/json" in headers.get("accept", "")
            if wants_json:
                body = json.dumps({"error": text, "status": status}).encode()
                kind = b"application/json"
            else:
                body = _error_page(status, text).encode()
                kind = b"text/html; charset=utf-8"
            await send_with_headers({"type": "http.response.start", "status": status,
                                     "headers": [(b"content-type", kind),
                                                 (b"content-length", str(len(body)).encode()),
                                                 *(extra or [])]})
            await send_with_headers({"type": "http.response.body", "body": body})

        if not security.host_allowed(headers.get("host", "")):
            await refuse(400, "this roadie web app only answers on a loopback address without "
                              "a token (start it with --token to serve other hosts)")
            return
        bearer = None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            bearer = authorization[7:].strip()
        bearer_ok = security.check_token(bearer)
        public = path == "/login" or any(
            path.startswith(p) for p in PUBLIC_PATHS if p.endswith("/")) or path in PUBLIC_PATHS
        if security.token is not None and not public:
            if bearer is not None and not bearer_ok:
                await refuse(401, "the bearer token is not valid",
                             [(b"www-authenticate", b'Bearer realm="roadie"')])
                return
            if not bearer_ok and not security.check_session(cookies.get(SESSION_COOKIE)):
                if is_api or method in UNSAFE_METHODS or path == "/events":
                    await refuse(401, "authentication required: send 'Authorization: Bearer "
                                      "<token>' (or log in at /login)",
                                 [(b"www-authenticate", b'Bearer realm="roadie"')])
                    return
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + (f"?{query}" if query else "")
                base = scope.get("root_path", "")
                location = f"{base}/login?next={quote(target, safe='')}"
                await send_with_headers({"type": "http.response.start", "status": 303,
                                         "headers": [(b"location", location.encode()),
                                                     (b"content-length", b"0")]})
                await send_with_headers({"type": "http.response.body", "body": b""})
                return
        if method in UNSAFE_METHODS and path not in ("/login", "/logout"):
            if security.read_only:
                await refuse(403, "this roadie web app is read-only (started with --read-only)")
                return
            origin = headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc.lower() != \
                    headers.get("host", "").lower():
                await refuse(403, f"cross-site request refused (Origin {origin})")
                return
            state["csrf_form_required"] = False
            if not bearer_ok:
                given = headers.get("x-csrf-token")
                json_body = headers.get("content-type", "").split(";")[0].strip() == \
                    "application/json"
                if given is not None:
                    if not security.check_csrf(cookies.get(CSRF_COOKIE), given):
                        await refuse(403, "the CSRF token does not match; reload the page")
                        return
                elif is_api and not (security.token is None and json_body):
                    await refuse(403, "state-changing API requests need 'Authorization: "
                                      "Bearer <token>' (or, without a token, "
                                      "'Content-Type: application/json')")
                    return
                else:
                    state["csrf_form_required"] = not is_api
        elif method in UNSAFE_METHODS and path == "/login":
            origin = headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc.lower() != \
                    headers.get("host", "").lower():
                await refuse(403, f"cross-site request refused (Origin {origin})")
                return
        state["authenticated"] = bearer_ok or security.token is None or \
            security.check_session(cookies.get(SESSION_COOKIE))
        await self.app(scope, receive, send_with_headers)


def _error_page(status: int, text: str) -> str:
    from markupsafe import escape

    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{status}</title>"
            f"</head><body><h1>{status}</h1><p>{escape(text)}</p></body></html>")
