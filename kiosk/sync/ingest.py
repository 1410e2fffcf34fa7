"""The centre's ingest: the broker → the centre's database, each event exactly once.

Subscription: ``$share/<centre.share_group>/<sync.topic_prefix>/+/+/audit`` at QoS 1,
an MQTT 5 shared subscription — the broker hands each message to one worker of
the group, so more workers (same group, each its own ``centre.client_id``) split
the load. The session is persistent (``clean_start=False``, ``SessionExpiryInterval``
from ``sync.session_expiry_s``): while a worker is away the broker queues its
share for it. Mosquitto keeps routing a share to a worker whose session is
offline, so a worker taken away for good should be retired with ``kiosk ingest
--retire`` (it unsubscribes, drains what was queued for it, and ends its session);
otherwise its queue waits for it until the session expires.

Acknowledgement discipline (paho ``manual_ack=True``): messages are validated
and written in batches (``centre.batch_size``, or whatever arrived within
``centre.batch_wait_s``) in one transaction; only after the commit is each
message acknowledged (PUBACK) to the broker. A crash before the commit means the
broker delivers the batch again; a crash between commit and PUBACK means a
redelivery that the unique (device, uid) key absorbs. Acks are only sent on the
connection the message arrived on (after a reconnect the broker re-sends
unacknowledged messages itself, and a stale packet id could name another
message). If the database is unavailable the batch is retried with backoff and
nothing is acknowledged meanwhile. The ingest announces the largest Receive
Maximum (65535): mosquitto 2.0.11 (Debian 12) can lose track of its in-flight
quota when a persistent session resumes after a broker restart, and with a small
quota the session then stalls; memory stays bounded all the same, because a
batch is written as soon as it is full.

Validation (:mod:`kiosk.sync.payload`): a payload that fails goes to the
``dead_letters`` table with the reason and its first ``centre.dead_letter_max_bytes``
bytes, is acknowledged like any other, and the ingest carries on.

Receipts: after each commit the ingest publishes, per device, the uids it now
holds (stored, duplicates, and dead letters whose uid could be read) to
``<prefix>/<site>/<device>/receipt`` at QoS 1. A PUBACK only says the broker took
a message; mosquitto keeps it in memory until its next snapshot, so a broker
killed in between loses it — the device re-sends what the centre never
confirmed (:mod:`kiosk.sync.confirm`).

Lockout alerts (class 2004 Detection Finding): each newly stored one (never a
duplicate) is logged as a WARNING and handed to the hooks after its batch is
committed — ``centre.alert_command`` (split like a shell would, but run without
one, the event JSON on stdin, killed after ``centre.alert_timeout_s``) and/or
``centre.alert_topic`` (the event JSON, QoS 1). The event's ``alerted_ms`` is set
once the hooks ran; alerts stored but not yet alerted when the ingest stopped are
fired at the next start (at least once, not exactly once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import shlex
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kiosk.config import Settings
from kiosk.daemon.systemd import Notifier
from kiosk.errors import ConfigError
from kiosk.store.centre import (
    CentreEvent,
    CentreStore,
    DeadLetter,
    PendingAlert,
    open_centre_store,
    redact_url,
)
from kiosk.store.db import StoreError
from kiosk.sync.client import build_client, connect_properties
from kiosk.sync.payload import (
    AuditTopic,
    InvalidPayload,
    check_topic_level,
    receipt_payload,
    topic_for,
    validate_event,
)

log = logging.getLogger(__name__)

_RETRY_MAX_S = 30.0
RECEIVE_MAXIMUM = 65535


def centre_database_url(settings: Settings) -> str:
    """``centre.database_url``, else SQLite at ``<state_dir>/centre.db``."""
    return settings.centre.database_url or f"sqlite:///{settings.state_dir / 'centre.db'}"


def default_ingest_client_id() -> str:
    return f"kiosk-ingest-{socket.gethostname() or 'centre'}"


def subscription_topic(settings: Settings) -> str:
    """``$share/<group>/<prefix>/+/+/audit``."""
    group = check_topic_level(settings.centre.share_group, "centre.share_group")
    prefix = check_topic_level(settings.sync.topic_prefix, "sync.topic_prefix")
    return f"$share/{group}/{prefix}/+/+/audit"


@dataclass(frozen=True)
class _Incoming:
    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int
    received: float


@dataclass(frozen=True)
class IngestStats:
    """Counters since start."""

    connected: bool
    received: int
    inserted: int
    duplicates: int
    dead_lettered: int
    batches: int
    alerts: int
    queued: int  # received, not yet written
    last_commit_ms: int | None


class IngestService:
    """One ingest worker: subscribe, validate, store in batches, acknowledge, alert.

    ``start()`` opens the database (raising if it cannot) and serves from a thread
    of its own; ``stop()`` writes and acknowledges what has arrived, then
    disconnects (idempotent). ``retire=True`` drains this worker's queue without
    subscribing and ends its session (see the module docstring).

    One thread does the network, validation, the batch commit and the PUBACKs
    (paho's ``loop()`` driven here, with our own reconnect backoff): it is
    about half again as fast as paho's network thread handing messages to a
    writer thread, because nothing crosses threads per message. A second thread
    runs the alert hooks, so a slow alert command never holds up ingestion.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        client_id: str | None = None,
        retire: bool = False,
    ) -> None:
        self.settings = settings
        centre = settings.centre
        self.url = database_url or centre_database_url(settings)
        try:
            self.topic = subscription_topic(settings)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.prefix = settings.sync.topic_prefix
        self.client_id = client_id or centre.client_id or default_ingest_client_id()
        self.retire = retire
        self.batch_size = centre.batch_size
        self._alert_argv = shlex.split(centre.alert_command) if centre.alert_command else None

        self._lock = threading.Lock()  # guards the counters and flags read by other threads
        self._stop = threading.Event()
        self._incoming: list[_Incoming] = []
        self._writing = 0  # messages of the batch being written
        self._delay = float(settings.sync.reconnect_min_s)  # current reconnect backoff
        self._generation = 0
        self._connected = False
        self._subscribed = threading.Event()
        self._last_message = time.monotonic()
        self._client: mqtt.Client | None = None
        self._store: CentreStore | None = None
        self._server: threading.Thread | None = None
        self._alerter: threading.Thread | None = None
        self._alerts: queue.Queue[PendingAlert | None] = queue.Queue()
        self._alert_publishes: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._counts = {
            "received": 0,
            "inserted": 0,
            "duplicates": 0,
            "dead_lettered": 0,
            "batches": 0,
            "alerts": 0,
        }
        self._last_commit_ms: int | None = None
        self._error: BaseException | None = None
        self.failed = threading.Event()  # set when the service cannot go on

    # --- public API ------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        self._store = open_centre_store(self.url)
        alert_store: CentreStore | None = None
        try:
            alert_store = open_centre_store(self.url)
            for alert in alert_store.pending_alerts():
                self._alerts.put(alert)
            client = build_client(self.settings.sync, self.client_id, manual_ack=True)
        except BaseException:
            self._store.close()
            if alert_store is not None:
                alert_store.close()
            raise
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        self._client = client
        self._stop.clear()
        self._server = threading.Thread(target=self._serve, name="ingest", daemon=True)
        self._alerter = threading.Thread(
            target=self._alert_loop, args=(alert_store,), name="ingest-alerts", daemon=True
        )
        self._alerter.start()
        self._server.start()
        log.info(
            "ingest %s: %s → %s (batches of %d)",
            self.client_id,
            self.topic,
            redact_url(self.url),
            self.batch_size,
        )

    def stop(self, timeout: float = 30.0) -> None:
        server = self._server
        if server is None:
            return
        self._stop.set()
        server.join(timeout)
        if server.is_alive():
            log.warning("the ingest did not finish within %.0f s", timeout)
        self._alerts.put(None)
        if self._alerter is not None:
            self._alerter.join(timeout)
        self._server = self._alerter = None
        log.info("ingest %s stopped: %s", self.client_id, self.stats())

    def run(
        self,
        stop: threading.Event,
        *,
        idle_exit_s: float | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """Start, serve until ``stop`` is set (or, retiring, until idle), then stop.

        Under systemd (``Type=notify``) it reports READY once serving and feeds the
        watchdog while its threads run and it has not failed; a broker that is away
        is not a failure (the client reconnects), a database that is is.
        """
        notifier = notifier or Notifier()
        self.start()
        notifier.ready(f"ingest {self.client_id} serving")
        last_ping = 0.0
        try:
            while not stop.wait(0.2):
                if self.failed.is_set():
                    break
                if self.retire and idle_exit_s is not None and self._drained(idle_exit_s):
                    break
                healthy = self._server is not None and self._server.is_alive()
                interval = (notifier.watchdog_s or 0.0) / 2.0
                if healthy and interval and time.monotonic() - last_ping >= interval:
                    last_ping = time.monotonic()
                    notifier.watchdog()
        finally:
            notifier.stopping()
            self.stop()
            notifier.close()
        if self._error is not None:
            raise self._error

    def stats(self) -> IngestStats:
        with self._lock:
            return IngestStats(
                connected=self._connected,
                queued=len(self._incoming) + self._writing,
                last_commit_ms=self._last_commit_ms,
                **self._counts,
            )

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker has confirmed the subscription (or, retiring, the unsubscribe)."""
        return self._subscribed.wait(timeout)

    def __enter__(self) -> IngestService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _drained(self, idle_s: float) -> bool:
        with self._lock:
            return (
                self._subscribed.is_set()
                and not self._incoming
                and time.monotonic() - self._last_message >= idle_s
            )

    # --- the serving thread ----------------------------------------------------------------

    def _serve(self) -> None:
        client = self._client
        assert client is not None  # noqa: S101 (set by start)
        try:
            self._serve_loop(client)
        except BaseException as exc:
            log.exception("the ingest failed; stopping")
            self._error = exc
            self.failed.set()
        finally:
            self._close(client)

    def _serve_loop(self, client: mqtt.Client) -> None:
        sync = self.settings.sync
        wait_s = self.settings.centre.batch_wait_s
        self._delay = float(sync.reconnect_min_s)
        first = True
        while not self._stop.is_set():
            if not self._connected and client.socket() is None:
                try:
                    if first:
                        client.connect(
                            sync.host,
                            sync.port,
                            keepalive=sync.keepalive_s,
                            clean_start=False,
                            properties=connect_properties(sync, receive_maximum=RECEIVE_MAXIMUM),
                        )
                        first = False
                    else:
                        client.reconnect()
                except (OSError, ssl.SSLError) as exc:
                    self._back_off(f"cannot reach the broker {sync.host}:{sync.port} ({exc})")
                    continue
            timeout = wait_s
            if self._incoming:
                timeout = max(0.0, wait_s - (time.monotonic() - self._incoming[0].received))
            rc = client.loop(timeout=min(timeout, 0.5))
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._lost(rc)
            elif self._connected:
                self._delay = float(sync.reconnect_min_s)
            self._flush_if_due(client, wait_s)
            self._publish_alerts(client)
        self._flush(client)  # what has arrived: written and acknowledged before leaving

    def _lost(self, rc: int) -> None:
        """The connection ended (paho has closed the socket): reconnect, soon or after a pause."""
        with self._lock:
            was, self._connected = self._connected, False
        if was:  # it was working: try again at once
            log.warning("ingest lost the broker (%s); reconnecting", mqtt.error_string(rc))
            self._stop.wait(0.05)
        else:  # refused (credentials, certificate) or dropped before the CONNACK
            self._back_off(f"the broker closed the connection ({mqtt.error_string(rc)})")

    def _back_off(self, why: str) -> None:
        pause = self._delay * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not crypto)
        log.warning("ingest: %s; retrying in %.1f s", why, pause)
        self._delay = min(float(self.settings.sync.reconnect_max_s), self._delay * 2)
        self._stop.wait(pause)

    def _flush_if_due(self, client: mqtt.Client, wait_s: float) -> None:
        if not self._incoming:
            return
        if (
            len(self._incoming) >= self.batch_size
            or time.monotonic() - self._incoming[0].received >= wait_s
        ):
            self._flush(client)

    def _flush(self, client: mqtt.Client) -> None:
        while self._incoming:
            with self._lock:
                batch = self._incoming[: self.batch_size]
                del self._incoming[: self.batch_size]
                self._writing = len(batch)
            events, dead, receipts = self._validate(batch)
            committed = self._commit(client, events, dead)
            with self._lock:
                self._writing = 0
            if not committed:
                return  # stopping while the database is down: nothing acknowledged
            self._ack(client, batch)
            for topic, uids in receipts.items():
                client.publish(topic, receipt_payload(uids), qos=1)

    def _close(self, client: mqtt.Client) -> None:
        if self.retire and self._connected and not self._incoming:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            client.disconnect(properties=props)
            log.info("ingest %s retired: its session at the broker is closed", self.client_id)
        else:
            client.disconnect()
        with contextlib.suppress(Exception):
            for _ in range(20):  # let the acks and DISCONNECT go out
                if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
        with self._lock:
            self._connected = False
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- paho callbacks (called from the serving thread, inside client.loop()) -------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("the broker refused the ingest's connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
            self._last_message = time.monotonic()
        log.info(
            "ingest %s connected to %s:%d (session %s)",
            self.client_id,
            self.settings.sync.host,
            self.settings.sync.port,
            "resumed" if flags.session_present else "new",
        )
        if self.retire:
            client.unsubscribe(self.topic)
        else:
            client.subscribe(self.topic, qos=1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was and not self._stop.is_set():
            log.warning("ingest disconnected by the broker (%s)", reason_code)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties,
    ) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            log.error("the broker refused the subscription to %s: %s", self.topic, failed[0])
            return
        self._subscribed.set()

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        log.info("retiring: unsubscribed; draining what the broker queued for this worker")
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")
        now = time.monotonic()
        item = _Incoming(
            mid=message.mid,
            qos=message.qos,
            topic=topic,
            payload=bytes(message.payload),
            generation=self._generation,
            received=now,
        )
        with self._lock:
            self._incoming.append(item)
            self._counts["received"] += 1
            self._last_message = now

    # --- storing ---------------------------------------------------------------------------

    def _validate(
        self, batch: list[_Incoming]
    ) -> tuple[list[CentreEvent], list[DeadLetter], dict[str, list[str]]]:
        """Events, dead letters, and the receipts to send: receipt topic → uids."""
        centre = self.settings.centre
        events: list[CentreEvent] = []
        dead: list[DeadLetter] = []
        receipts: dict[str, list[str]] = {}
        for item in batch:
            try:
                event = validate_event(
                    item.topic,
                    item.payload,
                    prefix=self.prefix,
                    max_bytes=centre.max_payload_bytes,
                )
                events.append(event)
                topic = topic_for(self.prefix, event.site, event.device, "receipt")
                receipts.setdefault(topic, []).append(event.uid)
            except InvalidPayload as exc:
                if exc.uid is not None:
                    with contextlib.suppress(InvalidPayload):
                        where = AuditTopic.parse(item.topic, self.prefix)
                        topic = topic_for(self.prefix, where.site, where.device, "receipt")
                        receipts.setdefault(topic, []).append(exc.uid)
                dead.append(
                    DeadLetter(
                        topic=item.topic[:1024],
                        reason=str(exc)[:1024],
                        size=len(item.payload),
                        payload=item.payload[: centre.dead_letter_max_bytes],
                    )
                )
        return events, dead, receipts

    def _commit(
        self, client: mqtt.Client, events: list[CentreEvent], dead: list[DeadLetter]
    ) -> bool:
        delay = 0.5
        while True:
            try:
                if self._store is None:
                    self._store = open_centre_store(self.url)
                result = self._store.write_batch(events, dead, int(time.time() * 1000))
            except StoreError as exc:
                log.error(
                    "cannot write to the centre database (%s); retrying in %.1f s", exc, delay
                )
                if self._stop.is_set():
                    return False
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self._stop.is_set():
                    client.loop(0.1)  # keep the connection alive (pings) meanwhile
                delay = min(_RETRY_MAX_S, delay * 2)
                self._reopen()
                continue
            if dead:
                log.warning(
                    "%d payload(s) dead-lettered; the first from %s: %s",
                    len(dead),
                    dead[0].topic[:200],
                    dead[0].reason,
                )
            with self._lock:
                self._counts["inserted"] += result.inserted
                self._counts["duplicates"] += result.duplicates
                self._counts["dead_lettered"] += result.dead_lettered
                self._counts["batches"] += 1
                self._last_commit_ms = int(time.time() * 1000)
            for alert in result.new_alerts:
                self._alerts.put(alert)
            return True

    def _reopen(self) -> None:
        """A fresh connection after a database error (PostgreSQL restarts, network cuts)."""
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
        try:
            self._store = open_centre_store(self.url)
        except StoreError as exc:
            log.debug("reopening the centre database failed: %s", exc)

    def _ack(self, client: mqtt.Client, batch: list[_Incoming]) -> None:
        if not self._connected:
            return  # the broker sends them again after the reconnect
        generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                client.ack(item.mid, item.qos)

    # --- alerts ----------------------------------------------------------------------------

    def _publish_alerts(self, client: mqtt.Client) -> None:
        topic = self.settings.centre.alert_topic
        while True:
            try:
                payload = self._alert_publishes.get_nowait()
            except queue.Empty:
                return
            if topic:
                client.publish(topic, payload, qos=1)

    def _alert_loop(self, store: CentreStore | None) -> None:
        assert store is not None  # noqa: S101 (opened by start)
        try:
            while True:
                alert = self._alerts.get()
                if alert is None:
                    return
                self._fire(alert)
                try:
                    store.mark_alerted(alert.device, alert.uid, int(time.time() * 1000))
                except StoreError as exc:
                    log.error("could not record that alert %s was sent: %s", alert.uid, exc)
                with self._lock:
                    self._counts["alerts"] += 1
        finally:
            store.close()

    def _fire(self, alert: PendingAlert) -> None:
        try:
            data = json.loads(alert.payload)
        except ValueError:
            data = {}
        finding = data.get("finding_info") if isinstance(data, dict) else None
        title = finding.get("title", "lockout") if isinstance(finding, dict) else "lockout"
        desc = finding.get("desc", "") if isinstance(finding, dict) else ""
        log.warning(
            "LOCKOUT ALERT from device %s: %s — %s (event %s)", alert.device, title, desc, alert.uid
        )
        if self._alert_argv:
            self._run_command(alert)
        if self.settings.centre.alert_topic:
            self._alert_publishes.put(alert.payload.encode("utf-8"))

    def _run_command(self, alert: PendingAlert) -> None:
        assert self._alert_argv is not None  # noqa: S101 (checked by the caller)
        timeout = self.settings.centre.alert_timeout_s
        try:
            done = subprocess.run(
                self._alert_argv,
                input=alert.payload.encode("utf-8"),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.error("alert command %s timed out after %.0f s", self._alert_argv[0], timeout)
            return
        except OSError as exc:
            log.error("alert command %s could not run: %s", self._alert_argv[0], exc)
            return
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip()[-500:]
            log.error("alert command %s exited %d: %s", self._alert_argv[0], done.returncode, err)
