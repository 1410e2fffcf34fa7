"""Audit sync against a real mosquitto: nothing lost, nothing duplicated.

Each test starts its own mosquitto (persistence on, saved after every change) on a
free loopback port, a real kiosk database with events written through the
repository, the real publisher and the real ingest. Faults are real too: the
broker and the publisher are killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.auth import events as ev
from kiosk.auth.model import Change
from kiosk.config import Settings
from kiosk.secrets import DeviceKeys
from kiosk.store.centre import open_centre_store
from kiosk.store.db import Database
from kiosk.store.outbox import OutboxStore
from kiosk.store.repository import SqliteRepository
from kiosk.sync.bench import fill_outbox
from kiosk.sync.broker import BrokerTls, LocalBroker
from kiosk.sync.ingest import IngestService
from kiosk.sync.publisher import OutboxPublisher, sync_once
from tests.mqtt_support import (
    RawPublisher,
    Watcher,
    broker_in,
    kiosk_events,
    make_pki,
    needs_mosquitto,
    remove_broker,
    sync_settings,
    wait_for,
    write_events,
)

pytestmark = needs_mosquitto

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    running = broker_in(tmp_path / "broker")
    running.start()
    try:
        yield running
    finally:
        remove_broker(running)


def outbox_depth(path: Path) -> int:
    outbox = OutboxStore.open(path)
    try:
        return outbox.depth()
    finally:
        outbox.close()


def centre_keys(settings: Settings) -> set[tuple[str, str]]:
    url = settings.centre.database_url
    assert url is not None
    with open_centre_store(url) as store:
        return store.event_keys()


def test_round_trip_device_broker_ingest(
    tmp_path: Path, broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = tmp_path / "alerts.jsonl"
    script = "import sys; open(sys.argv[1], 'ab').write(sys.stdin.buffer.read() + b'\\n')"
    settings = sync_settings(
        tmp_path,
        host=broker.host,
        port=broker.port,
        centre={
            "alert_command": shlex.join([sys.executable, "-c", script, str(alerts)]),
            "alert_topic": "centre/alerts",
        },
    )
    watcher = Watcher(broker.host, broker.port, ["kiosk/hq/kiosk-01/+", "centre/alerts"])
    events = kiosk_events()
    write_events(settings.database_path, events)
    try:
        with IngestService(settings) as ingest:
            assert ingest.wait_subscribed(10), "the ingest did not subscribe"
            health = sync_once(settings, timeout=30)
            assert (health.depth, health.acknowledged, health.in_flight) == (0, 4, 0)
            wait_for(lambda: ingest.stats().inserted == 4, 10, "4 events at the centre")
            wait_for(lambda: alerts.exists() and alerts.read_bytes(), 10, "the alert command")
            wait_for(lambda: watcher.payloads("centre/alerts"), 10, "the alert topic")
    finally:
        watcher.close()

    assert centre_keys(settings) == {("kiosk-01", e.uid) for e in events}
    lockout = events[3]
    assert json.loads(alerts.read_text()) == lockout.payload
    assert json.loads(watcher.payloads("centre/alerts")[0]) == lockout.payload
    published = [json.loads(p) for p in watcher.payloads("kiosk/hq/kiosk-01/audit")]
    assert published == [e.payload for e in events]  # verbatim, in order
    assert watcher.payloads("kiosk/hq/kiosk-01/status") == [b"online", b"offline"]
    final = json.loads(watcher.payloads("kiosk/hq/kiosk-01/health")[-1])
    assert (final["depth"], final["device"], final["site"]) == (0, "kiosk-01", "hq")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("LOCKOUT ALERT" in m and "kiosk-01" in m for m in warnings)
    with open_centre_store(str(settings.centre.database_url)) as store:
        assert store.counts().pending_alerts == 0
    # the status is retained for anyone who looks later
    late = Watcher(broker.host, broker.port, ["kiosk/hq/kiosk-01/status"], client_id="late")
    try:
        wait_for(lambda: late.payloads("kiosk/hq/kiosk-01/status"), 5, "the retained status")
        assert late.payloads("kiosk/hq/kiosk-01/status") == [b"offline"]
    finally:
        late.close()


def test_duplicates_are_absorbed_and_impostors_dead_lettered(
    tmp_path: Path, broker: LocalBroker
) -> None:
    settings = sync_settings(tmp_path, host=broker.host, port=broker.port)
    events = kiosk_events()[:2]
    payload = json.dumps(events[0].payload).encode()
    raw = RawPublisher(broker.host, broker.port)
    with IngestService(settings) as ingest:
        assert ingest.wait_subscribed(10)
        raw.publish_all(
            [
                ("kiosk/hq/kiosk-01/audit", payload),
                ("kiosk/hq/kiosk-01/audit", payload),
                ("kiosk/hq/kiosk-02/audit", payload),  # another device's name on it
            ]
        )
        write_events(settings.database_path, events)
        sync_once(settings, timeout=30)  # events[0] a third time
        wait_for(lambda: ingest.stats().received == 5, 10, "5 messages at the ingest")
        wait_for(lambda: ingest.stats().queued == 0, 10, "the last batch written")
        stats = ingest.stats()
    raw.close()
    assert (stats.inserted, stats.duplicates, stats.dead_lettered) == (2, 2, 1)
    assert centre_keys(settings) == {("kiosk-01", e.uid) for e in events}
    with open_centre_store(str(settings.centre.database_url)) as store:
        (letter,) = store.dead_letters()
    assert "does not match the topic's device 'kiosk-02'" in letter.reason
    assert letter.payload == payload and letter.topic == "kiosk/hq/kiosk-02/audit"


def test_events_wait_for_a_subscriber_instead_of_being_dropped(
    tmp_path: Path, broker: LocalBroker
) -> None:
    settings = sync_settings(tmp_path, host=broker.host, port=broker.port)
    events = kiosk_events()
    write_events(settings.database_path, events)
    with OutboxPublisher(settings) as publisher:
        # mosquitto answers 0x10 "no matching subscribers" and drops the message: held back
        wait_for(lambda: (publisher.health() or None) and publisher.health().held_back, 10,
                 "the publisher holding events back")  # fmt: skip
        assert outbox_depth(settings.database_path) == 4
        with IngestService(settings) as ingest:
            assert ingest.wait_subscribed(10)
            assert publisher.wait_until_empty(20), "the held-back events were not sent"
            wait_for(lambda: ingest.stats().inserted == 4, 10, "4 events at the centre")
    assert centre_keys(settings) == {("kiosk-01", e.uid) for e in events}


def test_events_a_broker_acknowledged_but_lost_are_sent_again(
    tmp_path: Path, broker: LocalBroker
) -> None:
    # with require_subscriber off, mosquitto's "no matching subscribers" PUBACK counts as
    # delivered: the broker drops the events — as a broker killed before its save would
    settings = sync_settings(
        tmp_path, host=broker.host, port=broker.port, sync={"require_subscriber": False}
    )
    dropped = kiosk_events()
    write_events(settings.database_path, dropped)
    with OutboxPublisher(settings) as publisher:
        assert publisher.wait_until_empty(10)
        assert publisher.unconfirmed == 4
        with IngestService(settings) as ingest:
            assert ingest.wait_subscribed(10)
            later = kiosk_events()[:1]
            write_events(settings.database_path, later)
            publisher.notify()  # its receipt shows the centre is there: the others are missing
            wait_for(lambda: ingest.stats().inserted == 5, 20, "the dropped events re-sent")
            wait_for(lambda: publisher.unconfirmed == 0, 10, "every event confirmed")
    assert centre_keys(settings) == {("kiosk-01", e.uid) for e in dropped + later}


def test_broker_killed_and_restarted_while_10000_events_are_produced(
    tmp_path: Path, broker: LocalBroker
) -> None:
    settings = sync_settings(tmp_path, host=broker.host, port=broker.port)
    total, per_commit = 10_000, 200
    Database(settings.database_path).close()
    uids: list[str] = []
    failure: list[BaseException] = []

    publisher = OutboxPublisher(settings)

    def produce() -> None:  # the kiosk: events committed in bursts while sync runs
        try:
            database = Database(settings.database_path)
            repo = SqliteRepository(database, DeviceKeys.derive(os.urandom(32)))
            device = ev.DeviceInfo(device_id="kiosk-01", site="hq")
            for start in range(0, total, per_commit):
                batch = [
                    ev.authentication(
                        wall=time.time(),
                        device=device,
                        user=ev.UserRef(uid=str(i % 40), name=f"u{i % 40}"),
                        success=i % 4 != 0,
                        factor="pin+face",
                        reason="r",
                    )
                    for i in range(start, start + per_commit)
                ]
                repo.commit(Change(events=batch))
                uids.extend(e.uid for e in batch)
                publisher.notify()
                time.sleep(0.08)
            database.close()
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    with IngestService(settings) as ingest:
        assert ingest.wait_subscribed(10)
        publisher.start()
        producer = threading.Thread(target=produce)
        producer.start()
        try:
            kills = 0
            while producer.is_alive() or kills < 3:
                time.sleep(random.uniform(0.6, 1.2))
                broker.kill()
                time.sleep(random.uniform(0.1, 0.5))
                broker.start()
                kills += 1
            producer.join()
            assert not failure, failure
            assert kills >= 3
            assert publisher.wait_until_empty(120), "the outbox did not empty after the outages"
            wait_for(lambda: ingest.stats().inserted >= total, 60, "all events at the centre")
            wait_for(lambda: ingest.stats().queued == 0, 10, "the last batch written")
        finally:
            publisher.stop()
        stats = ingest.stats()
    keys = centre_keys(settings)
    assert len(uids) == total
    assert keys == {("kiosk-01", uid) for uid in uids}, (
        f"{len({('kiosk-01', u) for u in uids} - keys)} lost, "
        f"{len(keys - {('kiosk-01', u) for u in uids})} unexpected"
    )
    assert stats.inserted == total and stats.dead_lettered == 0


def _env(tmp_path: Path, broker: LocalBroker) -> dict[str, str]:
    config = tmp_path / "kiosk.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env.update(
        {
            "KIOSK_CONFIG": str(config),
            "KIOSK_STATE_DIR": str(tmp_path),
            "KIOSK_DEVICE__DEVICE_ID": "kiosk-01",
            "KIOSK_DEVICE__SITE": "hq",
            "KIOSK_SYNC__HOST": broker.host,
            "KIOSK_SYNC__PORT": str(broker.port),
            "KIOSK_SYNC__RECONNECT_MAX_S": "2",
            "KIOSK_SYNC__MAX_INFLIGHT": "50",
            "KIOSK_SYNC__CONFIRM_GRACE_S": "1",
            "KIOSK_CENTRE__CLIENT_ID": "ingest-cli",
            "KIOSK_CENTRE__BATCH_SIZE": "100",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def test_ingest_reports_ready_and_feeds_the_watchdog(tmp_path: Path, broker: LocalBroker) -> None:
    from tests.daemon_support import NotifySocket

    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**_env(tmp_path, broker), "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    ingest = subprocess.Popen(
        [sys.executable, "-m", "kiosk.cli", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        notify.wait("READY=1", 30)
        notify.wait("WATCHDOG=1", 5)
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(30) == 0
        notify.wait("STOPPING=1", 5)
    finally:
        ingest.kill()
        ingest.wait()


def test_publisher_killed_mid_stream_loses_nothing(tmp_path: Path, broker: LocalBroker) -> None:
    total = 6000
    uids = fill_outbox(tmp_path / "kiosk.db", device="kiosk-01", site="hq", count=total)
    env = _env(tmp_path, broker)
    ingest_log = tmp_path / "ingest.log"
    with ingest_log.open("wb") as log_file:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "kiosk.cli", "ingest"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    try:
        wait_for(lambda: b"connected to" in ingest_log.read_bytes(), 20, "the ingest connecting")
        centre = open_centre_store(f"sqlite:///{tmp_path / 'centre.db'}")
        try:
            for threshold in (1000, 3000):  # kill -9 the publisher twice, mid-stream
                sync = subprocess.Popen(
                    [sys.executable, "-m", "kiosk.cli", "sync", "--timeout", "120"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                wait_for(
                    lambda t=threshold: centre.counts().events >= t,
                    60,
                    f"{threshold} events at the centre",
                    step=0.01,
                )
                sync.send_signal(signal.SIGKILL)
                sync.wait(10)
                assert outbox_depth(tmp_path / "kiosk.db") > 0, "the sync finished before the kill"
            done = subprocess.run(
                [sys.executable, "-m", "kiosk.cli", "sync", "--timeout", "120"],
                env=env,
                capture_output=True,
                timeout=150,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            assert b"outbox empty" in done.stdout
            wait_for(lambda: centre.counts().events >= total, 30, "all events at the centre")
            keys = centre.event_keys()
        finally:
            centre.close()
    finally:
        ingest.send_signal(signal.SIGTERM)
        out, _ = ingest.communicate(timeout=30)
    assert ingest.returncode == 0, ingest_log.read_text()[-2000:]
    assert b"ingest stopped" in out
    assert keys == {("kiosk-01", uid) for uid in uids}
    assert outbox_depth(tmp_path / "kiosk.db") == 0


def _malformed(count: int) -> list[tuple[str, bytes]]:
    """Random bytes, broken JSON, wrong types, oversized, impostors — all different."""
    rng = random.Random(5)
    good = kiosk_events()[0].payload
    out: list[tuple[str, bytes]] = []
    topic = "kiosk/hq/kiosk-01/audit"
    for i in range(count):
        kind = 3 if i % 60 == 3 else i % 6  # one in 60 oversized: 64 KiB each adds up
        if kind == 3 and i % 60 != 3:
            kind = 1
        if kind == 0:
            payload = rng.randbytes(rng.randint(0, 300))
        elif kind == 1:
            payload = json.dumps({**good, "n": i}).encode()[: rng.randint(1, 200)]
        elif kind == 2:
            field = rng.choice(["class_uid", "time", "metadata", "device", "user", "type_uid"])
            payload = json.dumps({**good, field: [i], "n": i}).encode()
        elif kind == 3:
            payload = b"x" * (64 * 1024 + 1 + i)
        elif kind == 4:
            payload = json.dumps([i, "not an object"]).encode()
        else:
            payload = json.dumps({**good, "device": {"uid": f"impostor-{i}"}}).encode()
        out.append((topic, payload))
    return out


def test_10000_malformed_payloads_are_dead_lettered_and_the_ingest_carries_on(
    tmp_path: Path, broker: LocalBroker
) -> None:
    settings = sync_settings(
        tmp_path, host=broker.host, port=broker.port, centre={"dead_letter_max_bytes": 4096}
    )
    bad = _malformed(10_000)
    good = kiosk_events()
    raw = RawPublisher(broker.host, broker.port)
    with IngestService(settings) as ingest:
        assert ingest.wait_subscribed(10)
        raw.publish_all(bad[:5000])
        write_events(settings.database_path, good)
        sync_once(settings, timeout=30)  # good events in the middle of the bad ones
        raw.publish_all(bad[5000:])
        wait_for(lambda: ingest.stats().received == 10_004, 60, "all messages at the ingest")
        wait_for(lambda: ingest.stats().queued == 0, 20, "the last batch written")
        assert not ingest.failed.is_set()
        stats = ingest.stats()
    raw.close()
    assert (stats.dead_lettered, stats.inserted) == (10_000, 4)
    with open_centre_store(str(settings.centre.database_url)) as store:
        counts = store.counts()
        letters = store.dead_letters(limit=10_000)
    assert (counts.dead_letters, counts.events) == (10_000, 4)
    assert centre_keys(settings) == {("kiosk-01", e.uid) for e in good}
    reasons = {letter.reason.split(":")[0] for letter in letters}
    assert {"not UTF-8", "not JSON", "too large"} <= reasons
    assert max(letter.size for letter in letters) > 64 * 1024
    assert max(len(letter.payload) for letter in letters) == 4096  # bounded


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = BrokerTls(ca_file=pki.ca_cert, cert_file=pki.server_cert, key_file=pki.server_key)
    with LocalBroker(tmp_path / "broker", tls=tls) as broker:
        password = tmp_path / "password"
        password.write_text("not used by this broker\n")
        settings = sync_settings(
            tmp_path,
            host="127.0.0.1",
            port=broker.port,
            sync={
                "ca_file": pki.ca_cert,
                "cert_file": pki.client_cert,
                "key_file": pki.client_key,
                "username": "kiosk-01",
                "password_file": password,
            },
        )
        events = kiosk_events()
        write_events(settings.database_path, events)
        with IngestService(settings) as ingest:
            assert ingest.wait_subscribed(10), broker.log_tail()
            sync_once(settings, timeout=30)
            wait_for(lambda: ingest.stats().inserted == 4, 10, "4 events over TLS")
        assert centre_keys(settings) == {("kiosk-01", e.uid) for e in events}

        for name, cert, key in [
            ("no-cert", None, None),
            ("rogue", pki.rogue_cert, pki.rogue_key),
        ]:
            refused = sync_settings(
                tmp_path / name,
                host="127.0.0.1",
                port=broker.port,
                device=f"kiosk-{name}",
                sync={"ca_file": pki.ca_cert, "cert_file": cert, "key_file": key},
            )
            write_events(refused.database_path, kiosk_events()[:1])
            publisher = OutboxPublisher(refused)
            publisher.start()
            try:
                time.sleep(2.5)
                assert not publisher.connected, f"a client with {name} was let in"
                assert outbox_depth(refused.database_path) == 1
            finally:
                publisher.stop()
        assert "certificate" in broker.log_tail(40).lower()


def test_a_retired_worker_hands_over_what_was_queued_for_it(
    tmp_path: Path, broker: LocalBroker
) -> None:
    # receipts off: with them the device would route around the absent worker by itself
    settings = sync_settings(
        tmp_path, host=broker.host, port=broker.port, sync={"confirm_grace_s": 0}
    )
    one = IngestService(settings, client_id="worker-1")
    two = IngestService(settings, client_id="worker-2")
    one.start()
    two.start()
    assert one.wait_subscribed(10) and two.wait_subscribed(10)
    two.stop()  # away, but its session (and its share of the messages) stays at the broker
    first = fill_outbox(settings.database_path, device="kiosk-01", site="hq", count=200)
    sync_once(settings, timeout=30)
    wait_for(lambda: one.stats().inserted > 0, 10, "worker 1 taking its share")
    time.sleep(0.5)
    assert one.stats().inserted < 200, "mosquitto gave worker 1 everything"
    retiring = IngestService(settings, client_id="worker-2", retire=True)
    retiring.run(threading.Event(), idle_exit_s=1.0)
    assert retiring.stats().inserted + one.stats().inserted == 200
    second = fill_outbox(settings.database_path, device="kiosk-01", site="hq", count=100)
    sync_once(settings, timeout=30)
    wait_for(lambda: one.stats().inserted == 300 - retiring.stats().inserted, 10,
             "worker 1 taking everything once worker 2 is retired")  # fmt: skip
    one.stop()
    assert centre_keys(settings) == {("kiosk-01", u) for u in first + second}
