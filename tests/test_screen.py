"""The kiosk screen in Debian's headless Chromium, driven by Playwright, on the real daemon.

Each test starts the daemon (real models, database and screen server) on a replayed
camera and uses the page as a person would: the on-screen PIN pad or the keyboard.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyotp
import pytest

from kiosk.camera import ImageSource, VideoSource
from kiosk.liveness.challenge import ChallengeLiveness, Kind, LivenessPolicy
from tests.daemon_support import (
    BLINK_CLIP,
    add_user,
    audit,
    daemon_settings,
    frames_of,
    logons,
    running,
    warped,
)

playwright = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PIN = "274913"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run scripts/setup.sh dev")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1024, "height": 600})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def on_screen(page: Any, screen: str) -> None:
    page.wait_for_selector(f'body[data-screen="{screen}"]', state="attached", timeout=WAIT_MS)


def tap(page: Any, keys: str) -> None:
    for key in keys:
        page.click(f'#pad button[data-key="{key}"]')


def sign_in_by_pad(page: Any, staff_no: str, pin: str) -> None:
    tap(page, staff_no)
    page.click('#pad button[data-key="enter"]')
    page.wait_for_selector("#field-pin.active", timeout=WAIT_MS)
    tap(page, pin)
    assert pin not in page.content()  # the PIN lives in the daemon, never in the page
    page.click('#pad button[data-key="enter"]')


def sign_in_by_keyboard(page: Any, staff_no: str, pin: str) -> None:
    page.keyboard.type(staff_no)
    page.keyboard.press("Enter")
    page.keyboard.type(pin)
    page.keyboard.press("Enter")


def no_score_shown(page: Any) -> None:
    text = page.inner_text("body")
    assert not re.search(r"\b0\.\d{2,}\b", text), "a score-like number is on the screen"


def obama(tmp_path: Path, models_dir: Path, pipeline: Any, load: Any, **overrides: Any) -> Any:
    fields = {"liveness": {"mode": "continuity"}, **overrides}
    settings = daemon_settings(tmp_path, models_dir, **fields)
    photos = [load("obama.jpg"), load("obama2.jpg"), warped(load("obama.jpg"))]
    secret = add_user(
        settings, "Obama", "1001", PIN, photos, pipeline, tmp_path / "enrol", totp=True
    )
    return settings, secret


@pytest.mark.skipif(not BLINK_CLIP.is_file(), reason="needs ../shared/data (the blink clip)")
def test_pin_then_a_blink_challenge_then_granted(
    page: Any, tmp_path: Path, models_dir: Path, pipeline: Any
) -> None:
    # The real challenge flow; the replayed clip can only ever blink, so blink is what is asked.
    settings = daemon_settings(tmp_path, models_dir)
    frames = frames_of(BLINK_CLIP, [5, 60, 130, 200])
    add_user(settings, "Ana", "1001", PIN, frames, pipeline, tmp_path / "enrol")
    blink = ChallengeLiveness(LivenessPolicy(challenges=1, kinds=(Kind.BLINK,)))
    source = VideoSource(BLINK_CLIP, realtime=True, loop=True)
    with running(settings, source, liveness=blink) as kiosk:
        assert kiosk.screen is not None
        page.goto(kiosk.screen.url)
        on_screen(page, "idle")
        assert page.is_visible("#replay-banner")  # a replay is never taken for a camera
        sign_in_by_pad(page, "1001", PIN)
        on_screen(page, "face")
        page.wait_for_selector("#prompt:has-text('Blink')", timeout=WAIT_MS)
        assert page.get_attribute("#progress", "role") == "progressbar"
        no_score_shown(page)
        on_screen(page, "session")
        assert "Ana" in page.inner_text("#session-user")
        page.click("#lock")
        on_screen(page, "result")
        assert "Session locked" in page.inner_text("#result-reason")
    granted = logons(audit(settings), success=True)
    assert [e["unmapped"]["factor"] for e in granted] == ["pin+face"]


def test_another_persons_face_is_denied_with_a_reason(
    page: Any, tmp_path: Path, models_dir: Path, pipeline: Any, load: Any, sample_image: Any
) -> None:
    settings, _ = obama(tmp_path, models_dir, pipeline, load)
    with running(settings, ImageSource(sample_image("biden.jpg"), fps=15, loop=True)) as kiosk:
        assert kiosk.screen is not None
        page.goto(kiosk.screen.url)
        on_screen(page, "idle")
        sign_in_by_keyboard(page, "1001", PIN)
        on_screen(page, "result")
        assert page.inner_text("#result-word") == "Not granted"
        assert "Face not recognised" in page.inner_text("#result-reason")
        no_score_shown(page)
    denied = [e["status_detail"] for e in logons(audit(settings), success=False)]
    assert denied == ["face did not match"]


def test_three_failures_show_the_lockout_countdown(
    page: Any, tmp_path: Path, models_dir: Path, pipeline: Any, load: Any, sample_image: Any
) -> None:
    settings, _ = obama(tmp_path, models_dir, pipeline, load)
    with running(settings, ImageSource(sample_image("obama3.jpg"), fps=15, loop=True)) as kiosk:
        assert kiosk.screen is not None
        page.goto(kiosk.screen.url)
        for attempt in range(3):
            on_screen(page, "idle")
            sign_in_by_keyboard(page, "1001", "0000")
            if attempt < 2:
                on_screen(page, "result")
                assert "not recognised" in page.inner_text("#result-reason")
                page.click("#result-done")
        on_screen(page, "lockout")
        assert "Too many failed attempts" in page.inner_text("#lockout-reason")
        first = page.inner_text("#countdown")
        assert re.fullmatch(r"\d{1,2}:\d{2}", first), first
        time.sleep(2.2)
        second = page.inner_text("#countdown")
        assert second < first, (first, second)  # it counts down
        page.click("#lockout-done")
        on_screen(page, "idle")
        sign_in_by_keyboard(page, "1001", PIN)  # the right PIN does not end a lockout
        on_screen(page, "lockout")


def test_the_fallback_code_grants_and_is_audited(
    page: Any, tmp_path: Path, models_dir: Path, pipeline: Any, load: Any
) -> None:
    settings, secret = obama(tmp_path, models_dir, pipeline, load)
    nobody = np.full((480, 640, 3), 90, np.uint8)
    image = tmp_path / "nobody.png"
    import cv2

    cv2.imwrite(str(image), nobody)
    with running(settings, ImageSource(image, fps=15, loop=True)) as kiosk:
        assert kiosk.screen is not None
        page.goto(kiosk.screen.url)
        on_screen(page, "idle")
        sign_in_by_pad(page, "1001", PIN)
        on_screen(page, "face")
        page.click("#fallback-open")
        page.fill("#totp-code", pyotp.parse_uri(secret).now())
        page.click("#totp-submit")
        on_screen(page, "session")
        assert "Obama" in page.inner_text("#session-user")
    granted = logons(audit(settings), success=True)
    assert [(e["unmapped"]["factor"], e["status_detail"]) for e in granted] == [
        ("pin+totp", "fallback code accepted")
    ]
