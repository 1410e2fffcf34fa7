"""The audit event schema the centre accepts, and the topic layout it reads.

Topics: ``<prefix>/<site>/<device>/audit`` (QoS 1, the events), ``…/status``
(retained ``online``/``offline``, with a last will), ``…/health`` (retained
JSON) and ``…/receipt`` (QoS 1, from the centre: ``{"uids": [...]}``, the event
uids it has stored — or dead-lettered — so the device knows they arrived).
Site and device ids are single topic levels: no ``/``, ``+``, ``#``, no NUL,
not empty.

Every payload on an audit topic is checked before it is stored; the first
failure becomes the dead-letter reason. The rules are those of the events the
kiosk writes (:mod:`kiosk.auth.events`, OCSF 1.1) — unknown extra fields are
allowed, as OCSF is extensible:

* at most ``max_bytes`` (64 KiB by default), UTF-8, one JSON object; no NaN or
  Infinity, nesting that Python's parser can handle;
* ``class_uid`` one of 3001 (Account Change), 3002 (Authentication), 2004
  (Detection Finding); ``category_uid`` the class's category (3, 3, 2);
  ``activity_id`` an integer and ``type_uid`` = class_uid × 100 + activity_id;
  ``class_name`` a string; ``severity_id`` 0–6 or 99;
* ``time`` integer milliseconds since the epoch, from 2000-01-01 on and below
  2**53 (no comparison with the centre's clock: a device's clock may be wrong,
  and its events are still wanted);
* ``metadata.uid`` a UUID version 7 in canonical form (the dedupe key) and
  ``metadata.version`` a string;
* ``device.uid`` a string equal to the topic's device (a device cannot write
  under another's name); the topic's site is stored as the event's site;
* ``user.uid`` a string (at most 256 characters);
* 3002: ``status_id`` 1 or 2 and ``status`` a string; 2004: ``finding_info``
  with a string ``title``; ``unmapped`` an object when present.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, TypeGuard

from kiosk.store.centre import CentreEvent

MAX_PAYLOAD_BYTES = 64 * 1024
CLASS_CATEGORY = {3001: 3, 3002: 3, 2004: 2}
_MIN_TIME_MS = 946_684_800_000  # 2000-01-01
_MAX_TIME_MS = 2**53
_SEVERITIES = {0, 1, 2, 3, 4, 5, 6, 99}
_BAD_LEVEL = ("/", "+", "#", "\x00")


class InvalidPayload(ValueError):  # noqa: N818 (reads as what it is: "payload is invalid")
    """A payload the centre will not store; ``str()`` is the dead-letter reason.

    ``uid`` is the event's ``metadata.uid`` when one could be read (the centre
    confirms dead-lettered events too, so a device does not send them forever).
    """

    uid: str | None = None


def check_topic_level(value: str, what: str) -> str:
    """``value`` if it can be one topic level, else ValueError naming ``what``."""
    if not value or any(ch in value for ch in _BAD_LEVEL):
        raise ValueError(f"{what} {value!r} cannot be an MQTT topic level (no / + # or empty)")
    return value


@dataclass(frozen=True)
class AuditTopic:
    """A parsed ``<prefix>/<site>/<device>/audit`` topic."""

    prefix: str
    site: str
    device: str

    @classmethod
    def parse(cls, topic: str, prefix: str) -> AuditTopic:
        """Parse ``topic``; InvalidPayload when it is not an audit topic under ``prefix``."""
        head = prefix + "/"
        if not topic.startswith(head):
            raise InvalidPayload(f"topic {topic[:200]!r} is not under {prefix!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or parts[2] != "audit" or not parts[0] or not parts[1]:
            raise InvalidPayload(f"topic {topic[:200]!r} is not {prefix}/<site>/<device>/audit")
        return cls(prefix, parts[0], parts[1])


def topic_for(prefix: str, site: str, device: str, kind: str) -> str:
    """``<prefix>/<site>/<device>/<kind>`` (kind: audit, status, health)."""
    return f"{prefix}/{site}/{device}/{kind}"


def _reject_constant(name: str) -> Any:
    raise InvalidPayload(f"not JSON: {name} is not allowed")


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _obj(payload: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any] | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise InvalidPayload(f"{key}: must be an object")
    return value


def _str(obj: dict[str, Any], key: str, where: str, *, limit: int = 4096) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidPayload(f"{where}{key}: must be a non-empty string")
    if len(value) > limit:
        raise InvalidPayload(f"{where}{key}: longer than {limit} characters")
    return value


def validate_event(
    topic: str, payload: bytes, *, prefix: str, max_bytes: int = MAX_PAYLOAD_BYTES
) -> CentreEvent:
    """The event a message carries, or InvalidPayload saying what is wrong."""
    where = AuditTopic.parse(topic, prefix)
    if len(payload) > max_bytes:
        raise InvalidPayload(f"too large: {len(payload)} bytes (limit {max_bytes})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"not JSON: {exc.msg} at {exc.lineno}:{exc.colno}") from None
    except RecursionError:
        raise InvalidPayload("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidPayload(f"not a JSON object but {type(data).__name__}")
    try:
        return _check(data, where, text)
    except InvalidPayload as exc:
        metadata = data.get("metadata")
        uid = metadata.get("uid") if isinstance(metadata, dict) else None
        if isinstance(uid, str) and len(uid) <= 64:
            exc.uid = uid
        raise


def _check(data: dict[str, Any], where: AuditTopic, text: str) -> CentreEvent:
    class_uid = data.get("class_uid")
    if not _int(class_uid) or class_uid not in CLASS_CATEGORY:
        raise InvalidPayload(f"class_uid: {class_uid!r:.40} is not one of 2004, 3001, 3002")
    category = data.get("category_uid")
    if category != CLASS_CATEGORY[class_uid] or not _int(category):
        raise InvalidPayload(f"category_uid: must be {CLASS_CATEGORY[class_uid]}")
    _str(data, "class_name", "", limit=100)
    activity = data.get("activity_id")
    if not _int(activity):
        raise InvalidPayload("activity_id: must be an integer")
    if data.get("type_uid") != class_uid * 100 + activity or not _int(data.get("type_uid")):
        raise InvalidPayload("type_uid: must be class_uid * 100 + activity_id")
    severity = data.get("severity_id")
    if not _int(severity) or severity not in _SEVERITIES:
        raise InvalidPayload("severity_id: must be 0–6 or 99")
    time_ms = data.get("time")
    if not _int(time_ms):
        raise InvalidPayload("time: must be integer milliseconds")
    if not _MIN_TIME_MS <= time_ms < _MAX_TIME_MS:
        raise InvalidPayload(f"time: {time_ms} is out of range (before 2000 or beyond 2**53)")

    metadata = _obj(data, "metadata")
    assert metadata is not None  # noqa: S101 (required)
    raw_uid = _str(metadata, "uid", "metadata.", limit=64)
    try:
        parsed = uuid.UUID(raw_uid)
    except ValueError:
        raise InvalidPayload(f"metadata.uid: {raw_uid!r:.60} is not a UUID") from None
    if str(parsed) != raw_uid or parsed.version != 7:
        raise InvalidPayload(f"metadata.uid: {raw_uid!r} is not a canonical UUIDv7")
    _str(metadata, "version", "metadata.", limit=32)

    device = _obj(data, "device")
    assert device is not None  # noqa: S101 (required)
    device_uid = _str(device, "uid", "device.", limit=256)
    if device_uid != where.device:
        raise InvalidPayload(
            f"device.uid {device_uid!r:.80} does not match the topic's device {where.device!r}"
        )
    user = _obj(data, "user")
    assert user is not None  # noqa: S101 (required)
    user_uid = _str(user, "uid", "user.", limit=256)

    if class_uid == 3002:
        if data.get("status_id") not in (1, 2) or not _int(data.get("status_id")):
            raise InvalidPayload("status_id: an authentication must be 1 (success) or 2 (failure)")
        _str(data, "status", "", limit=64)
    if class_uid == 2004:
        finding = _obj(data, "finding_info")
        assert finding is not None  # noqa: S101 (required)
        _str(finding, "title", "finding_info.", limit=1024)
    _obj(data, "unmapped", required=False)

    return CentreEvent(
        device=where.device,
        site=where.site,
        uid=raw_uid,
        class_uid=class_uid,
        time_ms=time_ms,
        user_uid=user_uid,
        payload=text,
    )


def receipt_payload(uids: list[str]) -> bytes:
    """The centre's confirmation that it holds these events."""
    return json.dumps({"uids": uids}, separators=(",", ":")).encode()


def parse_receipt(payload: bytes) -> list[str]:
    """The uids a receipt confirms ([] for anything malformed)."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    uids = data.get("uids") if isinstance(data, dict) else None
    if not isinstance(uids, list):
        return []
    return [u for u in uids if isinstance(u, str)]
