"""The daemon as a whole: systemd notification, watchdog, SIGTERM, presence, step-up, keypad.

The real models, database, screen server and step-up server run; the camera is a replay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.devices import Devices
from kiosk.devices.settings import DeviceIOSettings
from kiosk.stepup import create_signing_key, load_signing_key, verify_assertion
from tests.daemon_support import (
    NotifySocket,
    add_user,
    audit,
    daemon_settings,
    running,
    sequence,
    type_keys,
    wait_for,
    warped,
)
from tests.test_stepup import request

PIN = "274913"
BLANK = np.full((480, 640, 3), 90, np.uint8)


@pytest.fixture
def obama_kiosk(tmp_path: Path, models_dir: Path, pipeline, load) -> Callable[..., object]:
    """Settings with Obama (staff 1001) enrolled; still photos, so track continuity only."""

    def make(**overrides: object):
        fields = {"liveness": {"mode": "continuity"}, **overrides}
        settings = daemon_settings(tmp_path, models_dir, **fields)
        photos = [load("obama.jpg"), load("obama2.jpg"), warped(load("obama.jpg"))]
        add_user(settings, "Obama", "1001", PIN, photos, pipeline, tmp_path / "enrol")
        return settings

    return make


def sign_in(kiosk) -> None:
    type_keys(kiosk, [*"1001", "enter", *PIN, "enter"])


# --- systemd ---------------------------------------------------------------------------------


def _daemon(tmp_path: Path, models_dir: Path, source: Path, **env: str) -> tuple:
    state = tmp_path / "state"
    settings = daemon_settings(tmp_path, models_dir)
    notify = NotifySocket(tmp_path / "notify.sock")
    environ = {
        **os.environ,
        "KIOSK_STATE_DIR": str(state),
        "KIOSK_MODELS_DIR": str(settings.models_path),
        "KIOSK_SCREEN__PORT": "0",
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1000000",
        **env,
    }
    environ.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk.cli", "run", "--source", str(source)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, notify


def test_run_reports_ready_feeds_the_watchdog_and_stops_on_sigterm(
    tmp_path: Path, models_dir: Path, sample_image
) -> None:
    proc, notify = _daemon(tmp_path, models_dir, sample_image("obama3.jpg"))
    try:
        ready = notify.wait("READY=1", 90)
        url = next(f for f in ready.split("\n") if f.startswith("STATUS=")).split()[1].rstrip(";")
        assert url.startswith("http://127.0.0.1:")
        notify.wait("WATCHDOG=1", 10)
        notify.wait("WATCHDOG=1", 10)
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - http on loopback
            assert page.status == 200
            assert b'name="kiosk-token"' in page.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        notify.wait("STOPPING=1", 5)
    finally:
        proc.kill()
        proc.wait()
    assert "SIGTERM received" in proc.stderr.read()


def test_the_watchdog_starves_when_frames_stop(
    tmp_path: Path, models_dir: Path, sample_image
) -> None:
    # A replay that does not loop ends after one frame: the camera "stopped".
    proc, notify = _daemon(
        tmp_path,
        models_dir,
        sample_image("obama3.jpg"),
        KIOSK_CAMERA__LOOP="false",
        KIOSK_DAEMON__FRAME_STALE_S="1",
    )
    try:
        notify.wait("READY=1", 90)
        unhealthy = notify.wait("STATUS=unhealthy: no camera frame (the replay has ended)", 15)
        assert "WATCHDOG=1" not in unhealthy
        later = notify.drain(3.0)
        assert not any("WATCHDOG=1" in m for m in later), later
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_run_without_a_device_secret_fails_closed(tmp_path: Path, models_dir: Path) -> None:
    env = {
        **os.environ,
        "KIOSK_STATE_DIR": str(tmp_path / "empty"),
        "KIOSK_MODELS_DIR": str(models_dir),
    }
    result = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "run", "--no-screen"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "kiosk secret init" in result.stderr


# --- presence -------------------------------------------------------------------------------


def test_a_session_locks_when_the_user_leaves_and_it_is_audited(
    tmp_path: Path, obama_kiosk, load
) -> None:
    settings = obama_kiosk(presence={"absent_s": 1.5, "interval_s": 0.2})
    frames = sequence(tmp_path / "leaves", [(load("obama3.jpg"), 4), (BLANK, 40)])
    from kiosk.camera import FolderSource

    with running(settings, FolderSource(frames, fps=15, repeat=15)) as kiosk:
        sign_in(kiosk)
        wait_for(lambda: kiosk.broadcaster.view.screen == "session", what="the session")
        assert kiosk.current_user() is not None
        view = wait_for(
            lambda: kiosk.broadcaster.view.result == "session_locked" and kiosk.broadcaster.view,
            what="the lock",
        )
        assert view.message == "Session locked: you left the terminal."
        assert kiosk.current_user() is None
    logoffs = [e for e in audit(settings) if e.get("activity_id") == 2]
    assert [e["status_detail"] for e in logoffs] == ["session locked: no face seen"]


def test_a_session_locks_when_someone_else_sits_down(tmp_path: Path, obama_kiosk, load) -> None:
    settings = obama_kiosk(presence={"absent_s": 30, "interval_s": 0.2, "mismatch_checks": 3})
    frames = sequence(tmp_path / "swap", [(load("obama3.jpg"), 4), (load("biden.jpg"), 40)])
    from kiosk.camera import FolderSource

    with running(settings, FolderSource(frames, fps=15, repeat=15)) as kiosk:
        sign_in(kiosk)
        wait_for(lambda: kiosk.broadcaster.view.screen == "session", what="the session")
        wait_for(lambda: kiosk.broadcaster.view.result == "session_locked", what="the lock")
        assert kiosk.broadcaster.view.message == "Session locked: someone else is at the terminal."
    details = [e["status_detail"] for e in audit(settings) if e.get("activity_id") == 2]
    assert details == ["session locked: the face is not the session's user"]


def test_the_user_who_stays_keeps_the_session_and_sigterm_locks_it(
    tmp_path: Path, obama_kiosk, sample_image
) -> None:
    settings = obama_kiosk(presence={"absent_s": 1.0, "interval_s": 0.2})
    from kiosk.camera import ImageSource

    with running(settings, ImageSource(sample_image("obama3.jpg"), fps=15, loop=True)) as kiosk:
        sign_in(kiosk)
        wait_for(lambda: kiosk.broadcaster.view.screen == "session", what="the session")
        time.sleep(3.0)  # three times the absence limit: the user is still there
        assert kiosk.broadcaster.view.screen == "session"
    details = [e["status_detail"] for e in audit(settings) if e.get("activity_id") == 2]
    assert details == ["session locked: the kiosk stopped"]


# --- step-up --------------------------------------------------------------------------------


def test_step_up_through_the_daemon_signs_for_the_session_user(
    tmp_path: Path, obama_kiosk, sample_image
) -> None:
    sock = tmp_path / "stepup.sock"
    settings = obama_kiosk(
        stepup={
            "enabled": True,
            "socket_path": sock,
            "allowed_uids": [os.getuid()],
            "audience": "tests",
        },
    )
    create_signing_key(settings.state_dir / "stepup-ed25519.pem")
    from kiosk.camera import ImageSource

    with running(settings, ImageSource(sample_image("obama3.jpg"), fps=15, loop=True)) as kiosk:
        status, _, body = request(sock, {"action": "refund.approve", "max_age_s": 0})
        assert status == 403 and body["error"] == "no_session"
        sign_in(kiosk)
        wait_for(lambda: kiosk.broadcaster.view.screen == "session", what="the session")
        status, _, body = request(sock, {"action": "refund.approve", "max_age_s": 0})
        assert status == 200, body
        assert body["verification"] == "fresh"
        status, _, recent = request(sock, {"action": "refund.approve", "max_age_s": 60})
        assert status == 200 and recent["verification"] == "recent"
    public = load_signing_key(settings.state_dir / "stepup-ed25519.pem").public_key()
    claims = verify_assertion(
        body["assertion"], public, audience="tests", max_age=60, action="refund.approve"
    )
    assert claims.subject == "user:1" and claims.name == "Obama"
    steps = [e for e in audit(settings) if e.get("unmapped", {}).get("factor") == "step-up"]
    assert len(steps) == 3


# --- the hardware keypad --------------------------------------------------------------------


def test_the_hardware_keypad_types_into_the_same_pin_pad(
    tmp_path: Path, obama_kiosk, sample_image
) -> None:
    settings = obama_kiosk()
    keys = {**{str(d): 2 + d for d in range(10)}, "*": 20, "#": 21}
    factory = MockFactory()
    io = DeviceIOSettings.model_validate(
        {"keypad": {"enabled": True, "kind": "buttons", "button_pins": keys, "bounce_s": 0.001}}
    )
    from kiosk.camera import ImageSource

    camera = ImageSource(sample_image("obama3.jpg"), fps=15, loop=True)
    with (
        Devices(io, pin_factory=factory) as devices,
        running(settings, camera, devices=devices) as kiosk,
    ):

        def press(key: str) -> None:
            pin = factory.pin(keys[key])
            pin.drive_low()
            time.sleep(0.02)
            pin.drive_high()
            time.sleep(0.02)

        for key in "1001":
            press(key)
        wait_for(lambda: kiosk.broadcaster.view.entry.staff_no == "1001", what="staff no")
        press("#")
        for key in PIN:
            press(key)
        wait_for(lambda: kiosk.broadcaster.view.entry.pin_length == len(PIN), what="the PIN")
        assert json.dumps(kiosk.broadcaster.current()).find(PIN) == -1  # never on the screen
        press("#")
        wait_for(lambda: kiosk.broadcaster.view.screen == "session", what="the session")


# --- faults ---------------------------------------------------------------------------------


def test_a_database_that_refuses_writes_lets_nobody_in(
    tmp_path: Path, obama_kiosk, sample_image
) -> None:
    settings = obama_kiosk()
    from kiosk.camera import ImageSource
    from kiosk.daemon.engine import MSG_FAULT

    before = len(audit(settings))
    with running(settings, ImageSource(sample_image("obama3.jpg"), fps=15, loop=True)) as kiosk:
        conn = kiosk.services.database.db.conn
        kiosk.submit(lambda: conn.execute("PRAGMA query_only = ON") and None).result(10)
        type_keys(kiosk, [*"1001", "enter", *PIN])
        assert kiosk.key("enter").result(10) == MSG_FAULT
        view = kiosk.broadcaster.view
        assert (view.screen, view.result, view.message) == ("result", "error", MSG_FAULT)
        time.sleep(1.0)
        assert kiosk.current_user() is None  # failed closed: no session
        kiosk.submit(lambda: conn.execute("PRAGMA query_only = OFF") and None).result(10)
    assert len(audit(settings)) >= before  # nothing was lost
