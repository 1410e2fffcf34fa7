"""The device side of audit sync: reading the outbox in order and marking rows sent.

Rows are written by :class:`kiosk.store.repository.SqliteRepository` in the same
transaction as their audit row. The publisher reads them here, oldest first, on a
connection of its own (WAL lets the kiosk keep writing meanwhile), and marks a row
sent only once the broker has acknowledged it (PUBACK). Marks are written in
batches, one transaction per batch: a crash between a PUBACK and its mark means
the event is published again, which the centre absorbs (it dedupes on the event
uid); an event is never marked sent without a PUBACK.

``attempts`` counts how many times a row was handed to the broker; health reports
the highest count among unsent rows, so an event the broker keeps refusing is
visible. ``unmark`` makes a row unsent again when the centre never confirmed it
(a broker that crashed after its PUBACK lost it): it is then published anew.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiosk.store.db import Database, StoreError


@dataclass(frozen=True)
class OutboxRow:
    """One unsent event as stored: ``payload`` is the exact JSON text to publish."""

    seq: int
    uid: str
    payload: str
    created_ms: int
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    """How far behind the outbox is."""

    depth: int  # unsent rows
    oldest_unsent_ms: int | None  # created_ms of the oldest unsent row
    last_sent_ms: int | None  # when a row was last marked sent
    max_attempts: int  # highest attempts among unsent rows


class OutboxStore:
    """The outbox of one kiosk database, on a connection owned by the calling thread."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.db = database.db

    @classmethod
    def open(cls, path: Path) -> OutboxStore:
        """Open an existing kiosk database for syncing (never creates one)."""
        if not path.is_file():
            raise StoreError(
                f"there is no kiosk database at {path}: nothing to sync (check state_dir / "
                "KIOSK_STATE_DIR)"
            )
        return cls(Database(path))

    def close(self) -> None:
        self.database.close()

    def unsent(self, *, after_seq: int, limit: int) -> list[OutboxRow]:
        """Unsent rows with ``seq > after_seq``, oldest first, at most ``limit``."""
        try:
            rows = self.db.execute(
                "SELECT seq, uid, payload, created_ms, attempts FROM outbox "
                "WHERE sent_ms IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                [after_seq, limit],
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot read the outbox of {self.database.path}: {exc}") from exc
        return [OutboxRow(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]

    def record(self, *, sent: Sequence[str], attempted: Sequence[str], now_ms: int) -> None:
        """In one transaction: mark ``sent`` uids sent at ``now_ms``, count ``attempted`` ones."""
        if not sent and not attempted:
            return
        with self.database.atomic():
            if attempted:
                self.db.conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1 WHERE uid = ?",
                    [(uid,) for uid in attempted],
                )
            if sent:
                self.db.conn.executemany(
                    "UPDATE outbox SET sent_ms = ? WHERE uid = ? AND sent_ms IS NULL",
                    [(now_ms, uid) for uid in sent],
                )

    def stats(self) -> OutboxStats:
        """Depth, oldest unsent event and the highest attempt count (cheap: partial index)."""
        try:
            depth, max_attempts = self.db.execute(
                "SELECT COUNT(*), COALESCE(MAX(attempts), 0) FROM outbox WHERE sent_ms IS NULL"
            ).fetchone()
            oldest = self.db.execute(
                "SELECT created_ms FROM outbox WHERE sent_ms IS NULL ORDER BY seq LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot read the outbox of {self.database.path}: {exc}") from exc
        return OutboxStats(
            depth=int(depth),
            oldest_unsent_ms=int(oldest[0]) if oldest else None,
            last_sent_ms=None,
            max_attempts=int(max_attempts),
        )

    def last_sent_ms(self) -> int | None:
        """When a row was last marked sent (a full scan: call once at start-up)."""
        row = self.db.execute("SELECT MAX(sent_ms) FROM outbox").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def unmark(self, uids: Sequence[str]) -> None:
        """Make rows unsent again (the centre never confirmed them): they are published anew."""
        if not uids:
            return
        with self.database.atomic():
            self.db.conn.executemany(
                "UPDATE outbox SET sent_ms = NULL WHERE uid = ?", [(uid,) for uid in uids]
            )

    def sent_after(self, seq: int) -> list[tuple[int, str]]:
        """(seq, uid) of rows marked sent with ``seq > seq``, oldest first."""
        rows = self.db.execute(
            "SELECT seq, uid FROM outbox WHERE seq > ? AND sent_ms IS NOT NULL ORDER BY seq",
            [seq],
        ).fetchall()
        return [(int(a), str(b)) for a, b in rows]

    def max_sent_seq(self) -> int:
        """The highest seq of a row marked sent (0 when none is)."""
        row = self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE sent_ms IS NOT NULL"
        ).fetchone()
        return int(row[0])

    def depth(self) -> int:
        """Unsent rows."""
        row = self.db.execute("SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL").fetchone()
        return int(row[0])
