"""The step-up API: a small HTTP/1.1 server on a Unix socket and/or loopback TCP.

Built on the standard library's asyncio streams rather than an ASGI app: the
access decision needs the connection's kernel credentials (``SO_PEERCRED``),
which an ASGI scope does not carry, and the API is one endpoint with one
request per connection. Any HTTP client can call it::

    curl --unix-socket /run/kiosk/stepup.sock -d '{"action":"refund","max_age_s":60}' \\
        http://kiosk/v1/assertion

``POST /v1/assertion`` with a JSON body ``{"action", "max_age_s", "nonce"?}``
answers 200 ``{"assertion": <JWT>, "token_type": "JWT", "expires_in", "verification":
"recent"|"fresh"}`` or ``{"error", "reason"}`` with 400 (malformed), 401 (loopback
without the right bearer token), 403 (uid not allowed; or refused: ``no_session``,
``denied``, ``timeout``), 404, 405, 408 (too slow to send), 409 (another check under
way), 411, 413, 429 (rate limit, with Retry-After), 431 or 503. Every answer closes
the connection.

From a daemon thread::

    server = build_server(settings.stepup, settings.state_dir, device=…, session=…,
                          verify_now=…, audit=…)
    runner = StepUpThread(server)
    runner.start()      # raises if the socket or the key cannot be used
    …
    runner.stop()

From an asyncio loop: ``await server.start()`` … ``await server.close()``, or
``async with server: await server.serve_forever()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import ipaddress
import json
import logging
import os
import socket
import stat
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from kiosk.auth.clock import Clock, SystemClock
from kiosk.auth.events import DeviceInfo
from kiosk.stepup.assertion import AssertionSigner
from kiosk.stepup.errors import StepUpError
from kiosk.stepup.keys import load_signing_key, load_token
from kiosk.stepup.service import (
    Audit,
    Peer,
    Reply,
    SessionView,
    StepUpService,
    VerifyNow,
    refusal,
)
from kiosk.stepup.settings import StepUpSettings, key_path, token_path

log = logging.getLogger(__name__)

ENDPOINT = "/v1/assertion"
HEAD_LIMIT = 8192
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 16
_SUN_PATH_MAX = 107
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _BadRequestError(Exception):
    pass


@dataclass(frozen=True)
class _Head:
    method: str
    target: str
    headers: dict[str, str]


def _parse_head(raw: bytes) -> _Head:
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequestError("not an HTTP/1.1 request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequestError("malformed header line")
        key = name.lower()
        if key in headers and key in ("content-length", "authorization", "transfer-encoding"):
            raise _BadRequestError(f"repeated {name} header")
        headers[key] = value.strip()
    return _Head(parts[0], parts[1], headers)


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
    pid, uid, gid = _CREDS.unpack(data)
    return pid, uid, gid


def _bind_unix(path: Path, mode: int) -> socket.socket:
    """A bound Unix socket at ``path``; replaces only a stale socket nobody listens on."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise StepUpError(f"the socket path {path} is longer than {_SUN_PATH_MAX} bytes")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StepUpError(
            f"cannot create {path.parent}: {exc.strerror or exc} (under systemd set "
            "RuntimeDirectory=kiosk; elsewhere set KIOSK_STEPUP__SOCKET_PATH)"
        ) from exc
    try:
        info = path.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise StepUpError(f"{path} exists and is not a socket; refusing to replace it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # left behind by a process that died
            except OSError as exc:
                raise StepUpError(f"cannot check the socket {path}: {exc}") from exc
            else:
                raise StepUpError(f"another process is already serving on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise StepUpError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return sock


class StepUpServer:
    """Serves :class:`StepUpService` over HTTP/1.1 on the configured listeners."""

    def __init__(
        self,
        service: StepUpService,
        settings: StepUpSettings,
        *,
        token: str | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        if settings.port is not None and not token:
            raise StepUpError("a loopback listener needs the bearer token (token_file)")
        if settings.socket_path is None and settings.port is None:
            raise StepUpError("step-up has neither a socket_path nor a port to listen on")
        self.service = service
        self.settings = settings
        self._token = token.encode("ascii") if token else None
        self.read_timeout_s = read_timeout_s
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._socket_inode: tuple[int, int] | None = None
        self.unix_path: Path | None = None
        self.tcp_address: tuple[str, int] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the socket and/or loopback port. Raises :class:`StepUpError`."""
        settings = self.settings
        try:
            if settings.socket_path is not None:
                sock = _bind_unix(settings.socket_path, settings.socket_mode)
                info = settings.socket_path.stat()
                self._socket_inode = (info.st_dev, info.st_ino)
                self.unix_path = settings.socket_path
                self._servers.append(
                    await asyncio.start_unix_server(
                        lambda r, w: self._connected(r, w, "unix"), sock=sock, limit=HEAD_LIMIT
                    )
                )
                if not settings.allowed_uids:
                    log.warning(
                        "step-up socket %s admits nobody: stepup.allowed_uids is empty",
                        settings.socket_path,
                    )
            if settings.port is not None:
                try:
                    server = await asyncio.start_server(
                        lambda r, w: self._connected(r, w, "tcp"),
                        host=settings.host,
                        port=settings.port,
                        limit=HEAD_LIMIT,
                    )
                except OSError as exc:
                    raise StepUpError(
                        f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
                    ) from exc
                self._servers.append(server)
                host, port = server.sockets[0].getsockname()[:2]
                self.tcp_address = (str(host), int(port))
        except BaseException:
            await self.close()
            raise
        log.info(
            "step-up API listening on %s",
            ", ".join(
                x
                for x in (
                    f"unix:{self.unix_path}" if self.unix_path else "",
                    f"tcp:{self.tcp_address[0]}:{self.tcp_address[1]}" if self.tcp_address else "",
                )
                if x
            ),
        )

    async def serve_forever(self) -> None:
        """Wait until cancelled (the listeners serve on their own once started)."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Stop listening, end open requests, remove the socket file."""
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self.unix_path is not None and self._socket_inode is not None:
            with contextlib.suppress(OSError):
                info = self.unix_path.lstat()
                if (info.st_dev, info.st_ino) == self._socket_inode:
                    self.unix_path.unlink()
            self._socket_inode = None
        self.service.close()

    async def __aenter__(self) -> StepUpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- one connection, one request ------------------------------------------------------

    async def _connected(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transport: Literal["unix", "tcp"],
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task here
        self._tasks.add(task)
        try:
            peer = self._peer(writer, transport)
            reply: Reply | None
            if len(self._tasks) > MAX_CONNECTIONS:
                reply = self.service.reject(
                    peer, refusal(503, "busy", "too many open connections: try again")
                )
            else:
                try:
                    reply = await self._exchange(reader, writer, peer)
                except (ConnectionError, OSError):
                    raise
                except Exception:
                    log.exception("step-up request failed")
                    reply = self.service.reject(
                        peer, refusal(500, "internal_error", "the kiosk could not answer")
                    )
            if reply is not None:
                await self._send(writer, reply)
        except (ConnectionError, OSError) as exc:
            log.debug("step-up client went away: %s", exc)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _peer(self, writer: asyncio.StreamWriter, transport: Literal["unix", "tcp"]) -> Peer:
        sock = writer.get_extra_info("socket")
        if transport == "unix":
            try:
                pid, uid, _gid = _peer_credentials(sock)
            except (OSError, struct.error, AttributeError):
                return Peer("unix")  # no credentials: uid None, never allowed
            return Peer("unix", uid=uid, pid=pid)
        address = writer.get_extra_info("peername")
        host = str(address[0]) if address else ""
        port = f":{address[1]}" if address else ""
        return Peer("tcp", address=f"{host}{port}")

    def _access(self, peer: Peer, head: _Head) -> Reply | None:
        if peer.transport == "unix":
            if peer.uid is None or peer.uid not in self.settings.allowed_uids:
                return refusal(
                    403, "not_allowed", f"uid {peer.uid} may not ask for step-up verification"
                )
            return None
        host = peer.address.rsplit(":", 1)[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return refusal(403, "not_allowed", "only loopback clients are served")
        challenge = {"WWW-Authenticate": 'Bearer realm="kiosk-stepup"'}
        scheme, _, given = head.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return refusal(401, "unauthorized", "send 'Authorization: Bearer <token>'", challenge)
        assert self._token is not None  # noqa: S101 - checked in __init__
        if not hmac.compare_digest(given.strip().encode("latin-1"), self._token):
            return refusal(401, "unauthorized", "the bearer token is not accepted", challenge)
        return None

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> Reply | None:
        service = self.service
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout_s)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None  # connected and left without a word: nothing to answer
            return service.reject(peer, refusal(400, "bad_request", "incomplete request"))
        except asyncio.LimitOverrunError:
            return service.reject(
                peer, refusal(431, "headers_too_large", f"request head over {HEAD_LIMIT} bytes")
            )
        except TimeoutError:
            return service.reject(peer, refusal(408, "timeout", "the request came too slowly"))
        try:
            head = _parse_head(raw)
        except _BadRequestError as exc:
            return service.reject(peer, refusal(400, "bad_request", str(exc)))
        denied = self._access(peer, head)
        if denied is not None:
            return service.reject(peer, denied)
        limited = service.admit(peer)
        if limited is not None:
            return limited
        if head.target != ENDPOINT:
            return service.reject(peer, refusal(404, "not_found", f"use POST {ENDPOINT}"))
        if head.method != "POST":
            return service.reject(
                peer, refusal(405, "method_not_allowed", f"use POST {ENDPOINT}", {"Allow": "POST"})
            )
        if "transfer-encoding" in head.headers:
            return service.reject(
                peer, refusal(411, "length_required", "send Content-Length, not chunked bodies")
            )
        length_text = head.headers.get("content-length")
        if length_text is None:
            return service.reject(peer, refusal(411, "length_required", "send Content-Length"))
        if not length_text.isdigit() or len(length_text) > 12:
            return service.reject(peer, refusal(400, "bad_request", "malformed Content-Length"))
        length = int(length_text)
        limit = self.settings.max_request_bytes
        if length > limit:
            return service.reject(
                peer, refusal(413, "too_large", f"the body is over {limit} bytes")
            )
        if head.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl asks for bodies over 1 KiB
            await writer.drain()
        try:
            body = await asyncio.wait_for(reader.readexactly(length), self.read_timeout_s)
        except asyncio.IncompleteReadError:
            return service.reject(peer, refusal(400, "bad_request", "the body is incomplete"))
        except TimeoutError:
            return service.reject(peer, refusal(408, "timeout", "the body came too slowly"))
        return await service.handle(peer, body)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: Reply) -> None:
        body = json.dumps(dict(reply.body), separators=(",", ":")).encode("utf-8")
        try:
            phrase = http.HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Status"
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


class StepUpThread:
    """Runs a :class:`StepUpServer` on its own event loop in a daemon thread."""

    def __init__(self, server: StepUpServer) -> None:
        self.server = server
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; returns once listening, or raises why it cannot."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="kiosk-stepup", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise StepUpError("the step-up server did not start in time")
        if self._error is not None:
            self._thread.join(timeout_s)
            raise self._error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread (open requests are ended)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended in the meantime
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("the step-up thread did not stop within %.0f s", timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("the step-up server stopped")
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()


def build_server(
    settings: StepUpSettings,
    state_dir: Path,
    *,
    device: DeviceInfo,
    session: SessionView,
    verify_now: VerifyNow,
    audit: Audit,
    clock: Clock | None = None,
) -> StepUpServer:
    """Load the signing key (and the loopback token) and wire the service and server.

    Fails closed with :class:`~kiosk.stepup.errors.StepUpKeyError` when the key or
    token cannot be used.
    """
    clock = clock or SystemClock()
    key = load_signing_key(key_path(settings, state_dir))
    token = load_token(token_path(settings, state_dir)) if settings.port is not None else None
    signer = AssertionSigner(
        key,
        issuer=device.device_id,
        audience=settings.audience,
        lifetime_s=settings.lifetime_s,
        clock=clock,
    )
    service = StepUpService(
        signer=signer,
        session=session,
        verify_now=verify_now,
        audit=audit,
        device=device,
        clock=clock,
        settings=settings,
    )
    return StepUpServer(service, settings, token=token)
