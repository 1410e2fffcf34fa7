"""The ``kiosk`` commands of audit sync: ``sync``, ``ingest`` and ``bench sync``.

``kiosk sync`` publishes every unsent outbox row and waits for the broker's
PUBACKs: exit 0 when the outbox is empty, 69 when it is not after ``--timeout``
(broker unreachable, no ingest subscribed, events refused: the log says which),
75 when another process (the daemon) is already syncing or the database is busy,
78 configuration. ``kiosk ingest`` is the centre's long-running service; SIGTERM
or Ctrl-C stops it cleanly (what has arrived is written and acknowledged first).
``kiosk bench sync`` times device → broker → ingest on loopback.

Until ``kiosk.cli`` registers these (``register_sync(sub)``), the same commands
run as ``python -m kiosk.cli_sync sync|ingest|bench sync …``.
"""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType
from typing import Any

from kiosk.cli_io import out, out_json
from kiosk.config import Settings

log = logging.getLogger("kiosk")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.sync.publisher import sync_once

    signal.signal(signal.SIGTERM, _interrupt)
    health = sync_once(settings, timeout=args.timeout)
    if args.json:
        out_json(health.as_dict())
    else:
        pending = (
            f", {health.unconfirmed} not yet confirmed by the centre" if health.unconfirmed else ""
        )
        out(
            f"outbox empty: {health.acknowledged} event(s) sent to "
            f"{settings.sync.host}:{settings.sync.port}{pending}"
        )
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.daemon.systemd import stop_on_signals
    from kiosk.sync.ingest import IngestService

    stop = stop_on_signals()
    service = IngestService(
        settings,
        database_url=args.database_url,
        client_id=args.client_id,
        retire=args.retire,
    )
    service.run(stop, idle_exit_s=args.idle_exit if args.retire else None)
    stats = service.stats()
    out(
        f"ingest stopped: {stats.inserted} event(s) stored, {stats.duplicates} duplicate(s) "
        f"absorbed, {stats.dead_lettered} dead-lettered, {stats.alerts} alert(s)"
    )
    return 0


def add_sync_bench_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``kiosk bench sync`` (the caller adds ``--json``)."""
    parser.add_argument(
        "--events", type=int, default=10000, help="events per phase (default 10000)"
    )
    parser.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="use this broker (plain TCP) instead of a mosquitto of the bench's own",
    )


def cmd_bench_sync(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.sync.bench import run_sync_bench

    report = run_sync_bench(settings, events=args.events, broker=args.broker)
    if args.json:
        out_json(report.as_dict())
    else:
        for line in report.lines():
            out(line)
    return 0


def register_sync(sub: Any) -> None:
    """Add the ``sync`` and ``ingest`` commands to the ``kiosk`` parser."""
    p = sub.add_parser(
        "sync",
        help="publish the audit outbox now and wait for the broker to acknowledge it",
        description="One-shot catch-up: every unsent audit event goes to the broker; exit 0 "
        "once the outbox is empty, 69 if it is not after --timeout. Refuses to run beside "
        "the daemon's own publisher.",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds (300)"
    )
    p.add_argument("--json", action="store_true", help="the final health report as JSON")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser(
        "ingest",
        help="the centre's service: store every device's audit events once (runs until stopped)",
        description="Subscribes to $share/<group>/<prefix>/+/+/audit, validates each event, "
        "writes it to SQLite (default <state_dir>/centre.db) or PostgreSQL, dead-letters "
        "malformed payloads and raises lockout alerts. SIGTERM stops it cleanly.",
    )
    p.add_argument("--database-url", help="override centre.database_url")
    p.add_argument("--client-id", help="override centre.client_id (one per worker)")
    p.add_argument(
        "--retire",
        action="store_true",
        help="take this worker out for good: unsubscribe, drain its queue, end its session",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        default=5.0,
        help="with --retire: stop after this many seconds without a message (5)",
    )
    p.set_defaults(func=cmd_ingest)
