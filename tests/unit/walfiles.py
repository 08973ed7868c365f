"""Archived WAL files for unit tests: a segment's first page header, then zeros (sparse)."""

from __future__ import annotations

import struct
from pathlib import Path

from zsnap.lsn import Segment

SIZE = 16 << 20


def write_segment(directory: Path, name: str, size: int = SIZE) -> Path:
    seg = Segment.parse(name, size)
    path = directory / name
    with path.open("wb") as f:
        # xlp_magic (15's), xlp_info = XLP_LONG_HEADER, tli, pageaddr, rem_len, pad,
        # sysid, seg_size, blcksz
        f.write(struct.pack("<HHIQI4xQII", 0xD110, 2, seg.timeline, seg.start().value, 0,
                            7, size, 8192))
        f.truncate(size)
    return path
