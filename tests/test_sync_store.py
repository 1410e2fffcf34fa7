"""Audit sync without a broker: the event schema, the outbox reader, the centre's tables.

The events are the kiosk's own (built by :mod:`kiosk.auth.events`, stored through
the repository); malformed payloads are what a broken or hostile client could
send. Every rejection must be an :class:`InvalidPayload` with a reason — never
another exception that would stop the ingest.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.errors import ConfigError
from kiosk.store.centre import CentreEvent, DeadLetter, open_centre_store
from kiosk.store.db import StoreError
from kiosk.store.outbox import OutboxStore
from kiosk.sync.confirm import ConfirmationTracker, WatermarkFile
from kiosk.sync.errors import SyncBusyError, SyncError
from kiosk.sync.payload import InvalidPayload, parse_receipt, receipt_payload, validate_event
from kiosk.sync.publisher import OutboxPublisher, sync_once
from tests.mqtt_support import TOPIC, kiosk_events, stored_payloads, sync_settings


def test_the_kiosks_own_events_validate(tmp_path: Path) -> None:
    events = kiosk_events()
    payloads = stored_payloads(tmp_path / "kiosk.db", events)
    checked = [validate_event(TOPIC, p, prefix="kiosk") for p in payloads]
    assert [c.uid for c in checked] == [e.uid for e in events]
    assert [c.class_uid for c in checked] == [3002, 3002, 3001, 2004]
    assert all(c.device == "kiosk-01" and c.site == "hq" and c.user_uid == "7" for c in checked)
    assert checked[0].payload == payloads[0].decode()


def _good() -> dict[str, Any]:
    payload: dict[str, Any] = kiosk_events()[0].payload
    return json.loads(json.dumps(payload))


def _with(path: str, value: Any) -> bytes:
    data = _good()
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return json.dumps(data).encode()


_DELETE = object()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"time": NaN}', "NaN is not allowed"),
        (b"[" * 100_000 + b"]" * 100_000, "too large"),
        (b"[" * 5_000 + b"]" * 5_000, "nested too deeply"),
        (b"x" * 70_000, "too large"),
        (_with("class_uid", 4001), "class_uid"),
        (_with("class_uid", "3002"), "class_uid"),
        (_with("class_uid", True), "class_uid"),
        (_with("category_uid", 2), "category_uid"),
        (_with("type_uid", 300299), "type_uid"),
        (_with("severity_id", 7), "severity_id"),
        (_with("time", "2024-01-01"), "time"),
        (_with("time", 1.5e12), "time"),
        (_with("time", 12), "out of range"),
        (_with("metadata.uid", "not-a-uuid"), "not a UUID"),
        (_with("metadata.uid", "0b5e7f5c-4f4e-4d0a-9a55-1f0f2b8f9e11"), "UUIDv7"),
        (_with("metadata.uid", _DELETE), "metadata.uid"),
        (_with("metadata", [1]), "metadata"),
        (_with("device.uid", "kiosk-02"), "does not match the topic"),
        (_with("device.uid", 5), "device.uid"),
        (_with("user", _DELETE), "user"),
        (_with("status_id", 3), "status_id"),
        (_with("unmapped", "x"), "unmapped"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        validate_event(TOPIC, payload, prefix="kiosk")


@pytest.mark.parametrize(
    "topic",
    ["kiosk/hq/audit", "other/hq/kiosk-01/audit", "kiosk/hq/kiosk-01/health", "kiosk//x/audit"],
)
def test_payloads_on_other_topics_are_rejected(topic: str) -> None:
    with pytest.raises(InvalidPayload, match="topic"):
        validate_event(topic, json.dumps(_good()).encode(), prefix="kiosk")


def test_a_lockout_alert_needs_its_finding() -> None:
    payload: dict[str, Any] = json.loads(json.dumps(kiosk_events()[3].payload))
    del payload["finding_info"]
    with pytest.raises(InvalidPayload, match="finding_info"):
        validate_event(TOPIC, json.dumps(payload).encode(), prefix="kiosk")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_fail_as_invalid_payload(payload: bytes) -> None:
    with pytest.raises(InvalidPayload):
        validate_event(TOPIC, payload, prefix="kiosk")


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_random_json_only_ever_fails_as_invalid_payload(value: Any) -> None:
    with pytest.raises(InvalidPayload):
        validate_event(TOPIC, json.dumps(value).encode(), prefix="kiosk")


# --- the outbox -----------------------------------------------------------------------------


def test_the_outbox_is_read_in_order_and_marked_only_as_told(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.db"
    events = kiosk_events()
    stored_payloads(path, events)
    outbox = OutboxStore.open(path)
    try:
        rows = outbox.unsent(after_seq=0, limit=10)
        assert [r.uid for r in rows] == [e.uid for e in events]
        assert outbox.unsent(after_seq=rows[1].seq, limit=10)[0].uid == events[2].uid
        outbox.record(sent=[rows[0].uid], attempted=[r.uid for r in rows[:2]], now_ms=1234)
        stats = outbox.stats()
        assert stats.depth == 3
        assert stats.oldest_unsent_ms == events[1].time_ms
        assert stats.max_attempts == 1
        assert outbox.last_sent_ms() == 1234
        assert [r.uid for r in outbox.unsent(after_seq=0, limit=10)] == [e.uid for e in events[1:]]
    finally:
        outbox.close()


def test_syncing_needs_an_existing_kiosk_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no kiosk database"):
        OutboxStore.open(tmp_path / "missing.db")
    settings_ = sync_settings(tmp_path, host="127.0.0.1", port=1)
    with pytest.raises(SyncError, match="no kiosk database"):
        OutboxPublisher(settings_).start()
    assert not (tmp_path / "kiosk.db").exists()


def test_site_and_device_must_be_single_topic_levels(tmp_path: Path) -> None:
    bad = sync_settings(tmp_path, host="127.0.0.1", port=1, site="hq/annex")
    with pytest.raises(ConfigError, match="topic level"):
        OutboxPublisher(bad)


def test_one_publisher_per_database(tmp_path: Path) -> None:
    stored_payloads(tmp_path / "kiosk.db", kiosk_events())
    settings_ = sync_settings(tmp_path, host="127.0.0.1", port=1)  # nothing listens: it retries
    first = OutboxPublisher(settings_)
    first.start()
    try:
        with pytest.raises(SyncBusyError, match="already publishing"):
            OutboxPublisher(settings_).start()
    finally:
        first.stop()
    second = OutboxPublisher(settings_)
    second.start()
    second.stop()


def test_sync_gives_up_after_its_timeout_and_keeps_the_events(tmp_path: Path) -> None:
    stored_payloads(tmp_path / "kiosk.db", kiosk_events())
    settings_ = sync_settings(tmp_path, host="127.0.0.1", port=1)
    with pytest.raises(SyncError, match="4 event\\(s\\) still unsent") as info:
        sync_once(settings_, timeout=1.5)
    assert info.value.exit_code == 69
    outbox = OutboxStore.open(tmp_path / "kiosk.db")
    try:
        assert outbox.depth() == 4
    finally:
        outbox.close()


# --- the centre's SQLite store --------------------------------------------------------------


def centre_events(payloads: list[bytes]) -> list[CentreEvent]:
    return [validate_event(TOPIC, p, prefix="kiosk") for p in payloads]


def test_the_centre_stores_each_event_once(tmp_path: Path) -> None:
    events = centre_events(stored_payloads(tmp_path / "kiosk.db", kiosk_events()))
    dead = DeadLetter(topic=TOPIC, reason="not JSON", size=3, payload=b"{x\x00")
    with open_centre_store(f"sqlite:///{tmp_path / 'centre.db'}") as store:
        first = store.write_batch(events + events[:1], [dead], 1)
        assert (first.inserted, first.duplicates, first.dead_lettered) == (4, 1, 1)
        assert [a.uid for a in first.new_alerts] == [events[3].uid]
        again = store.write_batch(events, [], 2)
        assert (again.inserted, again.duplicates, again.new_alerts) == (0, 4, [])
        assert store.event_keys() == {("kiosk-01", e.uid) for e in events}
        assert store.counts().pending_alerts == 1
        store.mark_alerted("kiosk-01", events[3].uid, 3)
        assert store.pending_alerts() == []
        letter = store.dead_letters()[0]
        assert (letter.reason, letter.payload, letter.size) == ("not JSON", b"{x\x00", 3)


def test_the_same_uid_from_two_devices_is_two_events(tmp_path: Path) -> None:
    event = centre_events(stored_payloads(tmp_path / "kiosk.db", kiosk_events()[:1]))[0]
    other = CentreEvent(**{**event.__dict__, "device": "kiosk-02"})
    with open_centre_store(f"sqlite:///{tmp_path / 'centre.db'}") as store:
        assert store.write_batch([event, other], [], 1).inserted == 2


def test_the_centre_never_touches_a_kiosk_database(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.db"
    stored_payloads(path, kiosk_events())
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a centre database"):
        open_centre_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite:///:memory:", "mysql://x/y"])
def test_unusable_database_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        open_centre_store(url)


def test_the_centre_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "centre.db"
    open_centre_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer kiosk"):
        open_centre_store(f"sqlite:///{path}")


# --- receipts: what the centre confirmed, what a broker lost -------------------------------


def test_confirmed_events_are_forgotten_and_the_watermark_advances() -> None:
    tracker = ConfirmationTracker(1.0, watermark=10)
    for seq in (11, 12, 13):
        tracker.acked(f"u{seq}", seq, now=0.0)
    assert (len(tracker), tracker.watermark()) == (3, 10)
    assert tracker.confirmed(["u11", "u13", "unknown"], now=0.5) == 2
    assert (len(tracker), tracker.watermark()) == (1, 11)
    tracker.confirmed(["u12"], now=0.6)
    assert (len(tracker), tracker.watermark()) == (0, 13)


def test_an_event_skipped_by_later_receipts_is_presumed_lost_after_the_grace() -> None:
    tracker = ConfirmationTracker(1.0)
    for seq in (1, 2, 3):
        tracker.acked(f"u{seq}", seq, now=0.0)
    tracker.confirmed(["u1", "u3"], now=0.2)  # u2 never arrives
    assert tracker.presumed_lost(now=1.0) == []  # within the grace
    assert tracker.presumed_lost(now=1.3) == [("u2", 2)]
    assert len(tracker) == 0


def test_nothing_is_resent_while_the_centre_is_silent() -> None:
    tracker = ConfirmationTracker(1.0)
    tracker.acked("u1", 1, now=0.0)
    assert tracker.presumed_lost(now=3600.0) == []  # no receipts at all: the broker holds it


def test_the_last_event_before_a_quiet_spell_is_resent_once_the_centre_answers_others() -> None:
    tracker = ConfirmationTracker(1.0)
    tracker.acked("old", 1, now=0.0)
    tracker.acked("last", 2, now=0.0)
    tracker.confirmed(["old"], now=0.5)  # the centre works, but "last" never comes
    assert tracker.presumed_lost(now=5.0) == []
    assert tracker.presumed_lost(now=10.5) == [("last", 2)]


def test_a_receipt_ahead_of_its_puback_still_counts() -> None:
    tracker = ConfirmationTracker(1.0)
    tracker.confirmed(["u1"], now=0.0)
    tracker.acked("u1", 1, now=0.1)
    assert len(tracker) == 0


def test_the_watermark_file_survives_restarts_and_tolerates_damage(tmp_path: Path) -> None:
    state = WatermarkFile(tmp_path / "kiosk.db")
    assert state.read() is None
    state.write(42)
    assert WatermarkFile(tmp_path / "kiosk.db").read() == 42
    state.path.write_text("{garbage")
    assert state.read() is None


def test_receipts_round_trip_and_junk_confirms_nothing() -> None:
    assert parse_receipt(receipt_payload(["a", "b"])) == ["a", "b"]
    for junk in (b"", b"\xff", b"[]", b'{"uids": "a"}', b'{"uids": [1, "a"]}'):
        assert parse_receipt(junk) in ([], ["a"])
