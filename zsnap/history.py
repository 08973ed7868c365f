"""The durable run history: one JSON line per run of a job or command (what, when, outcome,
duration, detail), appended to `history.jsonl` in the state directory and fsynced, so that a
crash right after a run never loses its record. Readers skip a torn last line."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zsnap.files import write_durably

FILE = "history.jsonl"
# Past this size the oldest half is dropped (rewritten atomically), so the file stays small.
MAX_BYTES = 4 * 1024 * 1024

OK = "ok"
FAILED = "failed"
BUSY = "busy"  # another run held the lock
MISSED = "missed"  # the scheduler could not start the run within the misfire grace


@dataclass
class Entry:
    what: str
    started: str
    outcome: str
    duration_s: float
    detail: str = ""
    origin: str = "cli"
    pid: int = field(default_factory=os.getpid)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.started)


class History:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.path = state_dir / FILE

    @contextmanager
    def _locked(self) -> Iterator[int]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def record(
        self,
        what: str,
        outcome: str,
        *,
        started: datetime,
        duration_s: float,
        detail: str = "",
        origin: str = "cli",
        data: dict[str, Any] | None = None,
    ) -> Entry:
        entry = Entry(
            what=what, started=started.astimezone(UTC).isoformat(timespec="milliseconds"),
            outcome=outcome, duration_s=round(duration_s, 3), detail=detail, origin=origin,
            data=data or {},
        )
        line = (json.dumps(asdict(entry), separators=(",", ":"), default=str) + "\n").encode()
        with self._locked() as fd:
            os.write(fd, line)
            os.fsync(fd)
            if os.fstat(fd).st_size > MAX_BYTES:
                self._trim()
        return entry

    def _trim(self) -> None:
        """Keep the newer half: a new file renamed into place, then the directory fsynced."""
        lines = self.path.read_bytes().splitlines(keepends=True)
        write_durably(self.path, b"".join(lines[len(lines) // 2:]))

    def entries(self, what: str | None = None) -> list[Entry]:
        """Every readable entry, oldest first."""
        if not self.path.exists():
            return []
        result = []
        for raw in self.path.read_text(errors="replace").splitlines():
            try:
                data = json.loads(raw)
                entry = Entry(**data)
            except (ValueError, TypeError):
                continue  # a line torn by a crash, or from an unknown format
            if what is None or entry.what == what:
                result.append(entry)
        return result

    def last(self, what: str) -> Entry | None:
        found = self.entries(what)
        return found[-1] if found else None
