"""Names in a pgBackRest repository, a Barman server's listing, and the one archive a config
names."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zsnap import config
from zsnap.config import Config
from zsnap.errors import ConfigError
from zsnap.lsn import Segment
from zsnap.runner import Result, Runner
from zsnap.wal.archives import (
    BARMAN_PEEKS,
    BarmanArchive,
    DirectoryArchive,
    PgBackRestArchive,
    archived_name,
    configured,
)


@pytest.mark.parametrize(("stored", "name"), [
    ("000000010000000000000008-53de310d61965fc92d0f4afe76aed9192c1b181f.gz",
     "000000010000000000000008"),
    ("000000010000000000000008-53de310d61965fc92d0f4afe76aed9192c1b181f",
     "000000010000000000000008"),
    ("000000010000000000000008.partial-53de310d61965fc92d0f4afe76aed9192c1b181f.zst",
     "000000010000000000000008.partial"),
    ("00000002.history", "00000002.history"),
    ("000000010000000000000002.00000028.backup", "000000010000000000000002.00000028.backup"),
])
def test_pgbackrest_names_are_postgresqls(stored: str, name: str) -> None:
    assert archived_name(stored) == name


def test_a_config_names_one_archive(tmp_path: Path) -> None:
    runner = Runner()
    plain = Config.model_validate({"archive": {"path": str(tmp_path)}})
    assert configured(plain, runner) == DirectoryArchive(tmp_path)
    repo = Config.model_validate({"archive": {"pgbackrest_stanza": "main"}})
    found = configured(repo, runner)
    assert isinstance(found, PgBackRestArchive) and found.where == "pgBackRest stanza main"
    assert found.managed_by == "pgbackrest expire" and found.os_user == "postgres"
    assert configured(Config.model_validate({}), runner) is None


def test_both_archives_are_refused(tmp_path: Path) -> None:
    from zsnap import config as config_module

    path = tmp_path / "zsnap.toml"
    path.write_text(f'[archive]\npath = "{tmp_path}"\npgbackrest_stanza = "main"\n')
    with pytest.raises(ConfigError, match="path or pgbackrest_stanza, not both"):
        config_module.load(path)


def test_a_compressed_segment_is_fetched_uncompressed(tmp_path: Path) -> None:
    archive_dir, work = tmp_path / "archive", tmp_path / "work"
    archive_dir.mkdir()
    work.mkdir()
    name = "000000010000000000000003"
    (archive_dir / f"{name}.gz").write_bytes(gzip.compress(b"wal bytes"))
    (archive_dir / "000000010000000000000004").write_bytes(b"plain")
    (archive_dir / "000000010000000000000005.zst").write_bytes(b"?")
    archive = DirectoryArchive(archive_dir)
    fetched = archive.fetch(name, work)
    assert fetched == work / name and fetched.read_bytes() == b"wal bytes"
    assert archive.fetch("000000010000000000000004", work) == archive_dir / \
        "000000010000000000000004", "a plain file is read where it is"
    assert archive.fetch("000000010000000000000005", work) is None, "no zstd codec here"
    assert archive.fetch("000000010000000000000006", work) is None


class FakeBarman(Runner):
    """Barman's answers to sync-info (its catalogue) and get-wal --peek (as barman/server.py
    walks it: from the name given, the next segment names while their files are there) for
    16 MB segments; the one stand-in for Barman, for the walk over holes."""

    def __init__(self, catalogue: list[str], there: set[str]):
        super().__init__()
        self.catalogue, self.there, self.calls = catalogue, there, 0

    def run(self, argv: Sequence[str], **kwargs: Any) -> Result:
        self.calls += 1
        args = list(argv[argv.index("barman") + 1:])
        if args[0] == "sync-info":
            wals = [{"name": n, "size": 16 << 20, "time": 0.0, "compression": None}
                    for n in self.catalogue]
            return Result(list(argv), 0, json.dumps({"wals": wals, "config": {}}), "")
        assert args[:2] == ["get-wal", "--peek"]
        count, name = int(args[2]), args[4]
        seg = Segment.parse(name, 16 << 20)
        out = []
        while len(out) < count and seg.name in self.there:
            out.append(seg.name)
            seg = Segment(seg.timeline, seg.number + 1, seg.segment_size)
        return Result(list(argv), 0, "".join(f"{n}\n" for n in out), "")


segment_numbers = st.sets(st.integers(0, 600), max_size=80)


@settings(max_examples=200, deadline=None)
@given(segment_numbers, segment_numbers, st.sets(st.sampled_from([1, 2]), min_size=1))
def test_barman_lists_what_it_catalogues_and_can_give(
        catalogued: set[int], missing: set[int], timelines: set[int]) -> None:
    """What Barman catalogues less what get-wal cannot find; files it has but does not
    catalogue (not archived by barman cron yet) are not listed either."""
    size = 16 << 20
    names = {Segment(t, n, size).name for t in timelines for n in catalogued}
    gone = {Segment(t, n, size).name for t in timelines for n in missing}
    extra = {Segment(t, n + 1, size).name for t in timelines for n in catalogued} - names
    catalogue = sorted(names | {"00000002.history"})
    there = (names - gone) | extra
    runner = FakeBarman(catalogue, there)
    archive = BarmanArchive(runner, "main", "ssh barman@backup barman", "postgres")
    holes = len(names & gone) + len(timelines) * len(catalogued)  # a bound on runs and holes
    listed = archive.names()
    if holes < BARMAN_PEEKS:
        assert listed == sorted((names - gone) | {"00000002.history"})
    else:
        assert set(listed) <= (names - gone) | {"00000002.history"}
    assert runner.calls <= BARMAN_PEEKS + 1


def test_a_barman_server_is_one_archive(tmp_path: Path) -> None:
    runner = Runner()
    found = configured(Config.model_validate(
        {"archive": {"barman_server": "main", "barman_command": "barman -c /etc/b.conf"}}),
        runner)
    assert isinstance(found, BarmanArchive) and found.where == "Barman server main"
    assert found.restore_command() == 'barman -c /etc/b.conf get-wal main %f > "%p"'
    path = tmp_path / "zsnap.toml"
    path.write_text('[archive]\npgbackrest_stanza = "x"\nbarman_server = "main"\n')
    with pytest.raises(ConfigError, match="pgbackrest_stanza or barman_server, not both"):
        config.load(path)
    for bad in ('""', "\"ssh 'unclosed\""):
        path.write_text(f'[archive]\nbarman_server = "main"\nbarman_command = {bad}\n')
        with pytest.raises(ConfigError, match="barman_command"):
            config.load(path)
