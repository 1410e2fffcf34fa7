"""End to end on the real pipeline, real SQLite and real crypto, with replayed images.

Obama is enrolled from photos (two real ones and a perspective-warped view) and
signs in with a photo he was not enrolled from; Biden with Obama's PIN is
denied; three failures lock Obama out; the fallback code and a supervisor get
him in, audited; bad input gets clear errors and loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pyotp
import pytest

from kiosk.app import Services, build_flow, enrol, open_services, run_attempt
from kiosk.auth.admin import UserAdmin
from kiosk.auth.clock import ManualClock
from kiosk.auth.crypto import CorruptRecordError
from kiosk.auth.flow import Phase
from kiosk.auth.model import InvalidInputError, Role, User
from kiosk.bench_flow import side_view as _warped
from kiosk.camera import FolderSource, ImageSource
from kiosk.config import Settings
from kiosk.secrets import SecretError, create_secret
from kiosk.vision import FacePipeline
from kiosk.vision.frames import BgrImage

OBAMA_PIN, SUPERVISOR_PIN = "274913", "8800"


@pytest.fixture
def kiosk_settings(tmp_path: Path, models_dir: Path) -> Settings:
    # Still photos cannot answer liveness challenges (tests/test_liveness.py shows that on
    # real clips); here the auth core is under test, so the flow checks track continuity only.
    settings = Settings(
        state_dir=tmp_path / "state",
        models_dir=models_dir,
        auth={"pin_kdf_memory_kib": 1024, "pin_kdf_time_cost": 1},
        liveness={"mode": "continuity"},
    )
    create_secret(settings.state_dir / "device-secret")
    return settings


@pytest.fixture
def clock() -> ManualClock:
    import time

    return ManualClock(wall=time.time())


@pytest.fixture
def services(kiosk_settings: Settings, clock: ManualClock) -> Iterator[Services]:
    with open_services(kiosk_settings, clock=clock) as opened:
        yield opened


@pytest.fixture
def admin(services: Services) -> UserAdmin:
    return UserAdmin(services.repo, services.hasher, services.clock, services.device, actor="admin")


@pytest.fixture
def enrol_dir(tmp_path: Path, load: Callable[[str], BgrImage]) -> Path:
    folder = tmp_path / "enrol-obama"
    folder.mkdir()
    cv2.imwrite(str(folder / "1.jpg"), load("obama.jpg"))
    cv2.imwrite(str(folder / "2.jpg"), load("obama2.jpg"))
    cv2.imwrite(str(folder / "3.jpg"), _warped(load("obama.jpg")))
    return folder


@pytest.fixture
def obama(services: Services, admin: UserAdmin, pipeline: FacePipeline, enrol_dir: Path) -> User:
    user = admin.add("Obama", OBAMA_PIN, staff_no="1001")
    result = enrol(services, pipeline, user, FolderSource(enrol_dir), recorded_by="admin")
    assert 3 <= result.templates <= 5
    return user


def _camera(sample_image: Callable[[str], Path], name: str, frames: int = 8) -> ImageSource:
    return ImageSource(sample_image(name), repeat=frames)


def _attempt(
    services: Services,
    pipeline: FacePipeline,
    sample_image: Callable[[str], Path],
    name: str,
    pin: str = OBAMA_PIN,
    staff_no: str = "1001",
):
    flow = build_flow(services)
    return run_attempt(flow, pipeline, _camera(sample_image, name), staff_no=staff_no, pin=pin)


def _events(services: Services, class_uid: int | None = None) -> list[dict]:
    rows = services.repo.audit(limit=10_000)
    return [r.payload for r in rows if class_uid is None or r.class_uid == class_uid]


def test_enrolment_keeps_templates_and_consent_never_images(
    services: Services, obama: User, kiosk_settings: Settings
) -> None:
    count = services.repo.template_count(obama.id)
    assert 3 <= count <= 5
    [consent] = services.repo.consents(obama)
    assert consent.text_version == "v1" and consent.recorded_by == "admin"
    enrolled = [e for e in _events(services, 3001) if e["activity_id"] == 10]
    assert enrolled and enrolled[0]["actor"]["user"]["name"] == "admin"
    # no image is stored: nothing in the database is anywhere near the size of a face crop
    largest = services.database.db.execute("SELECT MAX(LENGTH(blob)) FROM templates").fetchone()[0]
    assert largest < 1024


def test_obama_is_granted_with_a_photo_he_was_not_enrolled_from(
    services: Services, obama: User, pipeline: FacePipeline, sample_image: Callable[[str], Path]
) -> None:
    outcome = _attempt(services, pipeline, sample_image, "obama3.jpg")
    assert outcome.phase is Phase.GRANTED
    assert outcome.user == "Obama"
    [event] = [e for e in _events(services, 3002) if e["status_id"] == 1]
    assert event["unmapped"]["factor"] == "pin+face"
    assert event["unmapped"]["score"] >= services.settings.verification.threshold
    assert "embedding" in event["unmapped"]["model_versions"]
    assert event["metadata"]["uid"][14] == "7"  # a UUIDv7
    assert "0." not in outcome.message  # the person never sees a score


def test_biden_with_obamas_pin_is_denied(
    services: Services, obama: User, pipeline: FacePipeline, sample_image: Callable[[str], Path]
) -> None:
    outcome = _attempt(services, pipeline, sample_image, "biden.jpg")
    assert outcome.phase is Phase.DENIED
    assert outcome.message.startswith("Face not recognised")
    [event] = _events(services, 3002)
    assert event["status_id"] == 2
    assert event["unmapped"]["score"] < services.settings.verification.threshold


def test_three_failures_lock_out_even_the_right_person(
    services: Services,
    obama: User,
    pipeline: FacePipeline,
    sample_image: Callable[[str], Path],
    clock: ManualClock,
    admin: UserAdmin,
) -> None:
    assert _attempt(services, pipeline, sample_image, "biden.jpg").phase is Phase.DENIED
    assert (
        _attempt(services, pipeline, sample_image, "obama.jpg", pin="000000").phase is Phase.DENIED
    )
    third = _attempt(services, pipeline, sample_image, "biden.jpg")
    assert third.phase is Phase.LOCKED and third.locked_for_s == pytest.approx(1800)
    assert "Try again in 30 minutes" in third.message
    lock_events = [e for e in _events(services, 3001) if e["activity_id"] == 9]
    alerts = _events(services, 2004)
    assert len(lock_events) == 1 and len(alerts) == 1
    assert alerts[0]["severity_id"] == 4

    # the right PIN and face while locked: refused before any capture
    flow = build_flow(services)
    outcome = flow.enter_pin("1001", OBAMA_PIN)
    assert outcome.phase is Phase.LOCKED and not flow.wants_embedding
    # a restart and a wall-clock jump do not end it
    clock.jump_wall(86_400)
    with open_services(services.settings, clock=clock) as restarted:
        assert build_flow(restarted).enter_pin("1001", OBAMA_PIN).phase is Phase.LOCKED
    clock.advance(29 * 60)
    assert build_flow(services).enter_pin("1001", OBAMA_PIN).phase is Phase.LOCKED
    clock.advance(2 * 60)
    assert _attempt(services, pipeline, sample_image, "obama3.jpg").phase is Phase.GRANTED

    # and an administrator can unlock at once (audited)
    for _ in range(3):
        _attempt(services, pipeline, sample_image, "obama.jpg", pin="999999")
    assert build_flow(services).enter_pin("1001", OBAMA_PIN).phase is Phase.LOCKED
    assert admin.unlock("Obama") is True
    assert [e for e in _events(services, 3001) if e["activity_id"] == 12]
    assert _attempt(services, pipeline, sample_image, "obama3.jpg").phase is Phase.GRANTED


def test_fallback_code_grants_once_and_is_audited(
    services: Services, obama: User, admin: UserAdmin, clock: ManualClock
) -> None:
    uri = admin.enable_totp("Obama")
    secret = pyotp.parse_uri(uri).secret
    code = pyotp.TOTP(secret).at(clock.wall())
    flow = build_flow(services)
    assert flow.enter_pin("1001", OBAMA_PIN).phase is Phase.FACE
    assert flow.enter_totp(code).phase is Phase.GRANTED
    granted = [e for e in _events(services, 3002) if e["status_id"] == 1]
    assert granted[-1]["unmapped"]["factor"] == "pin+totp"
    # the same code cannot be used twice
    flow = build_flow(services)
    flow.enter_pin("1001", OBAMA_PIN)
    assert flow.enter_totp(code).phase is Phase.DENIED
    # and the code never works without the PIN
    with pytest.raises(InvalidInputError):
        build_flow(services).enter_totp(code)


def test_supervisor_override_is_audited_with_the_supervisor(
    services: Services, obama: User, admin: UserAdmin
) -> None:
    supervisor = admin.add("Sam Supervisor", SUPERVISOR_PIN, staff_no="9001", role=Role.SUPERVISOR)
    flow = build_flow(services)
    flow.enter_pin("1001", OBAMA_PIN)
    refused = flow.supervisor_override("9001", "1111")  # wrong supervisor PIN
    assert refused.phase is Phase.DENIED and refused.message == "Supervisor override refused."
    assert services.repo.lockout(supervisor.id).failures == 1
    assert services.repo.lockout(obama.id).failures == 1  # a refused override costs the requester
    flow.enter_pin("1001", OBAMA_PIN)
    outcome = flow.supervisor_override("9001", SUPERVISOR_PIN)
    assert outcome.phase is Phase.GRANTED and outcome.user == "Obama"
    event = [e for e in _events(services, 3002) if e["status_id"] == 1][-1]
    assert event["unmapped"]["factor"] == "pin+supervisor"
    assert event["unmapped"]["supervisor"] == supervisor.ref().uid
    # a staff member cannot vouch for another, and gets the very same answer
    other = admin.add("Joe", "4321", staff_no="1002")
    flow = build_flow(services)
    flow.enter_pin("1001", OBAMA_PIN)
    assert flow.supervisor_override(other.staff_no, "4321").message == refused.message


def test_undecided_attempts_count(
    services: Services,
    obama: User,
    pipeline: FacePipeline,
    load: Callable[[str], BgrImage],
    clock: ManualClock,
) -> None:
    """Cancelling after the camera saw a face, or restarting mid-attempt, is a failure."""
    flow = build_flow(services)
    flow.enter_pin("1001", OBAMA_PIN)
    assert flow.cancel().phase is Phase.IDLE  # before any face: free
    assert services.repo.lockout(obama.id).failures == 0
    flow.enter_pin("1001", OBAMA_PIN)
    flow.on_frame(pipeline.track(load("biden.jpg"), embed=True))
    assert flow.cancel().phase is Phase.DENIED
    assert services.repo.lockout(obama.id).failures == 1
    # the kiosk restarts in the middle of an attempt: the next PIN entry counts it
    build_flow(services).enter_pin("1001", OBAMA_PIN)
    with open_services(services.settings, clock=clock) as restarted:
        build_flow(restarted).enter_pin("1001", OBAMA_PIN)
        assert restarted.repo.lockout(obama.id).failures == 2
    # that restarted kiosk's own attempt was left open too: the third failure locks
    flow = build_flow(services)
    assert flow.enter_pin("1001", OBAMA_PIN).phase is Phase.LOCKED
    # and a decision is reported once: later frames do not repeat it
    assert flow.on_frame(None).phase is Phase.IDLE and flow.tick().phase is Phase.IDLE


def test_unknown_user_and_malformed_input(services: Services, obama: User) -> None:
    flow = build_flow(services)
    outcome = flow.enter_pin("4242", "123456")
    assert outcome.phase is Phase.DENIED
    assert outcome.message == build_flow(services).enter_pin("1001", "111111").message
    unknown = [e for e in _events(services, 3002) if e["user"]["uid"] == "unknown"]
    assert unknown and unknown[0]["status_detail"] == "unknown staff number"
    before = services.repo.lockout(obama.id)
    for pin in ("12a4", "123", "123456789", "", "１２３４"):
        with pytest.raises(InvalidInputError, match="4 to 8 digits"):
            flow.enter_pin("1001", pin)
    with pytest.raises(InvalidInputError, match="staff number"):
        flow.enter_pin("abc", "1234")
    assert services.repo.lockout(obama.id) == before  # malformed input is not counted


def test_a_corrupt_template_offers_the_fallback_and_loses_nothing(
    services: Services, obama: User
) -> None:
    db = services.database.db
    row_id, blob = db.execute("SELECT id, blob FROM templates LIMIT 1").fetchone()
    damaged = bytearray(blob)
    damaged[20] ^= 0x55
    db.execute("UPDATE templates SET blob = ? WHERE id = ?", [bytes(damaged), row_id])
    with pytest.raises(CorruptRecordError, match="does not decrypt"):
        services.repo.templates(obama)
    flow = build_flow(services)
    outcome = flow.enter_pin("1001", OBAMA_PIN)
    assert outcome.phase is Phase.FACE and outcome.fallback
    assert "unavailable" in outcome.message
    assert not flow.wants_embedding
    assert db.execute("SELECT COUNT(*) FROM templates").fetchone()[0] >= 3  # nothing deleted
    assert any("unreadable" in e["status_detail"] for e in _events(services, 3002))


def test_a_missing_secret_stops_start_up_and_touches_nothing(
    kiosk_settings: Settings, services: Services, obama: User
) -> None:
    services.close()
    db_file = kiosk_settings.database_path
    before = db_file.read_bytes()
    (kiosk_settings.state_dir / "device-secret").rename(kiosk_settings.state_dir / "moved")
    with pytest.raises(SecretError, match="kiosk secret init"):
        open_services(kiosk_settings)
    assert db_file.read_bytes() == before


def test_erasure_removes_biometrics_and_pseudonymises_the_trail(
    services: Services,
    obama: User,
    admin: UserAdmin,
    pipeline: FacePipeline,
    sample_image: Callable[[str], Path],
) -> None:
    _attempt(services, pipeline, sample_image, "obama3.jpg")
    pseudonym = admin.delete("Obama")
    db = services.database.db
    assert db.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM users WHERE name = 'Obama'").fetchone()[0] == 0
    payloads = [json.dumps(e) for e in _events(services)]
    assert not any("Obama" in p for p in payloads[:-1])
    assert any(pseudonym in p for p in payloads)
    erased = _events(services, 3001)[-1]
    assert erased["activity_id"] == 6
    # the staff number no longer signs anyone in
    assert build_flow(services).enter_pin("1001", OBAMA_PIN).phase is Phase.DENIED


def test_timeout_counts_as_a_failure(services: Services, obama: User, clock: ManualClock) -> None:
    flow = build_flow(services)
    assert flow.enter_pin("1001", OBAMA_PIN).phase is Phase.FACE
    clock.advance(services.settings.auth.attempt_timeout_s + 1)
    outcome = flow.on_frame(None)
    assert outcome.phase is Phase.DENIED and "Timed out" in outcome.message
    assert services.repo.lockout(obama.id).failures == 1
