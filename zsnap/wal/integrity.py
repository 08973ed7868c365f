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


@dataclass(frozen=True)
class Problem:
    why: str
    # What a copy still being written also looks like: too short, or its stream cut off.
    partial: bool = False


def inspect(path: Path, segment: Segment, compression: Compression | None) -> Problem | None:
    """What is wrong with `path` as the archived copy of `segment`, or None. A compression
    zsnap has no codec for (zstd, lz4) is checked by its magic bytes alone."""
    size = segment.segment_size
    try:
        if compression is not None:
            with path.open("rb") as raw:
                magic = raw.read(len(compression.magic))
            if magic != compression.magic:
                return Problem(f"not {compression.suffix[1:]} data",
                               partial=compression.magic.startswith(magic))
            if compression.opener is None:
                return None
        with (compression.opener(path) if compression and compression.opener
              else path.open("rb")) as f:
            head = f.read(_LONG_HEADER.size)
            length = len(head)
            while length <= size and (chunk := f.read(_CHUNK)):
                length += len(chunk)
    except EOFError as e:
        return Problem(f"cannot be read ({e})", partial=True)
    except (OSError, lzma.LZMAError, zlib.error) as e:
        return Problem(f"cannot be read ({e})")
    if length > size:
        return Problem(f"longer than a segment ({size} bytes)")
    if length < size:
        return Problem(f"{length} bytes where a segment has {size} (truncated?)", partial=True)
    _, info, _, pageaddr, _, _, seg_size, _ = _LONG_HEADER.unpack(head)
    if not info & _XLP_LONG_HEADER or pageaddr != segment.start().value or seg_size != size:
        return Problem(f"its first page is not the start of segment {segment.name}")
    return None


@dataclass
class Inspector:
    """`inspect` with its findings kept in `cache` (a JSON file; None: not kept)."""

    cache: Path | None
    _found: dict[str, list[object]] = field(default_factory=dict)
    _loaded: bool = False
    _changed: bool = False

    def problem(self, path: Path, segment: Segment,
                compression: Compression | None) -> Problem | None:
        self._load()
        stat = path.stat()
        key = [stat.st_size, stat.st_mtime_ns]
        kept = self._found.get(path.name)
        if kept is not None and kept[:2] == key:
            why, partial = kept[2], kept[3]
            return Problem(why, bool(partial)) if isinstance(why, str) else None
        found = inspect(path, segment, compression)
        self._found[path.name] = [*key, found.why if found else None,
                                  found.partial if found else False]
        self._changed = True
        return found

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
                           if isinstance(v, list) and len(v) == 4}

    def save(self, present: set[str]) -> None:
        """Keep what was found of the files still there (a cache: failing costs only time)."""
        if self.cache is None or not self._changed:
            return
        kept = {name: v for name, v in self._found.items() if name in present}
        try:
            write_durably(self.cache, json.dumps(kept, separators=(",", ":")), sync=False)
        except OSError as e:
            log.debug("archive check cache not written: %s", e)
