"""Who may talk to `ented serve`, as one ASGI middleware in front of every route.

- Bound to this computer only (127.0.0.1, the default), it answers only requests addressed to
  127.0.0.1 / localhost / [::1]: a web site that points its own name at 127.0.0.1 (DNS
  rebinding) gets nothing.
- A request that changes something (POST, DELETE) from a browser must come from the page
  itself (its Origin): another site cannot make it restore or forget anything.
- With a token (`--token`, always on for an address other machines reach), the first visit
  carries it in the link (`/?token=...`); it is then kept in a cookie only this page sends, and
  every request without it is refused.
- Every answer forbids the page to load anything from elsewhere (Content-Security-Policy) and
  to be framed by another site.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers, MutableHeaders

LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE = "ented_token"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "x-frame-options": "DENY",
}


def host_name(host_header: str) -> str:
    """The name part of a Host header: "localhost:8765" → "localhost", "[::1]:80" → "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    def __init__(self, app, token: str | None, local_only: bool):
        self.app, self.token, self.local_only = app, token, local_only

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            status, message, extra = refusal
            as_json = scope["path"].startswith("/api/")
            return await _answer(send, status, message, extra, as_json)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) for a request that must not reach the app, else None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.local_only and host_name(host) not in LOCAL_NAMES:
            return 421, "this ented serve answers only at 127.0.0.1 or localhost", {}
        origin = headers.get("origin")
        # "null" too: a sandboxed frame on another site sends that, the page never does.
        if scope["method"] not in ("GET", "HEAD") and origin is not None:
            if urlsplit(origin).netloc.lower() != host.lower():
                return 403, "requests from other web sites are refused", {}
        if self.token is None:
            return None
        offered = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if scope["path"] == "/" and offered:
            if not self._valid(offered):
                return 401, "this link's token is not the one ented serve printed", {}
            # Keep the token in a cookie only this page sends, and drop it from the address bar.
            cookie = f"{COOKIE}={offered}; Path=/; HttpOnly; SameSite=Strict"
            return 303, "see /", {"location": "/", "set-cookie": cookie}
        cookies = _cookies(headers.get("cookie", ""))
        if self._valid(cookies.get(COOKIE, "")) or self._valid(headers.get("x-ented-token", "")):
            return None
        return 401, "open the link ented serve printed (it carries the token)", {}

    def _valid(self, offered: str) -> bool:
        return bool(offered) and hmac.compare_digest(offered.encode(), self.token.encode())


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, _, value in pairs if name}


async def _answer(send, status: int, message: str, extra: dict[str, str], as_json: bool) -> None:
    """The refusal: JSON for the page's own requests, a plain sentence for a person."""
    if as_json:
        body, kind = json.dumps({"error": message}).encode(), "application/json"
    else:
        body, kind = f"ented serve: {message}\n".encode(), "text/plain; charset=utf-8"
    headers = {"content-type": kind, **SECURITY_HEADERS, **extra}
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
