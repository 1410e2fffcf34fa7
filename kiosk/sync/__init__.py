"""MQTT: the device publisher (outbox → broker) and the central ingest (broker → database).

* :mod:`kiosk.sync.publisher` — :class:`~kiosk.sync.publisher.OutboxPublisher`, owned by
  the kiosk daemon, and ``sync_once`` for ``kiosk sync``;
* :mod:`kiosk.sync.ingest` — :class:`~kiosk.sync.ingest.IngestService`, ``kiosk ingest``;
* :mod:`kiosk.sync.payload` — the topic layout and the event schema the centre accepts;
* :mod:`kiosk.sync.confirm` — the centre's receipts, and re-sending what a broker lost;
* :mod:`kiosk.sync.client` — paho clients from the settings (MQTT 5, TLS, credentials);
* :mod:`kiosk.sync.broker` — a mosquitto of our own for tests and ``kiosk bench sync``;
* :mod:`kiosk.sync.bench` — ``kiosk bench sync``.

SQL lives in :mod:`kiosk.store.outbox` (device) and :mod:`kiosk.store.centre` (centre).
"""
