"""Building a paho-mqtt client from the settings: MQTT 5, TLS, credentials, backoff.

Both ends use it: the device publisher and the centre's ingest connect with the
``[sync]`` settings (host, port, TLS files, user name and password file, keep-alive,
session expiry). On a centre, ``[sync]`` describes how the ingest reaches its
broker; on a device, how the device reaches it.

* MQTT 5, paho's ``CallbackAPIVersion.VERSION2``.
* Persistent sessions: ``clean_start=False`` with ``SessionExpiryInterval`` —
  the broker keeps the session (subscriptions, unacknowledged QoS 1 messages)
  while the client is away.
* TLS when a CA file or a client certificate is configured: the broker's
  certificate is verified against the CA (and its host name); the client
  certificate and key are sent for mutual TLS.
* The password is read from ``password_file`` (never from the config itself),
  trailing newline stripped.
* Reconnects: paho's exponential backoff from ``reconnect_min_s`` doubling to
  ``reconnect_max_s``, reset after a successful CONNACK.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk.config import SyncSettings
from kiosk.errors import ConfigError


@dataclass(frozen=True)
class Will:
    """A last will: published by the broker if the client vanishes."""

    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


def read_password(settings: SyncSettings) -> str | None:
    """The MQTT password from ``password_file``, or None when none is configured."""
    if settings.password_file is None:
        return None
    try:
        text = settings.password_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"sync.password_file {settings.password_file}: {exc.strerror or exc}; the file must "
            "be readable by the kiosk user"
        ) from exc
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"sync.password_file {settings.password_file} is empty")
    return password


def tls_context(settings: SyncSettings) -> ssl.SSLContext | None:
    """The TLS context the settings ask for (None: plain TCP)."""
    if settings.ca_file is None and settings.cert_file is None:
        return None
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"sync.{name} {path} does not exist or is not a file")
    if settings.key_file is not None and settings.cert_file is None:
        raise ConfigError("sync.key_file is set without sync.cert_file")
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        try:
            context.load_cert_chain(
                str(settings.cert_file),
                str(settings.key_file) if settings.key_file is not None else None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the client certificate {settings.cert_file}: {exc}"
            ) from exc
    return context


def build_client(
    settings: SyncSettings,
    client_id: str,
    *,
    will: Will | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A configured, not yet connected MQTT 5 client."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    context = tls_context(settings)
    if context is not None:
        client.tls_set_context(context)
    password = read_password(settings)
    if password is not None and settings.username is None:
        raise ConfigError("sync.password_file is set without sync.username")
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
    return client


def connect_properties(settings: SyncSettings, *, receive_maximum: int | None = None) -> Properties:
    """CONNECT properties of a persistent session."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def start_connecting(
    client: mqtt.Client, settings: SyncSettings, *, receive_maximum: int | None = None
) -> None:
    """Connect in the background (paho's network thread) with a persistent session."""
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive_s,
        clean_start=False,
        properties=connect_properties(settings, receive_maximum=receive_maximum),
    )
    client.loop_start()
