"""The ``kiosk`` command.

Exit codes mean something to scripts: 0 success (for ``compare``: the same
person), 1 a negative answer (``compare``: different people; ``detect``: no
face), 2 wrong usage, and the :mod:`kiosk.errors` codes for failures
(65 bad image, 69 fetch failed, 72 model missing or unverified, 74 camera,
78 configuration).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kiosk import __version__, supply
from kiosk.cli_accounts import register_accounts
from kiosk.cli_io import out, out_json
from kiosk.cli_stepup import register_stepup
from kiosk.cli_sync import add_sync_bench_options, cmd_bench_sync, register_sync
from kiosk.config import Settings, load_settings
from kiosk.errors import KioskError

log = logging.getLogger("kiosk")


_out = out
_json = out_json


# --- models and samples ---------------------------------------------------------------------


def cmd_models_fetch(args: argparse.Namespace, settings: Settings) -> int:
    artifacts = supply.load_manifest(supply.default_manifest_path())
    results = supply.fetch(
        artifacts, settings.models_path, settings.cache_dir, include_optional=not args.required_only
    )
    for status in results:
        log.info("%-10s %s verified", status.artifact.role, status.path)
    _out(f"{len(results)} model file(s) installed and verified in {settings.models_path}")
    return 0


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    artifacts = supply.load_manifest(supply.default_manifest_path())
    statuses = supply.check(artifacts, settings.models_path)
    if args.json:
        _json(
            [
                {
                    "role": s.artifact.role,
                    "name": s.artifact.name,
                    "file": str(s.path),
                    "source": f"{s.artifact.registry}:{s.artifact.spec}:{s.artifact.member}",
                    "sha256": s.artifact.sha256,
                    "required": s.artifact.required,
                    "state": s.state,
                    "licence": s.artifact.licence,
                }
                for s in statuses
            ]
        )
    else:
        _out(f"models in {settings.models_path}:")
        for s in statuses:
            need = "required" if s.artifact.required else "optional"
            _out(
                f"  {s.state:<8} {s.artifact.role:<10} {s.artifact.file:<36} "
                f"{s.artifact.spec} ({need})"
            )
    bad = [s for s in statuses if s.artifact.required and not s.ok]
    if bad:
        log.error("%d required model(s) missing or unverified: run `kiosk models fetch`", len(bad))
        return 72
    return 0


def samples_dir(settings: Settings) -> Path:
    """Where sample images (demo camera, tests) are installed."""
    return settings.state_dir / "samples"


def cmd_samples_fetch(args: argparse.Namespace, settings: Settings) -> int:
    target = Path(args.dir) if args.dir else samples_dir(settings)
    samples = supply.load_manifest(supply.samples_manifest_path(), "sample")
    supply.fetch(samples, target, settings.cache_dir)
    _out(f"{len(samples)} sample image(s) installed and verified in {target}")
    return 0


# --- faces ----------------------------------------------------------------------------------


def _pipeline(settings: Settings) -> Any:
    from kiosk.vision import FacePipeline

    return FacePipeline.from_settings(settings)


def _load_image(path: str) -> Any:
    from kiosk.errors import FrameError
    from kiosk.vision.frames import decode_image

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FrameError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_image(data, name=path)


def face_summary(obs: Any) -> dict[str, Any]:
    """A face as plain data for --json and for the per-frame output (never an embedding)."""
    return {
        "box": [round(v, 1) for v in obs.box],
        "score": round(float(obs.score), 3),
        "presence": round(float(obs.presence), 3),
        "track": obs.track_id,
        "pose": {
            "yaw": round(obs.pose.yaw, 1),
            "pitch": round(obs.pose.pitch, 1),
            "roll": round(obs.pose.roll, 1),
        },
        "eyes": {
            "ear_right": round(obs.eyes.ear_right, 3),
            "ear_left": round(obs.eyes.ear_left, 3),
            "mouth": round(obs.eyes.mouth, 3),
        },
        "quality": {
            "ok": obs.quality.ok,
            "face_px": round(obs.quality.face_px, 1),
            "brightness": round(obs.quality.brightness, 1),
            "dark_fraction": round(obs.quality.dark_fraction, 3),
            "sharpness": round(obs.quality.sharpness, 1),
            "issues": [issue.name.lower() for issue in obs.quality.issues],
        },
    }


def _face_line(i: int, f: dict[str, Any]) -> str:
    x0, y0, x1, y1 = f["box"]
    q = f["quality"]
    verdict = "ok" if q["ok"] else "fails " + ",".join(q["issues"])
    return (
        f"face {i}: box ({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f}) score {f['score']:.2f} "
        f"yaw {f['pose']['yaw']:+.0f}° pitch {f['pose']['pitch']:+.0f}° "
        f"roll {f['pose']['roll']:+.0f}° quality {verdict}"
    )


def cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = _pipeline(settings)
    faces = [face_summary(o) for o in pipeline.observe(_load_image(args.image))]
    if args.json:
        _json({"image": args.image, "faces": faces})
    else:
        _out(f"{args.image}: {len(faces)} face(s)")
        for i, f in enumerate(faces):
            _out("  " + _face_line(i, f))
    return 0 if faces else 1


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.vision.embedding import cosine_similarity

    pipeline = _pipeline(settings)
    vectors = []
    for path in (args.image_a, args.image_b):
        vector = pipeline.embedding_of(_load_image(path))
        if vector is None:
            log.error("no face found in %s", path)
            if args.json:
                _json(
                    {
                        "image_a": args.image_a,
                        "image_b": args.image_b,
                        "error": f"no face in {path}",
                    }
                )
            return 65
        vectors.append(vector)
    score = cosine_similarity(vectors[0], vectors[1])
    threshold = settings.verification.threshold if args.threshold is None else args.threshold
    same = score >= threshold
    if args.json:
        _json(
            {
                "image_a": args.image_a,
                "image_b": args.image_b,
                "same_person": same,
                "score": round(score, 4),
                "threshold": threshold,
            }
        )
    else:
        verdict = "same person" if same else "different people"
        _out(f"{verdict} (score {score:.3f}, threshold {threshold:.2f})")
    return 0 if same else 1


# --- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.daemon import serve

    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["screen"] = settings.screen.model_copy(update={"port": args.port})
    if args.no_screen:
        overrides["screen"] = settings.screen.model_copy(update={"enabled": False})
    if overrides:
        settings = settings.model_copy(update=overrides)
    return serve(settings, source_spec=args.source, demo_dir=samples_dir(settings))


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.camera import open_source

    pipeline = _pipeline(settings)
    cam = settings.camera
    source = open_source(
        args.source or cam.source,
        width=cam.width,
        height=cam.height,
        fps=args.fps or cam.fps,
        loop=cam.loop if args.frames is None else False,
        demo_dir=samples_dir(settings),
    )
    from kiosk.daemon.systemd import stop_on_signals

    stop = stop_on_signals()
    shown = 0
    with source:
        label = source.label + (" (replay — not a live camera)" if source.is_replay else "")
        log.info("watching %s", label)
        for frame in source:
            obs = pipeline.track(frame.image)
            face = face_summary(obs) if obs is not None else None
            if args.json:
                _json(
                    {
                        "frame": frame.index,
                        "source": source.label,
                        "replay": source.is_replay,
                        "face": face,
                    }
                )
            else:
                _out(f"frame {frame.index}: " + (_face_line(0, face) if face else "no face"))
            shown += 1
            if stop.is_set() or (args.frames is not None and shown >= args.frames):
                break
    return 0


# --- bench ----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.target == "sync":
        return cmd_bench_sync(args, settings)
    if args.target == "flow":
        from kiosk.bench_flow import run_flow_bench

        clip = Path(args.clip) if args.clip else default_eval_data() / BLINK_CLIP
        flow = run_flow_bench(
            settings, samples_dir(settings), attempts=args.attempts, fps=args.fps, clip=clip
        )
        if args.json:
            _json(flow.as_dict())
        else:
            for line in flow.lines():
                _out(line)
        return 0
    from kiosk.bench import run_bench

    frames_dir = Path(args.frames) if args.frames else samples_dir(settings)
    report = run_bench(settings, frames_dir, repeat=args.repeat, with_dlib=args.dlib)
    if args.json:
        _json(report.as_dict())
    else:
        for line in report.lines():
            _out(line)
    return 0


# --- evaluation -----------------------------------------------------------------------------

BLINK_CLIP = "videos/blink_woman_frontal.webm"


def default_eval_data() -> Path:
    """``$KIOSK_EVAL_DATA``, else ``../shared/data`` beside the checkout."""
    import os

    if os.environ.get("KIOSK_EVAL_DATA"):
        return Path(os.environ["KIOSK_EVAL_DATA"])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def cmd_eval_liveness(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.app import build_liveness
    from kiosk.liveness.challenge import ChallengeLiveness
    from kiosk.liveness.evaluate import evaluate, summarize_reasons
    from kiosk.vision import FacePipeline

    checker = build_liveness(settings)
    scoring = settings
    if args.passive:  # load the passive model to report its scores; decisions stay as configured
        scoring = settings.model_copy(
            update={"liveness": settings.liveness.model_copy(update={"passive_threshold": 1.0})}
        )
    pipeline = FacePipeline.from_settings(scoring)
    if not isinstance(checker, ChallengeLiveness):
        log.error("liveness mode is %r: evaluate the challenge mode", settings.liveness.mode)
        return 78
    report = evaluate(
        pipeline,
        Path(args.data) if args.data else default_eval_data(),
        policy=checker.policy,
        limit=args.limit,
        seed=args.seed,
        progress=lambda msg: log.info("%s", msg),
    )
    if args.json:
        _json(report.as_dict())
        return 0
    for line in report.lines():
        _out(line)
    if args.verbose:
        for line in summarize_reasons(report.rows):
            _out("  " + line)
    return 0


# --- wiring ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiosk",
        description="On-device face authentication for shared staff terminals.",
        epilog="Configuration: KIOSK_* environment variables or a TOML file ($KIOSK_CONFIG).",
    )
    parser.add_argument("--version", action="version", version=f"kiosk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = sub.add_parser("models", help="fetch and check the model files")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = msub.add_parser("fetch", help="download, verify (sha256) and install every model")
    p.add_argument("--required-only", action="store_true", help="skip optional models")
    p.set_defaults(func=cmd_models_fetch)
    p = msub.add_parser("list", help="show installed models and whether they verify")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models_list)

    samples = sub.add_parser("samples", help="sample face images (demo camera, tests)")
    ssub = samples.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    p = ssub.add_parser("fetch", help="download and verify the sample images")
    p.add_argument("--dir", help="install here instead of <state_dir>/samples")
    p.set_defaults(func=cmd_samples_fetch)

    p = sub.add_parser("detect", help="find faces in an image: boxes, pose, quality")
    p.add_argument("image", help="an image file (JPEG, PNG, …)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "compare",
        help="are the largest faces of two images the same person? (prints the score)",
        description="For administrators and evaluation scripts; the kiosk screen never shows "
        "scores. Exit 0: same person, 1: different, 65: no face in an image.",
    )
    p.add_argument("image_a", help="first image")
    p.add_argument("image_b", help="second image")
    p.add_argument("--threshold", type=float, help="override the configured match threshold")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "run",
        help="run the kiosk daemon: camera, face check, screen, devices, audit",
        description="The appliance: reads the camera (picamera2, else /dev/video0, else a "
        "replay of the sample images, labelled as a replay on the screen), serves the screen "
        "page on loopback (http://127.0.0.1:8321/ by default), signs staff in with PIN, face "
        "and liveness, watches the session, publishes the audit trail when sync is enabled, "
        "and serves step-up when enabled. Under systemd (Type=notify) it reports READY and "
        "feeds the watchdog while healthy. Stops cleanly on SIGTERM / Ctrl-C.",
    )
    p.add_argument("--source", help="camera spec: auto, picamera2, v4l2:/dev/videoN, or a path")
    p.add_argument("--port", type=int, help="serve the screen on this loopback port")
    p.add_argument("--no-screen", action="store_true", help="do not serve the screen page")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "watch",
        help="print what the face pipeline sees on the camera, one line per frame",
        description="Uses picamera2, else /dev/video0, else replays the sample images "
        "(labelled as a replay). For checking a camera's placement and light. Stops on "
        "SIGTERM / Ctrl-C.",
    )
    p.add_argument("--source", help="camera spec: auto, picamera2, v4l2:/dev/videoN, or a path")
    p.add_argument("--frames", type=int, help="stop after this many frames (no looping)")
    p.add_argument("--fps", type=float, help="frame rate to request / replay at")
    p.add_argument("--json", action="store_true", help="one JSON object per frame")
    p.set_defaults(func=cmd_watch)

    register_accounts(sub)
    register_stepup(sub)
    register_sync(sub)

    ev = sub.add_parser("eval", help="measure the product on labelled data")
    esub = ev.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    p = esub.add_parser(
        "liveness",
        help="APCER per attack type and BPCER, with the count behind each",
        description="Runs bona fide clips and attacks built from ../shared/data (photos as "
        "rigid planes, replay loops, face swaps, real screen replays) through the pipeline and "
        "the configured challenges. In full: half an hour to an hour on a 2-core machine.",
    )
    p.add_argument("--data", help="the shared data folder (default: ../shared/data)")
    p.add_argument("--limit", type=int, help="use only the first N identity photos")
    p.add_argument("--seed", type=int, default=7, help="random seed of attacks and plans")
    p.add_argument(
        "--passive",
        action="store_true",
        help="also report how the passive model would score each presentation",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_eval_liveness)

    p = sub.add_parser(
        "bench",
        help="measure speed: the face pipeline (default), the daemon's face step, audit sync",
        description="`kiosk bench` prints per-stage and whole-verification timings with the "
        "pure model-invoke time beside each; --dlib also times Howdy's dlib pipeline on the "
        "same frames (needs: pip install -e '.[bench]'). `kiosk bench sync` prints events/s "
        "device → broker → ingest on loopback and the centre's ingest rate.",
    )
    p.add_argument(
        "target",
        nargs="?",
        choices=["pipeline", "flow", "sync"],
        default="pipeline",
        help="what to time: the face pipeline (default), the whole daemon's face step (flow) "
        "or audit sync",
    )
    p.add_argument("--frames", help="folder of images to time on (default: the sample images)")
    p.add_argument("--repeat", type=int, default=5, help="passes over the frames (default 5)")
    p.add_argument("--dlib", action="store_true", help="also time the dlib pipeline and compare")
    p.add_argument(
        "--attempts", type=int, default=10, help="flow: sign-ins per path (default 10)"
    )
    p.add_argument(
        "--fps", type=float, default=30.0, help="flow: frames per second offered (default 30)"
    )
    p.add_argument(
        "--clip",
        help="flow: a clip of the enrolled person blinking (default: the blink clip of "
        "../shared/data)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_sync_bench_options(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kiosk`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings()
        logging.getLogger().setLevel("DEBUG" if args.verbose else settings.log_level)
        code: int = args.func(args, settings)
        return code
    except KioskError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
