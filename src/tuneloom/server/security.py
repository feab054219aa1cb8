"""Security headers on every response, and why the API needs no CSRF tokens.

Headers: the console's pages may load scripts, styles and API calls from the server's own origin only
(no inline script, so an injected `<script>` or `onerror=` attribute cannot run even if some text
were ever inserted as HTML); no page may frame the console (clickjacking); responses are not
MIME-sniffed into something executable; no URL (which may name apps and models) leaks in a Referer;
and the console gets its own browsing-context group (Cross-Origin-Opener-Policy), so a page that
opened it cannot script it. The API's JSON answers carry them too: they cost nothing and a JSON body
opened directly in a tab is then just as inert.

CSRF: a cross-site request forgery works when the browser attaches a credential by itself — a
cookie, HTTP auth, a client certificate. tuneloom has none of those: the only credential is the
`Authorization: Key …` header (see `auth.api_key`), which a browser never adds on its own; the
console keeps the key in sessionStorage and sets the header in its own `fetch` calls. Another origin
could only set that header through CORS, and the server enables no CORS at all: a cross-origin
preflight gets no `Access-Control-Allow-*` answer, so the browser never sends the keyed request.
The server never issues a cookie (no `Set-Cookie`), so there is nothing for a forged request to
ride on: without the header it is a 401 like any anonymous request. Adding cookie sessions or a
CORS middleware would undo this reasoning, and tests/test_server_security.py would fail.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_RAW_HEADERS = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """ASGI middleware adding `SECURITY_HEADERS` to every HTTP response that does not set them itself.

    Pure ASGI (not BaseHTTPMiddleware), so streamed responses and their background tasks — which stop
    a generation when the client goes away — behave exactly as without it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in _RAW_HEADERS if name not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
