"""Repositories over the kiosk database: the only code that writes SQL.

Templates and TOTP secrets are encrypted here on the way in and decrypted on
the way out (AES-GCM, keys from the device secret), so the database file alone
reveals no biometric data. Every method that changes state also appends its
audit events and their outbox rows in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kiosk.auth.crypto import (
    KdfParams,
    PinHash,
    RecordCipher,
    embedding_from_bytes,
    embedding_to_bytes,
)
from kiosk.auth.events import AuditEvent
from kiosk.auth.lockout import LockoutState
from kiosk.auth.model import Change, Role, TotpRecord, UnknownUserError, User
from kiosk.secrets import DeviceKeys
from kiosk.store.db import Database
from kiosk.vision.types import FloatArray

_USER_COLUMNS = (
    "id, name, staff_no, role, pin_salt, pin_digest, pin_params, totp_secret, enrolled_ms, "
    "created_ms"
)


@dataclass(frozen=True)
class AuditRow:
    """One stored audit event."""

    seq: int
    uid: str
    time_ms: int
    class_uid: int
    user_uid: str
    status: str
    summary: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ConsentRecord:
    """Proof that a person agreed to enrolment: who, when, which text, recorded by whom."""

    text_version: str
    text_sha256: str
    given_ms: int
    recorded_by: str


def _user(row: Sequence[Any]) -> User:
    pin = None
    if row[4] is not None and row[5] is not None and row[6] is not None:
        pin = PinHash(salt=bytes(row[4]), digest=bytes(row[5]), params=KdfParams.decode(row[6]))
    return User(
        id=int(row[0]),
        name=str(row[1]),
        staff_no=str(row[2]),
        role=Role(row[3]),
        pin=pin,
        has_totp=row[7] is not None,
        enrolled_ms=row[8],
        created_ms=int(row[9]),
    )


class SqliteRepository:
    """Users, templates, lockouts, consent and audit in the kiosk database."""

    def __init__(self, database: Database, keys: DeviceKeys) -> None:
        self.database = database
        self.db = database.db
        self._templates = RecordCipher(keys.template_key)
        self._totp = RecordCipher(keys.totp_key)
        self._pseudonym_key = keys.pseudonym_key

    # --- reads -----------------------------------------------------------------------------

    def _one_user(self, where: str, value: Any) -> User | None:
        row = self.db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE {where} = ?",  # noqa: S608 (fixed columns)
            [value],
        ).fetchone()
        return _user(row) if row else None

    def user_by_staff_no(self, staff_no: str) -> User | None:
        return self._one_user("staff_no", staff_no)

    def user_by_name(self, name: str) -> User | None:
        return self._one_user("name", name)

    def require_user(self, name: str) -> User:
        user = self.user_by_name(name)
        if user is None:
            raise UnknownUserError(f"no user named {name!r}: see `kiosk users list`")
        return user

    def users(self) -> list[User]:
        rows = self.db.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name").fetchall()  # noqa: S608
        return [_user(r) for r in rows]

    def template_count(self, user_id: int) -> int:
        return int(
            self.db.execute(
                "SELECT COUNT(*) FROM templates WHERE user_id = ?", [user_id]
            ).fetchone()[0]
        )

    def templates(self, user: User) -> list[FloatArray]:
        rows = self.db.execute(
            "SELECT id, model, blob FROM templates WHERE user_id = ? ORDER BY id", [user.id]
        ).fetchall()
        return [
            embedding_from_bytes(self._templates.open(bytes(blob), f"template:{user.id}:{model}"))
            for _, model, blob in rows
        ]

    def lockout(self, user_id: int) -> LockoutState:
        row = self.db.execute(
            "SELECT failures, remaining_s, boot_id, boot_s, locked_at_ms, open_attempt "
            "FROM lockouts WHERE user_id = ?",
            [user_id],
        ).fetchone()
        if row is None:
            return LockoutState()
        return LockoutState(
            failures=int(row[0]),
            remaining_s=float(row[1]),
            boot_id=str(row[2]),
            boot_s=float(row[3]),
            locked_at_wall=row[4] / 1000.0 if row[4] is not None else None,
            open_attempt=bool(row[5]),
        )

    def totp(self, user: User) -> TotpRecord | None:
        row = self.db.execute(
            "SELECT totp_secret, totp_last_step FROM users WHERE id = ?", [user.id]
        ).fetchone()
        if row is None or row[0] is None:
            return None
        secret = self._totp.open(bytes(row[0]), f"totp:{user.id}").decode("ascii")
        return TotpRecord(secret=secret, last_step=row[1])

    def consents(self, user: User) -> list[ConsentRecord]:
        rows = self.db.execute(
            "SELECT text_version, text_sha256, given_ms, recorded_by FROM consents "
            "WHERE user_uid = ? ORDER BY id",
            [user.ref().uid],
        ).fetchall()
        return [ConsentRecord(str(a), str(b), int(c), str(d)) for a, b, c, d in rows]

    def audit(
        self, *, since_ms: int | None = None, user_uid: str | None = None, limit: int = 1000
    ) -> list[AuditRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if since_ms is not None:
            clauses.append("time_ms >= ?")
            params.append(since_ms)
        if user_uid is not None:
            clauses.append("user_uid = ?")
            params.append(user_uid)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(
            "SELECT seq, uid, time_ms, class_uid, user_uid, status, summary, payload FROM audit "  # noqa: S608
            f"{where} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [
            AuditRow(int(r[0]), r[1], int(r[2]), int(r[3]), r[4], r[5], r[6], json.loads(r[7]))
            for r in reversed(rows)
        ]

    # --- writes ----------------------------------------------------------------------------

    def _append_events(self, events: Iterable[AuditEvent]) -> None:
        for event in events:
            payload = json.dumps(event.payload, separators=(",", ":"), sort_keys=True)
            self.db.execute(
                "INSERT INTO audit (uid, time_ms, class_uid, user_uid, status, summary, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    event.uid,
                    event.time_ms,
                    event.class_uid,
                    event.user_uid,
                    event.status,
                    event.summary,
                    payload,
                ],
            )
            self.db.execute(
                "INSERT INTO outbox (uid, payload, created_ms) VALUES (?, ?, ?)",
                [event.uid, payload, event.time_ms],
            )

    def _save_lockout(self, user_id: int, state: LockoutState) -> None:
        locked_ms = int(state.locked_at_wall * 1000) if state.locked_at_wall is not None else None
        self.db.execute(
            "INSERT INTO lockouts (user_id, failures, remaining_s, boot_id, boot_s, locked_at_ms, "
            "open_attempt) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET "
            "failures = excluded.failures, remaining_s = excluded.remaining_s, "
            "boot_id = excluded.boot_id, boot_s = excluded.boot_s, "
            "locked_at_ms = excluded.locked_at_ms, open_attempt = excluded.open_attempt",
            [
                user_id,
                state.failures,
                state.remaining_s,
                state.boot_id,
                state.boot_s,
                locked_ms,
                int(state.open_attempt),
            ],
        )

    def locked_user_ids(self) -> list[int]:
        """Users with a lockout on record (served or not)."""
        rows = self.db.execute("SELECT user_id FROM lockouts WHERE remaining_s > 0").fetchall()
        return [int(r[0]) for r in rows]

    def commit(self, change: Change) -> None:
        with self.database.atomic():
            for user_id, state in change.lockouts.items():
                self._save_lockout(user_id, state)
            for user_id, step in change.totp_steps.items():
                self.db.execute("UPDATE users SET totp_last_step = ? WHERE id = ?", [step, user_id])
            self._append_events(change.events)

    def create_user(
        self,
        *,
        name: str,
        staff_no: str | None,
        role: Role,
        pin: PinHash,
        created_ms: int,
        event_for: Any,
    ) -> User:
        """Insert a user; ``event_for(user)`` builds the audit event inside the transaction."""
        with self.database.atomic():
            if self.user_by_name(name) is not None:
                raise ValueError(f"a user named {name!r} exists already")
            if staff_no is None:
                staff_no = self._next_staff_no()
            elif self.user_by_staff_no(staff_no) is not None:
                raise ValueError(f"staff number {staff_no} is taken")
            cursor = self.db.execute(
                "INSERT INTO users (name, staff_no, role, created_ms, pin_salt, pin_digest, "
                "pin_params) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [name, staff_no, role.value, created_ms, pin.salt, pin.digest, pin.params.encode()],
            )
            user = self._one_user("id", cursor.lastrowid)
            assert user is not None  # noqa: S101 (just inserted)
            self._append_events([event_for(user)])
            return user

    def set_pin(self, user: User, pin: PinHash, event: AuditEvent) -> None:
        with self.database.atomic():
            self.db.execute(
                "UPDATE users SET pin_salt = ?, pin_digest = ?, pin_params = ? WHERE id = ?",
                [pin.salt, pin.digest, pin.params.encode(), user.id],
            )
            self._append_events([event])

    def set_totp(self, user: User, secret: str | None, event: AuditEvent) -> None:
        blob = self._totp.seal(secret.encode("ascii"), f"totp:{user.id}") if secret else None
        with self.database.atomic():
            self.db.execute(
                "UPDATE users SET totp_secret = ?, totp_last_step = NULL WHERE id = ?",
                [blob, user.id],
            )
            self._append_events([event])

    def replace_templates(
        self,
        user: User,
        vectors: Sequence[FloatArray],
        *,
        model: str,
        now_ms: int,
        consent: ConsentRecord,
        event: AuditEvent,
    ) -> None:
        """Swap in a user's new templates with their consent record, in one transaction."""
        with self.database.atomic():
            self.db.execute("DELETE FROM templates WHERE user_id = ?", [user.id])
            for vector in vectors:
                blob = self._templates.seal(
                    embedding_to_bytes(vector), f"template:{user.id}:{model}"
                )
                self.db.execute(
                    "INSERT INTO templates (user_id, model, blob, created_ms) VALUES (?, ?, ?, ?)",
                    [user.id, model, blob, now_ms],
                )
            self.db.execute("UPDATE users SET enrolled_ms = ? WHERE id = ?", [now_ms, user.id])
            self.db.execute(
                "INSERT INTO consents (user_uid, text_version, text_sha256, given_ms, recorded_by) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    user.ref().uid,
                    consent.text_version,
                    consent.text_sha256,
                    consent.given_ms,
                    consent.recorded_by,
                ],
            )
            self._append_events([event])

    def save_lockout(self, user: User, state: LockoutState, event: AuditEvent) -> None:
        with self.database.atomic():
            self._save_lockout(user.id, state)
            self._append_events([event])

    def _next_staff_no(self) -> str:
        """1000 + the next user id (ids are never reused, so neither are these numbers)."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'users'").fetchone()
        candidate = 1000 + (int(row[0]) if row else 0) + 1
        while self.user_by_staff_no(str(candidate)) is not None:  # taken by an explicit choice
            candidate += 1
        return str(candidate)

    def pseudonym(self, user: User) -> str:
        """A stable pseudonym for an erased user: unlinkable without the device secret."""
        digest = hmac.new(self._pseudonym_key, f"user:{user.id}".encode(), hashlib.sha256)
        return f"erased:{digest.hexdigest()[:16]}"

    def erase_user(self, user: User, event_for: Any) -> str:
        """Remove the user's biometric data and secrets; pseudonymise their audit trail.

        Templates, PIN and TOTP secret go with the user row. Audit rows, outbox
        rows (sent or not: the device keeps no copy naming them) and consent
        records keep their facts under a pseudonym, and so does every mention
        of the user's id in other people's rows (a supervisor who overrode for
        someone, say). What the centre already received is erased there on the
        erasure event. ``event_for(pseudonym)`` builds that event, appended last.
        """
        pseudonym = self.pseudonym(user)
        old_uid = user.ref().uid
        mention = re.compile(re.escape(old_uid) + r"(?![0-9])")
        with self.database.atomic():
            rows = self.db.execute(
                "SELECT seq, uid, user_uid, summary, payload FROM audit "
                "WHERE user_uid = ? OR payload LIKE ?",
                [old_uid, f"%{old_uid}%"],
            ).fetchall()
            for seq, uid, user_uid, summary, payload in rows:
                data = json.loads(payload)
                own = user_uid == old_uid
                if own:
                    data = _scrub(data, old_uid, pseudonym)
                text = mention.sub(
                    pseudonym, json.dumps(data, separators=(",", ":"), sort_keys=True)
                )
                summary = mention.sub(pseudonym, summary)
                self.db.execute(
                    "UPDATE audit SET user_uid = ?, payload = ?, summary = ? WHERE seq = ?",
                    [pseudonym if own else user_uid, text, summary, seq],
                )
                self.db.execute("UPDATE outbox SET payload = ? WHERE uid = ?", [text, uid])
            self.db.execute(
                "UPDATE consents SET user_uid = ? WHERE user_uid = ?", [pseudonym, old_uid]
            )
            self.db.execute("DELETE FROM templates WHERE user_id = ?", [user.id])
            self.db.execute("DELETE FROM lockouts WHERE user_id = ?", [user.id])
            self.db.execute("DELETE FROM users WHERE id = ?", [user.id])
            self._append_events([event_for(pseudonym)])
        return pseudonym


def _scrub(payload: dict[str, Any], old_uid: str, pseudonym: str) -> dict[str, Any]:
    """The payload with the user object replaced by the pseudonym (nothing else identifying)."""
    out = dict(payload)
    for key in ("user",):
        if isinstance(out.get(key), dict) and out[key].get("uid") == old_uid:
            out[key] = {"uid": pseudonym, "name": pseudonym}
    finding = out.get("finding_info")
    if isinstance(finding, dict) and "desc" in finding:
        out["finding_info"] = {**finding, "desc": "user erased"}
    return out
