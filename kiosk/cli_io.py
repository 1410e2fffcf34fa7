"""Output helpers shared by the ``kiosk`` command's modules (results go to stdout)."""

from __future__ import annotations

import json
import sys
from typing import Any


def out(text: str = "") -> None:
    """Write a line of the command's own output (results, tables) to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def out_json(data: Any) -> None:
    """One compact JSON document on one line."""
    out(json.dumps(data, separators=(",", ":")))
