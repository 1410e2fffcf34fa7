"""Helpers for the sync tests: a real mosquitto, a test CA, a real PostgreSQL.

* :class:`kiosk.sync.broker.LocalBroker` runs mosquitto on a free loopback port
  with a config generated in the test's tmp dir (Debian's system service, if
  any, is never used). Tests kill it with SIGKILL and start it again.
* :func:`make_pki` makes a CA, a server certificate for 127.0.0.1/localhost and
  a client certificate with the ``cryptography`` package.
* :class:`PostgresServer` runs Debian's PostgreSQL binaries
  (``/usr/lib/postgresql/<v>/bin``: initdb + pg_ctl) in a tmp dir on a free
  port, trust authentication on 127.0.0.1, fsync off (a test database). As root
  it runs them as ``nobody`` through ``runuser`` (initdb refuses root); the data
  directory is made and handed to ``nobody`` for that.

Tests skip, saying why, when mosquitto or PostgreSQL is not installed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiosk.auth import events as ev
from kiosk.auth.model import Change
from kiosk.config import Settings
from kiosk.secrets import DeviceKeys
from kiosk.store.db import Database
from kiosk.store.outbox import OutboxStore
from kiosk.store.repository import SqliteRepository
from kiosk.sync.broker import LocalBroker, find_mosquitto, free_port, wait_for_port

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None,
    reason="mosquitto is not installed (apt-get install mosquitto; scripts/setup.sh does it)",
)


def broker_in(workdir: Path) -> LocalBroker:
    """A mosquitto for one test: config and log in ``workdir``, its database on tmpfs.

    The tests kill processes, not the machine; mosquitto fsyncs its database on
    every save (here: after every change), which on a disk costs 5× the throughput.
    """
    shm = Path("/dev/shm")
    persistence = None
    if shm.is_dir() and os.access(shm, os.W_OK):
        persistence = Path(tempfile.mkdtemp(prefix="kiosk-test-mosquitto-", dir=shm))
    return LocalBroker(workdir, persistence_dir=persistence)


def remove_broker(broker: LocalBroker) -> None:
    broker.close()
    if broker.persistence_dir != broker.workdir:
        shutil.rmtree(broker.persistence_dir, ignore_errors=True)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it is truthy; fail the test saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(step)


def sync_settings(
    state_dir: Path,
    *,
    host: str,
    port: int,
    device: str = "kiosk-01",
    site: str = "hq",
    centre_url: str | None = None,
    sync: dict[str, Any] | None = None,
    centre: dict[str, Any] | None = None,
) -> Settings:
    """Settings for one device and its centre on a test broker (fast reconnects)."""
    sync_values: dict[str, Any] = {
        "host": host,
        "port": port,
        "reconnect_min_s": 1,
        "reconnect_max_s": 2,
        "keepalive_s": 10,
        "health_interval_s": 1.0,
        "poll_interval_s": 0.2,
        "session_expiry_s": 3600,
        "confirm_grace_s": 1.0,
    }
    sync_values.update(sync or {})
    centre_values: dict[str, Any] = {
        "database_url": centre_url or f"sqlite:///{state_dir / 'centre.db'}",
        "client_id": f"ingest-{os.getpid()}-{state_dir.name}",
    }
    centre_values.update(centre or {})
    return Settings(
        state_dir=state_dir,
        device={"device_id": device, "site": site},
        sync=sync_values,
        centre=centre_values,
    )


# --- PKI ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A test CA with a server and a client certificate, plus a client cert of another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("kiosk test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True)
    client = _cert("kiosk-01", client_key, ca.subject, ca_key)
    other_key = _key()
    other_ca = _cert("another CA", other_key, None, other_key, ca=True)
    rogue_key = _key()
    rogue = _cert("kiosk-rogue", rogue_key, other_ca.subject, other_key)

    def pem(cert: x509.Certificate, name: str) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    paths = Pki(
        ca_cert=pem(ca, "ca.pem"),
        server_cert=pem(server, "server.pem"),
        server_key=directory / "server.key",
        client_cert=pem(client, "client.pem"),
        client_key=directory / "client.key",
        rogue_cert=pem(rogue, "rogue.pem"),
        rogue_key=directory / "rogue.key",
    )
    _write_key(server_key, paths.server_key)
    _write_key(client_key, paths.client_key)
    _write_key(rogue_key, paths.rogue_key)
    return paths


# --- PostgreSQL -----------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (newest version), or None."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    found = sorted(
        (p / "bin" for p in root.iterdir() if (p / "bin" / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


POSTGRES_BIN = postgres_bin()
needs_postgres = pytest.mark.skipif(
    POSTGRES_BIN is None or (os.geteuid() == 0 and shutil.which("runuser") is None),
    reason="PostgreSQL server binaries are not installed (apt-get install postgresql; "
    "scripts/setup.sh does it)",
)


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port>, trust auth, fsync off."""

    def __init__(self) -> None:
        assert POSTGRES_BIN is not None
        self.bin = POSTGRES_BIN
        self.dir = Path(tempfile.mkdtemp(prefix="kiosk-test-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "postgres.log"
        self.url = f"postgresql://kiosk@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.dir, "nobody", "nogroup")
            self._as = ["runuser", "-u", "nobody", "--"]

    def _run(self, *argv: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, *argv],
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-2000:]} {log}"
            )

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "kiosk",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )
        if not wait_for_port("127.0.0.1", self.port, 30):
            raise RuntimeError(f"PostgreSQL did not listen on {self.port}")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- plain MQTT clients ---------------------------------------------------------------------


