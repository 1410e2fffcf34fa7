"""The centre on PostgreSQL: the same tables, the same once-only guarantee.

A PostgreSQL cluster of its own is started for this module from Debian's server
binaries (see :class:`tests.mqtt_support.PostgresServer`); each test gets a fresh
database in it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from kiosk.store.centre import DeadLetter, PostgresCentreStore, open_centre_store
from kiosk.store.db import StoreError
from kiosk.sync.ingest import IngestService
from kiosk.sync.payload import validate_event
from kiosk.sync.publisher import sync_once
from tests.mqtt_support import (
    TOPIC,
    PostgresServer,
    RawPublisher,
    broker_in,
    kiosk_events,
    needs_mosquitto,
    needs_postgres,
    remove_broker,
    stored_payloads,
    sync_settings,
    wait_for,
    write_events,
)

pytestmark = needs_postgres

_names = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        server.stop()
        pytest.fail(f"could not start PostgreSQL for the tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    name = f"centre_{next(_names)}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


def test_the_centre_stores_each_event_once_in_postgres(tmp_path: Path, database_url: str) -> None:
    events = [
        validate_event(TOPIC, p, prefix="kiosk")
        for p in stored_payloads(tmp_path / "kiosk.db", kiosk_events())
    ]
    dead = DeadLetter(topic=TOPIC, reason="not JSON", size=4, payload=b"\x00\xff{x")
    with open_centre_store(database_url) as store:
        assert isinstance(store, PostgresCentreStore)
        first = store.write_batch(events + events[:2], [dead], 1)
        assert (first.inserted, first.duplicates, first.dead_lettered) == (4, 2, 1)
        assert [a.uid for a in first.new_alerts] == [events[3].uid]
        again = store.write_batch(events, [], 2)
        assert (again.inserted, again.duplicates) == (0, 4)
        assert store.event_keys() == {("kiosk-01", e.uid) for e in events}
        assert store.dead_letters()[0].payload == b"\x00\xff{x"
        store.mark_alerted("kiosk-01", events[3].uid, 3)
        assert store.counts().pending_alerts == 0
    # a second worker opening the same database finds the schema in place
    with open_centre_store(database_url) as store:
        assert store.counts().events == 4


def test_a_wrong_postgres_url_is_a_clear_error(postgres: PostgresServer) -> None:
    url = postgres.url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StoreError, match="cannot connect to the centre database"):
        open_centre_store(url)
    with pytest.raises(StoreError, match=r"\*\*\*"):  # the password is never shown
        open_centre_store("postgresql://kiosk:s3cret@127.0.0.1:1/x")


@needs_mosquitto
def test_ingest_into_postgres_end_to_end(tmp_path: Path, database_url: str) -> None:
    broker = broker_in(tmp_path / "broker")
    broker.start()
    try:
        settings = sync_settings(
            tmp_path, host=broker.host, port=broker.port, centre_url=database_url
        )
        events = kiosk_events()
        write_events(settings.database_path, events)
        raw = RawPublisher(broker.host, broker.port)
        with IngestService(settings) as ingest:
            assert ingest.wait_subscribed(10)
            sync_once(settings, timeout=30)
            raw.publish_all(
                [
                    ("kiosk/hq/kiosk-01/audit", json.dumps(events[0].payload).encode()),
                    ("kiosk/hq/kiosk-01/audit", b"{broken"),
                ]
            )
            wait_for(lambda: ingest.stats().received == 6, 10, "6 messages at the ingest")
            wait_for(lambda: ingest.stats().queued == 0, 10, "the last batch written")
            wait_for(lambda: ingest.stats().alerts == 1, 10, "the lockout alert")
            stats = ingest.stats()
        raw.close()
    finally:
        remove_broker(broker)
    assert (stats.inserted, stats.duplicates, stats.dead_lettered) == (4, 1, 1)
    with open_centre_store(database_url) as store:
        assert store.event_keys() == {("kiosk-01", e.uid) for e in events}
        assert store.counts().dead_letters == 1
        assert store.counts().pending_alerts == 0
