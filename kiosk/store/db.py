"""The kiosk's SQLite database: opening, checking and migrating it.

The database lives at ``<state_dir>/kiosk.db`` in WAL mode with foreign keys
on and ``synchronous=FULL`` (an audit row that was reported written survives a
power cut). Its schema version is ``PRAGMA user_version`` and its
``application_id`` marks it as a kiosk database.

Opening refuses, leaving the file untouched, a file that is not a kiosk
database, a damaged one (``quick_check`` fails), and one from a newer kiosk.
An older schema is first copied to ``kiosk.db.v<N>.bak`` (SQLite's online
backup) and then migrated step by step, each step in one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from kiosk.errors import KioskError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x4B494F53  # "KIOS"
SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(KioskError, RuntimeError):
    """The database cannot be used as it is; the message says what to do."""

    exit_code = 75  # EX_TEMPFAIL


def _v1(db: sqlite_utils.Database) -> None:
    """The first schema: users with PINs, encrypted templates, audit and its outbox."""
    db.execute(
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids name people in audit
            name TEXT NOT NULL UNIQUE,
            created_ms INTEGER NOT NULL,
            pin_salt BLOB,
            pin_digest BLOB,
            pin_params TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE templates (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            blob BLOB NOT NULL,
            created_ms INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX templates_user ON templates(user_id)")
    db.execute(
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            uid TEXT NOT NULL UNIQUE,
            time_ms INTEGER NOT NULL,
            class_uid INTEGER NOT NULL,
            user_uid TEXT NOT NULL,
            status TEXT NOT NULL,
            summary TEXT NOT NULL,
            payload TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX audit_time ON audit(time_ms)")
    db.execute("CREATE INDEX audit_user ON audit(user_uid)")
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            uid TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            sent_ms INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX outbox_unsent ON outbox(seq) WHERE sent_ms IS NULL")


def _v2(db: sqlite_utils.Database) -> None:
    """Staff numbers and roles, TOTP fallback, boot-clock lockouts, consent records."""
    db.execute("ALTER TABLE users ADD COLUMN staff_no TEXT")
    db.execute("UPDATE users SET staff_no = CAST(1000 + id AS TEXT)")
    db.execute("CREATE UNIQUE INDEX users_staff_no ON users(staff_no)")
    db.execute("ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'staff'")
    db.execute("ALTER TABLE users ADD COLUMN totp_secret BLOB")
    db.execute("ALTER TABLE users ADD COLUMN totp_last_step INTEGER")
    db.execute("ALTER TABLE users ADD COLUMN enrolled_ms INTEGER")
    db.execute(
        "UPDATE users SET enrolled_ms = (SELECT MIN(created_ms) FROM templates t "
        "WHERE t.user_id = users.id)"
    )
    db.execute(
        """CREATE TABLE lockouts (
            user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            failures INTEGER NOT NULL DEFAULT 0,
            remaining_s REAL NOT NULL DEFAULT 0,
            boot_id TEXT NOT NULL DEFAULT '',
            boot_s REAL NOT NULL DEFAULT 0,
            locked_at_ms INTEGER,
            open_attempt INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        """CREATE TABLE consents (
            id INTEGER PRIMARY KEY,
            user_uid TEXT NOT NULL,
            text_version TEXT NOT NULL,
            text_sha256 TEXT NOT NULL,
            given_ms INTEGER NOT NULL,
            recorded_by TEXT NOT NULL
        )"""
    )


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {1: _v1, 2: _v2}


class Database:
    """An open, checked, current kiosk database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists() and path.stat().st_size > 0
        if existed:
            _check_header(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), timeout=10.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        self.db = sqlite_utils.Database(conn)
        try:
            if existed:
                self._check(conn)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {path} has schema version {version}, made by a newer kiosk; "
                    f"this one knows up to {SCHEMA_VERSION}. Install the newer kiosk again, or "
                    "restore the backup taken before the upgrade. The file was not changed."
                )
            with self.db.ensure_autocommit_on():
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            # erased templates, secrets and names must not linger in free pages
            conn.execute("PRAGMA secure_delete=ON")
            if version < SCHEMA_VERSION:
                self._migrate(conn, version)
        except BaseException:
            conn.close()
            raise

    def _check(self, conn: sqlite3.Connection) -> None:
        try:
            app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the database {self.path} is damaged ({exc}); it was left as it is. Restore it "
                "from a backup, or move it aside to start empty (enrolments would be lost)."
            ) from exc
        if result != "ok":
            raise StoreError(
                f"the database {self.path} failed its integrity check ({result}); it was left "
                "as it is. Restore it from a backup."
            )
        if app_id not in (0, APPLICATION_ID):
            raise StoreError(f"{self.path} is an SQLite database of another program; not touched")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and tables and "users" not in tables:
            raise StoreError(f"{self.path} is not a kiosk database; not touched")

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        if version > 0:
            backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
            log.info("backing up the schema v%d database to %s before migrating", version, backup)
            target = sqlite3.connect(str(backup))
            try:
                conn.backup(target)
            finally:
                target.close()
        for step in range(version + 1, SCHEMA_VERSION + 1):
            with self.atomic():
                MIGRATIONS[step](self.db)
                conn.execute(f"PRAGMA user_version = {step}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            log.info("database %s migrated to schema v%d", self.path, step)

    @contextmanager
    def atomic(self) -> Iterator[sqlite_utils.Database]:
        """One transaction; a full disk or a locked database becomes a clear StoreError."""
        try:
            with self.db.atomic() as db:
                yield db
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "full" in text:
                raise StoreError(
                    f"the disk holding {self.path} is full; nothing was written. Free space "
                    "and try again."
                ) from exc
            if "locked" in text or "busy" in text:
                raise StoreError(f"the database {self.path} is busy; try again") from exc
            raise StoreError(f"database error on {self.path}: {exc}") from exc

    def probe_write(self) -> None:
        """Take the write lock and let it go: raises :class:`StoreError` when writes would fail."""
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"the database {self.path} cannot be written: {exc}") from exc

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read the database {path}: {exc.strerror or exc}") from exc
    if header != _SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not an SQLite database (damaged, or another file); it was left as it is. "
            "Restore it from a backup, or move it aside to start empty."
        )
