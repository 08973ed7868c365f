"""Recovery targets: what the user asked for, read once, and the PostgreSQL settings it becomes."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from zsnap.errors import UsageError
from zsnap.lsn import Lsn

_XID = re.compile(r"^\d{1,20}$")


class Kind(StrEnum):
    TIME = "time"
    LSN = "lsn"
    XID = "xid"
    NAME = "name"
    IMMEDIATE = "immediate"
    # No recovery target: replay all the WAL at hand (zsnap.clone.wal_needs: where an
    # immediate target cannot be reached, and this ends at the same point).
    END_OF_WAL = "end-of-wal"


@dataclass(frozen=True)
class Target:
    kind: Kind
    time: datetime | None = None
    lsn: Lsn | None = None
    value: str = ""
    # Set when TIME had no offset and was read as the machine's local time.
    local_time_assumed: bool = False
    # False: stop just before the target (recovery_target_inclusive = false): with an xid,
    # every transaction committed before it is in, and it is not.
    inclusive: bool = True

    @classmethod
    def at_time(cls, text: str) -> Target:
        """ISO 8601; without an offset the machine's local time, as a person at it means."""
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise UsageError(
                f"not an ISO 8601 time: {text!r} (e.g. 2026-11-21T14:04:59+01:00)"
            ) from None
        try:
            # Local time, and UTC (how it is compared with commit timestamps), must exist.
            time = parsed.astimezone() if parsed.tzinfo is None else parsed
            time.astimezone(UTC)
        except (ValueError, OverflowError):
            raise UsageError(f"time out of range: {text!r}") from None
        return cls(Kind.TIME, time=time, local_time_assumed=parsed.tzinfo is None)

    @classmethod
    def at_lsn(cls, text: str) -> Target:
        try:
            return cls(Kind.LSN, lsn=Lsn.parse(text))
        except ValueError:
            raise UsageError(f"not an LSN: {text!r} (e.g. 0/3000060)") from None

    @classmethod
    def at_xid(cls, text: str) -> Target:
        value = text.strip()
        # 0-2 are PostgreSQL's invalid, bootstrap and frozen ids; none commits.
        if not _XID.match(value) or not 3 <= int(value) < 2**64:
            raise UsageError(f"not a transaction id: {text!r} (a number from 3 to 2^64-1)")
        return cls(Kind.XID, value=value)

    @classmethod
    def before_xid(cls, text: str) -> Target:
        return replace(cls.at_xid(text), inclusive=False)

    @classmethod
    def parse(cls, text: str) -> Target:
        """A target as `str()` wrote it (a clone's recorded target)."""
        kind, _, value = text.partition(":")
        makers = {"time": cls.at_time, "lsn": cls.at_lsn, "xid": cls.at_xid,
                  "before-xid": cls.before_xid, "name": cls.at_restore_point}
        if kind in makers:
            return makers[kind](value)
        if text == Kind.IMMEDIATE.value:
            return cls.immediate()
        raise UsageError(f"not a recovery target: {text!r}")

    @property
    def xid(self) -> int | None:
        return int(self.value) if self.kind is Kind.XID else None

    @classmethod
    def at_restore_point(cls, name: str) -> Target:
        if not name or len(name.encode()) >= 64:
            raise UsageError("a restore point name has 1 to 63 bytes")
        if any(not c.isprintable() for c in name):
            raise UsageError(f"a restore point name has no control characters: {name!r}")
        return cls(Kind.NAME, value=name)

    @classmethod
    def immediate(cls) -> Target:
        return cls(Kind.IMMEDIATE)

    @classmethod
    def end_of_wal(cls) -> Target:
        return cls(Kind.END_OF_WAL)

    def __str__(self) -> str:
        if self.time is not None:
            return f"time:{self.time.isoformat()}"
        if self.lsn is not None:
            return f"lsn:{self.lsn}"
        if self.kind in (Kind.IMMEDIATE, Kind.END_OF_WAL):
            return self.kind.value
        if self.kind is Kind.XID and not self.inclusive:
            return f"before-xid:{self.value}"
        return f"{self.kind.value}:{self.value}"

    @property
    def note(self) -> str | None:
        if not self.local_time_assumed or self.time is None:
            return None
        return f"no offset given: read as local time ({self.time.strftime('UTC%z')})"

    def settings(self) -> dict[str, str]:
        """The recovery_target_* settings, unquoted."""
        if self.time is not None:
            # Microseconds kept: commit timestamps have them, and a target exact to the commit
            # must not be rounded to the second.
            return {"recovery_target_time": self.time.isoformat(sep=" ")}
        if self.lsn is not None:
            return {"recovery_target_lsn": str(self.lsn)}
        if self.kind is Kind.XID:
            if not self.inclusive:
                return {"recovery_target_xid": self.value, "recovery_target_inclusive": "false"}
            return {"recovery_target_xid": self.value}
        if self.kind is Kind.NAME:
            return {"recovery_target_name": self.value}
        if self.kind is Kind.END_OF_WAL:
            return {}
        return {"recovery_target": "immediate"}
