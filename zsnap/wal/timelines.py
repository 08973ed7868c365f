"""Timeline histories, and the segments recovery reads along one.

Recovery reads each segment from the newest timeline of the target's history whose start
segment is at or before it (xlogrecovery.c, XLogFileReadAnyTLI): on a timeline that ended at a
switch point, the segments before the one holding the switch point; from that segment on, the
next timeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zsnap.lsn import DEFAULT_SEGMENT_SIZE, Lsn


@dataclass(frozen=True)
class Span:
    """Where a timeline is read from: segments [first, end) (end None: open)."""

    timeline: int
    first: int
    end: int | None


def parse_history(text: str) -> list[tuple[int, Lsn]]:
    """A TTTTTTTT.history file: each ancestor timeline and the LSN where it was left."""
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"bad timeline history line: {raw!r}")
        entries.append((int(parts[0]), Lsn.parse(parts[1])))
    return entries


def timeline_path(
    latest: int, history: Sequence[tuple[int, Lsn]], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[Span]:
    """The spans recovery reads along the history of `latest`, oldest first."""
    spans = []
    first = 0
    for tli, switch in history:
        end = switch.value // segment_size
        spans.append(Span(tli, first, end))
        first = end
    spans.append(Span(latest, first, None))
    return spans