class Watcher:
    """A plain MQTT 5 client that records what arrives on some topics (retained ones too)."""

    def __init__(self, host: str, port: int, topics: list[str], client_id: str = "watcher") -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            client.subscribe([(t, 1) for t in topics])

        def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
            subscribed.set()

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(10):
            pytest.fail("the test's watcher could not subscribe")

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RawPublisher:
    """A plain MQTT 5 client for sending what a kiosk never would."""

    def __init__(self, host: str, port: int, client_id: str = "raw-publisher") -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda *args: connected.set()
        self.client.max_inflight_messages_set(200)
        self.client.connect(host, port)
        self.client.loop_start()
        if not connected.wait(10):
            pytest.fail("the test's raw publisher could not connect")

    def publish_all(self, items: list[tuple[str, bytes]], timeout: float = 60) -> None:
        """Publish at QoS 1 and wait for every PUBACK."""
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in items]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                pytest.fail(f"the broker did not acknowledge {len(infos)} raw messages in time")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- real kiosk events --------------------------------------------------------------------

DEVICE = ev.DeviceInfo(device_id="kiosk-01", site="hq", model_versions={"embedding": "t"})
USER = ev.UserRef(uid="7", name="Ada", staff_no="1007")
TOPIC = "kiosk/hq/kiosk-01/audit"


def kiosk_events() -> list[ev.AuditEvent]:
    """One of each: granted, denied, account locked, lockout alert (class 2004)."""
    now = time.time()
    return [
        ev.authentication(
            wall=now,
            device=DEVICE,
            user=USER,
            success=True,
            factor="pin+face",
            reason="ok",
            score=0.8,
        ),
        ev.authentication(
            wall=now, device=DEVICE, user=USER, success=False, factor="pin+face", reason="no match"
        ),
        ev.account_change(
            wall=now, device=DEVICE, user=USER, activity_id=ev.LOCK, reason="3 failures"
        ),
        ev.lockout_alert(wall=now, device=DEVICE, user=USER, failures=3, lockout_s=1800),
    ]


def stored_payloads(path: Path, events: list[ev.AuditEvent]) -> list[bytes]:
    """The events written through the repository, read back from the outbox as published."""
    database = Database(path)
    try:
        SqliteRepository(database, DeviceKeys.derive(os.urandom(32))).commit(Change(events=events))
    finally:
        database.close()
    outbox = OutboxStore.open(path)
    try:
        return [row.payload.encode() for row in outbox.unsent(after_seq=0, limit=1000)]
    finally:
        outbox.close()


def write_events(path: Path, events: list[ev.AuditEvent]) -> None:
    """Commit events (audit + outbox rows) through the repository, as the kiosk does."""
    database = Database(path)
    try:
        SqliteRepository(database, DeviceKeys.derive(os.urandom(32))).commit(Change(events=events))
    finally:
        database.close()
