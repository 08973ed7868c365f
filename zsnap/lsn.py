"""PostgreSQL log sequence numbers and WAL segment names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@total_ordering
@dataclass(frozen=True)
class Lsn:
    value: int

    @classmethod
    def parse(cls, text: str) -> Lsn:
        m = _LSN.match(text.strip())
        if not m:
            raise ValueError(f"not an LSN: {text!r}")
        return cls((int(m.group(1), 16) << 32) | int(m.group(2), 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Lsn):
            return NotImplemented
        return self.value < other.value

    def __sub__(self, other: Lsn) -> int:
        return self.value - other.value

    def segment(self, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
        return Segment(timeline, self.value // segment_size, segment_size)


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment file: TTTTTTTTXXXXXXXXYYYYYYYY (timeline, then the segment number split
    into 'log' and 'seg' parts by how many segments fit in 4 GiB)."""

    timeline: int
    number: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    @property
    def per_log(self) -> int:
        return 0x100000000 // self.segment_size

    @property
    def name(self) -> str:
        log_part, seg_part = divmod(self.number, self.per_log)
        return f"{self.timeline:08X}{log_part:08X}{seg_part:08X}"

    @classmethod
    def parse(cls, name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
        m = _SEGMENT.match(name)
        if not m:
            raise ValueError(f"not a WAL segment name: {name!r}")
        per_log = 0x100000000 // segment_size
        seg = int(m.group(3), 16)
        if seg >= per_log:
            raise ValueError(f"segment part out of range for {segment_size} byte segments: {name}")
        return cls(int(m.group(1), 16), int(m.group(2), 16) * per_log + seg, segment_size)

    def next(self) -> Segment:
        return Segment(self.timeline, self.number + 1, self.segment_size)

    def start(self) -> Lsn:
        return Lsn(self.number * self.segment_size)


def is_segment_name(name: str) -> bool:
    return _SEGMENT.match(name) is not None
