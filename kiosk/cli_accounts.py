"""The ``kiosk`` commands of a site administrator: secret, users, audit, login.

PINs are read without echo from the terminal, or from stdin with
``--pin-stdin`` (scripts); they are never logged or printed. The TOTP
provisioning URI is printed once, to stdout, for the administrator to hand
over. Exit codes: 0 done, 1 refused or denied, 3 locked out (``login``),
65 malformed input, 67 no such user, 73 refusing to replace a secret in use,
75 database problem, 77 device secret missing / consent not given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import time
from typing import Any

from kiosk.cli_io import out, out_json
from kiosk.config import Settings

log = logging.getLogger("kiosk")


def _read_pin(args: argparse.Namespace, prompt: str = "PIN: ", *, confirm: bool = False) -> str:
    """A PIN from stdin (--pin-stdin, for scripts) or typed without echo; never logged."""
    if getattr(args, "pin_stdin", False) or not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    import getpass

    pin = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the PIN: ") != pin:
        from kiosk.auth.model import InvalidInputError

        raise InvalidInputError("the two PINs differ")
    return pin


def _services(settings: Settings) -> Any:
    from kiosk.app import open_services

    return open_services(settings)


def _admin(services: Any) -> Any:
    from kiosk.app import operator_name
    from kiosk.auth.admin import UserAdmin

    return UserAdmin(
        services.repo, services.hasher, services.clock, services.device, actor=operator_name()
    )


def _pipeline(settings: Settings) -> Any:
    from kiosk.vision import FacePipeline

    return FacePipeline.from_settings(settings)


def _source(settings: Settings, spec: str | None, *, loop: bool = False) -> Any:
    """The camera, or a replay; ``loop`` holds a still image until the flow decides."""
    from kiosk.camera import open_source

    cam = settings.camera
    return open_source(
        spec or cam.source,
        width=cam.width,
        height=cam.height,
        fps=cam.fps,
        loop=loop,
        demo_dir=None,
    )


def cmd_secret_init(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.app import secret_path
    from kiosk.secrets import create_secret

    path = secret_path(settings)
    if args.if_missing and path.exists():
        return 0
    if settings.database_path.exists() and not args.force:
        log.error(
            "a database exists at %s: a new secret would make its PINs and templates "
            "unreadable. Restore the old secret instead (or pass --force on a device you are "
            "resetting).",
            settings.database_path,
        )
        return 73
    create_secret(path)
    out(
        f"device secret created at {path} (mode 0600); back it up: without it no PIN or "
        "face template on this device can be checked"
    )
    return 0


def cmd_users_add(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.auth.model import Role

    with _services(settings) as services:
        user = _admin(services).add(
            args.name, _read_pin(args, confirm=True), staff_no=args.staff_no, role=Role(args.role)
        )
    out(
        f"added {user.name} ({user.role.value}), staff number {user.staff_no}; "
        f"next: kiosk users enroll {user.name!r} --source …"
    )
    return 0


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.auth import lockout

    with _services(settings) as services:
        repo = services.repo
        now_ms = services.clock.wall() * 1000
        stale_ms = settings.auth.reenrol_days * 86400 * 1000
        rows = []
        for user in repo.users():
            left, _ = lockout.remaining(repo.lockout(user.id), services.clock)
            rows.append(
                {
                    "name": user.name,
                    "staff_no": user.staff_no,
                    "role": user.role.value,
                    "templates": repo.template_count(user.id),
                    "totp": user.has_totp,
                    "enrolled_ms": user.enrolled_ms,
                    "reenrol_due": user.enrolled_ms is not None
                    and now_ms - user.enrolled_ms > stale_ms,
                    "locked_for_s": round(left),
                }
            )
    if args.json:
        out_json(rows)
        return 0
    out(f"{'name':<24}{'staff no':<10}{'role':<12}{'templates':>9}  status")
    for r in rows:
        status = []
        if r["templates"] == 0:
            status.append("not enrolled")
        if r["reenrol_due"]:
            status.append(f"re-enrol due (older than {settings.auth.reenrol_days} days)")
        if r["locked_for_s"]:
            status.append(f"locked {int(r['locked_for_s'] // 60) + 1} min")
        if r["totp"]:
            status.append("code set")
        out(
            f"{r['name']:<24}{r['staff_no']:<10}{r['role']:<12}{r['templates']:>9}  "
            + (", ".join(status) or "ok")
        )
    return 0


def cmd_users_enroll(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.app import consent_text, enrol, operator_name
    from kiosk.auth.enrolment import MAX_TEMPLATES, FrameResult, Verdict

    if not args.consent:
        out(consent_text())
        log.error(
            "enrolment needs the person's consent to the text above: when they have read it "
            "and agreed, run the command again with --consent"
        )
        return 77
    pipeline = _pipeline(settings)
    source = _source(settings, args.source)

    def progress(result: FrameResult) -> None:
        if result.verdict is Verdict.KEPT:
            out(f"  kept {result.kept}/{MAX_TEMPLATES}")
        else:
            log.debug("frame skipped: %s %s", result.verdict.value, result.detail)

    with _services(settings) as services:
        user = services.repo.require_user(args.name)
        result = enrol(
            services,
            pipeline,
            user,
            source,
            recorded_by=operator_name(),
            max_frames=args.max_frames,
            on_frame=progress,
        )
    out(
        f"enrolled {args.name}: {result.templates} templates from {result.frames_seen} frames "
        "(no image stored)"
    )
    return 0


def cmd_users_set_pin(args: argparse.Namespace, settings: Settings) -> int:
    with _services(settings) as services:
        _admin(services).set_pin(args.name, _read_pin(args, "New PIN: ", confirm=True))
    out(f"PIN of {args.name} changed")
    return 0


def cmd_users_totp(args: argparse.Namespace, settings: Settings) -> int:
    with _services(settings) as services:
        admin = _admin(services)
        if args.disable:
            admin.disable_totp(args.name)
            out(f"fallback code of {args.name} removed")
            return 0
        uri = admin.enable_totp(args.name)
    out("Add this to the person's authenticator app now; it is not shown again:")
    out(uri)
    return 0


def cmd_users_unlock(args: argparse.Namespace, settings: Settings) -> int:
    with _services(settings) as services:
        was_locked = _admin(services).unlock(args.name)
    out(f"{args.name} unlocked" if was_locked else f"{args.name} was not locked; count cleared")
    return 0


def cmd_users_delete(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        log.error(
            "deleting %s erases their templates, PIN and code for good: run again with --yes",
            args.name,
        )
        return 1
    with _services(settings) as services:
        pseudonym = _admin(services).delete(args.name)
    out(f"{args.name} erased; their audit records remain as {pseudonym}")
    return 0


def parse_since(text: str) -> int:
    """'30m', '2h', '7d' ago, or an ISO date/time → epoch milliseconds."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int((time.time() - int(match.group(1)) * scale) * 1000)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        from kiosk.auth.model import InvalidInputError

        raise InvalidInputError(
            f"--since takes 30m, 2h, 7d or an ISO date such as 2026-11-01, not {text!r}"
        ) from exc
    if when.tzinfo is None:
        when = when.astimezone()
    return int(when.timestamp() * 1000)


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> int:
    since = parse_since(args.since) if args.since else None
    with _services(settings) as services:
        user_uid = None
        if args.user:
            user = services.repo.user_by_name(args.user)
            user_uid = user.ref().uid if user else args.user
        rows = services.repo.audit(since_ms=since, user_uid=user_uid, limit=args.limit)
    if args.json:
        for row in rows:
            out_json(row.payload)
        return 0
    for row in rows:
        when = dt.datetime.fromtimestamp(row.time_ms / 1000).astimezone()
        name = row.payload.get("user", {}).get("name", row.user_uid)
        out(
            f"{when.isoformat(timespec='seconds')}  {row.class_uid}  {row.status:<8} "
            f"{name:<20} {row.summary}"
        )
    return 0


