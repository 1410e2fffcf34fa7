"""Which PUBACKed events the centre has confirmed, and which a broker must have lost.

A PUBACK means the broker took the message, not that it will deliver it:
mosquitto keeps messages in memory and saves snapshots, so a broker killed
(``kill -9``, a power cut) between its PUBACK and its next save forgets what it
had not yet passed on. The test suite's broker loses tens of events per
``kill -9`` under load this way. So the centre confirms what it has stored with
receipts (``…/receipt``), and the device keeps track of acknowledged events
until their receipt arrives.

An acknowledged event counts as lost — and is published again — when

* an event acknowledged *after* it was confirmed at least ``grace_s`` ago (the
  broker delivers one publisher's messages in order, so the centre should
  have had it by then; ``grace_s`` allows for several ingest workers), or
* it has waited ``tail_s`` (10 × grace) while receipts for other events kept
  arriving after it was acknowledged: the centre is working, this one is not
  coming (the last events before a quiet period have no later event to go by).

While no receipts arrive at all (the centre is down, or busy with a backlog
ahead of these), nothing is re-sent: the broker still holds the events. A
republished event that did arrive before is a duplicate the centre drops.

The *watermark* — every row marked sent with ``seq`` at or below it is
confirmed — is kept in a small state file beside the database, so a restarted
device re-checks exactly the acknowledged-but-unconfirmed rows.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Awaiting:
    seq: int
    order: int
    acked_at: float


class ConfirmationTracker:
    """Acknowledged events awaiting the centre's receipt (not thread-safe: one owner)."""

    def __init__(self, grace_s: float, *, watermark: int = 0, limit: int = 200_000) -> None:
        self.grace_s = grace_s
        self.limit = limit  # beyond this many, the oldest are no longer tracked
        self.tail_s = 10 * grace_s
        self._awaiting: OrderedDict[str, _Awaiting] = OrderedDict()
        self._order = 0
        self._confirmed_orders: deque[tuple[float, int]] = deque()  # (when, max order so far)
        self._max_confirmed = -1
        self._last_receipt = float("-inf")
        self._max_seq = watermark
        self._early: OrderedDict[str, None] = OrderedDict()  # receipts ahead of their PUBACK

    def __len__(self) -> int:
        return len(self._awaiting)

    def acked(self, uid: str, seq: int, now: float) -> None:
        """The broker acknowledged this event."""
        self._max_seq = max(self._max_seq, seq)
        if uid in self._early:  # its receipt came first
            del self._early[uid]
            return
        if self.grace_s <= 0:
            return
        self._awaiting.pop(uid, None)
        self._awaiting[uid] = _Awaiting(seq, self._order, now)
        self._order += 1
        while len(self._awaiting) > self.limit:  # receipts are not coming: stay bounded
            self._awaiting.popitem(last=False)

    def confirmed(self, uids: list[str], now: float) -> int:
        """Receipts arrived for these uids; returns how many were awaited."""
        self._last_receipt = now
        found = 0
        best = self._max_confirmed
        for uid in uids:
            entry = self._awaiting.pop(uid, None)
            if entry is None:
                self._early[uid] = None
                continue
            found += 1
            best = max(best, entry.order)
        while len(self._early) > 10_000:
            self._early.popitem(last=False)
        if best > self._max_confirmed:
            self._max_confirmed = best
            self._confirmed_orders.append((now, best))
        return found

    def presumed_lost(self, now: float) -> list[tuple[str, int]]:
        """(uid, seq) of events to publish again; they are no longer tracked."""
        if self.grace_s <= 0 or not self._awaiting:
            return []
        while (
            len(self._confirmed_orders) > 1 and self._confirmed_orders[1][0] <= now - self.grace_s
        ):
            self._confirmed_orders.popleft()
        threshold = -1
        if self._confirmed_orders and self._confirmed_orders[0][0] <= now - self.grace_s:
            threshold = self._confirmed_orders[0][1]
        lost: list[tuple[str, int]] = []
        for uid, entry in self._awaiting.items():
            overdue = now - entry.acked_at >= self.tail_s and self._last_receipt > entry.acked_at
            if not (entry.order < threshold or overdue):
                break  # in acknowledgement order: no later entry qualifies either
            lost.append((uid, entry.seq))
        for uid, _ in lost:
            del self._awaiting[uid]
        return lost

    def watermark(self) -> int:
        """Every acknowledged row with ``seq`` up to this is confirmed."""
        if self._awaiting:
            return min(entry.seq for entry in self._awaiting.values()) - 1
        return self._max_seq


class WatermarkFile:
    """``<database>.sync-state``: the confirmed watermark, written atomically."""

    def __init__(self, database_path: Path) -> None:
        self.path = database_path.with_name(database_path.name + ".sync-state")

    def read(self) -> int | None:
        """The saved watermark, or None when there is none (or it cannot be read)."""
        try:
            data = json.loads(self.path.read_text())
            value = data.get("confirmed_seq") if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None
        return int(value) if isinstance(value, int) and value >= 0 else None

    def write(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"confirmed_seq": value}))
            os.replace(tmp, self.path)
