"""What makes an archived file damaged, without a server: the one table of compressions, a
segment's size and its first page header, and the cache that never outlives a file."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import time
from pathlib import Path

import pytest

from tests.unit.walfiles import SIZE, write_segment
from zsnap.lsn import Segment
from zsnap.wal.archives import DirectoryArchive
from zsnap.wal.integrity import inspect
from zsnap.wal.names import COMPRESSIONS, Archive, split_suffix

NAME = "000000010000000000000005"


def test_one_table_of_suffixes() -> None:
    assert set(COMPRESSIONS) == {".gz", ".bz2", ".xz", ".zst", ".lz4"}
    assert split_suffix(NAME + ".zst") == (NAME, COMPRESSIONS[".zst"])
    assert split_suffix(NAME + ".partial") == (NAME + ".partial", None)
    archive = Archive.from_names([NAME + ".gz", "000000010000000000000006.lz4",
                                  "000000010000000000000007.partial.gz", "00000002.history"],
                                 SIZE)
    assert archive.segments == {1: {5, 6}} and archive.histories == {2}
    assert archive.partials == ["000000010000000000000007.partial.gz"]


@pytest.mark.parametrize("codec", [None, ".gz", ".bz2", ".xz"])
def test_a_whole_segment_passes_however_compressed(tmp_path: Path, codec: str | None) -> None:
    path = write_segment(tmp_path, NAME)
    if codec is not None:
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[codec]
        with opener(tmp_path / (NAME + codec), "wb") as f:
            f.write(path.read_bytes())
        path.unlink()
        path = tmp_path / (NAME + codec)
    assert inspect(path, Segment.parse(NAME, SIZE), split_suffix(path.name)[1]) is None


def test_what_makes_a_file_damaged(tmp_path: Path) -> None:
    seg = Segment.parse(NAME, SIZE)
    whole = write_segment(tmp_path, NAME).read_bytes()
    cases = {
        "short": (NAME, whole[:100000], "100000 bytes where a segment has"),
        "long": (NAME, whole + b"x", "longer than a segment"),
        "text.gz": (NAME + ".gz", b"not gzip at all", "not gz data"),
        "cut.gz": (NAME + ".gz", gzip.compress(whole)[:5000], "cannot be read"),
        "cut.xz": (NAME + ".xz", lzma.compress(whole)[:200], "cannot be read"),
        "bad.bz2": (NAME + ".bz2", b"BZh9" + b"\0" * 100, "cannot be read"),
        "text.zst": (NAME + ".zst", b"plain", "not zst data"),
        "elsewhere": ("000000010000000000000006", whole, "not the start of segment"),
    }
    partial = {"short", "cut.gz", "cut.xz"}  # what a copy still being written looks like
    for label, (name, content, words) in cases.items():
        path = tmp_path / label / name
        path.parent.mkdir()
        path.write_bytes(content)
        found = inspect(path, Segment.parse(name[:24], SIZE) if label == "elsewhere" else seg,
                        split_suffix(name)[1])
        assert found is not None and words in found.why, (label, found)
        assert found.partial == (label in partial), label
    # zstd and lz4 have no codec here: their magic bytes are all that is checked.
    ok = tmp_path / "ok" / (NAME + ".zst")
    ok.parent.mkdir()
    ok.write_bytes(COMPRESSIONS[".zst"].magic + b"anything")
    assert inspect(ok, seg, COMPRESSIONS[".zst"]) is None


def test_the_listing_names_damage_and_forgets_a_replaced_file(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    write_segment(archive_dir, "000000010000000000000004")
    good = write_segment(archive_dir, NAME).read_bytes()
    (archive_dir / NAME).write_bytes(good[:8192])
    cache = tmp_path / "wal-files.json"
    archive = DirectoryArchive(archive_dir, cache)
    # Just written: a copy still under way (archive_command = cp), not archived yet.
    arriving = archive.listing(SIZE)
    assert arriving.segments == {1: {4}} and arriving.damaged == {}
    hour_ago = time.time() - 3600
    os.utime(archive_dir / NAME, (hour_ago, hour_ago))
    listed = archive.listing(SIZE)
    assert listed.segments == {1: {4}} and "truncated" in listed.damaged[NAME]
    assert json.loads(cache.read_text())[NAME][2] == listed.damaged[NAME]
    (archive_dir / NAME).write_bytes(good)
    os.utime(archive_dir / NAME, ns=(1, 1))  # whatever the clock: another size and mtime
    assert archive.listing(SIZE).segments == {1: {4, 5}}
    cache.write_text("[]")  # not ours: read as no cache
    assert archive.listing(SIZE).damaged == {}