def cmd_login(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.app import build_flow, run_attempt
    from kiosk.auth.flow import Phase

    pin = _read_pin(args)
    with _services(settings) as services:
        flow = build_flow(services)
        if args.totp:
            outcome = flow.enter_pin(args.staff_no, pin)
            if outcome.phase is Phase.FACE:
                outcome = flow.enter_totp(args.totp)
        else:
            source = _source(settings, args.source, loop=True)
            outcome = run_attempt(
                flow, _pipeline(settings), source, staff_no=args.staff_no, pin=pin
            )
    out(f"{outcome.phase.value}: {outcome.message}")
    return {Phase.GRANTED: 0, Phase.LOCKED: 3}.get(outcome.phase, 1)


def register_accounts(sub: Any) -> None:
    """Add the secret, users, audit and login commands to the ``kiosk`` parser."""
    p = sub.add_parser("secret", help="the device secret that keys PINs and templates")
    ssub = p.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    p = ssub.add_parser("init", help="create the device secret (once per device)")
    p.add_argument("--force", action="store_true", help="even though a database exists")
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the secret exists (first-run set-up)",
    )
    p.set_defaults(func=cmd_secret_init)

    users = sub.add_parser("users", help="staff accounts: add, enroll, list, delete …")
    usub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    p = usub.add_parser("add", help="add a user with a PIN (typed twice, or --pin-stdin)")
    p.add_argument("name", help="the person's name (unique)")
    p.add_argument("--staff-no", help="staff number typed on the keypad (default: next free)")
    p.add_argument(
        "--role",
        choices=["staff", "supervisor"],
        default="staff",
        help="supervisors can override for others (default: staff)",
    )
    p.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    p.set_defaults(func=cmd_users_add)
    p = usub.add_parser("list", help="users, enrolment age, lockouts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_users_list)
    p = usub.add_parser(
        "enroll",
        help="capture 3–5 face templates from a camera or replay (no image kept)",
        description="Shows the consent text unless --consent says the person agreed to it.",
    )
    p.add_argument("name", help="an existing user")
    p.add_argument("--source", help="camera spec or path (default: the configured camera)")
    p.add_argument(
        "--consent", action="store_true", help="the person has read the consent text and agreed"
    )
    p.add_argument("--max-frames", type=int, default=600, help="give up after this many frames")
    p.set_defaults(func=cmd_users_enroll)
    p = usub.add_parser("set-pin", help="change a user's PIN")
    p.add_argument("name")
    p.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    p.set_defaults(func=cmd_users_set_pin)
    p = usub.add_parser("totp", help="set up (or --disable) a user's fallback code")
    p.add_argument("name")
    p.add_argument("--disable", action="store_true", help="remove the fallback code")
    p.set_defaults(func=cmd_users_totp)
    p = usub.add_parser("unlock", help="end a user's lockout now (audited)")
    p.add_argument("name")
    p.set_defaults(func=cmd_users_unlock)
    p = usub.add_parser("delete", help="erase a user: templates, PIN, code; audit pseudonymised")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm the erasure")
    p.set_defaults(func=cmd_users_delete)

    audit = sub.add_parser("audit", help="the audit trail")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = asub.add_parser("list", help="audit events, oldest first")
    p.add_argument("--since", help="30m, 2h, 7d, or an ISO date/time")
    p.add_argument("--user", help="only events about this user")
    p.add_argument("--limit", type=int, default=200, help="at most this many (the newest)")
    p.add_argument("--json", action="store_true", help="one OCSF event per line")
    p.set_defaults(func=cmd_audit_list)

    p = sub.add_parser(
        "login",
        help="one sign-in attempt: staff number + PIN (stdin), then the face",
        description="Exit 0 granted, 1 denied, 3 locked out.",
    )
    p.add_argument("--staff-no", required=True, help="the staff number")
    p.add_argument("--source", help="camera spec or path (default: the configured camera)")
    p.add_argument("--totp", help="use this fallback code instead of the face")
    p.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    p.set_defaults(func=cmd_login)
