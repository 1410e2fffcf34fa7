"""The kiosk daemon: camera → pipeline → flow → screen, devices and audit.

One main loop owns everything that decides: the face pipeline, the sign-in
flow, the presence monitor and the database connection. Other threads only
*ask*: the camera thread hands over the newest frame (:class:`CameraFeed`),
the screen server and the hardware keypad queue commands, the step-up server
queues a verification and waits for its answer. So the flow stays the pure
state machine it was built as, and no decision races another.

The loop, on every turn:

* runs the queued commands (keys, codes, cancel, lock, step-up requests);
* takes the newest frame, if any, and gives it to whatever is under way —
  the face step of a sign-in, a step-up check, or a presence check of the
  open session at its low rate — and, at the preview rate, renders the
  screen's preview;
* lets time act: attempt and step-up deadlines, result screens returning to
  the PIN pad, the lockout checkpoint every ``daemon.checkpoint_s``, a
  camera that stopped (an attempt under way is abandoned, a session locks
  when nobody can be seen);
* feeds the systemd watchdog only while healthy: a frame came within
  ``daemon.frame_stale_s``, the database takes writes, and the publisher,
  screen and step-up threads that were started are still running.

Choices where the issue is silent (also in the README):

* A session opened by a fallback (TOTP code, supervisor) checks presence
  only — "a face is there" — because the face that did not match at sign-in
  would lock it at once; a step-up in such a session still needs the face.
* The step-up's "recent verification" is the sign-in's or a step-up's face
  check with liveness, never a presence check.
* Stopping (SIGTERM) abandons an attempt under way (audited, not counted) and
  locks an open session with the reason "the kiosk stopped".
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2

from kiosk.app import Services, build_flow, build_liveness, open_services
from kiosk.auth.crypto import CorruptRecordError
from kiosk.auth.events import AuditEvent
from kiosk.auth.flow import Grant, Outcome, Phase
from kiosk.auth.liveness import LivenessChecker, LivenessSession, LivenessStatus
from kiosk.auth.model import Change, InvalidInputError, User
from kiosk.auth.session import (
    CallbackLock,
    LockAction,
    LockReason,
    LoginctlLock,
    PresencePolicy,
    SessionMonitor,
)
from kiosk.camera import Frame, FrameSource
from kiosk.config import Settings
from kiosk.daemon.feed import CameraFeed
from kiosk.daemon.screen import Answer, ScreenServer
from kiosk.daemon.systemd import Notifier
from kiosk.daemon.view import (
    MSG_PIN,
    MSG_STAFF,
    Broadcaster,
    CameraView,
    Entry,
    Result,
    Screen,
    View,
)
from kiosk.devices import Devices
from kiosk.errors import KioskError
from kiosk.stepup.service import SessionUser, Verification, VerifyResult
from kiosk.vision import FacePipeline
from kiosk.vision.embedding import best_match
from kiosk.vision.types import Detection, FaceObservation, FloatArray

log = logging.getLogger(__name__)

STAFF_MAX = 12
PIN_MAX = 8
DB_PROBE_S = 10.0
FACE_AMR = ("pin", "face", "liveness")
STEPUP_AMR = ("face", "liveness")

MSG_FAULT = "This terminal cannot sign anyone in right now. Ask a site administrator."
MAX_FRAME_ERRORS = 10  # frames in a row that fail to process: unhealthy
MSG_CAMERA_DOWN = "The camera is not working, so nobody can sign in. Ask a site administrator."
LOCK_MESSAGES = {
    LockReason.ABSENT: "Session locked: you left the terminal.",
    LockReason.OTHER_PERSON: "Session locked: someone else is at the terminal.",
    LockReason.ONLOOKER: "Session locked: someone was looking on.",
    LockReason.MANUAL: "Session locked.",
    LockReason.TIMEOUT: "Session locked: the time limit was reached. Sign in again.",
    LockReason.SHUTDOWN: "Session locked: the terminal is restarting.",
}


@dataclass
class _Session:
    user: User
    who: SessionUser
    templates: list[FloatArray]
    verification: Verification | None


@dataclass
class _StepUp:
    action: str
    who: SessionUser
    templates: list[FloatArray]
    liveness: LivenessSession
    deadline: float
    answer: concurrent.futures.Future[VerifyResult]
    track: int | None = None
    unmatched: int = 0


@dataclass
class Timing:
    """One decision of the face step, for ``kiosk bench flow``."""

    phase: str
    face_to_decision_s: float | None  # from the capture of the first frame with a face in it
    pin_to_decision_s: float


@dataclass
class LoopStats:
    frames: int = 0
    busy_s: float = 0.0
    face_frames: int = 0  # frames of a face step or a step-up (tracked and embedded)
    face_busy_s: float = 0.0
    timings: list[Timing] = field(default_factory=list)


@dataclass(frozen=True)
class Health:
    ok: bool
    problems: tuple[str, ...]

    @property
    def line(self) -> str:
        return "healthy" if self.ok else "unhealthy: " + "; ".join(self.problems)


class Kiosk:
    """The daemon. Build it, then :meth:`run` it on the main thread until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        services: Services,
        pipeline: FacePipeline,
        source: FrameSource,
        *,
        devices: Devices | None = None,
        notifier: Notifier | None = None,
        liveness: LivenessChecker | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.pipeline = pipeline
        self.clock = services.clock
        self.flow = build_flow(services, liveness=liveness)
        self.stepup_liveness = liveness or build_liveness(settings, challenges=1)
        self.devices = devices if devices is not None else Devices(settings.devices)
        self.notifier = notifier or Notifier()
        self.feed = CameraFeed(source, retry_s=settings.daemon.camera_retry_s)
        self.broadcaster = Broadcaster(View(camera=CameraView(source.label, source.is_replay)))
        self.stats = LoopStats()
        self.screen: ScreenServer | None = None
        self.publisher: Any = None  # kiosk.sync.OutboxPublisher when sync is enabled
        self.stepup_thread: Any = None  # kiosk.stepup.StepUpThread when step-up is enabled
        presence = settings.presence
        self.monitor = SessionMonitor(
            clock=self.clock,
            device=services.device,
            threshold=settings.verification.threshold,
            policy=PresencePolicy(
                interval_s=presence.interval_s,
                absent_s=presence.absent_s,
                mismatch_checks=presence.mismatch_checks,
                lock_on_onlooker=presence.lock_on_onlooker,
                onlooker_checks=presence.onlooker_checks,
                max_session_s=presence.max_session_h * 3600.0,
            ),
            actions=self._lock_actions(),
            commit=self._commit,
        )
        self._commands: queue.SimpleQueue[tuple[Callable[[], str | None], Answer]] = (
            queue.SimpleQueue()
        )
        self._session_lock = threading.Lock()
        self._session: _Session | None = None
        self._stepup: _StepUp | None = None
        self._staff = ""
        self._pin: list[str] = []
        self._field = "staff_no"
        self._hold_until: float | None = None
        self._attempt_started: float | None = None
        self._first_face: float | None = None
        self._last_checkpoint = self.clock.since_boot()
        self._last_preview = float("-inf")
        self._face_box: dict[str, float] | None = None
        self._last_health = float("-inf")
        self._last_probe = float("-inf")
        self._db_ok = True
        self._db_problem = ""
        self._health = Health(True, ())
        self._frame_seen = False
        self._frame_errors = 0
        self.ready = threading.Event()  # set once serving (tests and the bench wait on it)

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the camera, the screen, the devices' keypad, the publisher and step-up."""
        self.feed.start()
        if self.settings.screen.enabled:
            self.screen = ScreenServer(
                self.broadcaster,
                self,
                host=self.settings.screen.host,
                port=self.settings.screen.port,
            )
            self.screen.start()
        self.devices.on_key(self._hardware_key)
        self.devices.on_idle()
        if self.settings.sync.enabled:
            from kiosk.sync.publisher import OutboxPublisher

            self.publisher = OutboxPublisher(self.settings, self.services.database)
            self.publisher.start()
        if self.settings.stepup.enabled:
            from kiosk.stepup import StepUpThread, build_server

            server = build_server(
                self.settings.stepup,
                self.settings.state_dir,
                device=self.services.device,
                session=self,
                verify_now=self.verify_now,
                audit=self._audit_from_thread,
                clock=self.clock,
            )
            self.stepup_thread = StepUpThread(server)
            self.stepup_thread.start()
        self._show(self._idle_view())

    def run(self, stop: threading.Event) -> None:
        """Start, tell systemd it is ready, and loop until ``stop`` is set; then shut down."""
        try:
            self.start()
            where = self.screen.url if self.screen else "no screen"
            self.notifier.ready(f"serving {where}; camera {self.feed.source.label}")
            self.ready.set()
            while not stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self, wait_s: float = 0.05) -> None:
        """One turn of the main loop (tests and the bench drive it directly)."""
        self._run_commands()
        got = self.feed.latest(wait_s)
        if got is not None:
            face_step = self.flow.phase is Phase.FACE or self._stepup is not None
            start = time.perf_counter()
            try:
                self._on_frame(got[1])
                self._frame_errors = 0
            except KioskError as exc:  # a corrupt frame, a database that refuses a write
                self._frame_errors += 1
                log.error("frame %d not processed: %s", got[1].index, exc)
                self._fault()
            except Exception:
                self._frame_errors += 1
                log.exception("frame %d not processed", got[1].index)
                self._fault()
            spent = time.perf_counter() - start
            self.stats.frames += 1
            self.stats.busy_s += spent
            if face_step:
                self.stats.face_frames += 1
                self.stats.face_busy_s += spent
        self._housekeeping(frame=got is not None)

    def shutdown(self) -> None:
        """Stop taking input, close what is under way (audited), stop every thread."""
        self.notifier.stopping()
        if self.stepup_thread is not None:
            self.stepup_thread.stop()
        if self.screen is not None:
            self.screen.stop()
        self.devices.on_key(None)
        self._run_commands()
        try:
            if self._stepup is not None:
                self._end_stepup(VerifyResult.deny("the terminal is restarting"))
            if self.flow.phase is Phase.FACE:
                self.flow.abandon("the kiosk stopped before a decision")
            if self.monitor.open:
                self.monitor.lock(LockReason.SHUTDOWN)
        except KioskError as exc:
            log.error("could not close the open attempt or session: %s", exc)
        self.feed.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self.devices.close()
        self.notifier.close()
        log.info("kiosk stopped")

    # --- commands (any thread) ----------------------------------------------------------------

    def submit(self, command: Callable[[], str | None]) -> Answer:
        """Run ``command`` on the main loop; its answer is an error sentence or None."""
        answer: Answer = concurrent.futures.Future()
        self._commands.put((command, answer))
        return answer

    def key(self, key: str) -> Answer:
        return self.submit(lambda: self._key(key))

    def totp(self, code: str) -> Answer:
        return self.submit(lambda: self._apply(self.flow.enter_totp(code)))

    def supervisor(self, staff_no: str, pin: str) -> Answer:
        return self.submit(lambda: self._apply(self.flow.supervisor_override(staff_no, pin)))

    def cancel(self) -> Answer:
        return self.submit(lambda: self._key("cancel"))

    def lock(self) -> Answer:
        return self.submit(self._lock_by_user)

    def dismiss(self) -> Answer:
        return self.submit(self._dismiss)

    def _run_commands(self) -> None:
        while True:
            try:
                command, answer = self._commands.get_nowait()
            except queue.Empty:
                return
            if not answer.set_running_or_notify_cancel():
                continue
            try:
                answer.set_result(command())
            except InvalidInputError as exc:
                answer.set_result(_sentence(str(exc)))
            except KioskError as exc:  # e.g. the database cannot be written: nobody is let in
                log.error("cannot complete a sign-in step: %s", exc)
                self._fault()
                answer.set_result(MSG_FAULT)
            except Exception as exc:
                log.exception("a screen command failed")
                answer.set_exception(exc)

    def _hardware_key(self, key: str) -> None:
        """A key of the hardware keypad (its thread): ``#`` confirms, ``*`` clears or cancels."""
        if key == "#":
            name = "enter"
        elif key == "*":
            name = "clear" if (self._pin or self._staff) else "cancel"
        elif key.isdigit():
            name = key
        else:
            return
        self.key(name)

    # --- SessionView and VerifyNow for the step-up server (its threads) -----------------------

    def current_user(self) -> SessionUser | None:
        with self._session_lock:
            return self._session.who if self._session else None

    def last_verified_at(self, uid: str) -> Verification | None:
        with self._session_lock:
            s = self._session
            if s is None or s.who.uid != uid:
                return None
            return s.verification

    def verify_now(self, action: str, user: SessionUser, timeout_s: float) -> VerifyResult:
        answer: concurrent.futures.Future[VerifyResult] = concurrent.futures.Future()
        self.submit(lambda: self._begin_stepup(action, user, timeout_s, answer))
        try:
            return answer.result(timeout_s + 5.0)
        except concurrent.futures.TimeoutError:
            return VerifyResult.deny("the face check took too long")

    def _audit_from_thread(self, event: AuditEvent) -> None:
        """Write a step-up audit event through the main loop's connection and wait for it."""
        self.submit(lambda: self._commit(Change(events=[event]))).result(10.0)

    # --- the PIN pad --------------------------------------------------------------------------

    def _key(self, key: str) -> str | None:
        screen = self.broadcaster.view.screen
        if screen in (Screen.RESULT, Screen.LOCKOUT):
            self._dismiss()
            return None
        if screen is Screen.FACE:
            if key == "cancel":
                self._apply(self.flow.cancel())
            return None
        if screen is not Screen.IDLE:
            return None
        if key.isdigit():
            if self._field == "staff_no" and len(self._staff) < STAFF_MAX:
                self._staff += key
            elif self._field == "pin" and len(self._pin) < PIN_MAX:
                self._pin.append(key)
        elif key == "back":
            if self._field == "pin" and self._pin:
                self._pin.pop()
            elif self._field == "pin":
                self._field = "staff_no"
            else:
                self._staff = self._staff[:-1]
        elif key == "clear":
            if self._field == "pin":
                self._pin.clear()
            else:
                self._staff = ""
        elif key == "cancel":
            self._clear_entry()
        elif key == "enter":
            if self._field == "staff_no":
                if not self._staff:
                    self._show(self._idle_view("Enter your staff number first."))
                    return None
                self._field = "pin"
            elif self._pin:
                return self._submit_pin()
        self._show(self._idle_view())
        return None

    def _submit_pin(self) -> str | None:
        staff, pin = self._staff, "".join(self._pin)
        self._clear_entry()
        try:
            outcome = self.flow.enter_pin(staff, pin)
        except InvalidInputError as exc:
            self._show(self._idle_view(_sentence(str(exc))))
            return None
        self._attempt_started = time.monotonic()
        self._first_face = None
        self.pipeline.reset()
        self._apply(outcome)
        return None

    def _clear_entry(self) -> None:
        self._staff, self._field = "", "staff_no"
        self._pin.clear()

    def _entry(self) -> Entry:
        return Entry(field=self._field, staff_no=self._staff, pin_length=len(self._pin))

    def _idle_view(self, message: str | None = None) -> View:
        default = MSG_PIN if self._field == "pin" else MSG_STAFF
        return View(
            screen=Screen.IDLE,
            message=message or default,
            entry=self._entry(),
            camera=self.broadcaster.view.camera,
        )

    def _dismiss(self) -> str | None:
        screen = self.broadcaster.view.screen
        if screen in (Screen.RESULT, Screen.LOCKOUT):
            self._to_idle()
        return None

    def _to_idle(self) -> None:
        self._hold_until = None
        self._clear_entry()
        self.devices.on_idle()
        self._show(self._idle_view())

    # --- sign-in decisions --------------------------------------------------------------------

    def _apply(self, outcome: Outcome) -> str | None:
        """Show what the flow decided, and act on it."""
        view = self.broadcaster.view
        if outcome.phase is Phase.FACE:
            if view.screen is not Screen.FACE:
                self.devices.on_face_step()
            message = outcome.message or view.message
            self._show(
                view.but(
                    screen=Screen.FACE,
                    message=message,
                    user=outcome.user or view.user,
                    prompt=outcome.prompt if outcome.message else view.prompt,
                    progress=outcome.progress if outcome.message else view.progress,
                    fallback=outcome.fallback or view.fallback,
                    result=None,
                    entry=Entry(),
                )
            )
            return None
        if outcome.phase in (Phase.GRANTED, Phase.DENIED, Phase.LOCKED):
            self._record_timing(outcome.phase, time.monotonic())
        if outcome.phase is Phase.GRANTED:
            self._open_session(self.flow.take_grant(), outcome.message)
        elif outcome.phase is Phase.DENIED:
            self.devices.on_deny()
            self._result(Result.DENIED, outcome.message, self.settings.screen.result_hold_s)
        elif outcome.phase is Phase.LOCKED:
            self.devices.on_lockout()
            self._result(
                Result.LOCKED,
                outcome.message,
                self.settings.screen.lockout_hold_s,
                screen=Screen.LOCKOUT,
                locked_for_s=outcome.locked_for_s,
            )
        elif view.screen is Screen.FACE:  # cancelled before the face check began
            self._to_idle()
        self._notify_publisher()
        return None

    def _result(
        self,
        result: Result,
        message: str,
        hold_s: float,
        *,
        screen: Screen = Screen.RESULT,
        locked_for_s: float = 0.0,
    ) -> None:
        self._hold_until = self.clock.since_boot() + hold_s
        self._clear_entry()
        self._show(
            View(
                screen=screen,
                message=message,
                result=result,
                hold_s=hold_s,
                locked_for_s=locked_for_s,
                camera=self.broadcaster.view.camera,
            )
        )

    def _record_timing(self, phase: Phase, now: float) -> None:
        if self._attempt_started is None:
            return
        face = None if self._first_face is None else now - self._first_face
        self.stats.timings.append(Timing(phase.value, face, now - self._attempt_started))
        self._attempt_started = self._first_face = None

    def _face_frame(self, frame: Frame) -> None:
        obs = self.pipeline.track(frame.image, embed=self.flow.wants_embedding)
        if obs is not None and self._first_face is None:
            self._first_face = frame.timestamp
        self._note_faces(frame, [obs] if obs is not None else [])
        self._apply(self.flow.on_frame(obs))

    def _fault(self) -> None:
        """Something failed mid-step: end what was under way, closed, and say so on the screen."""
        self.flow.reset()
        self._attempt_started = None
        if self._stepup is not None:
            self._end_stepup(VerifyResult.deny("the face check failed"))
        if self.broadcaster.view.screen in (Screen.FACE, Screen.IDLE):
            self._result(Result.ERROR, MSG_FAULT, self.settings.screen.result_hold_s)

    # --- the session --------------------------------------------------------------------------

    def _open_session(self, grant: Grant | None, message: str) -> None:
        if grant is None:  # cannot happen: a grant outcome always records one
            log.error("a grant without its record; not opening a session")
            self._to_idle()
            return
        user = grant.user
        templates = list(grant.templates)
        who = SessionUser(uid=user.ref().uid, name=user.name, staff_no=user.staff_no)
        verification = (
            Verification(who.uid, grant.wall, grant.since_boot, FACE_AMR)
            if grant.face_verified
            else None
        )
        with self._session_lock:
            self._session = _Session(user, who, templates, verification)
        self.monitor.start(user.ref(), templates)  # checks run only when presence is enabled
        self.devices.on_grant()
        self._hold_until = None
        self._show(
            View(
                screen=Screen.SESSION,
                message=message,
                user=user.name,
                result=Result.GRANTED,
                session={"user": user.name, "since": grant.wall},
                camera=self.broadcaster.view.camera,
            )
        )

    def _presence_frame(self, frame: Frame) -> None:
        faces = self.pipeline.observe(frame.image, embed=True)
        self._note_faces(frame, faces)
        self.monitor.check(faces)

    def _lock_by_user(self) -> str | None:
        if self._stepup is not None:
            self._end_stepup(VerifyResult.deny("the session was locked"))
        if self.monitor.open:
            self.monitor.lock(LockReason.MANUAL)
        return None

    def _lock_actions(self) -> list[LockAction]:
        actions: list[LockAction] = [CallbackLock(self._session_locked)]
        for name in self.settings.presence.lock_actions:
            if name == "relay":
                actions.append(CallbackLock(lambda user, reason: self.devices.on_session_lock()))
            elif name == "loginctl":
                actions.append(LoginctlLock())
            elif name == "publish":
                actions.append(CallbackLock(lambda user, reason: self._notify_publisher()))
        return actions

    def _session_locked(self, user: str, reason: LockReason) -> None:
        """The screen's own lock (the first lock action): end the session on the screen."""
        with self._session_lock:
            self._session = None
        if self._stepup is not None:
            self._end_stepup(VerifyResult.deny("the session was locked"))
        self._result(
            Result.SESSION_LOCKED, LOCK_MESSAGES[reason], self.settings.screen.result_hold_s
        )

    # --- step-up ------------------------------------------------------------------------------

    def _begin_stepup(
        self,
        action: str,
        who: SessionUser,
        timeout_s: float,
        answer: concurrent.futures.Future[VerifyResult],
    ) -> str | None:
        session = self._session
        if session is None or session.who.uid != who.uid:
            answer.set_result(VerifyResult.deny("nobody is signed in", who))
            return None
        if self._stepup is not None:
            answer.set_result(VerifyResult.deny("another check is in progress", who))
            return None
        templates = session.templates
        if not templates:
            try:
                templates = self.services.repo.templates(session.user)
            except CorruptRecordError:
                templates = []
        if not templates:
            answer.set_result(VerifyResult.deny("no face is enrolled for you: ask a supervisor"))
            return None
        now = self.clock.since_boot()
        self._stepup = _StepUp(
            action=action,
            who=who,
            templates=templates,
            liveness=self.stepup_liveness.start(now),
            deadline=now + timeout_s,
            answer=answer,
        )
        self.pipeline.reset()
        self._show(
            self.broadcaster.view.but(
                screen=Screen.STEPUP,
                message=f"Confirm it is you to continue: {action}.",
                prompt="Look at the camera",
                progress=0.0,
                stepup={"action": action},
                result=None,
            )
        )
        return None

    def _stepup_frame(self, frame: Frame) -> None:
        s = self._stepup
        if s is None:
            return
        now = self.clock.since_boot()
        obs = self.pipeline.track(frame.image, embed=True)
        self._note_faces(frame, [obs] if obs is not None else [])
        update = s.liveness.update(obs, now, None)
        if update.status is LivenessStatus.FAILED:
            self._end_stepup(VerifyResult.deny("could not confirm a live person", s.who))
            return
        if obs is None or not obs.quality.ok or obs.embedding is None:
            prompt = obs.quality.issues[0].value if obs and not obs.quality.ok else update.prompt
            self._stepup_progress(prompt or "Look at the camera", update.progress)
            return
        if s.track is None:
            s.track = obs.track_id
        elif obs.track_id != s.track:
            self._end_stepup(VerifyResult.deny("the face changed during the check", s.who))
            return
        matched = best_match(obs.embedding, s.templates) >= self.settings.verification.threshold
        if not matched:
            s.unmatched += 1
            if s.unmatched >= self.flow.policy.max_unmatched_frames:
                self._end_stepup(VerifyResult.deny("face not recognised", s.who))
                return
        if update.status is LivenessStatus.PASSED:
            if matched:
                wall = self.clock.wall()
                self._end_stepup(VerifyResult.grant(s.who, wall=wall))
            else:
                self._end_stepup(VerifyResult.deny("face not recognised", s.who))
            return
        self._stepup_progress(update.prompt or "Look at the camera", update.progress)

    def _stepup_progress(self, prompt: str, progress: float) -> None:
        self._show(self.broadcaster.view.but(prompt=prompt, progress=progress))

    def _end_stepup(self, result: VerifyResult) -> None:
        s, self._stepup = self._stepup, None
        if s is None:
            return
        if result.granted:
            self.monitor.verified()
            with self._session_lock:
                if self._session is not None and self._session.who.uid == s.who.uid:
                    wall = result.wall if result.wall is not None else self.clock.wall()
                    self._session.verification = Verification(
                        s.who.uid, wall, self.clock.since_boot(), STEPUP_AMR
                    )
        if not s.answer.done():
            s.answer.set_result(result)
        if self._session is not None:
            message = "Confirmed." if result.granted else f"Not confirmed: {result.reason}."
            self._show(
                self.broadcaster.view.but(
                    screen=Screen.SESSION, message=message, prompt="", progress=0.0, stepup=None
                )
            )

    # --- frames -------------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        self._frame_seen = True
        if self.broadcaster.view.screen is Screen.UNAVAILABLE:
            self._to_idle()
        if self.flow.phase is Phase.FACE:
            self._face_frame(frame)
        elif self._stepup is not None:
            self._stepup_frame(frame)
        elif self.monitor.open:
            if self.settings.presence.enabled and self.monitor.due():
                self._presence_frame(frame)
        elif self._preview_due():
            self._note_faces(frame, self.pipeline.detect(frame.image, grid=1))
        if self._preview_due():
            self._render_preview(frame)

    def _note_faces(self, frame: Frame, faces: Sequence[FaceObservation | Detection]) -> None:
        """Where the largest face is, for the preview's box."""
        h, w = frame.image.shape[:2]
        self._face_box = _box(faces[0].box, w, h) if faces else None

    def _preview_due(self) -> bool:
        fps = self.settings.screen.preview_fps
        return (
            self.screen is not None
            and fps > 0
            and time.monotonic() - self._last_preview >= 1.0 / fps
        )

    def _render_preview(self, frame: Frame) -> None:
        self._last_preview = time.monotonic()
        image = frame.image
        h, w = image.shape[:2]
        width = min(self.settings.screen.preview_width, w)
        small = cv2.resize(image, (width, max(1, round(h * width / w))))
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
        if ok:
            self.broadcaster.preview = jpeg.tobytes()
        self._show(self.broadcaster.view.but(face=self._face_box))

    # --- time ---------------------------------------------------------------------------------

    def _housekeeping(self, *, frame: bool) -> None:
        now = self.clock.since_boot()
        status = self.feed.status()
        camera = CameraView(status.label, status.replay, status.ok)
        view = self.broadcaster.view
        if camera != view.camera:
            self._show(view.but(camera=camera))
        stale = status.stale(self.settings.daemon.frame_stale_s)
        down = stale and (self._frame_seen or status.error is not None)
        try:
            self._let_time_act(now, frame=frame, down=down, stale=stale)
        except KioskError as exc:  # e.g. the database refused a timeout's write
            log.error("cannot complete a timed step: %s", exc)
            self._fault()
        self._watchdog(now)

    def _let_time_act(self, now: float, *, frame: bool, down: bool, stale: bool) -> None:
        if self.flow.phase is Phase.FACE and not frame:
            if down:
                self._apply(self.flow.abandon("the camera stopped before a decision"))
            else:
                self._apply(self.flow.tick())
        if self._stepup is not None and now > self._stepup.deadline:
            self._end_stepup(VerifyResult.deny("the face check took too long", self._stepup.who))
        if self.settings.presence.enabled and self.monitor.open and stale and self.monitor.due():
            self.monitor.check([])  # nobody can be seen: the absence limit runs
        if self._hold_until is not None and now >= self._hold_until:
            self._to_idle()
        if down and self.broadcaster.view.screen is Screen.IDLE:
            self._show(
                self.broadcaster.view.but(screen=Screen.UNAVAILABLE, message=MSG_CAMERA_DOWN)
            )
        if now - self._last_checkpoint >= self.settings.daemon.checkpoint_s:
            self._last_checkpoint = now
            self.flow.checkpoint()

    def health(self) -> Health:
        """Whether the daemon works: fresh frames, a writable database, its threads alive."""
        problems = []
        status = self.feed.status()
        if status.stale(self.settings.daemon.frame_stale_s):
            problems.append(f"no camera frame ({status.error or 'none recently'})")
        if not self._db_ok:
            problems.append(f"audit store: {self._db_problem}")
        if self._frame_errors >= MAX_FRAME_ERRORS:
            problems.append(f"the last {self._frame_errors} frames failed to process")
        if self.publisher is not None and not self.publisher.running:
            problems.append("the audit publisher stopped")
        if self.screen is not None and not self.screen.alive:
            problems.append("the screen server stopped")
        if self.stepup_thread is not None and not self.stepup_thread.running:
            problems.append("the step-up server stopped")
        return Health(not problems, tuple(problems))

    def _watchdog(self, now: float) -> None:
        if now - self._last_probe >= DB_PROBE_S:
            self._last_probe = now
            try:
                self.services.database.probe_write()
                self._db_ok = True
            except KioskError as exc:
                self._db_ok, self._db_problem = False, str(exc)
        interval = (self.notifier.watchdog_s or 2.0) / 2.0
        if now - self._last_health < min(interval, 1.0):
            return
        self._last_health = now
        health = self.health()
        if health != self._health:
            (log.info if health.ok else log.error)("kiosk %s", health.line)
            self.notifier.status(health.line)
            self._health = health
        if health.ok:
            self.notifier.watchdog()

    # --- output -------------------------------------------------------------------------------

    def _show(self, view: View) -> None:
        self.broadcaster.publish(view)

    def _commit(self, change: Change) -> None:
        self.services.repo.commit(change)
        self._notify_publisher()

    def _notify_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.notify()


