"""What a site administrator does to accounts; each change is audited in its transaction."""

from __future__ import annotations

from dataclasses import dataclass

import pyotp

from kiosk.auth import events, lockout
from kiosk.auth.clock import Clock
from kiosk.auth.crypto import PinHasher
from kiosk.auth.events import DeviceInfo
from kiosk.auth.model import InvalidInputError, Role, User, check_pin_format, check_staff_no_format
from kiosk.store.repository import SqliteRepository

MAX_NAME = 64


def check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME or any(ord(c) < 32 for c in cleaned):
        raise InvalidInputError(f"a name is 1 to {MAX_NAME} printable characters")
    if cleaned.startswith(("erased:", "user:", "unknown")):
        raise InvalidInputError("that name is reserved")
    return cleaned


@dataclass
class UserAdmin:
    """Account changes, made by ``actor`` (the administrator)."""

    repo: SqliteRepository
    hasher: PinHasher
    clock: Clock
    device: DeviceInfo
    actor: str

    def _event(self, user: User, activity: int, reason: str) -> events.AuditEvent:
        return events.account_change(
            wall=self.clock.wall(),
            device=self.device,
            user=user.ref(),
            activity_id=activity,
            reason=reason,
            actor=self.actor,
        )

    def add(
        self, name: str, pin: str, *, staff_no: str | None = None, role: Role = Role.STAFF
    ) -> User:
        name = check_name(name)
        check_pin_format(pin)
        if staff_no is not None:
            check_staff_no_format(staff_no)
        try:
            return self.repo.create_user(
                name=name,
                staff_no=staff_no,
                role=role,
                pin=self.hasher.hash(pin),
                created_ms=int(self.clock.wall() * 1000),
                event_for=lambda u: self._event(u, events.CREATE, f"{role.value} account created"),
            )
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc

    def set_pin(self, name: str, pin: str) -> None:
        check_pin_format(pin)
        user = self.repo.require_user(name)
        self.repo.set_pin(
            user, self.hasher.hash(pin), self._event(user, events.PASSWORD_CHANGE, "PIN changed")
        )

    def enable_totp(self, name: str) -> str:
        """Give the user a new TOTP secret; returns its provisioning URI (shown once)."""
        user = self.repo.require_user(name)
        secret = pyotp.random_base32()
        self.repo.set_totp(user, secret, self._event(user, events.MFA_ENABLE, "fallback code set"))
        return pyotp.TOTP(secret).provisioning_uri(name=user.name, issuer_name="kiosk")

    def disable_totp(self, name: str) -> None:
        user = self.repo.require_user(name)
        self.repo.set_totp(
            user, None, self._event(user, events.MFA_DISABLE, "fallback code removed")
        )

    def unlock(self, name: str) -> bool:
        """Clear a lockout; returns whether the user was locked."""
        user = self.repo.require_user(name)
        left, _ = lockout.remaining(self.repo.lockout(user.id), self.clock)
        self.repo.save_lockout(
            user,
            lockout.unlocked(),
            self._event(
                user,
                events.UNLOCK,
                "unlocked by an administrator"
                if left > 0
                else "failure count cleared by an administrator",
            ),
        )
        return left > 0

    def delete(self, name: str) -> str:
        """Erase the user: templates, PIN and TOTP gone; audit kept under a pseudonym."""
        user = self.repo.require_user(name)

        def erasure(pseudonym: str) -> events.AuditEvent:
            from kiosk.auth.events import UserRef

            return events.account_change(
                wall=self.clock.wall(),
                device=self.device,
                user=UserRef(uid=pseudonym, name=pseudonym),
                activity_id=events.DELETE,
                reason="user erased: templates, PIN and code deleted; audit pseudonymised",
                actor=self.actor,
            )

        return self.repo.erase_user(user, erasure)
