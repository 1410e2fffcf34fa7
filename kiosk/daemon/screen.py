"""The kiosk screen: a small ASGI app on loopback that Chromium shows in kiosk mode.

Page contract (what ``static/app.js`` relies on):

* ``GET /`` — the page, with a per-start token in ``<meta name="kiosk-token">``;
  ``/static/…`` its script and style sheet.
* ``GET /events`` — server-sent events: every message is ``event: state`` with
  the whole :class:`~kiosk.daemon.view.View` as JSON (sent at once on connect,
  then at every change).
* ``GET /preview.jpg`` — the newest low-rate camera preview (204 when none).
* ``POST /api/key`` ``{"key": "0".."9" | "back" | "clear" | "enter" | "cancel"}``
  — the PIN pad lives in the daemon, so the on-screen pad, a keyboard and the
  hardware keypad type into the same entry and the page never holds a PIN.
* ``POST /api/totp`` ``{"code"}``, ``POST /api/supervisor`` ``{"staff_no", "pin"}``,
  ``POST /api/cancel``, ``POST /api/lock``, ``POST /api/dismiss`` (``{}``).

Every POST answers 202 ``{"ok": true}`` or 4xx ``{"error": "…"}`` with a
sentence a person can act on; the state change itself arrives as an event.

Who may drive it: the server binds a loopback address only; requests must name
a loopback ``Host`` (no DNS rebinding from a web page) and POSTs must carry the
page's token in ``X-Kiosk-Token`` (no cross-site requests from other pages the
browser might show). The page is the terminal's keypad, nothing more: every
sign-in through it meets the same lockout as the hardware keypad.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kiosk.daemon.view import Broadcaster
from kiosk.errors import KioskError

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
MAX_BODY = 1024
KEYS = frozenset([*"0123456789", "back", "clear", "enter", "cancel"])
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Answer = concurrent.futures.Future[str | None]


class Controls(Protocol):
    """What the page may ask of the daemon; each answers an error sentence or None."""

    def key(self, key: str) -> Answer: ...
    def totp(self, code: str) -> Answer: ...
    def supervisor(self, staff_no: str, pin: str) -> Answer: ...
    def cancel(self) -> Answer: ...
    def lock(self) -> Answer: ...
    def dismiss(self) -> Answer: ...


def static_dir() -> Path:
    return Path(str(resources.files("kiosk.daemon").joinpath("static")))


class ScreenError(KioskError):
    """The screen cannot be served."""


def build_app(
    broadcaster: Broadcaster,
    controls: Controls,
    *,
    token: str,
    closing: threading.Event | None = None,
) -> Starlette:
    """The screen's ASGI app."""
    closing = closing or threading.Event()
    try:
        page = (static_dir() / "index.html").read_text(encoding="utf-8")
    except OSError as exc:
        raise ScreenError(
            f"the screen page is missing ({exc}): reinstall the kiosk package"
        ) from exc

    def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**SECURITY_HEADERS, **(extra or {})}

    async def index(request: Request) -> Response:
        return HTMLResponse(page.replace("__KIOSK_TOKEN__", token), headers=headers())

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            wake = broadcaster.subscribe()
            try:
                sent = -1
                while not closing.is_set():
                    seq, payload = broadcaster.current()
                    if seq != sent:
                        sent = seq
                        yield f"event: state\nid: {seq}\ndata: {payload}\n\n"
                    wake.clear()
                    if broadcaster.current()[0] != sent:
                        continue
                    try:
                        await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
            finally:
                broadcaster.unsubscribe(wake)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers=headers({"X-Accel-Buffering": "no"})
        )

    async def favicon(request: Request) -> Response:
        return Response(status_code=204, headers=headers())

    async def preview(request: Request) -> Response:
        image = broadcaster.preview
        if image is None:
            return Response(status_code=204, headers=headers())
        return Response(image, media_type="image/jpeg", headers=headers())

    def action(
        handler: Callable[[dict[str, Any]], Answer],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            sent = request.headers.get("x-kiosk-token", "")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                return _error(403, "This page is out of date: reload it.")
            body = await request.body()
            if len(body) > MAX_BODY:
                return _error(413, "Request too large.")
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return _error(400, "Malformed request.")
            if not isinstance(data, dict):
                return _error(400, "Malformed request.")
            try:
                answer = handler(data)
            except ValueError as exc:
                return _error(400, str(exc))
            try:
                problem = await asyncio.wait_for(asyncio.wrap_future(answer), 30.0)
            except TimeoutError:
                return _error(503, "The terminal is busy. Try again.")
            if problem:
                return _error(400, problem)
            return JSONResponse({"ok": True}, status_code=202, headers=headers())

        return endpoint

    def text(data: dict[str, Any], name: str, limit: int = 32) -> str:
        value = data.get(name)
        if not isinstance(value, str) or len(value) > limit:
            raise ValueError(f"Malformed request: {name} missing.")
        return value

    def key(data: dict[str, Any]) -> Answer:
        value = text(data, "key")
        if value not in KEYS:
            raise ValueError("Unknown key.")
        return controls.key(value)

    routes = [
        Route("/", index),
        Route("/events", events),
        Route("/preview.jpg", preview),
        Route("/favicon.ico", favicon),
        Route("/api/key", action(key), methods=["POST"]),
        Route("/api/totp", action(lambda d: controls.totp(text(d, "code"))), methods=["POST"]),
        Route(
            "/api/supervisor",
            action(lambda d: controls.supervisor(text(d, "staff_no"), text(d, "pin"))),
            methods=["POST"],
        ),
        Route("/api/cancel", action(lambda d: controls.cancel()), methods=["POST"]),
        Route("/api/lock", action(lambda d: controls.lock()), methods=["POST"]),
        Route("/api/dismiss", action(lambda d: controls.dismiss()), methods=["POST"]),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    ]
    return Starlette(routes=routes, middleware=middleware)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


class ScreenServer:
    """Serves the screen app with uvicorn on a loopback socket, in a thread of its own."""

    def __init__(
        self, broadcaster: Broadcaster, controls: Controls, *, host: str, port: int
    ) -> None:
        self.token = secrets.token_urlsafe(24)
        self._closing = threading.Event()
        self._broadcaster = broadcaster
        self.app = build_app(broadcaster, controls, token=self.token, closing=self._closing)
        self.host = host
        self._sock = _bind(host, port)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kiosk-screen", daemon=True)
        self._thread.start()
        log.info("screen served on %s", self.url)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._closing.set()
        self._broadcaster.wake_all()  # open event streams see ``closing`` and end
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except Exception:
            log.exception("the screen server stopped")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ScreenError(
            f"cannot serve the screen on {host}:{port}: {exc}. Is another kiosk running? "
            "Set screen.port to a free port."
        ) from exc
    sock.listen(16)
    sock.set_inheritable(False)
    return sock
