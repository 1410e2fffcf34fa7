"""The ``kiosk stepup`` commands: the device's step-up signing key and its public key.

``kiosk stepup init`` makes the Ed25519 signing key once per device (0600) and
prints its public key; ``--token`` also makes the bearer token of loopback
clients (0640). ``kiosk stepup pubkey`` prints the public key as PEM and as a
JWK (``--json``: one object with both and the key id) for the fleet's servers.
Exit codes: 0 done, 77 key or token missing / unsafe / already there, 78 configuration.

"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from kiosk.cli_io import out, out_json
from kiosk.config import Settings

log = logging.getLogger("kiosk")


def _show_public(key: Any, *, as_json: bool) -> None:
    from kiosk.stepup.keys import key_id, public_jwk, public_pem

    if as_json:
        out_json({"kid": key_id(key), "pem": public_pem(key), "jwk": public_jwk(key)})
        return
    out(public_pem(key).rstrip("\n"))
    out(json.dumps(public_jwk(key), separators=(",", ":")))


def cmd_stepup_init(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.stepup.keys import create_signing_key, create_token_file
    from kiosk.stepup.settings import key_path, token_path

    section = settings.stepup
    path = key_path(section, settings.state_dir)
    key = create_signing_key(path)
    log.info("step-up signing key written to %s (0600): back it up with the device secret", path)
    if args.token:
        tpath = token_path(section, settings.state_dir)
        create_token_file(tpath)
        log.info("loopback bearer token written to %s (0640): give it to the clients", tpath)
    log.info("register this public key with the servers that check step-up assertions:")
    _show_public(key, as_json=args.json)
    return 0


def cmd_stepup_pubkey(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.stepup.keys import load_signing_key
    from kiosk.stepup.settings import key_path

    key = load_signing_key(key_path(settings.stepup, settings.state_dir))
    _show_public(key, as_json=args.json)
    return 0


def register_stepup(sub: Any) -> None:
    """Add ``kiosk stepup init|pubkey`` to the ``kiosk`` parser."""
    p = sub.add_parser("stepup", help="step-up verification: the device's signing key")
    ssub = p.add_subparsers(dest="stepup_command", metavar="ACTION", required=True)
    p = ssub.add_parser(
        "init",
        help="make the device's Ed25519 signing key (once) and print its public key",
        description="Refuses to replace an existing key: the fleet trusts its public key.",
    )
    p.add_argument(
        "--token", action="store_true", help="also make the loopback clients' bearer token"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stepup_init)
    p = ssub.add_parser(
        "pubkey",
        help="print the public key (PEM, then a JWK) that servers check assertions with",
    )
    p.add_argument("--json", action="store_true", help="one JSON object: kid, pem, jwk")
    p.set_defaults(func=cmd_stepup_pubkey)
