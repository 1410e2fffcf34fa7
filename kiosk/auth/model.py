"""Domain types of the authentication core and the repository it is given.

The core decides; it performs no I/O of its own. Everything it reads comes
through :class:`AuthRepository`, and everything a decision changes — the
lockout counter, a TOTP step, the audit events with their outbox rows — goes
back in one :class:`Change`, which the repository commits in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from kiosk.auth.crypto import PinHash
from kiosk.auth.events import AuditEvent, UserRef
from kiosk.auth.lockout import LockoutState
from kiosk.errors import KioskError
from kiosk.vision.types import FloatArray

PIN_RE = re.compile(r"[0-9]{4,8}")
STAFF_NO_RE = re.compile(r"[0-9]{1,12}")
TOTP_RE = re.compile(r"[0-9]{6}")


class InvalidInputError(KioskError, ValueError):
    """Input that is malformed (not a wrong answer): it is refused and not counted."""

    exit_code = 65


class UnknownUserError(KioskError, LookupError):
    """No such user."""

    exit_code = 67  # EX_NOUSER


class Role(StrEnum):
    STAFF = "staff"
    SUPERVISOR = "supervisor"


def check_pin_format(pin: str) -> str:
    """``pin`` if it is 4–8 digits, else :class:`InvalidInputError` (the PIN is not echoed)."""
    if not isinstance(pin, str) or not PIN_RE.fullmatch(pin):
        raise InvalidInputError("a PIN is 4 to 8 digits")
    return pin


def check_staff_no_format(staff_no: str) -> str:
    if not isinstance(staff_no, str) or not STAFF_NO_RE.fullmatch(staff_no):
        raise InvalidInputError("a staff number is 1 to 12 digits")
    return staff_no


@dataclass(frozen=True)
class User:
    """A person who may sign in (no secrets beyond the PIN hash are loaded here)."""

    id: int
    name: str
    staff_no: str
    role: Role
    pin: PinHash | None
    has_totp: bool
    enrolled_ms: int | None
    created_ms: int

    def ref(self) -> UserRef:
        return UserRef(uid=f"user:{self.id}", name=self.name, staff_no=self.staff_no)


@dataclass(frozen=True)
class TotpRecord:
    """A user's TOTP secret (base32) and the last time step accepted (replay guard)."""

    secret: str
    last_step: int | None


@dataclass
class Change:
    """Everything one decision writes, committed together."""

    events: list[AuditEvent] = field(default_factory=list)
    lockouts: dict[int, LockoutState] = field(default_factory=dict)
    totp_steps: dict[int, int] = field(default_factory=dict)


class AuthRepository(Protocol):
    """What the flow reads and writes."""

    def user_by_staff_no(self, staff_no: str) -> User | None: ...

    def templates(self, user: User) -> list[FloatArray]:
        """The user's decrypted templates; :class:`CorruptRecordError` if one is unreadable."""
        ...

    def lockout(self, user_id: int) -> LockoutState: ...

    def locked_user_ids(self) -> list[int]: ...

    def totp(self, user: User) -> TotpRecord | None: ...

    def commit(self, change: Change) -> None: ...
