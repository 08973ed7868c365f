"""Names in a pgBackRest repository, and the one archive a config names."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from zsnap.config import Config
from zsnap.errors import ConfigError
from zsnap.runner import Runner
from zsnap.wal.archives import DirectoryArchive, PgBackRestArchive, archived_name, configured


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
