"""Reading a flashback instance's server log: why recovery stopped, where it became consistent.
Pure functions of the log text, so every message PostgreSQL 15 writes here is unit-tested."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from zsnap.lsn import Lsn

_CONSISTENT = re.compile(r"consistent recovery state reached at ([0-9A-F]+/[0-9A-F]+)")
_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_FATAL = re.compile(r"\b(FATAL|PANIC):\s+(.*)")


class Cause(StrEnum):
    BEFORE_CONSISTENT = "before-consistent"  # the stop point precedes the set's consistency
    TARGET_NOT_REACHED = "target-not-reached"  # the WAL ran out before the target
    PORT_IN_USE = "port-in-use"
    NO_SPACE = "no-space"
    OTHER = "other"


# In this order: a full pool shows first as a failed restore_command, and only then as
# "recovery ended before configured recovery target was reached".
_CAUSES: list[tuple[re.Pattern[str], Cause]] = [
    (re.compile(r"No space left on device|Disk quota exceeded"), Cause.NO_SPACE),
    (re.compile(r"requested recovery stop point is before consistent recovery point"),
     Cause.BEFORE_CONSISTENT),
    (re.compile(r"recovery ended before configured recovery target was reached"),
     Cause.TARGET_NOT_REACHED),
    (re.compile(r"could not bind .* Address already in use|could not create any TCP/IP sockets|"
                r'lock file ".*\.s\.PGSQL\.\d+\.lock" already exists'), Cause.PORT_IN_USE),
]


@dataclass(frozen=True)
class Failure:
    cause: Cause
    line: str  # the FATAL/PANIC line that says it, or the last line of the log


def failure(log: str) -> Failure:
    """Why the server stopped: the first known cause in the log, else its first FATAL line."""
    for pattern, cause in _CAUSES:
        m = pattern.search(log)
        if m:
            line = log[log.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
            return Failure(cause, _strip(line))
    fatal = _FATAL.search(log)
    if fatal:
        return Failure(Cause.OTHER, f"{fatal.group(1)}: {fatal.group(2).strip()}")
    lines = [line for line in log.splitlines() if line.strip()]
    return Failure(Cause.OTHER, _strip(lines[-1]) if lines else "the server log is empty")


def _strip(line: str) -> str:
    """Drop the log_line_prefix (time, pid) and keep the message with its severity."""
    m = re.search(r"\b(FATAL|PANIC|ERROR|LOG|WARNING):\s+.*", line)
    return m.group(0).strip() if m else line.strip()


def consistent_at(log: str) -> Lsn | None:
    m = _CONSISTENT.search(log)
    return Lsn.parse(m.group(1)) if m else None


def last_restored(log: str) -> str | None:
    """The last WAL segment restored from the archive."""
    found = _RESTORED.findall(log)
    return found[-1] if found else None


# log_line_prefix's %m or %t (PostgreSQL's default starts with %m): the time, then its zone.
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ")
_STARTING = "starting PostgreSQL"
_REDO_STARTS = "redo starts at"
# Where replay stopped at its target (or ran out of WAL: "redo done").
_STOPPED = ("recovery stopping", "pausing at the end of recovery", "redo done at")


@dataclass(frozen=True)
class Phases:
    """From the server log of the instance's last start, in seconds: the server's start until
    replay began (reading pg_control, the first WAL), and the replay until it stopped at the
    target. Their sum is the floor of a flashback on this machine: whatever zsnap adds to it
    is its overhead."""

    start_s: float
    replay_s: float

    @property
    def limit_s(self) -> float:
        return round(self.start_s + self.replay_s, 3)


def phases(log: str) -> Phases | None:
    """None when the log has no timestamps (a log_line_prefix without %m or %t) or replay has
    not stopped yet."""
    started = redo = stopped = None
    for line in log.splitlines():
        m = _STAMP.match(line)
        if m is None:
            continue
        if _STARTING in line:
            started, redo, stopped = _time(m.group(1)), None, None
        elif _REDO_STARTS in line and started is not None:
            redo = _time(m.group(1))
        elif stopped is None and redo is not None and any(s in line for s in _STOPPED):
            stopped = _time(m.group(1))
    if started is None or redo is None or stopped is None:
        return None
    return Phases(round((redo - started).total_seconds(), 3),
                  round((stopped - redo).total_seconds(), 3))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
