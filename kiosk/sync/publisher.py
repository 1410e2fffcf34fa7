"""The device publisher: the audit outbox → the broker, nothing lost.

Topics (``p`` = ``sync.topic_prefix``, ``s`` = ``device.site``, ``d`` = ``device.device_id``):

``p/s/d/audit``
    every outbox row's payload, verbatim (the OCSF event JSON, UTF-8), QoS 1,
    not retained, oldest first; no per-message properties (paho encodes them
    afresh for every message, which costs a third of the publishing time).
``p/s/d/status``
    ``online`` (retained, QoS 1) after each connect; ``offline`` on a clean stop
    and as the last will, so a vanished device reads ``offline`` too.
``p/s/d/health``
    retained JSON every ``sync.health_interval_s`` (also logged): outbox depth,
    the oldest unsent event and its age, when a row was last acknowledged,
    events in flight, events awaiting the centre's receipt, and the highest
    attempt count among unsent rows.
``p/s/d/receipt`` (subscribed, QoS 1)
    the centre's receipts: uids it has stored (:mod:`kiosk.sync.confirm`).

QoS and acknowledgement discipline:

* A row is marked sent only after its PUBACK arrives with a success code.
  Marks are committed in batches; a crash before the commit republishes the
  row, and the centre drops the duplicate (unique device + event uid). A row is
  never marked without a PUBACK.
* At most ``sync.max_inflight`` events are unacknowledged at once. The window is
  ours (paho's own limit is off: it scans every queued message on each PUBACK).
* paho calls ``on_publish`` from its network thread as soon as a PUBACK arrives,
  which can be before ``publish()`` has returned the mid to the caller. So the
  callback only queues ``(mid, reason)``; the publisher thread — the only one
  that calls ``publish()`` — records mid → row right after ``publish()``
  returns and resolves queued acks afterwards, so an early ack always finds its
  row. (A lock held around ``publish()`` and taken again in ``on_publish`` would
  deadlock: paho calls ``on_publish`` holding the same internal mutex that
  ``publish()`` takes.) Acks whose mid is not an audit message (status, health)
  are ignored.
* A PUBACK with a failure reason (≥ 0x80: not authorised, quota exceeded, …)
  leaves the row unsent; so does 0x10 "no matching subscribers" unless
  ``sync.require_subscriber`` is off — mosquitto drops a message nobody
  subscribes to, and an audit event must wait for the ingest instead. Either
  way publishing pauses (1 s doubling up to ``sync.reconnect_max_s``, and again
  from 1 s after a reconnect) and resumes from that row, one event at a time
  until one is accepted.
* A PUBACK is the broker's word, not the centre's: mosquitto persists by
  snapshot and forgets, when killed, what it acknowledged since its last save
  (the tests see tens of events per ``kill -9``). Acknowledged events are
  therefore tracked until the centre's receipt names them; one the centre
  plainly skipped is made unsent again and re-published (``sync.confirm_grace_s``;
  0 trusts the PUBACK alone). Nothing is re-sent while the centre is silent.
* Persistent session (``clean_start=False``, ``SessionExpiryInterval``), client
  id ``kiosk-<device_id>``; paho re-sends unacknowledged messages after a
  reconnect, with exponential backoff between attempts.
* One publisher per database: a lock file next to it (``kiosk.db.sync-lock``)
  stops ``kiosk sync`` from running beside the daemon's publisher (they would
  share a client id and keep taking the session from each other).

The daemon owns one :class:`OutboxPublisher`: ``start()`` when sync is enabled,
``notify()`` after it commits events (optional: the outbox is polled every
``sync.poll_interval_s`` anyway), ``stop()`` on shutdown. ``kiosk sync`` uses
:func:`sync_once`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kiosk.config import Settings
from kiosk.errors import ConfigError, KioskError
from kiosk.store.db import Database
from kiosk.store.outbox import OutboxRow, OutboxStore
from kiosk.sync.client import Will, build_client, start_connecting
from kiosk.sync.confirm import ConfirmationTracker, WatermarkFile
from kiosk.sync.errors import SyncBusyError, SyncError
from kiosk.sync.payload import check_topic_level, parse_receipt, topic_for

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10
_MARK_INTERVAL_S = 0.05  # longest delay between a PUBACK and its (batched) mark commit
_DRAIN_S = 3.0  # on stop: how long to wait for outstanding PUBACKs
_HOLD_MIN_S, _HOLD_MAX_S = 1.0, 60.0  # the longest hold is sync.reconnect_max_s
_CONFIRM_CHECK_S = 0.5  # how often acknowledged-but-unconfirmed events are looked at


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SyncHealth:
    """The publisher's view of how far behind the device is."""

    device: str
    site: str
    connected: bool
    depth: int
    oldest_unsent_ms: int | None
    oldest_unsent_age_s: float | None
    last_sync_ms: int | None
    in_flight: int
    unconfirmed: int  # acknowledged by the broker, not yet confirmed by the centre
    published: int  # PUBLISH packets handed to paho since start
    acknowledged: int  # successful PUBACKs since start
    max_attempts: int
    held_back: str | None  # why publishing is paused, if it is
    time_ms: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One log line."""
        oldest = (
            f"{self.oldest_unsent_age_s:.0f} s old" if self.oldest_unsent_age_s is not None else "-"
        )
        last = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.last_sync_ms / 1000))
            if self.last_sync_ms
            else "never"
        )
        state = "connected" if self.connected else "not connected"
        held = f", held back: {self.held_back}" if self.held_back else ""
        return (
            f"sync {state}: {self.depth} unsent (oldest {oldest}), {self.in_flight} in flight, "
            f"{self.unconfirmed} awaiting the centre's receipt, last sync {last}, "
            f"{self.acknowledged}/{self.published} acknowledged{held}"
        )


class _Lock:
    """An exclusive, non-blocking lock file; released when closed or when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise SyncBusyError(
                f"another kiosk process is already publishing this device's outbox (lock "
                f"{self.path}): the kiosk daemon with sync enabled, or a running `kiosk sync`"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


class OutboxPublisher:
    """Publishes a kiosk database's outbox to the broker from a thread of its own.

    ``database`` is the kiosk's open :class:`Database` (only its path is used: the
    publisher opens its own connection in its own thread) or a path; by default
    ``settings.database_path``. ``start()``, ``stop()``, ``notify()`` and
    ``health()`` may be called from any thread; ``start()`` and ``stop()`` are
    idempotent.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database | Path | None = None,
        *,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        sync = settings.sync
        if isinstance(database, Database):
            self.database_path = database.path
        else:
            self.database_path = database or settings.database_path
        try:
            prefix = check_topic_level(sync.topic_prefix, "sync.topic_prefix")
            site = check_topic_level(settings.device.site, "device.site")
            device = check_topic_level(settings.device.device_id, "device.device_id")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.site, self.device = site, device
        self.client_id = client_id or f"kiosk-{device}"
        self.audit_topic = topic_for(prefix, site, device, "audit")
        self.status_topic = topic_for(prefix, site, device, "status")
        self.health_topic = topic_for(prefix, site, device, "health")
        self.receipt_topic = topic_for(prefix, site, device, "receipt")
        self.confirming = sync.confirm_grace_s > 0
        self.window = sync.max_inflight

        self._cond = threading.Condition()
        self._acks: deque[tuple[int, int]] = deque()  # (mid, reason code value)
        self._receipts: deque[bytes] = deque()
        self._receipts_refused = False
        self._connected = False
        self._stopping = False
        self._wake = False
        self._empty = threading.Event()  # set while the outbox is known to be empty
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._lock = _Lock(self.database_path.with_name(self.database_path.name + ".sync-lock"))
        self._health: SyncHealth | None = None
        self._startup_error: BaseException | None = None
        self._started = threading.Event()

        # owned by the publisher thread
        self._inflight: dict[int, OutboxRow] = {}
        self._wake_at = 1  # acks that wake the publisher thread (set under _cond)
        self._inflight_uids: set[str] = set()
        self._cursor = 0
        self._to_mark: list[str] = []
        self._attempted: list[str] = []
        self._last_mark = 0.0
        self._hold_until = 0.0
        self._hold_s = 0.0
        self._held_back: str | None = None
        self._probing = False  # after a refusal: one event at a time until one gets through
        self._connects = 0  # CONNACKs so far (set under _cond)
        self._seen_connects = 0
        self._published = 0
        self._acknowledged = 0
        self._last_sync_ms: int | None = None
        self._tracker = ConfirmationTracker(sync.confirm_grace_s)
        self._watermark_file = WatermarkFile(self.database_path)
        self._saved_watermark = -1
        self.unconfirmed = 0  # len(tracker), readable from any thread

    # --- public API ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Take the lock, open the outbox, connect in the background and start publishing.

        Raises at once on configuration and database problems; a broker that cannot be
        reached is retried with backoff in the background (see :meth:`health`).
        """
        if self._thread is not None:
            return
        if not self.database_path.is_file():
            raise SyncError(
                f"there is no kiosk database at {self.database_path}: nothing to sync "
                "(check state_dir / KIOSK_STATE_DIR)"
            )
        self._lock.acquire()
        try:
            will = Will(self.status_topic, b"offline")
            self._client = build_client(self.settings.sync, self.client_id, will=will)
            self._client.max_inflight_messages_set(0)  # our window bounds it
            self._client.on_connect = self._on_connect
            self._client.on_disconnect = self._on_disconnect
            self._client.on_publish = self._on_publish
            self._client.on_message = self._on_receipt
            self._client.on_subscribe = self._on_subscribe
            self._stopping = False
            self._started.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"outbox-publisher-{self.device}", daemon=True
            )
            self._thread.start()
            self._started.wait(timeout)
            if self._startup_error is not None:
                self._thread.join(timeout)
                self._thread = None
                raise self._startup_error
        except BaseException:
            self._lock.release()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Finish in-flight messages (up to a few seconds), say ``offline``, disconnect."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the outbox publisher did not stop within %.0f s", timeout)
        self._thread = None
        self._lock.release()

    def notify(self) -> None:
        """Look at the outbox now (call after committing events; cheap, never blocks)."""
        with self._cond:
            self._wake = True
            self._empty.clear()
            self._cond.notify_all()

    def health(self) -> SyncHealth | None:
        """The latest health report (None before the first one)."""
        with self._cond:
            return self._health

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_until_empty(self, timeout: float) -> bool:
        """True once every outbox row has been acknowledged and marked sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._empty.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
            if not self.running:
                return False
        return self._empty.is_set()

    @property
    def outbox_empty(self) -> bool:
        """Whether the outbox was empty when last looked at."""
        return self._empty.is_set()

    def wait_until_confirmed(self, timeout: float) -> bool:
        """True once the outbox is empty and the centre has confirmed every acknowledged event.

        Returns False at the timeout, or as soon as events presumed lost make the outbox
        non-empty again.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            if not self._empty.is_set():
                return False
            if self.unconfirmed == 0:
                return True
            time.sleep(0.05)
        return self._empty.is_set() and self.unconfirmed == 0

    def __enter__(self) -> OutboxPublisher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- paho callbacks (network thread) ---------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning(
                "the broker %s:%d refused the connection: %s",
                self.settings.sync.host,
                self.settings.sync.port,
                reason_code,
            )
            return
        log.info(
            "connected to %s:%d as %s (session %s)",
            self.settings.sync.host,
            self.settings.sync.port,
            self.client_id,
            "resumed" if flags.session_present else "new",
        )
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        if self.confirming:
            client.subscribe(self.receipt_topic, qos=1)
        with self._cond:
            self._connected = True
            self._connects += 1
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            was, self._connected = self._connected, False
            stopping = self._stopping
        if was and not stopping:
            log.warning("lost the broker connection (%s); reconnecting with backoff", reason_code)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._cond:
            self._acks.append((mid, reason_code.value))
            # wake the publisher thread when a quarter of the window is acknowledged, or all
            # of it; otherwise it picks the acks up within _MARK_INTERVAL_S
            if len(self._acks) >= self._wake_at:
                self._cond.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes) and self.confirming:
            log.warning(
                "the broker refused the subscription to %s (%s): without the centre's receipts "
                "the PUBACK alone has to be trusted",
                self.receipt_topic,
                reason_codes[0],
            )
            with self._cond:
                self._receipts_refused = True

    def _on_receipt(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._receipts.append(bytes(message.payload))
            self._cond.notify_all()

    # --- the publisher thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            outbox = OutboxStore.open(self.database_path)
        except BaseException as exc:
            self._startup_error = exc
            self._started.set()
            return
        client = self._client
        assert client is not None  # noqa: S101 (set by start)
        try:
            self._last_sync_ms = outbox.last_sent_ms()
            self._load_unconfirmed(outbox)
        except BaseException as exc:
            outbox.close()
            self._startup_error = exc
            self._started.set()
            return
        try:
            start_connecting(client, self.settings.sync)
        except BaseException as exc:
            outbox.close()
            self._startup_error = SyncError(f"cannot start the MQTT client: {exc}")
            self._started.set()
            return
        self._started.set()
        try:
            self._loop(outbox, client)
        except Exception:
            log.exception("the outbox publisher failed; events stay in the outbox")
        finally:
            try:
                self._shutdown(outbox, client)
            finally:
                outbox.close()

    def _loop(self, outbox: OutboxStore, client: mqtt.Client) -> None:
        sync = self.settings.sync
        next_health = time.monotonic() + min(2.0, sync.health_interval_s)
        next_confirm_check = time.monotonic()
        failures = 0
        more = True
        while True:
            with self._cond:
                self._wake_at = max(1, min(len(self._inflight), self.window // 4))
                busy = more and self._connected and len(self._inflight) < self.window
                waiting = len(self._acks) >= self._wake_at or self._receipts
                if not (self._stopping or self._wake or busy or waiting):
                    # nothing to do until enough acks arrive, a notify(), or the timeout
                    self._cond.wait(self._wait_s(next_health))
                acks = list(self._acks)
                self._acks.clear()
                receipts = list(self._receipts)
                self._receipts.clear()
                stopping, connected = self._stopping, self._connected
                connects = self._connects
                self._wake = False
            if stopping:
                return
            if connects != self._seen_connects:  # a new connection: whatever refused may be gone
                self._seen_connects = connects
                self._hold_until, self._hold_s = 0.0, 0.0
            try:
                self._resolve(acks)
                self._confirm(receipts)
                self._flush(outbox)
                if time.monotonic() >= next_confirm_check:
                    self._recover_lost(outbox)
                    next_confirm_check = time.monotonic() + _CONFIRM_CHECK_S
                more = False
                if connected and time.monotonic() >= self._hold_until:
                    if self._held_back is not None:
                        log.info("resuming publishing")
                        self._held_back = None
                    more = self._fill(outbox, client)
                if time.monotonic() >= next_health:
                    self._report(outbox, client)
                    next_health = time.monotonic() + sync.health_interval_s
                failures = 0
            except KioskError as exc:  # a busy or full database: try again shortly
                failures += 1
                log.warning("outbox publisher: %s (retrying)", exc)
                with self._cond:
                    self._cond.wait(min(_HOLD_MAX_S, 0.5 * 2**failures))

    def _wait_s(self, next_health: float) -> float:
        now = time.monotonic()
        limit = min(self.settings.sync.poll_interval_s, max(0.0, next_health - now))
        if self._to_mark or self._attempted or self._inflight:
            limit = min(limit, _MARK_INTERVAL_S)
        if self._held_back is not None:
            limit = min(limit, max(0.0, self._hold_until - now))
        if self.unconfirmed:
            limit = min(limit, _CONFIRM_CHECK_S)
        return max(limit, 0.001)

    def _resolve(self, acks: list[tuple[int, int]]) -> None:
        for mid, code in acks:
            row = self._inflight.pop(mid, None)
            if row is None:
                continue  # status / health messages
            self._inflight_uids.discard(row.uid)
            refused = code >= 0x80 or (
                code == NO_MATCHING_SUBSCRIBERS and self.settings.sync.require_subscriber
            )
            if refused:
                self._refused(row, code)
            else:
                self._to_mark.append(row.uid)
                self._acknowledged += 1
                self._hold_s = 0.0
                self._probing = False
                if self.confirming:
                    self._tracker.acked(row.uid, row.seq, time.monotonic())
        self.unconfirmed = len(self._tracker)

    def _confirm(self, receipts: list[bytes]) -> None:
        if self._receipts_refused and len(self._tracker):
            self._tracker = ConfirmationTracker(0.0, watermark=self._tracker.watermark())
            self.confirming = False
        if not receipts:
            return
        now = time.monotonic()
        for payload in receipts:
            self._tracker.confirmed(parse_receipt(payload), now)
        self.unconfirmed = len(self._tracker)

    def _recover_lost(self, outbox: OutboxStore) -> None:
        """Publish again what the broker acknowledged but the centre never received."""
        lost = self._tracker.presumed_lost(time.monotonic())
        if lost:
            self._flush(outbox, force=True)  # their sent marks first, so unmark wins
            outbox.unmark([uid for uid, _ in lost])
            self._cursor = min(self._cursor, min(seq for _, seq in lost) - 1)
            self._empty.clear()
            log.warning(
                "%d event(s) acknowledged by the broker have not reached the centre (lost by "
                "a broker restart, or queued for an ingest worker that is away); sending them "
                "again",
                len(lost),
            )
        self.unconfirmed = len(self._tracker)
        watermark = self._tracker.watermark()
        if watermark != self._saved_watermark:
            self._watermark_file.write(watermark)
            self._saved_watermark = watermark

    def _load_unconfirmed(self, outbox: OutboxStore) -> None:
        """Rows acknowledged before a restart whose receipt had not arrived: check them again."""
        if not self.confirming:
            return
        saved = self._watermark_file.read()
        watermark = saved if saved is not None else outbox.max_sent_seq()
        self._tracker = ConfirmationTracker(self.settings.sync.confirm_grace_s, watermark=watermark)
        now = time.monotonic()
        pending = outbox.sent_after(watermark)
        for seq, uid in pending:
            self._tracker.acked(uid, seq, now)
        self.unconfirmed = len(self._tracker)
        if pending:
            log.info("%d acknowledged event(s) still await the centre's receipt", len(pending))

    def _refused(self, row: OutboxRow, code: int) -> None:
        self._cursor = min(self._cursor, row.seq - 1)
        self._probing = True
        longest = min(_HOLD_MAX_S, float(self.settings.sync.reconnect_max_s))
        self._hold_s = min(longest, max(_HOLD_MIN_S, self._hold_s * 2))
        self._hold_until = time.monotonic() + self._hold_s
        if code == NO_MATCHING_SUBSCRIBERS:
            reason = "the broker has no subscriber for the audit topic (is `kiosk ingest` running?)"
        else:
            name = ReasonCode(PacketTypes.PUBACK, identifier=code)
            reason = f"the broker refused event {row.uid}: {name}"
        if self._held_back != reason:
            log.warning("%s; holding events back, retrying in %.0f s", reason, self._hold_s)
        self._held_back = reason

    def _flush(self, outbox: OutboxStore, *, force: bool = False) -> None:
        if not (self._to_mark or self._attempted):
            return
        now = time.monotonic()
        if (
            not force
            and now - self._last_mark < _MARK_INTERVAL_S
            and len(self._to_mark) < self.window
        ):
            return
        sent, attempted = self._to_mark, self._attempted
        now_ms = _now_ms()
        outbox.record(sent=sent, attempted=attempted, now_ms=now_ms)
        self._to_mark, self._attempted = [], []
        self._last_mark = now
        if sent:
            self._last_sync_ms = now_ms

    def _fill(self, outbox: OutboxStore, client: mqtt.Client) -> bool:
        """Publish unsent rows into the free part of the window; True if more may be waiting."""
        room = self.window - len(self._inflight)
        if self._probing:
            room = 1 - len(self._inflight)
        if room <= 0:
            return False
        rows = outbox.unsent(after_seq=self._cursor, limit=room)
        if not rows:
            self._check_empty(outbox)
            return False
        self._empty.clear()
        for row in rows:
            if row.uid in self._inflight_uids:
                self._cursor = row.seq
                continue
            info = client.publish(self.audit_topic, row.payload.encode("utf-8"), qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("could not queue event %s: %s", row.uid, mqtt.error_string(info.rc))
                return False
            self._inflight[info.mid] = row
            self._inflight_uids.add(row.uid)
            self._attempted.append(row.uid)
            self._cursor = row.seq
            self._published += 1
        return len(rows) == room

    def _check_empty(self, outbox: OutboxStore) -> None:
        """Nothing after the cursor: confirm the outbox is empty, or go back for skipped rows."""
        if self._inflight or self._to_mark:
            return
        self._flush(outbox, force=True)
        if outbox.depth() == 0:
            self._empty.set()
        elif self._held_back is None:
            self._cursor = 0  # rows below the cursor (refused earlier) are due again

    def _report(self, outbox: OutboxStore, client: mqtt.Client) -> None:
        stats = outbox.stats()
        now_ms = _now_ms()
        health = SyncHealth(
            device=self.device,
            site=self.site,
            connected=self.connected,
            depth=stats.depth,
            oldest_unsent_ms=stats.oldest_unsent_ms,
            oldest_unsent_age_s=(
                round((now_ms - stats.oldest_unsent_ms) / 1000, 1)
                if stats.oldest_unsent_ms is not None
                else None
            ),
            last_sync_ms=self._last_sync_ms,
            in_flight=len(self._inflight),
            unconfirmed=len(self._tracker),
            published=self._published,
            acknowledged=self._acknowledged,
            max_attempts=stats.max_attempts,
            held_back=self._held_back,
            time_ms=now_ms,
        )
        with self._cond:
            self._health = health
        log.info("%s", health.line())
        if health.connected:
            payload = json.dumps(health.as_dict(), separators=(",", ":")).encode()
            client.publish(self.health_topic, payload, qos=1, retain=True)

    def _shutdown(self, outbox: OutboxStore, client: mqtt.Client) -> None:
        deadline = time.monotonic() + _DRAIN_S
        try:
            while self._inflight and self.connected and time.monotonic() < deadline:
                with self._cond:
                    if not self._acks:
                        self._cond.wait(0.05)
                    acks = list(self._acks)
                    self._acks.clear()
                self._resolve(acks)
            self._flush(outbox, force=True)
        except KioskError as exc:
            log.warning("could not record the last acknowledgements: %s", exc)
        except Exception:
            log.exception("outbox publisher: error while stopping")
        if self._inflight:
            log.info(
                "%d event(s) still unacknowledged; they will be sent again", len(self._inflight)
            )
        try:
            with self._cond:
                receipts = list(self._receipts)
                self._receipts.clear()
            self._confirm(receipts)
            self._recover_lost(outbox)
            self._report(outbox, client)
        except KioskError as exc:
            log.warning("no final health report: %s", exc)
        if self.connected:
            info = client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        client.disconnect()
        client.loop_stop()
        log.info("outbox publisher stopped")


def sync_once(
    settings: Settings,
    *,
    timeout: float,
    database: Path | None = None,
    progress: Callable[[SyncHealth], None] | None = None,
) -> SyncHealth:
    """Publish everything unsent and wait for the PUBACKs (``kiosk sync``).

    Then, when receipts are on, wait a little (twice the receipt grace, within
    ``timeout``) for the centre to confirm: events it never received are sent again
    within this run. Events still unconfirmed at the end stay tracked (the state
    file beside the database) and are checked by the next sync or the daemon.

    Returns the final health; raises SyncError when the outbox is not empty after
    ``timeout`` seconds (broker unreachable, no subscriber, refused events).
    """
    publisher = OutboxPublisher(settings, database)
    deadline = time.monotonic() + timeout
    publisher.start()
    try:
        while True:
            done = publisher.wait_until_empty(max(0.0, deadline - time.monotonic()))
            if not done or not publisher.confirming:
                break
            wait = min(deadline - time.monotonic(), settings.sync.confirm_grace_s + 5)
            if publisher.wait_until_confirmed(max(0.0, wait)) or publisher.outbox_empty:
                break  # confirmed, or no sign of loss within the wait: tracked for later
    finally:
        publisher.stop()
    health = publisher.health()
    if health is None:  # the publisher thread died before reporting
        raise SyncError("the outbox publisher stopped unexpectedly; see the log")
    if progress is not None:
        progress(health)
    if not done:
        why = health.held_back or (
            "not connected to the broker" if not health.connected else "not all acknowledged"
        )
        raise SyncError(
            f"{health.depth} event(s) still unsent after {timeout:.0f} s ({why}); they stay in "
            "the outbox and go with the next sync"
        )
    if health.unconfirmed:
        log.info(
            "%d event(s) acknowledged by the broker are not yet confirmed by the centre; "
            "the next sync (or the daemon) checks them",
            health.unconfirmed,
        )
    return health
