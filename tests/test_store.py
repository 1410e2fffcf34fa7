"""The SQLite store: opening, checking, migrating, encrypting, failing safely, erasing.

Every test works on a real database file in a temporary directory and asserts
what an operator would notice: a clear error that says what to do, a file left
exactly as it was, rows that survive, and no biometric data readable from the
file alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlite_utils

from kiosk.auth import events
from kiosk.auth.admin import UserAdmin
from kiosk.auth.clock import ManualClock
from kiosk.auth.crypto import (
    CorruptRecordError,
    KdfParams,
    PinHasher,
    RecordCipher,
    embedding_to_bytes,
)
from kiosk.auth.events import AuditEvent, DeviceInfo
from kiosk.auth.flow import AuthFlow, Phase
from kiosk.auth.liveness import TrackContinuity
from kiosk.auth.lockout import LockoutState
from kiosk.auth.model import Change, Role, User
from kiosk.secrets import SECRET_BYTES, DeviceKeys, SecretError, create_secret, load_secret
from kiosk.store.db import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Database, StoreError
from kiosk.store.repository import ConsentRecord, SqliteRepository

SECRET = bytes(range(SECRET_BYTES))
OTHER_SECRET = bytes(range(100, 100 + SECRET_BYTES))
KDF = KdfParams(memory_kib=1024, time_cost=1)
DEVICE = DeviceInfo(device_id="kiosk-test-01", site="Ward 3 entrance")
MODEL = "mobilefacenet-test"
DIM = 128
PIN = "482916"
CONSENT = ConsentRecord(
    text_version="consent-v1",
    text_sha256=hashlib.sha256(b"consent text").hexdigest(),
    given_ms=1_800_000_000_000,
    recorded_by="admin",
)
MAX_PAGES = 1073741823  # SQLite's default max_page_count


# --- helpers ------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def dump(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return rows(conn, f"SELECT * FROM {table} ORDER BY rowid")  # noqa: S608 (fixed names)


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


def vectors(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = rng.standard_normal(DIM).astype(np.float32)
        out.append(v / np.linalg.norm(v))
    return out


def account_event(
    clock: ManualClock, user: User, activity: int, reason: str, **kw: Any
) -> AuditEvent:
    return events.account_change(
        wall=clock.wall(), device=DEVICE, user=user.ref(), activity_id=activity, reason=reason, **kw
    )


def auth_event(clock: ManualClock, user: User, success: bool, reason: str) -> AuditEvent:
    return events.authentication(
        wall=clock.wall(),
        device=DEVICE,
        user=user.ref(),
        success=success,
        factor="pin",
        reason=reason,
    )


def checkpoint(database: Database) -> None:
    database.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def raw_bytes(path: Path) -> bytes:
    """The main file and, if any, its WAL: everything a thief of the state directory gets."""
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    return data


def enrol(repo: SqliteRepository, clock: ManualClock, user: User, vecs: list[np.ndarray]) -> None:
    repo.replace_templates(
        user,
        vecs,
        model=MODEL,
        now_ms=int(clock.wall() * 1000),
        consent=CONSENT,
        event=account_event(clock, user, events.MFA_ENABLE, "face enrolled"),
    )


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def keys() -> DeviceKeys:
    return DeviceKeys.derive(SECRET)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "kiosk.db"


@pytest.fixture
def database(db_path: Path) -> Iterator[Database]:
    database = Database(db_path)
    yield database
    database.close()


@pytest.fixture
def repo(database: Database, keys: DeviceKeys) -> SqliteRepository:
    return SqliteRepository(database, keys)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hasher(keys: DeviceKeys) -> PinHasher:
    return PinHasher(keys.pin_pepper, KDF)


@pytest.fixture
def admin(repo: SqliteRepository, hasher: PinHasher, clock: ManualClock) -> UserAdmin:
    return UserAdmin(repo=repo, hasher=hasher, clock=clock, device=DEVICE, actor="site-admin")


def kiosk_database_with_rows(path: Path, *, events_count: int) -> None:
    """A real, closed kiosk database holding users and ``events_count`` audit events."""
    keys = DeviceKeys.derive(SECRET)
    database = Database(path)
    repo = SqliteRepository(database, keys)
    clock = ManualClock()
    admin = UserAdmin(repo, PinHasher(keys.pin_pepper, KDF), clock, DEVICE, "site-admin")
    user = admin.add("Ann Filler", PIN)
    repo.commit(
        Change(events=[auth_event(clock, user, False, "x" * 500) for _ in range(events_count)])
    )
    database.close()


# --- 1. a fresh database ----------------------------------------------------------------


def test_fresh_database_is_current_wal_with_foreign_keys_and_marked(
    db_path: Path, database: Database
) -> None:
    conn = database.db.conn
    assert database.version == SCHEMA_VERSION == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "templates", "audit", "outbox", "lockouts", "consents"} <= tables
    # nothing to back up when there was nothing before
    assert list(db_path.parent.glob("*.bak")) == []

    database.close()
    again = Database(db_path)  # reopening a current database changes nothing
    try:
        assert again.version == 2
        assert list(db_path.parent.glob("*.bak")) == []
    finally:
        again.close()


# --- 2. migration from schema v1 --------------------------------------------------------


def build_v1(path: Path, keys: DeviceKeys, *, marked: bool) -> dict[str, Any]:
    """A schema-v1 database as the first kiosk wrote it; returns what was put in."""
    hasher = PinHasher(keys.pin_pepper, KDF)
    cipher = RecordCipher(keys.template_key)
    db = sqlite_utils.Database(path)
    MIGRATIONS[1](db)
    ann_pin, ben_pin = hasher.hash("1111"), hasher.hash("2222")
    users = [
        (1, "Ann Old", 1_000, ann_pin.salt, ann_pin.digest, ann_pin.params.encode()),
        (2, "Ben Old", 2_000, ben_pin.salt, ben_pin.digest, ben_pin.params.encode()),
        (3, "Cy NoFace", 3_000, None, None, None),
    ]
    for user in users:
        db.execute(
            "INSERT INTO users (id, name, created_ms, pin_salt, pin_digest, pin_params) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            list(user),
        )
    ann_vecs, ben_vecs = vectors(2, seed=1), vectors(1, seed=2)
    for user_id, vecs, times in ((1, ann_vecs, (5_000, 4_000)), (2, ben_vecs, (7_000,))):
        for vec, created in zip(vecs, times, strict=True):
            blob = cipher.seal(embedding_to_bytes(vec), f"template:{user_id}:{MODEL}")
            db.execute(
                "INSERT INTO templates (user_id, model, blob, created_ms) VALUES (?, ?, ?, ?)",
                [user_id, MODEL, blob, created],
            )
    for i, (uid, user_uid) in enumerate((("ev-1", "user:1"), ("ev-2", "user:2"))):
        payload = json.dumps({"metadata": {"uid": uid}, "user": {"uid": user_uid}})
        db.execute(
            "INSERT INTO audit (uid, time_ms, class_uid, user_uid, status, summary, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [uid, 10_000 + i, 3002, user_uid, "success", f"granted (pin+face): ok {i}", payload],
        )
        db.execute(
            "INSERT INTO outbox (uid, payload, created_ms, sent_ms, attempts) "
            "VALUES (?, ?, ?, ?, ?)",
            [uid, payload, 10_000 + i, 10_500 if i == 0 else None, 1 if i == 0 else 3],
        )
    db.execute("PRAGMA user_version = 1")
    if marked:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    snapshot = {t: dump(db.conn, t) for t in ("users", "templates", "audit", "outbox")}
    db.close()
    return {"snapshot": snapshot, "ann": ann_vecs, "ben": ben_vecs}


@pytest.mark.parametrize("marked", [True, False], ids=["with-application-id", "unmarked"])
def test_v1_database_is_backed_up_then_migrated_without_losing_rows(
    db_path: Path, keys: DeviceKeys, hasher: PinHasher, clock: ManualClock, marked: bool
) -> None:
    made = build_v1(db_path, keys, marked=marked)
    before = made["snapshot"]

    database = Database(db_path)
    try:
        conn = database.db.conn
        assert database.version == 2
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID

        # every v1 row is still there, unchanged
        v1_user_columns = "id, name, created_ms, pin_salt, pin_digest, pin_params"
        assert rows(conn, f"SELECT {v1_user_columns} FROM users ORDER BY id") == before["users"]  # noqa: S608
        for table in ("templates", "audit", "outbox"):
            assert dump(conn, table) == before[table], table

        # and got what v2 adds
        added = rows(
            conn, "SELECT id, staff_no, role, totp_secret, enrolled_ms FROM users ORDER BY id"
        )
        assert added == [
            (1, "1001", "staff", None, 4_000),  # the earliest template
            (2, "1002", "staff", None, 7_000),
            (3, "1003", "staff", None, None),  # never enrolled
        ]
        assert count(conn, "lockouts") == 0
        assert count(conn, "consents") == 0

        # the migrated database works for the kiosk
        repo = SqliteRepository(database, keys)
        ann = repo.user_by_staff_no("1001")
        assert ann is not None
        assert ann.name == "Ann Old"
        assert ann.role is Role.STAFF
        assert ann.pin is not None
        assert hasher.verify("1111", ann.pin)
        assert not hasher.verify("2222", ann.pin)
        got = repo.templates(ann)
        assert len(got) == 2
        for want, have in zip(made["ann"], got, strict=True):
            np.testing.assert_array_equal(want, have)
        cy = repo.user_by_staff_no("1003")
        assert cy is not None
        assert cy.pin is None
        assert [r.uid for r in repo.audit()] == ["ev-1", "ev-2"]
        admin = UserAdmin(repo, hasher, clock, DEVICE, "site-admin")
        new = admin.add("Dee New", "3333")
        assert new.staff_no == "1004"
    finally:
        database.close()

    # the backup is a valid v1 database with the same rows
    backup = db_path.with_name("kiosk.db.v1.bak")
    assert backup.is_file()
    with sqlite3.connect(backup) as bak:
        assert bak.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert bak.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [r[1] for r in bak.execute("PRAGMA table_info(users)")]
        assert "staff_no" not in columns
        tables = {r[0] for r in bak.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "lockouts" not in tables
        assert "consents" not in tables
        for table, want in before.items():
            assert dump(bak, table) == want, table
    bak.close()

    # reopening the migrated database neither migrates again nor overwrites the backup
    backup_digest = sha256(backup)
    again = Database(db_path)
    try:
        assert again.version == 2
        assert count(again.db.conn, "users") == 4
    finally:
        again.close()
    assert sha256(backup) == backup_digest


# --- 3. a database from a newer kiosk ---------------------------------------------------


def test_database_from_a_newer_kiosk_is_refused_and_left_untouched(db_path: Path) -> None:
    kiosk_database_with_rows(db_path, events_count=5)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    digest = sha256(db_path)

    with pytest.raises(StoreError, match="newer") as excinfo:
        Database(db_path)

    assert "99" in str(excinfo.value)
    assert sha256(db_path) == digest
    wal = db_path.with_name("kiosk.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert list(db_path.parent.glob("*.bak")) == []
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 6
    conn.close()


# --- 4. damaged files and files of other programs --------------------------------------


def write_random(path: Path) -> str:
    path.write_bytes(random.Random(1).randbytes(16384))
    return "not an SQLite database"


def write_header_then_garbage(path: Path) -> str:
    path.write_bytes(b"SQLite format 3\x00" + random.Random(2).randbytes(16384))
    return "damaged"


def write_damaged_kiosk_db(path: Path) -> str:
    kiosk_database_with_rows(path, events_count=150)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the page size, from the header
    pages = len(data) // page
    assert pages >= 30  # enough pages for a "middle"
    garbage = random.Random(3).randbytes(page * (pages // 3))
    start = page * (pages // 3)
    data[start : start + len(garbage)] = garbage
    path.write_bytes(bytes(data))
    return "damaged|integrity"


def write_foreign_tables(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE foo (x INTEGER)")
        conn.execute("INSERT INTO foo VALUES (42)")
    conn.close()
    return "not a kiosk database"


def write_foreign_application_id(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 305419896")  # 0x12345678
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")  # even with a 'users' table
    conn.close()
    return "another program"


@pytest.mark.parametrize(
    "make",
    [
        write_random,
        write_header_then_garbage,
        write_damaged_kiosk_db,
        write_foreign_tables,
        write_foreign_application_id,
    ],
    ids=["random-bytes", "header-then-garbage", "damaged-pages", "foreign-table", "foreign-app-id"],
)
def test_unusable_file_is_refused_and_left_untouched(db_path: Path, make: Any) -> None:
    expected = make(db_path)
    digest = sha256(db_path)
    size = db_path.stat().st_size

    with pytest.raises(StoreError, match=expected) as excinfo:
        Database(db_path)

    assert str(db_path) in str(excinfo.value)  # says which file
    assert db_path.stat().st_size == size
    assert sha256(db_path) == digest
    assert list(db_path.parent.glob("*.bak")) == []
    # still refused the second time: nothing was "repaired" into a fresh database
    with pytest.raises(StoreError):
        Database(db_path)
    assert sha256(db_path) == digest


# --- 5. a full disk ---------------------------------------------------------------------


def big_event(clock: ManualClock, user: User, kib: int) -> AuditEvent:
    return account_event(clock, user, events.LOCK, "padding", extra={"pad": "p" * (kib * 1024)})


@pytest.mark.parametrize("write", ["commit", "create_user"])
def test_full_disk_is_reported_and_nothing_is_written(
    db_path: Path,
    database: Database,
    repo: SqliteRepository,
    admin: UserAdmin,
    hasher: PinHasher,
    clock: ManualClock,
    write: str,
) -> None:
    conn = database.db.conn
    ann = admin.add("Ann Example", PIN)
    admin.add("Ben Example", "1357")
    repo.commit(
        Change(
            events=[auth_event(clock, ann, False, "wrong PIN") for _ in range(5)],
            lockouts={ann.id: LockoutState(failures=1)},
        )
    )
    tables = ("users", "audit", "outbox", "lockouts", "templates", "consents")
    before = {t: dump(conn, t) for t in tables}
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages

    with pytest.raises(StoreError, match="full") as excinfo:
        if write == "commit":
            repo.commit(
                Change(
                    events=[big_event(clock, ann, 4) for _ in range(50)],
                    lockouts={ann.id: LockoutState(failures=2)},
                )
            )
        else:
            repo.create_user(
                name="Cleo New",
                staff_no=None,
                role=Role.STAFF,
                pin=hasher.hash("2468"),
                created_ms=int(clock.wall() * 1000),
                event_for=lambda user: big_event(clock, user, 200),
            )
    assert "nothing was written" in str(excinfo.value)

    # no partial rows, nothing lost, on this connection ...
    assert not conn.in_transaction
    assert {t: dump(conn, t) for t in tables} == before
    assert repo.user_by_name("Cleo New") is None
    assert repo.lockout(ann.id).failures == 1

    # ... and the database works again once there is room
    conn.execute(f"PRAGMA max_page_count = {MAX_PAGES}")
    repo.commit(Change(events=[auth_event(clock, ann, True, "after the disk was freed")]))
    database.close()

    # ... and on disk, after reopening
    again = Database(db_path)
    try:
        for table in ("users", "lockouts", "templates", "consents"):
            assert dump(again.db.conn, table) == before[table], table
        assert dump(again.db.conn, "audit")[:-1] == before["audit"]
        assert dump(again.db.conn, "outbox")[:-1] == before["outbox"]
        assert count(again.db.conn, "audit") == len(before["audit"]) + 1
        assert again.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        again.close()


# --- 6. templates that do not decrypt ---------------------------------------------------


@pytest.fixture
def two_enrolled(repo: SqliteRepository, admin: UserAdmin, clock: ManualClock) -> tuple[User, User]:
    ann = admin.add("Ann Example", PIN)
    ben = admin.add("Ben Example", "1357")
    enrol(repo, clock, ann, vectors(2, seed=10))
    enrol(repo, clock, ben, vectors(1, seed=11))
    admin.enable_totp("Ann Example")
    admin.enable_totp("Ben Example")
    return ann, ben


def test_flipped_byte_in_a_template_is_reported_and_the_row_kept(
    database: Database, repo: SqliteRepository, two_enrolled: tuple[User, User]
) -> None:
    ann, ben = two_enrolled
    conn = database.db.conn
    template_id, blob = conn.execute(
        "SELECT id, blob FROM templates WHERE user_id = ? ORDER BY id LIMIT 1", [ann.id]
    ).fetchone()
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0x01
    conn.execute("UPDATE templates SET blob = ? WHERE id = ?", [bytes(damaged), template_id])
    conn.commit()

    with pytest.raises(CorruptRecordError, match="does not decrypt") as excinfo:
        repo.templates(ann)
    message = str(excinfo.value)
    assert f"template:{ann.id}:{MODEL}" in message  # which record
    assert "device secret" in message  # and the likely causes
    # nothing was deleted or "repaired"
    assert repo.template_count(ann.id) == 2
    stored = conn.execute("SELECT blob FROM templates WHERE id = ?", [template_id]).fetchone()[0]
    assert bytes(stored) == bytes(damaged)
    # the other user is unaffected
    assert len(repo.templates(ben)) == 1


def test_encrypted_records_copied_to_another_user_do_not_decrypt(
    database: Database, repo: SqliteRepository, two_enrolled: tuple[User, User]
) -> None:
    ann, ben = two_enrolled
    conn = database.db.conn
    ann_blob = conn.execute(
        "SELECT blob FROM templates WHERE user_id = ? ORDER BY id LIMIT 1", [ann.id]
    ).fetchone()[0]
    ann_totp = conn.execute("SELECT totp_secret FROM users WHERE id = ?", [ann.id]).fetchone()[0]
    assert len(repo.templates(ann)) == 2  # valid where it belongs
    conn.execute("UPDATE templates SET blob = ? WHERE user_id = ?", [ann_blob, ben.id])
    conn.execute("UPDATE users SET totp_secret = ? WHERE id = ?", [ann_totp, ben.id])
    conn.commit()

    with pytest.raises(CorruptRecordError, match=f"template:{ben.id}:"):
        repo.templates(ben)
    with pytest.raises(CorruptRecordError, match=f"totp:{ben.id}"):
        repo.totp(ben)
    # the originals still open
    assert len(repo.templates(ann)) == 2
    assert repo.totp(ann) is not None


def test_another_device_secret_reads_no_template_totp_or_pin(
    database: Database,
    keys: DeviceKeys,
    repo: SqliteRepository,
    hasher: PinHasher,
    two_enrolled: tuple[User, User],
) -> None:
    ann, _ = two_enrolled
    other_keys = DeviceKeys.derive(OTHER_SECRET)
    stranger = SqliteRepository(database, other_keys)
    seen = stranger.user_by_staff_no(ann.staff_no)
    assert seen is not None
    assert seen.pin is not None

    with pytest.raises(CorruptRecordError, match="does not decrypt"):
        stranger.templates(seen)
    with pytest.raises(CorruptRecordError, match="does not decrypt"):
        stranger.totp(seen)
    assert not PinHasher(other_keys.pin_pepper, KDF).verify(PIN, seen.pin)
    # with the right secret everything still works: nothing was damaged by trying
    assert hasher.verify(PIN, seen.pin)
    assert len(repo.templates(ann)) == 2
    assert repo.totp(ann) is not None
    assert repo.template_count(ann.id) == 2


# --- 7. no biometric data in the file ---------------------------------------------------


def test_database_file_reveals_no_template_or_totp_secret(
    db_path: Path,
    database: Database,
    repo: SqliteRepository,
    admin: UserAdmin,
    clock: ManualClock,
) -> None:
    ann = admin.add("Ann Example", PIN)
    ben = admin.add("Ben Example", "1357")
    ann_vecs, ben_vecs = vectors(3, seed=20), vectors(2, seed=21)
    enrol(repo, clock, ann, ann_vecs)
    enrol(repo, clock, ben, ben_vecs)
    admin.enable_totp("Ann Example")
    totp = repo.totp(ann)
    assert totp is not None

    def needles(vec: np.ndarray) -> list[bytes]:
        data = embedding_to_bytes(vec)
        return [data[i : i + 16] for i in range(0, len(data), 128)]

    all_needles = [n for v in ann_vecs + ben_vecs for n in needles(v)]
    raw = raw_bytes(db_path)  # before the checkpoint: main file + WAL
    assert not any(n in raw for n in all_needles)
    assert totp.secret.encode() not in raw
    checkpoint(database)
    raw = raw_bytes(db_path)
    assert not any(n in raw for n in all_needles)
    assert totp.secret.encode() not in raw
    assert PIN.encode() not in raw
    # the templates are there, and read back exactly
    for user, want in ((ann, ann_vecs), (ben, ben_vecs)):
        got = repo.templates(user)
        assert len(got) == len(want)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)

    # control: the same scan does find a vector stored in the clear
    database.db.conn.execute("CREATE TABLE scratch (b BLOB)")
    database.db.conn.execute("INSERT INTO scratch VALUES (?)", [embedding_to_bytes(ann_vecs[0])])
    database.db.conn.commit()
    checkpoint(database)
    assert needles(ann_vecs[0])[0] in raw_bytes(db_path)


# --- 8. one change, one transaction -----------------------------------------------------


def test_commit_is_all_or_nothing(
    database: Database,
    repo: SqliteRepository,
    admin: UserAdmin,
    clock: ManualClock,
) -> None:
    conn = database.db.conn
    ann = admin.add("Ann Example", PIN)
    before = {t: dump(conn, t) for t in ("users", "audit", "outbox", "lockouts")}
    first = auth_event(clock, ann, False, "wrong PIN")
    second = dataclasses.replace(
        account_event(clock, ann, events.LOCK, "locked out after 3 failed attempts"), uid=first.uid
    )
    change = Change(
        events=[first, second],
        lockouts={ann.id: LockoutState(failures=3, remaining_s=1800.0, boot_id="b", boot_s=5.0)},
        totp_steps={ann.id: 123456},
    )

    with pytest.raises((sqlite3.IntegrityError, StoreError)):
        repo.commit(change)

    assert not conn.in_transaction
    assert {t: dump(conn, t) for t in ("users", "audit", "outbox", "lockouts")} == before
    assert repo.lockout(ann.id) == LockoutState()
    assert conn.execute("SELECT COUNT(*) FROM audit WHERE uid = ?", [first.uid]).fetchone()[0] == 0
    # the same change without the duplicate goes through whole
    repo.commit(dataclasses.replace(change, events=[first]))
    assert repo.lockout(ann.id).failures == 3
    assert [r.uid for r in repo.audit(user_uid=ann.ref().uid)][-1] == first.uid
    assert count(conn, "outbox") == len(before["outbox"]) + 1


# --- 9. erasure ---------------------------------------------------------------------------


def test_erasure_removes_secrets_and_pseudonymises_the_trail(
    database: Database,
    repo: SqliteRepository,
    admin: UserAdmin,
    clock: ManualClock,
) -> None:
    conn = database.db.conn
    name = "Alice Erasable"
    alice = admin.add(name, PIN, role=Role.SUPERVISOR)
    bob = admin.add("Bob Keeper", "1357")
    enrol(repo, clock, alice, vectors(2, seed=30))
    admin.enable_totp(name)
    clock.advance(60)
    repo.commit(
        Change(
            events=[
                auth_event(clock, alice, False, "wrong PIN"),
                account_event(clock, alice, events.LOCK, "locked out after 3 failed attempts"),
                events.lockout_alert(
                    wall=clock.wall(), device=DEVICE, user=alice.ref(), failures=3, lockout_s=1800
                ),
            ],
            lockouts={alice.id: LockoutState(failures=3, remaining_s=1800.0)},
        )
    )
    repo.commit(Change(events=[auth_event(clock, bob, True, "face matched")]))
    old_uid = alice.ref().uid
    alice_uids = [r[0] for r in rows(conn, "SELECT uid FROM audit WHERE user_uid = ?", (old_uid,))]
    assert len(alice_uids) == 6  # created, TOTP set, enrolled, failure, lock, alert
    assert any(
        name in r.payload["finding_info"]["desc"] for r in repo.audit() if r.class_uid == 2004
    )
    facts = {
        r[0]: r[1:]
        for r in rows(
            conn, "SELECT uid, time_ms, class_uid, status FROM audit WHERE user_uid = ?", (old_uid,)
        )
    }
    sent_uid = alice_uids[0]
    conn.execute("UPDATE outbox SET sent_ms = 1 WHERE uid = ?", [sent_uid])
    conn.commit()
    outbox_before = count(conn, "outbox")
    bob_rows = rows(conn, "SELECT * FROM audit WHERE user_uid = ?", (bob.ref().uid,))

    clock.advance(60)
    pseudonym = admin.delete(name)

    assert pseudonym.startswith("erased:")
    assert name not in pseudonym
    # the account and its secrets are gone
    assert repo.user_by_name(name) is None
    assert repo.user_by_staff_no(alice.staff_no) is None
    assert rows(conn, "SELECT * FROM users WHERE id = ?", (alice.id,)) == []
    assert repo.template_count(alice.id) == 0
    assert rows(conn, "SELECT * FROM lockouts WHERE user_id = ?", (alice.id,)) == []
    assert [u.name for u in repo.users()] == ["Bob Keeper"]

    # the audit trail keeps its facts under the pseudonym, without the name
    assert rows(conn, "SELECT * FROM audit WHERE user_uid = ?", (old_uid,)) == []
    pseudo_rows = repo.audit(user_uid=pseudonym)
    assert [r.uid for r in pseudo_rows][:-1] == alice_uids
    for row in pseudo_rows[:-1]:
        assert (row.time_ms, row.class_uid, row.status) == facts[row.uid]
        assert row.payload["user"] == {"uid": pseudonym, "name": pseudonym}
        assert old_uid not in json.dumps(row.payload)
    for seq, summary, payload in rows(conn, "SELECT seq, summary, payload FROM audit"):
        assert name not in summary, seq
        assert name not in payload, seq
    # unsent outbox rows carry the pseudonymised payloads; nothing was dropped from the outbox
    stored = dict(rows(conn, "SELECT uid, payload FROM audit"))
    for uid, payload in rows(conn, "SELECT uid, payload FROM outbox WHERE sent_ms IS NULL"):
        assert name not in payload
        assert payload == stored[uid]
    assert count(conn, "outbox") == outbox_before + 1
    # consent is kept as proof, re-keyed to the pseudonym
    assert rows(
        conn, "SELECT user_uid, text_version, text_sha256, given_ms, recorded_by FROM consents"
    ) == [
        (
            pseudonym,
            CONSENT.text_version,
            CONSENT.text_sha256,
            CONSENT.given_ms,
            CONSENT.recorded_by,
        )
    ]
    # the erasure itself is audited, and queued for the centre
    erasure = pseudo_rows[-1]
    assert erasure.class_uid == events.ACCOUNT_CHANGE == 3001
    assert erasure.payload["activity_id"] == events.DELETE == 6
    assert erasure.user_uid == pseudonym
    assert erasure.payload["actor"] == {"user": {"name": "site-admin"}}
    assert (
        conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE uid = ? AND sent_ms IS NULL", [erasure.uid]
        ).fetchone()[0]
        == 1
    )
    # other users are untouched
    assert rows(conn, "SELECT * FROM audit WHERE user_uid = ?", (bob.ref().uid,)) == bob_rows


def test_erasure_leaves_no_template_secret_or_name_in_the_file(
    db_path: Path,
    database: Database,
    repo: SqliteRepository,
    admin: UserAdmin,
    clock: ManualClock,
) -> None:
    conn = database.db.conn
    name = "Alice Erasable"
    alice = admin.add(name, PIN)
    admin.add("Bob Keeper", "1357")
    enrol(repo, clock, alice, vectors(3, seed=40))
    admin.enable_totp(name)
    repo.commit(Change(events=[auth_event(clock, alice, True, "face matched")]))
    blobs = [
        bytes(r[0]) for r in rows(conn, "SELECT blob FROM templates WHERE user_id = ?", (alice.id,))
    ]
    totp_blob = bytes(
        conn.execute("SELECT totp_secret FROM users WHERE id = ?", [alice.id]).fetchone()[0]
    )
    checkpoint(database)
    raw = raw_bytes(db_path)
    assert all(b in raw for b in blobs)  # control: the scan sees them while they exist
    assert totp_blob in raw

    admin.delete(name)
    checkpoint(database)

    # the ciphertexts would still open with the device secret: they must be gone from the file
    raw = raw_bytes(db_path)
    assert not any(b in raw for b in blobs)
    assert totp_blob not in raw
    assert name.encode() not in raw


def test_erasure_leaves_the_name_in_no_outbox_row(
    database: Database, repo: SqliteRepository, admin: UserAdmin, clock: ManualClock
) -> None:
    conn = database.db.conn
    name = "Alice Erasable"
    alice = admin.add(name, PIN)
    repo.commit(Change(events=[auth_event(clock, alice, True, "face matched")]))
    conn.execute("UPDATE outbox SET sent_ms = 1")  # the centre has both events already
    conn.commit()

    admin.delete(name)

    assert count(conn, "outbox") == 3  # nothing dropped
    for seq, payload in rows(conn, "SELECT seq, payload FROM outbox"):
        assert name not in payload, seq


def test_two_erased_people_never_share_a_pseudonym(admin: UserAdmin) -> None:
    admin.add("Ann Stays", PIN)
    first = admin.add("Ben Leaves", PIN)
    first_pseudonym = admin.delete("Ben Leaves")
    second = admin.add("Cleo Leaves Too", PIN)
    second_pseudonym = admin.delete("Cleo Leaves Too")
    assert second.ref().uid != first.ref().uid
    assert second.staff_no != first.staff_no
    assert second_pseudonym != first_pseudonym


def test_erased_supervisor_name_leaves_no_trace_in_the_audit_trail(
    database: Database,
    repo: SqliteRepository,
    admin: UserAdmin,
    hasher: PinHasher,
    clock: ManualClock,
) -> None:
    supervisor = admin.add("Sue Supervisor", "9753", role=Role.SUPERVISOR)
    admin.add("Bob Keeper", "1357")
    bob = repo.require_user("Bob Keeper")
    flow = AuthFlow(repo, hasher, clock, device=DEVICE, liveness=TrackContinuity())
    assert flow.enter_pin(bob.staff_no, "1357").phase is Phase.FACE  # no face enrolled
    assert flow.supervisor_override(supervisor.staff_no, "9753").phase is Phase.GRANTED

    admin.delete("Sue Supervisor")

    for seq, summary, payload in rows(database.db.conn, "SELECT seq, summary, payload FROM audit"):
        assert "Sue Supervisor" not in summary, seq
        assert "Sue Supervisor" not in payload, seq
        assert supervisor.ref().uid not in payload, seq


# --- 10. the device secret ----------------------------------------------------------------


def test_missing_secret_says_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "device-secret"
    with pytest.raises(SecretError, match="kiosk secret init") as excinfo:
        load_secret(path)
    assert str(path) in str(excinfo.value)
    assert not path.exists()


@pytest.mark.parametrize("size", [0, 16, SECRET_BYTES - 1, SECRET_BYTES + 1, 64])
def test_secret_of_wrong_length_is_damaged(tmp_path: Path, size: int) -> None:
    path = tmp_path / "device-secret"
    path.write_bytes(b"\x07" * size)
    with pytest.raises(SecretError, match="damaged") as excinfo:
        load_secret(path)
    assert f"{size} bytes" in str(excinfo.value)
    assert path.read_bytes() == b"\x07" * size


def test_create_secret_is_private_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "creds" / "device-secret"
    create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    original = path.read_bytes()
    assert len(original) == SECRET_BYTES
    keys = load_secret(path)
    assert keys == DeviceKeys.derive(original)
    assert "redacted" in repr(keys)
    assert original.hex() not in repr(keys)

    with pytest.raises(SecretError, match="already exists"):
        create_secret(path)
    assert path.read_bytes() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    other = tmp_path / "other-secret"
    create_secret(other)
    assert other.read_bytes() != original  # random each time


def test_keys_are_distinct_per_purpose_and_per_secret() -> None:
    keys = DeviceKeys.derive(SECRET)
    derived = [keys.pin_pepper, keys.template_key, keys.totp_key, keys.pseudonym_key]
    assert len(set(derived)) == 4
    assert all(len(k) == 32 for k in derived)
    assert SECRET not in derived
    assert DeviceKeys.derive(SECRET) == keys
    other = DeviceKeys.derive(OTHER_SECRET)
    assert not {other.pin_pepper, other.template_key, other.totp_key} & set(derived)


def test_load_secret_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "device-secret"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    assert load_secret(path) == DeviceKeys.derive(SECRET)
