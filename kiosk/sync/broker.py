"""A mosquitto of our own on a loopback port: for the tests, the bench and trials.

The central service never starts a broker itself (a centre runs the distribution's
mosquitto, or a clustered broker); this module only exists so that ``kiosk bench
sync`` and the test suite can exercise the real thing without touching a system
broker. Debian's ``mosquitto`` package starts a system service on port 1883; we
ignore it and listen on a free port of our own with a generated configuration.

Persistence is on by default and saves the in-memory database after every change
(``autosave_on_changes true`` with ``autosave_interval 1``): mosquitto persists by
snapshot, so with its default (every 30 minutes) a ``kill -9`` loses every QoS 1
message it had acknowledged but not yet delivered. ``save_every_change=False``
saves once a minute instead (what a busy production broker would do; the bench
uses it). ``persistence_dir`` puts the database elsewhere — the tests use tmpfs:
they kill processes, not the machine, and mosquitto fsyncs every save. Queues are unbounded
(``max_queued_messages 0``): mosquitto's default of 1000 silently drops QoS 1
messages for a consumer that is away longer than that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kiosk.sync.errors import SyncError

log = logging.getLogger(__name__)

_CANDIDATES = (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"))


def find_mosquitto() -> Path | None:
    """The mosquitto binary: on PATH, else where Debian installs it; None when absent."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _CANDIDATES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port, False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.02)
    return False


@dataclass(frozen=True)
class BrokerTls:
    """Server side of TLS: its certificate and key, and the CA that signs client certificates."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True


class LocalBroker:
    """One mosquitto process on ``127.0.0.1:<port>`` with its config and data in ``workdir``.

    ``start()`` waits until the port accepts connections; ``kill()`` is ``kill -9``;
    ``restart()`` brings it back on the same port with the same persistence file.
    ``close()`` is idempotent.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = True,
        save_every_change: bool = True,
        persistence_dir: Path | None = None,
        tls: BrokerTls | None = None,
        binary: Path | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise SyncError(
                "mosquitto is not installed: apt-get install mosquitto (the system service it "
                "starts is not used), or give a broker with --broker HOST:PORT"
            )
        self.binary = found
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.persistence = persistence
        self.save_every_change = save_every_change
        self.persistence_dir = persistence_dir or workdir
        self.tls = tls
        self.extra_config = tuple(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"

    def _config(self) -> str:
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # stay root: the files are ours, in a private tmp dir
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.persistence_dir}/",
                "persistence_file mosquitto.db",
            ]
            if self.save_every_change:
                lines += ["autosave_on_changes true", "autosave_interval 1"]
            else:
                lines += ["autosave_on_changes false", "autosave_interval 60"]
        else:
            lines.append("persistence false")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                "tls_version tlsv1.2",
            ]
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it listens; SyncError with its log tail otherwise."""
        if self.running:
            return
        self.config_path.write_text(self._config())
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if wait_for_port(self.host, self.port, 0.1):
                log.debug("mosquitto listening on %s (pid %d)", self.url, self._proc.pid)
                return
        tail = self.log_tail()
        self.kill()
        raise SyncError(f"mosquitto did not start on {self.url}: {tail}")

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the broker's log (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def kill(self) -> None:
        """``kill -9`` the broker (nothing is saved beyond its last snapshot)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker cleanly (SIGTERM: it saves its database first)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, *, hard: bool = True) -> None:
        """Kill (or stop) and start again on the same port with the same data."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
