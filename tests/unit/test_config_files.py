"""A standby whose postgresql.conf lies outside PGDATA (the Debian layout): what its sets record,
and the configuration a clone of it gets."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.catalog import FORMAT, PREFIX, SET_PROPS, Catalog, SnapshotSet, properties
from zsnap.clone.recovery import DataDir, prepare
from zsnap.errors import UsageError
from zsnap.pg.config_files import ConfigFiles, auth_file, clone_postgresql_conf, inside
from zsnap.pg.layout import ROLE_PGDATA, Layout, Place
from zsnap.runner import Runner
from zsnap.zfs import UNSET, Zfs

SET_ID = "20261121T063039Z"
ETC = "/etc/postgresql/15/main"
FILES = ConfigFiles(f"{ETC}/postgresql.conf", f"{ETC}/pg_hba.conf", f"{ETC}/pg_ident.conf")


def test_inside_is_about_whole_path_components(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    assert inside(str(data / "postgresql.conf"), str(data))
    assert inside(str(data / "sub" / "x.conf"), str(data))
    assert not inside(str(tmp_path / "data2" / "postgresql.conf"), str(data))
    assert not inside(f"{ETC}/postgresql.conf", str(data))


def test_inside_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert inside(str(tmp_path / "real" / "postgresql.conf"), str(tmp_path / "link"))


def record(**extra: str) -> dict[str, str]:
    return {key: f"v-{key}" for key in SET_PROPS} | extra


def test_a_set_records_config_paths_only_when_given() -> None:
    assert PREFIX + "config_file" not in properties(record())
    props = properties(record(**FILES.record()))
    assert props[PREFIX + "config_file"] == FILES.config_file
    assert props[PREFIX + "hba_file"] == FILES.hba_file
    assert props[PREFIX + "ident_file"] == FILES.ident_file


def build(**props: str) -> SnapshotSet:
    row = {PREFIX + key: UNSET for key in SET_PROPS}
    row.update({
        "name": f"p/pgdata@zsnap_{SET_ID}", PREFIX + "format": FORMAT, PREFIX + "set": SET_ID,
        PREFIX + "cluster": "main", PREFIX + "members": "p/pgdata",
        PREFIX + "created": "2026-11-21T06:30:39+00:00",
    })
    row.update({PREFIX + key: value for key, value in props.items()})
    return Catalog(Zfs(Runner()), "main")._build(SET_ID, {row["name"]: row})


def test_the_catalog_reads_the_paths_back_and_older_sets_have_none() -> None:
    assert build().config_files is None
    assert build(config_file=UNSET, hba_file=UNSET, ident_file=UNSET).config_files is None
    assert build(**FILES.record()).config_files == FILES


def test_the_clone_conf_includes_the_standby_file_then_overrides_data_directory() -> None:
    text = clone_postgresql_conf(FILES.config_file, Path("/clones/c1/0/data"))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    # A later line wins: data_directory must come after the include that sets the standby's.
    assert lines == [f"include '{ETC}/postgresql.conf'", "data_directory = '/clones/c1/0/data'"]


@given(st.text(alphabet="ab' é", min_size=1, max_size=20))
def test_paths_are_quoted(name: str) -> None:
    text = clone_postgresql_conf("/etc/" + name, Path("/c/" + name))
    doubled = name.replace("'", "''")
    assert f"include '/etc/{doubled}'" in text and f"data_directory = '/c/{doubled}'" in text


def test_an_auth_file_outside_pgdata_is_copied_one_inside_comes_with_the_clone() -> None:
    outside = auth_file(f"{ETC}/pg_hba.conf", "/var/lib/pg/main", Path("/c/data"), "pg_hba.conf")
    assert outside.path == Path("/c/data/pg_hba.conf")
    assert outside.copy_from == Path(f"{ETC}/pg_hba.conf")
    within = auth_file("/var/lib/pg/main/auth/hba", "/var/lib/pg/main", Path("/c/data"), "x")
    assert within.path == Path("/c/data/auth/hba") and within.copy_from is None


def clone_dir(tmp_path: Path) -> DataDir:
    pgdata = tmp_path / "clone"
    (pgdata / "global").mkdir(parents=True)
    (pgdata / "global" / "pg_control").write_bytes(b"")
    (pgdata / "postmaster.pid").write_text("1\n")
    (pgdata / "postgresql.auto.conf").write_text("hba_file = '/elsewhere'\nport = 5433\n")
    layout = Layout((Place(ROLE_PGDATA, "/var/lib/pg/main", "p/pgdata", ""),))
    return DataDir(layout, ["p/pgdata"], [pgdata])


def etc_files(tmp_path: Path) -> ConfigFiles:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "postgresql.conf").write_text("data_directory = '/var/lib/pg/main'\n")
    (etc / "pg_hba.conf").write_text("local all all peer\n")
    (etc / "pg_ident.conf").write_text("# none\n")
    return ConfigFiles(*(str(etc / n) for n in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")))


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="prepare() gives files to the owner")


@root_only
def test_prepare_writes_the_clones_own_configuration(tmp_path: Path) -> None:
    data = clone_dir(tmp_path)
    files = etc_files(tmp_path)
    prepare(data, {"port": "55432"}, "postgres", config_files=files)
    pgdata = data.pgdata
    conf = (pgdata / "postgresql.conf").read_text()
    assert f"include '{files.config_file}'" in conf and f"data_directory = '{pgdata}'" in conf
    assert (pgdata / "pg_hba.conf").read_text() == "local all all peer\n"
    assert (pgdata / "pg_ident.conf").read_text() == "# none\n"
    auto = (pgdata / "postgresql.auto.conf").read_text()
    assert "/elsewhere" not in auto
    assert f"hba_file = '{pgdata / 'pg_hba.conf'}'" in auto
    assert f"ident_file = '{pgdata / 'pg_ident.conf'}'" in auto
    uid = pwd.getpwnam("postgres").pw_uid
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        assert (pgdata / name).stat().st_uid == uid
        assert (pgdata / name).stat().st_mode & 0o777 == 0o600


@root_only
def test_prepare_refuses_a_missing_standby_config_and_writes_nothing(tmp_path: Path) -> None:
    data = clone_dir(tmp_path)
    files = etc_files(tmp_path)
    os.unlink(files.config_file)
    with pytest.raises(UsageError, match=r"configuration file .* cannot be read"):
        prepare(data, {"port": "55432"}, "postgres", config_files=files)
    # The standby's pid file went first: the teardown must not stop the standby through it.
    assert not (data.pgdata / "postmaster.pid").exists()
    assert not (data.pgdata / "postgresql.conf").exists()
    assert not (data.pgdata / "pg_hba.conf").exists()
