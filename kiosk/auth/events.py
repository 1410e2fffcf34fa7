"""Audit events in OCSF 1.1 shape, with UUIDv7 ids.

* Authentication (class_uid 3002) for every attempt: success or failure, with
  the factor used (``pin+face``, ``pin+totp``, ``pin+supervisor``) and the
  reason. The similarity score appears here, and only here (``unmapped``).
* Account Change (class_uid 3001) for lockout (activity 9 Lock), unlock (12),
  user creation (1), PIN change (3), enrolment (10 MFA Factor Enable), erasure
  (6 Delete).
* Detection Finding (class_uid 2004, severity High) as the alert that a
  lockout raises, so the centre can page someone without parsing 3001s.

``metadata.uid`` is a UUIDv7: time-ordered, the outbox key and the dedupe key
at the centre. Events never carry embeddings, images, PINs or secrets.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

OCSF_VERSION = "1.1.0"
PRODUCT = {"name": "kiosk", "vendor_name": "kiosk", "version": "0.1.0"}

AUTHENTICATION = 3002
ACCOUNT_CHANGE = 3001
DETECTION_FINDING = 2004

_CATEGORY = {AUTHENTICATION: 3, ACCOUNT_CHANGE: 3, DETECTION_FINDING: 2}
_CLASS_NAME = {
    AUTHENTICATION: "Authentication",
    ACCOUNT_CHANGE: "Account Change",
    DETECTION_FINDING: "Detection Finding",
}

# Account Change activity ids (OCSF 1.1)
CREATE, PASSWORD_CHANGE, DELETE, LOCK, MFA_ENABLE, MFA_DISABLE, UNLOCK = 1, 3, 6, 9, 10, 11, 12
_ACCOUNT_ACTIVITY = {
    CREATE: "Create",
    PASSWORD_CHANGE: "Password Change",
    DELETE: "Delete",
    LOCK: "Lock",
    MFA_ENABLE: "MFA Factor Enable",
    MFA_DISABLE: "MFA Factor Disable",
    UNLOCK: "Unlock",
}

SEVERITY_INFO, SEVERITY_LOW, SEVERITY_MEDIUM, SEVERITY_HIGH = 1, 2, 3, 4

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def uuid7(now_ms: int) -> str:
    """A UUIDv7 (RFC 9562) for ``now_ms``; strictly increasing within this process."""
    global _last_ms, _seq
    with _lock:
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _seq += 1
            if _seq >= 1 << 12:  # counter exhausted: borrow the next millisecond
                now_ms += 1
                _seq = 0
        else:
            _seq = 0
        _last_ms = now_ms
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (now_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class UserRef:
    """Who an event is about, as it may appear in the audit trail."""

    uid: str  # a stable id: the user row id, or a pseudonym after erasure
    name: str
    staff_no: str = ""

    def as_ocsf(self) -> dict[str, Any]:
        data: dict[str, Any] = {"uid": self.uid, "name": self.name}
        if self.staff_no:
            data["account"] = {"uid": self.staff_no, "type": "staff number"}
        return data


@dataclass(frozen=True)
class DeviceInfo:
    """The device that produced an event."""

    device_id: str
    site: str
    model_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEvent:
    """One event, ready to be stored and sent."""

    uid: str
    class_uid: int
    time_ms: int
    user_uid: str
    status: str  # "success" | "failure" | "info"
    summary: str
    payload: dict[str, Any]


def _base(
    class_uid: int,
    activity_id: int,
    activity_name: str,
    wall: float,
    device: DeviceInfo,
    severity: int,
) -> tuple[str, int, dict[str, Any]]:
    time_ms = int(wall * 1000)
    uid = uuid7(time_ms)
    payload: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": _CLASS_NAME[class_uid],
        "category_uid": _CATEGORY[class_uid],
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": time_ms,
        "severity_id": severity,
        "metadata": {"uid": uid, "version": OCSF_VERSION, "product": PRODUCT},
        "device": {"uid": device.device_id, "type_id": 0, "location": {"desc": device.site}},
    }
    return uid, time_ms, payload


def authentication(
    *,
    wall: float,
    device: DeviceInfo,
    user: UserRef,
    success: bool,
    factor: str,
    reason: str,
    score: float | None = None,
    extra: dict[str, Any] | None = None,
) -> AuditEvent:
    """An authentication attempt (3002, activity 1 Logon)."""
    severity = SEVERITY_INFO if success else SEVERITY_LOW
    uid, time_ms, payload = _base(AUTHENTICATION, 1, "Logon", wall, device, severity)
    unmapped: dict[str, Any] = {"factor": factor, "model_versions": device.model_versions}
    if score is not None:
        unmapped["score"] = round(float(score), 4)
    if extra:
        unmapped.update(extra)
    payload.update(
        status_id=1 if success else 2,
        status="Success" if success else "Failure",
        status_detail=reason,
        is_mfa=True,
        user=user.as_ocsf(),
        unmapped=unmapped,
    )
    status = "success" if success else "failure"
    summary = f"{'granted' if success else 'denied'} ({factor}): {reason}"
    return AuditEvent(uid, AUTHENTICATION, time_ms, user.uid, status, summary, payload)


def account_change(
    *,
    wall: float,
    device: DeviceInfo,
    user: UserRef,
    activity_id: int,
    reason: str,
    actor: str = "",
    extra: dict[str, Any] | None = None,
) -> AuditEvent:
    """A change to an account (3001): lock, unlock, create, enrol, erase …"""
    name = _ACCOUNT_ACTIVITY[activity_id]
    severity = SEVERITY_MEDIUM if activity_id in (LOCK, DELETE) else SEVERITY_INFO
    uid, time_ms, payload = _base(ACCOUNT_CHANGE, activity_id, name, wall, device, severity)
    payload.update(status_id=1, status="Success", status_detail=reason, user=user.as_ocsf())
    if actor:
        payload["actor"] = {"user": {"name": actor}}
    if extra:
        payload["unmapped"] = dict(extra)
    summary = f"{name.lower()}: {reason}"
    return AuditEvent(uid, ACCOUNT_CHANGE, time_ms, user.uid, "info", summary, payload)


def lockout_alert(
    *, wall: float, device: DeviceInfo, user: UserRef, failures: int, lockout_s: float
) -> AuditEvent:
    """The alert a lockout raises (2004 Detection Finding, High)."""
    uid, time_ms, payload = _base(DETECTION_FINDING, 1, "Create", wall, device, SEVERITY_HIGH)
    title = f"User locked out after {failures} failed attempts"
    payload.update(
        status_id=1,
        finding_info={
            "uid": uid,
            "title": title,
            "types": ["kiosk.lockout"],
            "desc": f"{user.name} is locked out for {round(lockout_s / 60)} minutes",
        },
        user=user.as_ocsf(),
        unmapped={"alert": "lockout", "failures": failures, "lockout_s": lockout_s},
    )
    return AuditEvent(uid, DETECTION_FINDING, time_ms, user.uid, "alert", title, payload)


def logoff(
    *,
    wall: float,
    device: DeviceInfo,
    user: UserRef,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> AuditEvent:
    """A session that ended — locked on walk-away, another face, or by hand (3002, Logoff)."""
    uid, time_ms, payload = _base(AUTHENTICATION, 2, "Logoff", wall, device, SEVERITY_INFO)
    payload.update(
        status_id=1,
        status="Success",
        status_detail=reason,
        user=user.as_ocsf(),
        unmapped=dict(extra or {}),
    )
    return AuditEvent(uid, AUTHENTICATION, time_ms, user.uid, "info", f"logoff: {reason}", payload)
