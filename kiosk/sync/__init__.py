"""MQTT: the device publisher (outbox → broker) and the central ingest (broker → database)."""
