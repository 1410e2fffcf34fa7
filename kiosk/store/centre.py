"""The centre's database: every device's audit events, once, and the dead letters.

Two back-ends behind one small ABC, chosen by URL (``settings.centre.database_url``):

* ``sqlite:///absolute/path.db`` — the default, at ``<state_dir>/centre.db``: WAL,
  ``synchronous=FULL`` (a batch the broker was told is stored survives a power
  cut), one writer.
* ``postgresql://user@host:port/db`` (or ``postgres://``) — for a fleet; several
  ingest workers may write at once.

Tables (the same in both):

``events``
    one row per (device, event uid) — ``UNIQUE(device, uid)`` is the dedupe key;
    inserts are ``ON CONFLICT DO NOTHING`` so a redelivered event is absorbed.
    Columns pulled out of the OCSF payload for querying (site, class_uid, time_ms,
    user_uid), the payload text exactly as the device sent it, when it arrived,
    and ``alerted_ms`` — when the lockout-alert hooks ran for a class 2004 event
    (NULL = not yet: they are run again after a crash).
``dead_letters``
    payloads that failed validation: the topic, the reason, the original size and
    the raw bytes (cut to a bound the ingest sets).

Schema versions: SQLite ``PRAGMA user_version`` (with its own ``application_id``,
so a kiosk device database is never mistaken for a centre one); PostgreSQL a
``kiosk_centre_schema`` table, migrated under an advisory lock so workers that
start together do not race. Every write of a batch is one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from kiosk.store.db import StoreError

log = logging.getLogger(__name__)

CENTRE_APPLICATION_ID = 0x4B43454E  # "KCEN"
CENTRE_SCHEMA_VERSION = 1
LOCKOUT_ALERT_CLASS = 2004
_PG_LOCK_KEY = 0x4B43454E  # advisory lock held while migrating
_CHUNK = 500  # rows per INSERT statement (SQLite's variable limit is 32766)


@dataclass(frozen=True)
class CentreEvent:
    """A validated event, ready to store."""

    device: str
    site: str
    uid: str
    class_uid: int
    time_ms: int
    user_uid: str
    payload: str


@dataclass(frozen=True)
class DeadLetter:
    """A payload that failed validation."""

    topic: str
    reason: str
    size: int  # original size in bytes
    payload: bytes  # possibly cut short


@dataclass(frozen=True)
class PendingAlert:
    """A lockout alert whose hooks have not run yet."""

    device: str
    uid: str
    payload: str


@dataclass(frozen=True)
class BatchResult:
    """What one committed batch did."""

    inserted: int
    duplicates: int
    dead_lettered: int
    new_alerts: list[PendingAlert]


@dataclass(frozen=True)
class CentreCounts:
    events: int
    dead_letters: int
    pending_alerts: int


@dataclass(frozen=True)
class DeadLetterRow:
    id: int
    received_ms: int
    topic: str
    reason: str
    size: int
    payload: bytes


class CentreStore(ABC):
    """Where the ingest writes. One instance per thread; ``close()`` is idempotent."""

    url: str

    @abstractmethod
    def write_batch(
        self, events: Sequence[CentreEvent], dead: Sequence[DeadLetter], received_ms: int
    ) -> BatchResult:
        """Insert events (duplicates skipped) and dead letters in one transaction."""

    @abstractmethod
    def pending_alerts(self, limit: int = 1000) -> list[PendingAlert]:
        """Lockout alerts stored but not yet handed to the hooks, oldest first."""

    @abstractmethod
    def mark_alerted(self, device: str, uid: str, when_ms: int) -> None:
        """Record that the hooks ran for this alert."""

    @abstractmethod
    def counts(self) -> CentreCounts:
        """Rows in each table (for health, tests and the bench)."""

    @abstractmethod
    def event_keys(self) -> set[tuple[str, str]]:
        """Every stored (device, uid): for checks, not for large centres."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetterRow]:
        """The newest dead letters, newest first."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def __enter__(self) -> CentreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rows(events: Sequence[CentreEvent], received_ms: int) -> list[tuple[Any, ...]]:
    return [
        (e.device, e.uid, e.site, e.class_uid, e.time_ms, e.user_uid, received_ms, e.payload)
        for e in events
    ]


def _new_alerts(
    events: Sequence[CentreEvent], inserted: set[tuple[str, str]]
) -> list[PendingAlert]:
    return [
        PendingAlert(e.device, e.uid, e.payload)
        for e in events
        if e.class_uid == LOCKOUT_ALERT_CLASS and (e.device, e.uid) in inserted
    ]


# --- SQLite ---------------------------------------------------------------------------------

_SQLITE_V1 = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        uid TEXT NOT NULL,
        site TEXT NOT NULL,
        class_uid INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        user_uid TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        payload TEXT NOT NULL,
        alerted_ms INTEGER,
        UNIQUE (device, uid)
    )""",
    "CREATE INDEX events_time ON events(time_ms)",
    "CREATE INDEX events_alert_pending ON events(id) WHERE class_uid = 2004 AND alerted_ms IS NULL",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        received_ms INTEGER NOT NULL,
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        size INTEGER NOT NULL,
        payload BLOB NOT NULL
    )""",
)


class SqliteCentreStore(CentreStore):
    """The centre's events in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # one thread at a time (the ingest opens a store per thread), not one thread only
            self.conn = sqlite3.connect(
                str(path), timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the centre database {path}: {exc}") from exc
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"the centre database {path} cannot be used: {exc}") from exc
        except BaseException:
            self.conn.close()
            raise

    def _migrate(self) -> None:
        conn = self.conn
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        if app_id != CENTRE_APPLICATION_ID and (app_id != 0 or tables):
            raise StoreError(
                f"{self.path} is not a centre database (a kiosk device database, or another "
                "program's); not touched. Point centre.database_url elsewhere."
            )
        if version > CENTRE_SCHEMA_VERSION:
            raise StoreError(
                f"the centre database {self.path} has schema v{version}, made by a newer kiosk; "
                f"this one knows up to v{CENTRE_SCHEMA_VERSION}. Not touched."
            )
        if version < 1:
            with self._transaction():
                for statement in _SQLITE_V1:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {CENTRE_APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {CENTRE_SCHEMA_VERSION}")
            log.info("centre database %s created (schema v%d)", self.path, CENTRE_SCHEMA_VERSION)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise StoreError(f"centre database {self.path}: {exc}") from exc

    def write_batch(
        self, events: Sequence[CentreEvent], dead: Sequence[DeadLetter], received_ms: int
    ) -> BatchResult:
        inserted: set[tuple[str, str]] = set()
        rows = _rows(events, received_ms)
        with self._transaction() as conn:
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                values = ",".join(["(?,?,?,?,?,?,?,?)"] * len(chunk))
                cursor = conn.execute(
                    "INSERT INTO events (device, uid, site, class_uid, time_ms, user_uid, "  # noqa: S608
                    f"received_ms, payload) VALUES {values} "
                    "ON CONFLICT (device, uid) DO NOTHING RETURNING device, uid",
                    [value for row in chunk for value in row],
                )
                inserted.update((str(d), str(u)) for d, u in cursor.fetchall())
            if dead:
                conn.executemany(
                    "INSERT INTO dead_letters (received_ms, topic, reason, size, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(received_ms, d.topic, d.reason, d.size, d.payload) for d in dead],
                )
        return BatchResult(
            inserted=len(inserted),
            duplicates=len(events) - len(inserted),
            dead_lettered=len(dead),
            new_alerts=_new_alerts(events, inserted),
        )

    def pending_alerts(self, limit: int = 1000) -> list[PendingAlert]:
        rows = self.conn.execute(
            "SELECT device, uid, payload FROM events WHERE class_uid = 2004 AND alerted_ms IS NULL "
            "ORDER BY id LIMIT ?",
            [limit],
        ).fetchall()
        return [PendingAlert(str(d), str(u), str(p)) for d, u, p in rows]

    def mark_alerted(self, device: str, uid: str, when_ms: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE events SET alerted_ms = ? WHERE device = ? AND uid = ?",
                [when_ms, device, uid],
            )

    def counts(self) -> CentreCounts:
        events = self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        dead = self.conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        pending = self.conn.execute(
            "SELECT COUNT(*) FROM events WHERE class_uid = 2004 AND alerted_ms IS NULL"
        ).fetchone()[0]
        return CentreCounts(int(events), int(dead), int(pending))

    def event_keys(self) -> set[tuple[str, str]]:
        return {(str(d), str(u)) for d, u in self.conn.execute("SELECT device, uid FROM events")}

    def dead_letters(self, limit: int = 100) -> list[DeadLetterRow]:
        rows = self.conn.execute(
            "SELECT id, received_ms, topic, reason, size, payload FROM dead_letters "
            "ORDER BY id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [
            DeadLetterRow(int(a), int(b), str(c), str(d), int(e), bytes(f))
            for a, b, c, d, e, f in rows
        ]

    def close(self) -> None:
        self.conn.close()


# --- PostgreSQL -----------------------------------------------------------------------------

_PG_V1 = (
    """CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device TEXT NOT NULL,
        uid TEXT NOT NULL,
        site TEXT NOT NULL,
        class_uid INTEGER NOT NULL,
        time_ms BIGINT NOT NULL,
        user_uid TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        payload TEXT NOT NULL,
        alerted_ms BIGINT,
        UNIQUE (device, uid)
    )""",
    "CREATE INDEX events_time ON events(time_ms)",
    "CREATE INDEX events_alert_pending ON events(id) WHERE class_uid = 2004 AND alerted_ms IS NULL",
    """CREATE TABLE dead_letters (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_ms BIGINT NOT NULL,
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        size INTEGER NOT NULL,
        payload BYTEA NOT NULL
    )""",
)

_PG_INSERT = (
    "INSERT INTO events (device, uid, site, class_uid, time_ms, user_uid, received_ms, payload) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::bigint[], "
    "%s::text[], %s::bigint[], %s::text[]) "
    "ON CONFLICT (device, uid) DO NOTHING RETURNING device, uid"
)


class PostgresCentreStore(CentreStore):
    """The centre's events in PostgreSQL (psycopg 3)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(url, autocommit=False, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the centre database {_redact(url)}: {exc}".strip()
            ) from exc
        try:
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """``work(cursor)`` in one transaction; database errors become StoreError."""
        try:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                return work(cursor)
        except self._psycopg.Error as exc:
            raise StoreError(f"centre database {_redact(self.url)}: {exc}") from exc

    def _migrate(self) -> None:
        def migrate(cur: Any) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])
            cur.execute("CREATE TABLE IF NOT EXISTS kiosk_centre_schema (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM kiosk_centre_schema")
            row = cur.fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > CENTRE_SCHEMA_VERSION:
                raise StoreError(
                    f"the centre database {_redact(self.url)} has schema v{version}, made by a "
                    f"newer kiosk; this one knows up to v{CENTRE_SCHEMA_VERSION}."
                )
            if version < 1:
                for statement in _PG_V1:
                    cur.execute(statement)
                cur.execute("INSERT INTO kiosk_centre_schema (version) VALUES (%s)", [1])
                log.info("centre database %s created (schema v1)", _redact(self.url))

        self._run(migrate)

    def write_batch(
        self, events: Sequence[CentreEvent], dead: Sequence[DeadLetter], received_ms: int
    ) -> BatchResult:
        def write(cur: Any) -> set[tuple[str, str]]:
            inserted: set[tuple[str, str]] = set()
            rows = _rows(events, received_ms)
            for start in range(0, len(rows), _CHUNK * 4):
                chunk = rows[start : start + _CHUNK * 4]
                columns = [list(column) for column in zip(*chunk, strict=True)]
                cur.execute(_PG_INSERT, columns)
                inserted.update((str(d), str(u)) for d, u in cur.fetchall())
            if dead:
                cur.executemany(
                    "INSERT INTO dead_letters (received_ms, topic, reason, size, payload) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(received_ms, d.topic, d.reason, d.size, d.payload) for d in dead],
                )
            return inserted

        inserted: set[tuple[str, str]] = self._run(write)
        return BatchResult(
            inserted=len(inserted),
            duplicates=len(events) - len(inserted),
            dead_lettered=len(dead),
            new_alerts=_new_alerts(events, inserted),
        )

    def pending_alerts(self, limit: int = 1000) -> list[PendingAlert]:
        def read(cur: Any) -> list[PendingAlert]:
            cur.execute(
                "SELECT device, uid, payload FROM events "
                "WHERE class_uid = 2004 AND alerted_ms IS NULL ORDER BY id LIMIT %s",
                [limit],
            )
            return [PendingAlert(str(d), str(u), str(p)) for d, u, p in cur.fetchall()]

        result: list[PendingAlert] = self._run(read)
        return result

    def mark_alerted(self, device: str, uid: str, when_ms: int) -> None:
        self._run(
            lambda cur: cur.execute(
                "UPDATE events SET alerted_ms = %s WHERE device = %s AND uid = %s",
                [when_ms, device, uid],
            )
        )

    def counts(self) -> CentreCounts:
        def read(cur: Any) -> CentreCounts:
            cur.execute(
                "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM dead_letters), "
                "(SELECT COUNT(*) FROM events WHERE class_uid = 2004 AND alerted_ms IS NULL)"
            )
            a, b, c = cur.fetchone()
            return CentreCounts(int(a), int(b), int(c))

        result: CentreCounts = self._run(read)
        return result

    def event_keys(self) -> set[tuple[str, str]]:
        def read(cur: Any) -> set[tuple[str, str]]:
            cur.execute("SELECT device, uid FROM events")
            return {(str(d), str(u)) for d, u in cur.fetchall()}

        result: set[tuple[str, str]] = self._run(read)
        return result

    def dead_letters(self, limit: int = 100) -> list[DeadLetterRow]:
        def read(cur: Any) -> list[DeadLetterRow]:
            cur.execute(
                "SELECT id, received_ms, topic, reason, size, payload FROM dead_letters "
                "ORDER BY id DESC LIMIT %s",
                [limit],
            )
            return [
                DeadLetterRow(int(a), int(b), str(c), str(d), int(e), bytes(f))
                for a, b, c, d, e, f in cur.fetchall()
            ]

        result: list[DeadLetterRow] = self._run(read)
        return result

    def close(self) -> None:
        self.conn.close()


# --- choosing one ---------------------------------------------------------------------------


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return _redact(url)


def open_centre_store(url: str) -> CentreStore:
    """The store a URL names: ``sqlite:///path`` or ``postgresql://…``."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        raw = unquote(url[len("sqlite://") :])
        if not raw.startswith("/") or raw.strip("/") in ("", ":memory:"):
            raise StoreError(
                f"centre.database_url {url!r}: give an absolute file path, e.g. "
                "sqlite:///var/lib/kiosk/centre.db"
            )
        return SqliteCentreStore(Path("/" + raw.lstrip("/")))
    if scheme in ("postgresql", "postgres"):
        return PostgresCentreStore(url)
    raise StoreError(
        f"centre.database_url {_redact(url)!r} is neither sqlite:///… nor postgresql://…"
    )
