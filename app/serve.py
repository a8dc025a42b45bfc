"""The workstation in a browser: `srsalvage serve` on textual-serve, behind a one-time token.

textual-serve (Textualize/textual-serve: textual_serve/server.py Server) serves a page with
xterm.js whose websocket drives one `srsalvage open IMAGE` process per browser session, the
same read-only workstation as in a terminal. It has no authentication of its own, so this
server adds it:

- a fresh random token at every start, printed in the URL; the first page load carrying it
  trades it for an HttpOnly, SameSite=Strict session cookie and the token is spent (a leaked
  URL from the terminal scrollback opens nothing once the technician is in);
- without the cookie (or the unspent token) every route but the static assets answers 403:
  no page, no websocket, no session process;
- the websocket must also come from the page's own origin (no cross-site websocket);
- bound to 127.0.0.1 unless --host says otherwise (then a warning on stderr).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import signal
import shlex
import sys

from aiohttp import web
from textual_serve.server import Server

COOKIE = "srsalvage_session"


class TokenServer(Server):
    """textual-serve's Server with a one-time URL token traded for a session cookie."""

    def __init__(self, command: str, host: str, port: int, title: str,
                 token: str | None = None) -> None:
        super().__init__(command, host=host, port=port, title=title)
        self.token: str | None = token or secrets.token_urlsafe(24)
        self.session_secret = secrets.token_urlsafe(32)
        self.refused = 0

    @property
    def url(self) -> str:
        return f"{self.public_url}/?token={self.token}"

    def _authorised(self, request: web.Request) -> tuple[bool, bool]:
        """(allowed, by the token): the session cookie, or the token not yet spent."""
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie, self.session_secret):
            return True, False
        given = request.query.get("token", "")
        if self.token is not None and given and hmac.compare_digest(given, self.token):
            return True, True
        return False, False

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.path.startswith("/static/"):
            return await handler(request)  # xterm.js, css, fonts: nothing about the evidence
        allowed, by_token = self._authorised(request)
        if allowed and request.path == "/ws":
            origin = request.headers.get("Origin")
            allowed = origin is None or origin == self.public_url
        if not allowed:
            self.refused += 1
            raise web.HTTPForbidden(
                text="srsalvage serve: refused. Open the URL with the token printed when the "
                     "server started (it works once, in one browser).\n")
        response = await handler(request)
        if by_token and request.path == "/":
            self.token = None  # spent: from now on only this browser's cookie opens the page
            response.set_cookie(COOKIE, self.session_secret, httponly=True, samesite="Strict",
                                path="/")
        return response

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    async def on_startup(self, app: web.Application) -> None:
        pass  # not yet listening here: the URL is printed by _announce once it is

    def _announce(self, *_: object) -> None:
        print(f"srsalvage serve: {self.title}\n"
              f"  open {self.url}\n"
              f"  (the token works once; the evidence is opened read-only; Ctrl+C stops)",
              flush=True)

    def serve(self, debug: bool = False) -> None:
        """textual-serve's Server.serve, but the URL is printed once the socket listens (the
        `print` callback of aiohttp's run_app), so a browser opened at once finds the page."""
        self.debug = debug
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_exit)
        web.run_app(self._make_app(), host=self.host, port=self.port, handle_signals=False,
                    loop=loop, print=self._announce)

    def initialize_logging(self) -> None:
        pass  # no rich log handler: stdout carries the URL line only


def open_command(image: str, mapfile: str | None, case: str | None) -> str:
    """The shell command textual-serve runs per browser session: this Python's `srsalvage open`."""
    argv = [sys.executable, "-m", "app.cli", "open", image]
    if mapfile:
        argv += ["--mapfile", mapfile]
    if case:
        argv += ["--case", case]
    return shlex.join(argv)
