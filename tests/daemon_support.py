"""The real daemon in-process for tests: real models, database and screen; a camera replay."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kiosk.app import enrol, open_services
from kiosk.auth.admin import UserAdmin
from kiosk.auth.liveness import LivenessChecker
from kiosk.bench_flow import side_view as warped  # noqa: F401 - for the tests
from kiosk.camera import FolderSource, FrameSource
from kiosk.config import Settings
from kiosk.daemon.engine import Kiosk, running_in_thread
from kiosk.devices import Devices
from kiosk.secrets import create_secret
from kiosk.vision import FacePipeline

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BLINK_CLIP = SHARED_DATA / "videos" / "blink_woman_frontal.webm"


def daemon_settings(root: Path, models_dir: Path, **overrides: Any) -> Settings:
    """Settings of a test kiosk: its own state dir, a free screen port, a fast PIN hash."""
    fields: dict[str, Any] = {
        "state_dir": root / "state",
        "models_dir": models_dir,
        "auth": {"pin_kdf_memory_kib": 1024, "pin_kdf_time_cost": 1},
        "screen": {"port": 0, "result_hold_s": 30, "lockout_hold_s": 60},
    }
    fields.update(overrides)
    settings = Settings(**fields)
    secret = settings.state_dir / "device-secret"
    if not secret.exists():
        create_secret(secret)
    return settings


def add_user(
    settings: Settings,
    name: str,
    staff_no: str,
    pin: str,
    enrol_from: list[np.ndarray] | None,
    pipeline: FacePipeline,
    folder: Path,
    *,
    totp: bool = False,
) -> str | None:
    """Add (and enrol, when photos are given) a user; returns its TOTP URI if asked for."""
    with open_services(settings) as services:
        admin = UserAdmin(
            services.repo, services.hasher, services.clock, services.device, actor="admin"
        )
        user = admin.add(name, pin, staff_no=staff_no)
        if enrol_from:
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(enrol_from):
                cv2.imwrite(str(folder / f"{i:02d}.png"), image)
            enrol(services, pipeline, user, FolderSource(folder), recorded_by="admin")
        return admin.enable_totp(name) if totp else None


def frames_of(clip: Path, indices: list[int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    found: list[np.ndarray] = []
    index = 0
    while len(found) < len(indices):
        ok, frame = capture.read()
        if not ok:
            break
        if index in indices:
            found.append(frame)
        index += 1
    capture.release()
    return found


def sequence(folder: Path, parts: list[tuple[np.ndarray, int]]) -> Path:
    """A folder of frames: each image its count of times, in order (replay it with ``repeat``)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    n = 0
    for image, count in parts:
        for _ in range(count):
            cv2.imwrite(str(folder / f"{n:05d}.png"), image)
            n += 1
    return folder


def running(
    settings: Settings,
    source: FrameSource,
    *,
    liveness: LivenessChecker | None = None,
    devices: Devices | None = None,
) -> AbstractContextManager[Kiosk]:
    """The daemon running on a thread of its own, with a fresh pipeline."""
    return running_in_thread(settings, source, liveness=liveness, devices=devices)


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def audit(settings: Settings) -> list[dict[str, Any]]:
    with open_services(settings) as services:
        return [row.payload for row in services.repo.audit(limit=10_000)]


def type_keys(kiosk: Kiosk, keys: list[str]) -> None:
    for key in keys:
        assert kiosk.key(key).result(10) is None


def logons(events: list[dict[str, Any]], *, success: bool | None = None) -> list[dict[str, Any]]:
    """The sign-in events (OCSF authentication, logon), granted or denied or both."""
    return [
        e
        for e in events
        if e["class_uid"] == 3002
        and e["activity_id"] == 1
        and (success is None or e["status_id"] == (1 if success else 2))
    ]


class NotifySocket:
    """A stand-in for systemd's notification socket: collects what a service sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait(self, field: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(data)
            if field in data.split("\n"):
                return data
        raise AssertionError(f"no {field} from the daemon; got {self.messages}")

    def drain(self, seconds: float) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return got
