"""The ordering and gap protocol of a replica, with no storage and no loop: entries in, "apply these" and "ask for
those" out.

Entries of one source carry gapless sequence numbers. `Ordering` hands out, in order, the runs that follow the
mark (what has been applied), holds entries that arrive past a gap, drops duplicates, stops at a hold, and says
when the source must be asked for what is missing. Its caller applies each run and reports the new mark.
"""

from __future__ import annotations

import heapq
import secrets
from operator import itemgetter

APPLY_BATCH = 500  # journal entries per replica transaction
MAX_PENDING_BYTES = 256 << 20  # entries held in memory past a gap (or while a snapshot is owed); beyond, asked again

# A journal entry as it travels: (sequence, clock, body).
Entry = tuple[int, int, bytes]
_sequence = itemgetter(0)


class Ordering:
    """Where one source's entries stand: the mark `hwm`, held entries, the source's last known sequence, the hold,
    and the request awaiting an answer."""

    def __init__(self, hwm: int = 0, max_pending: int = 100_000, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.hwm = hwm  # the highest sequence applied
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pending: dict[int, tuple[int, bytes]] = {}  # seq -> (clock, body) of entries held past a gap
        self.pending_bytes = 0
        # A heap of the held sequences, so that what the mark has passed is found without looking at every held
        # entry (a replica waiting for a gap to be filled calls held_run for each message of live traffic). It may
        # also hold sequences already taken out of `pending` by a run: they go once the mark passes them.
        self._held: list[int] = []
        self.source_last = 0  # the source's latest sequence, as far as we know
        self.hold_at: int | None = None  # hand out nothing past this sequence
        self.requested_at: float | None = None  # when the request awaiting an answer was made
        self.stream = 0  # the stream id of the latest request
        self.duplicates = 0

    # --- entries in ------------------------------------------------------------------------------------------
    def take(self, entries: list[Entry], last: int) -> list[Entry]:
        """Entries from the source (which says its latest sequence is `last`): the run to apply now (those that
        follow the mark, up to the hold); the rest past a gap is held, what is at or below the mark dropped."""
        self.source_last = max(self.source_last, last)
        hwm = self.hwm
        hold_at = self.hold_at
        # The live stream: every entry follows the mark in order (checked in C, not entry by entry).
        if (
            entries
            and entries[0][0] == hwm + 1
            and (hold_at is None or entries[-1][0] <= hold_at)
            and list(map(_sequence, entries)) == list(range(hwm + 1, hwm + 1 + len(entries)))
        ):
            return entries
        run: list[Entry] = []
        for entry in entries:
            seq = entry[0]
            if seq <= hwm:
                self.duplicates += 1
            elif seq == hwm + 1 + len(run) and (hold_at is None or seq <= hold_at):
                run.append(entry)
            else:
                self.hold(entry)
        return run

    def hold(self, entry: Entry) -> None:
        """Keep an entry for later (at most `max_pending` of them and `max_pending_bytes` of bodies: beyond, it is
        asked for again)."""
        seq, clock, body = entry
        if seq in self.pending or len(self.pending) >= self.max_pending:
            return
        if self.pending_bytes + len(body) <= self.max_pending_bytes:
            self.pending[seq] = (clock, body)
            self.pending_bytes += len(body)
            heapq.heappush(self._held, seq)

    def held_run(self) -> list[Entry]:
        """The next run of held entries that follows the mark (at most APPLY_BATCH, up to the hold), or []."""
        pending = self.pending
        held = self._held
        while held and held[0] <= self.hwm:  # held entries the mark has passed since: duplicates now
            stale = pending.pop(heapq.heappop(held), None)
            if stale is not None:
                self.pending_bytes -= len(stale[1])
                self.duplicates += 1
        if len(held) > 2 * len(pending) + APPLY_BATCH:  # (runs taken out and never applied: rebuilt, bounded)
            self._held = held = list(pending)
            heapq.heapify(held)
        run: list[Entry] = []
        seq = self.hwm + 1
        while seq in pending and len(run) < APPLY_BATCH and (self.hold_at is None or seq <= self.hold_at):
            clock, body = pending.pop(seq)
            self.pending_bytes -= len(body)
            run.append((seq, clock, body))
            seq += 1
        return run

    def applied(self, seq: int) -> None:
        """The caller applied (and committed) everything up to `seq`."""
        self.hwm = seq
        if seq >= self.source_last:
            self.requested_at = None  # else the answer to our request is still arriving

    def restart_at(self, seq: int) -> None:
        """A snapshot at `seq` was taken: the mark moves there."""
        self.hwm = seq
        self.source_last = max(self.source_last, seq)
        self.requested_at = None

    # --- what to ask -----------------------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        """Whether the mark stands at the hold (entries past it wait)."""
        return self.hold_at is not None and self.hwm >= self.hold_at

    @property
    def behind(self) -> bool:
        """Whether the source is known to be further on than the mark."""
        return self.source_last > self.hwm

    @property
    def current(self) -> bool:
        """Whether nothing is held and the mark is at the source's latest sequence."""
        return not self.pending and self.hwm >= self.source_last

    def should_ask(self) -> bool:
        """Whether entries are missing (a gap, or a source further on) and no request is awaiting its answer."""
        return (bool(self.pending) or self.behind) and self.requested_at is None and not self.holding

    def waiting(self, now: float, timeout: float) -> bool:
        """Whether a request made less than `timeout` ago still awaits its answer."""
        return self.requested_at is not None and now - self.requested_at < timeout

    def hurry(self, now: float, timeout: float, silence: float) -> None:
        """A fault has just healed: the request awaiting its answer may have been lost in it, so it times out
        `silence` seconds from now instead of `timeout` after it was made (an answer arriving resets the clock)."""
        if self.requested_at is not None:
            self.requested_at = min(self.requested_at, now + silence - timeout)

    def ask(self, now: float) -> int:
        """A request is made now: returns its stream id. A new one per request: a snapshot still arriving for an
        earlier request (asked again after a silence, a node restart) must not be mixed with this one's."""
        self.requested_at = now
        self.stream = secrets.randbits(62) + 1
        return self.stream

    def oldest_missing_clock(self) -> int:
        """The clock of the oldest held entry (0 when none is held)."""
        return self.pending[min(self.pending)][0] if self.pending else 0