@contextmanager
def running_in_thread(
    settings: Settings,
    source: FrameSource,
    *,
    pipeline: FacePipeline | None = None,
    liveness: LivenessChecker | None = None,
    devices: Devices | None = None,
    start_timeout_s: float = 120.0,
) -> Iterator[Kiosk]:
    """The daemon on a thread of its own, which opens its own database connection.

    For the flow bench and the tests: yields once the daemon serves; stops it on exit
    and re-raises what ended it, if anything did.
    """
    box: dict[str, Kiosk] = {}
    failed: list[BaseException] = []
    stop = threading.Event()

    def main() -> None:
        try:
            with open_services(settings) as services:
                box["kiosk"] = Kiosk(
                    settings,
                    services,
                    pipeline or FacePipeline.from_settings(settings),
                    source,
                    liveness=liveness,
                    devices=devices,
                )
                box["kiosk"].run(stop)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=main, name="kiosk-main")
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not ("kiosk" in box and box["kiosk"].ready.is_set()):
        if failed or not thread.is_alive() or time.monotonic() > deadline:
            stop.set()
            thread.join(30)
            raise KioskError(f"the kiosk did not start: {failed or 'timed out'}")
        time.sleep(0.05)
    try:
        yield box["kiosk"]
    finally:
        stop.set()
        thread.join(30)
        if thread.is_alive():
            raise KioskError("the kiosk did not stop within 30 s")
        if failed:
            raise failed[0]


def _box(box: tuple[float, float, float, float], w: int, h: int) -> dict[str, float]:
    x1, y1, x2, y2 = box
    x1, y1 = max(0.0, x1), max(0.0, y1)
    x2, y2 = min(float(w), x2), min(float(h), y2)
    return {
        "x": round(x1 / w, 4),
        "y": round(y1 / h, 4),
        "w": round(max(0.0, x2 - x1) / w, 4),
        "h": round(max(0.0, y2 - y1) / h, 4),
    }


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
