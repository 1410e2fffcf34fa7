"""``kiosk bench sync``: events per second, device → broker → ingest, on loopback.

Three phases on the same machine, each with ``events`` real audit events written
through :class:`kiosk.store.repository.SqliteRepository` into a scratch kiosk
database (nothing of the configured state directory is touched):

1. **live** — the ingest is subscribed and writing to SQLite while the publisher
   drains the outbox: *published* is events / time until every PUBACK is in and
   marked; *end to end* is events / time until the centre has them all.
2. **backlog** — the events are published while the ingest is away (its
   persistent session queues them at the broker); then the ingest starts and
   *ingest* is events / time to store the backlog: the centre's ingest rate from
   MQTT into SQLite.
3. **storage** — validation and batched inserts into a fresh SQLite file alone,
   no MQTT: the ceiling the database sets.

The broker is a mosquitto the bench starts on a free loopback port, saving its
database once a minute (not after every message, as the tests' broker does), or
the one ``--broker HOST:PORT`` names. Everything runs in one Python process:
publisher and ingest share the interpreter, so the figures are a floor.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kiosk.auth import events as ev
from kiosk.auth.model import Change
from kiosk.config import Settings
from kiosk.secrets import DeviceKeys
from kiosk.store.centre import open_centre_store
from kiosk.store.db import Database
from kiosk.store.outbox import OutboxStore
from kiosk.store.repository import SqliteRepository
from kiosk.sync.broker import LocalBroker
from kiosk.sync.errors import SyncError
from kiosk.sync.ingest import IngestService
from kiosk.sync.payload import topic_for, validate_event
from kiosk.sync.publisher import OutboxPublisher

_TIMEOUT_S = 300.0


def fill_outbox(
    database_path: Path,
    *,
    device: str,
    site: str,
    count: int,
    per_commit: int = 500,
    lockout_every: int = 0,
    keys: DeviceKeys | None = None,
) -> list[str]:
    """Write ``count`` audit events (with their outbox rows) as the kiosk would; their uids.

    Mostly authentication attempts; every ``lockout_every``-th is a lockout alert
    (class 2004) when that is set. Commits ``per_commit`` events per transaction.
    """
    database = Database(database_path)
    repo = SqliteRepository(database, keys or DeviceKeys.derive(os.urandom(32)))
    info = ev.DeviceInfo(device_id=device, site=site, model_versions={"embedding": "bench"})
    uids: list[str] = []
    try:
        done = 0
        while done < count:
            batch: list[ev.AuditEvent] = []
            for i in range(done, min(count, done + per_commit)):
                user = ev.UserRef(
                    uid=str(1 + i % 50), name=f"user{i % 50}", staff_no=str(1000 + i % 50)
                )
                if lockout_every and i % lockout_every == lockout_every - 1:
                    event = ev.lockout_alert(
                        wall=time.time(), device=info, user=user, failures=3, lockout_s=1800
                    )
                else:
                    event = ev.authentication(
                        wall=time.time(),
                        device=info,
                        user=user,
                        success=i % 3 != 0,
                        factor="pin+face",
                        reason="matched" if i % 3 else "face did not match",
                        score=0.42 + (i % 50) / 100,
                    )
                batch.append(event)
            repo.commit(Change(events=batch))
            uids.extend(e.uid for e in batch)
            done += len(batch)
    finally:
        database.close()
    return uids


@dataclass(frozen=True)
class SyncBenchReport:
    """What ``kiosk bench sync`` measured (events per second)."""

    events: int
    broker: str
    machine: str
    published_per_s: float
    end_to_end_per_s: float
    ingest_backlog_per_s: float
    storage_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        rows = [
            ("published, device → broker (PUBACK + marked sent)", self.published_per_s),
            ("end to end, device → broker → ingest → SQLite", self.end_to_end_per_s),
            ("ingest of a broker backlog into SQLite", self.ingest_backlog_per_s),
            ("SQLite storage alone (validate + batched insert)", self.storage_per_s),
        ]
        head = f"sync bench: {self.events} events per phase, broker {self.broker}, {self.machine}"
        return [head] + [f"  {label:<52}{rate:>9,.0f} events/s" for label, rate in rows]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SyncError(f"sync bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.005)


def run_sync_bench(
    settings: Settings, *, events: int = 10000, broker: str | None = None
) -> SyncBenchReport:
    """Run the three phases against our own mosquitto (or ``broker``) and report."""
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-sync-") as tmp:
        root = Path(tmp)
        own: LocalBroker | None = None
        if broker is None:
            own = LocalBroker(root / "broker", persistence=True, save_every_change=False)
            own.start()
            host, port = own.host, own.port
            label = f"mosquitto (own, {own.url})"
        else:
            host, _, port_text = broker.rpartition(":")
            if not host or not port_text.isdigit():
                raise SyncError(f"--broker {broker!r}: give HOST:PORT")
            port = int(port_text)
            label = broker
        try:
            return _phases(settings, root, host, port, events, label)
        finally:
            if own is not None:
                own.stop()


def _phases(
    settings: Settings, root: Path, host: str, port: int, events: int, label: str
) -> SyncBenchReport:
    site, device = "bench", f"bench-{os.getpid()}"
    sync = settings.sync.model_copy(
        update={
            "host": host,
            "port": port,
            "ca_file": None,
            "cert_file": None,
            "key_file": None,
            "username": None,
            "password_file": None,
            "topic_prefix": "kiosk-bench",
            "session_expiry_s": 600,
        }
    )
    centre = settings.centre.model_copy(
        update={
            "database_url": f"sqlite:///{root / 'centre.db'}",
            "client_id": f"kiosk-bench-ingest-{os.getpid()}",
            "share_group": "bench",
            "alert_command": None,
            "alert_topic": None,
        }
    )
    device_settings = settings.device.model_copy(update={"device_id": device, "site": site})
    bench = settings.model_copy(
        update={"state_dir": root, "sync": sync, "centre": centre, "device": device_settings}
    )
    kiosk_db = root / "kiosk.db"
    centre_store = open_centre_store(f"sqlite:///{root / 'centre.db'}")
    try:
        # 1. live
        fill_outbox(kiosk_db, device=device, site=site, count=events)
        ingest = IngestService(bench)
        ingest.start()
        try:
            if not ingest.wait_subscribed(30):
                raise SyncError("sync bench: the ingest did not subscribe within 30 s")
            start = time.perf_counter()
            publisher = OutboxPublisher(bench, kiosk_db)
            publisher.start()
            try:
                if not publisher.wait_until_empty(_TIMEOUT_S):
                    raise SyncError("sync bench: the outbox did not empty")
                published = time.perf_counter() - start
            finally:
                publisher.stop()
            _wait(lambda: ingest.stats().inserted >= events, _TIMEOUT_S, "end to end")
            end_to_end = time.perf_counter() - start
        finally:
            ingest.stop()

        if centre_store.counts().events != events:
            raise SyncError("sync bench: the centre does not hold exactly the events sent")

        # 2. backlog (the ingest's persistent session queues while it is away)
        fill_outbox(kiosk_db, device=device, site=site, count=events)
        publisher = OutboxPublisher(bench, kiosk_db)
        publisher.start()
        try:
            if not publisher.wait_until_empty(_TIMEOUT_S):
                raise SyncError("sync bench: the backlog outbox did not empty")
        finally:
            publisher.stop()
        ingest = IngestService(bench)
        start = time.perf_counter()
        ingest.start()
        try:
            _wait(lambda: ingest.stats().inserted >= events, _TIMEOUT_S, "backlog ingest")
            backlog = time.perf_counter() - start
        finally:
            ingest.stop()
        if centre_store.counts().events != 2 * events:
            raise SyncError("sync bench: the centre does not hold exactly the events sent")
    finally:
        centre_store.close()

    storage = _storage_only(root, device, site, events, bench)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    return SyncBenchReport(
        events=events,
        broker=label,
        machine=machine,
        published_per_s=events / published,
        end_to_end_per_s=events / end_to_end,
        ingest_backlog_per_s=events / backlog,
        storage_per_s=storage,
    )


def _storage_only(root: Path, device: str, site: str, events: int, settings: Settings) -> float:
    """Events/s of validation + batched inserts into a fresh SQLite file."""
    kiosk_db = root / "storage-kiosk.db"
    fill_outbox(kiosk_db, device=device, site=site, count=events)
    outbox = OutboxStore.open(kiosk_db)
    try:
        payloads = [row.payload.encode() for row in outbox.unsent(after_seq=0, limit=events)]
    finally:
        outbox.close()
    prefix = settings.sync.topic_prefix
    topic = topic_for(prefix, site, device, "audit")
    batch_size = settings.centre.batch_size
    store = open_centre_store(f"sqlite:///{root / 'storage-centre.db'}")
    try:
        start = time.perf_counter()
        for i in range(0, len(payloads), batch_size):
            batch = [validate_event(topic, p, prefix=prefix) for p in payloads[i : i + batch_size]]
            store.write_batch(batch, [], int(time.time() * 1000))
        elapsed = time.perf_counter() - start
    finally:
        store.close()
    return events / elapsed
