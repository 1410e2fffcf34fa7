"""The administrator's commands: secret, users, enroll, login, audit, delete."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from kiosk.cli import main
from kiosk.cli_accounts import parse_since
from kiosk.vision.frames import BgrImage


@pytest.fixture
def state(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KIOSK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KIOSK_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("KIOSK_AUTH__PIN_KDF_MEMORY_KIB", "1024")
    monkeypatch.setenv("KIOSK_AUTH__PIN_KDF_TIME_COST", "1")
    monkeypatch.setenv("USER", "site-admin")
    monkeypatch.setenv("KIOSK_LIVENESS__MODE", "continuity")  # stills cannot do challenges
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return tmp_path / "state"


def _kiosk(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_a_site_administrators_day(
    state: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    load: Callable[[str], BgrImage],
    sample_image: Callable[[str], Path],
) -> None:
    # without a secret nothing starts, and the message says what to do
    assert _kiosk(capsys, monkeypatch, "users", "list")[0] == 77
    assert "kiosk secret init" in caplog.text
    code, out = _kiosk(capsys, monkeypatch, "secret", "init")
    assert code == 0 and (state / "device-secret").stat().st_mode & 0o777 == 0o600

    code, out = _kiosk(
        capsys, monkeypatch, "users", "add", "Obama", "--pin-stdin", stdin="274913\n"
    )
    assert code == 0 and "staff number 1001" in out
    assert "274913" not in caplog.text  # the PIN is never logged
    code, _ = _kiosk(capsys, monkeypatch, "users", "add", "Obama", "--pin-stdin", stdin="2749\n")
    assert code == 65 and "exists already" in caplog.text
    assert _kiosk(capsys, monkeypatch, "users", "add", "X", "--pin-stdin", stdin="12ab\n")[0] == 65

    # a second secret would orphan the database: refused
    assert _kiosk(capsys, monkeypatch, "secret", "init")[0] == 73

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), load("obama.jpg"))
    cv2.imwrite(str(folder / "b.jpg"), load("obama2.jpg"))
    from test_auth_e2e import _warped

    cv2.imwrite(str(folder / "c.jpg"), _warped(load("obama.jpg")))
    code, out = _kiosk(capsys, monkeypatch, "users", "enroll", "Obama", "--source", str(folder))
    assert code == 77 and "consent" in out.lower()  # shows the text, stores nothing
    code, out = _kiosk(
        capsys, monkeypatch, "users", "enroll", "Obama", "--source", str(folder), "--consent"
    )
    assert code == 0 and "enrolled Obama: 3 templates" in out

    code, out = _kiosk(capsys, monkeypatch, "users", "list", "--json")
    [row] = json.loads(out)
    assert row["templates"] == 3 and not row["reenrol_due"] and row["locked_for_s"] == 0
    # an enrolment older than 180 days is flagged
    import sqlite3
    import time

    with sqlite3.connect(state / "kiosk.db") as conn:
        conn.execute("UPDATE users SET enrolled_ms = ?", [int((time.time() - 181 * 86400) * 1000)])
    code, out = _kiosk(capsys, monkeypatch, "users", "list")
    assert "re-enrol due (older than 180 days)" in out

    code, out = _kiosk(
        capsys,
        monkeypatch,
        "login",
        "--staff-no",
        "1001",
        "--source",
        str(sample_image("obama3.jpg")),
        stdin="274913\n",
    )
    assert (code, out.split(":")[0]) == (0, "granted")
    code, out = _kiosk(
        capsys,
        monkeypatch,
        "login",
        "--staff-no",
        "1001",
        "--source",
        str(sample_image("biden.jpg")),
        stdin="274913\n",
    )
    assert (code, out.split(":")[0]) == (1, "denied")
    assert "score" not in out

    code, out = _kiosk(capsys, monkeypatch, "audit", "list", "--json", "--since", "1h")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["class_uid"] for e in events].count(3002) == 2
    assert all(e["metadata"]["uid"] for e in events)
    code, out = _kiosk(capsys, monkeypatch, "audit", "list", "--user", "Obama")
    assert "granted (pin+face)" in out and "denied (face)" in out

    assert _kiosk(capsys, monkeypatch, "users", "delete", "Obama")[0] == 1  # needs --yes
    code, out = _kiosk(capsys, monkeypatch, "users", "delete", "Obama", "--yes")
    assert code == 0 and "erased" in out
    code, out = _kiosk(capsys, monkeypatch, "audit", "list", "--json")
    assert "Obama" not in out
    assert _kiosk(capsys, monkeypatch, "users", "unlock", "Obama")[0] == 67


def test_since_accepts_durations_and_dates() -> None:
    assert parse_since("2h") < parse_since("30m")
    assert parse_since("2026-01-01") < parse_since("2026-01-02T10:00")
    from kiosk.auth.model import InvalidInputError

    with pytest.raises(InvalidInputError, match="30m, 2h, 7d"):
        parse_since("yesterday")
