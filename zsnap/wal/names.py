"""The names of the files in a WAL archive, and the one table of the compressions archive
tools write: which segment, history or backup file a name is, whatever its suffix."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zsnap.lsn import DEFAULT_SEGMENT_SIZE, Segment

SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})$")
PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.partial$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
BACKUP = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")


@dataclass(frozen=True)
class Compression:
    suffix: str
    magic: bytes  # what a file so compressed starts with
    # How zsnap reads it back (the standard library's codecs); None: zsnap cannot, only the
    # restore_command that goes with it can (recovery still reads it).
    opener: Callable[[Path], io.BufferedIOBase] | None


# What archive_command wrappers write after the WAL file's name: gzip, bzip2 and xz (scripts,
# Barman's compression), zstd and lz4 (pgBackRest's compress-type, WAL-G).
COMPRESSIONS = {c.suffix: c for c in (
    Compression(".gz", b"\x1f\x8b", gzip.GzipFile),
    Compression(".bz2", b"BZh", bz2.BZ2File),
    Compression(".xz", b"\xfd7zXZ\x00", lzma.LZMAFile),
    Compression(".zst", b"\x28\xb5\x2f\xfd", None),
    Compression(".lz4", b"\x04\x22\x4d\x18", None),
)}


def split_suffix(name: str) -> tuple[str, Compression | None]:
    """The name PostgreSQL gave the file, and the compression its suffix says."""
    stem, dot, suffix = name.rpartition(".")
    found = COMPRESSIONS.get(f".{suffix}") if dot else None
    return (stem, found) if found is not None else (name, None)


@dataclass
class Archive:
    """What an archive holds, sorted by kind: which segment is there on which timeline, and
    which files are there but cannot be read as what their name says (never counted as
    there: recovery would stop at them)."""

    segments: dict[int, set[int]] = field(default_factory=dict)  # timeline -> segment numbers
    histories: set[int] = field(default_factory=set)
    partials: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # file name -> what is wrong
    # The file each segment was found as (its name with a compression suffix, say).
    files: dict[tuple[int, int], str] = field(default_factory=dict)

    @classmethod
    def from_names(cls, names: Iterable[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> Archive:
        archive = cls()
        for name in names:
            plain, _ = split_suffix(name)
            if SEGMENT.match(plain):
                seg = Segment.parse(plain, segment_size)
                archive.segments.setdefault(seg.timeline, set()).add(seg.number)
                archive.files[(seg.timeline, seg.number)] = name
            elif PARTIAL.match(plain):
                archive.partials.append(name)
            elif m := HISTORY.match(name):
                archive.histories.add(int(m.group(1), 16))
            elif BACKUP.match(name):
                archive.backups.append(name)
            else:
                archive.other.append(name)
        return archive

    @property
    def timelines(self) -> set[int]:
        return set(self.segments) | self.histories

    def has(self, segment: Segment) -> bool:
        return segment.number in self.segments.get(segment.timeline, set())

    def set_damaged(self, name: str, why: str | None, segment_size: int) -> None:
        """`name` is there but unreadable: no longer counted as there, and named as damaged
        unless `why` is None (a file still being written)."""
        if why is not None:
            self.damaged[name] = why
        seg = Segment.parse(split_suffix(name)[0], segment_size)
        self.segments.get(seg.timeline, set()).discard(seg.number)
        self.files.pop((seg.timeline, seg.number), None)
