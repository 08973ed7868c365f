"""Whether an archived WAL file is what its name says: a whole segment that starts where its
name puts it. A truncated copy, a `.gz` that holds text, an `.xz` cut short are damaged: a gap
for `wal check`, the recovery window and a clone's check before it starts, never a segment
recovery would stop at half-way. What is found is kept per file (its size and modification
time), so each file is opened, or decompressed, once."""

from __future__ import annotations

import json
import logging
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from zsnap.files import write_durably
from zsnap.lsn import Segment
from zsnap.wal.names import Compression

log = logging.getLogger(__name__)

# The long header of a segment's first page (access/xlog_internal.h): xlp_magic, xlp_info,
# xlp_tli, xlp_pageaddr, xlp_rem_len (padded to 24 bytes), then xlp_sysid, xlp_seg_size and
# xlp_xlog_blcksz.
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
_XLP_LONG_HEADER = 0x0002
_CHUNK = 1 << 20


def inspect(path: Path, segment: Segment, compression: Compression | None) -> str | None:
    """What is wrong with `path` as the archived copy of `segment`, or None. A compression
    zsnap has no codec for (zstd, lz4) is checked by its magic bytes alone."""
    size = segment.segment_size
    try:
        if compression is not None:
            with path.open("rb") as raw:
                if raw.read(len(compression.magic)) != compression.magic:
                    return f"not {compression.suffix[1:]} data"
            if compression.opener is None:
                return None
        with (compression.opener(path) if compression and compression.opener
              else path.open("rb")) as f:
            head = f.read(_LONG_HEADER.size)
            length = len(head)
            while length <= size and (chunk := f.read(_CHUNK)):
                length += len(chunk)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        return f"cannot be read ({e})"
    if length > size:
        return f"longer than a segment ({size} bytes)"
    if length < size:
        return f"{length} bytes where a segment has {size} (truncated?)"
    _, info, _, pageaddr, _, _, seg_size, _ = _LONG_HEADER.unpack(head)
    if not info & _XLP_LONG_HEADER or pageaddr != segment.start().value or seg_size != size:
        return f"its first page is not the start of segment {segment.name}"
    return None


@dataclass
class Inspector:
    """`inspect` with its findings kept in `cache` (a JSON file; None: not kept)."""

    cache: Path | None
    _found: dict[str, list[object]] = field(default_factory=dict)
    _loaded: bool = False
    _changed: bool = False

    def problem(self, path: Path, segment: Segment, compression: Compression | None) -> str | None:
        self._load()
        stat = path.stat()
        key = [stat.st_size, stat.st_mtime_ns]
        kept = self._found.get(path.name)
        if kept is not None and kept[:2] == key:
            why = kept[2]
            return why if isinstance(why, str) else None
        why = inspect(path, segment, compression)
        self._found[path.name] = [*key, why]
        self._changed = True
        return why

    def _load(self) -> None:
        if self._loaded or self.cache is None:
            return
        self._loaded = True
        try:
            data = json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return
        if isinstance(data, dict):  # anything else is not ours: start again
            self._found = {k: v for k, v in data.items()
                           if isinstance(v, list) and len(v) == 3}

    def save(self, present: set[str]) -> None:
        """Keep what was found of the files still there (a cache: failing costs only time)."""
        if self.cache is None or not self._changed:
            return
        kept = {name: v for name, v in self._found.items() if name in present}
        try:
            write_durably(self.cache, json.dumps(kept, separators=(",", ":")), sync=False)
        except OSError as e:
            log.debug("archive check cache not written: %s", e)
