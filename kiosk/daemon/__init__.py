"""The kiosk daemon (``kiosk run``): camera, face pipeline, sign-in flow, screen, devices.

:func:`serve` builds it from the settings and runs it until SIGTERM/SIGINT;
:class:`~kiosk.daemon.engine.Kiosk` is the daemon itself (tests and the bench
build it directly).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kiosk.config import Settings

log = logging.getLogger(__name__)


def serve(
    settings: Settings, *, source_spec: str | None = None, demo_dir: Path | None = None
) -> int:
    """Run the daemon on the main thread until SIGTERM or SIGINT; returns the exit code.

    Start-up fails closed, before systemd hears ``READY=1``: a missing device
    secret, an unverified model, a database it cannot open or a port in use
    stop it with a message saying what to do.
    """
    from kiosk.app import open_services
    from kiosk.camera import open_source
    from kiosk.daemon.engine import Kiosk
    from kiosk.daemon.systemd import stop_on_signals
    from kiosk.vision import FacePipeline

    stop = stop_on_signals()
    with open_services(settings) as services:
        pipeline = FacePipeline.from_settings(settings)
        cam = settings.camera
        source = open_source(
            source_spec or cam.source,
            width=cam.width,
            height=cam.height,
            fps=cam.fps,
            loop=cam.loop,
            demo_dir=demo_dir,
        )
        if source.is_replay:
            log.warning("no live camera: %s (the screen says so)", source.label)
        Kiosk(settings, services, pipeline, source).run(stop)
    return 0
