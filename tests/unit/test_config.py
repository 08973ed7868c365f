"""Configuration validation: one line naming the key for every problem."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from zsnap import CONFIG_ENV_VAR, DEFAULT_CONFIG
from zsnap.config import config_path, load
from zsnap.errors import ConfigError, UsageError

ISSUE_EXAMPLE = """
[standby]
conninfo = "host=/run/postgresql port=5432 user=postgres dbname=postgres"
os_user = "postgres"                    # owns PGDATA; runs clones
pg_bin = "/usr/lib/postgresql/15/bin"   # optional, else found via pg_config/PATH
[archive]
restore_command = "cp /archive/%f %p"
[clones]
mount_root = "/var/lib/zsnap/clones"
port_range = [55432, 55532]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zsnap.toml"
    path.write_text(text)
    return path


def test_the_documented_keys_load(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ISSUE_EXAMPLE))
    assert cfg.standby.conninfo.startswith("host=/run/postgresql")
    assert cfg.standby.os_user == "postgres"
    assert cfg.standby.pg_bin == Path("/usr/lib/postgresql/15/bin")
    assert cfg.archive.restore_command == "cp /archive/%f %p"
    assert cfg.clones.mount_root == Path("/var/lib/zsnap/clones")
    assert cfg.clones.port_range == (55432, 55532)


def test_defaults_of_an_empty_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.standby.allow_primary is False
    assert cfg.standby.pause_timeout_s == 30.0
    assert cfg.archive.path is None
    assert cfg.snapshot.cluster == "main"
    assert cfg.state.dir == Path("/var/lib/zsnap")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[standby]\nconnifo = "x"\n', "unknown key standby.connifo"),
        ("[nonsense]\nx = 1\n", "unknown key nonsense"),
        ("[clones]\nport_range = [60000, 50000]\n", "clones.port_range: must be [low, high]"),
        ("[clones]\nport_range = [80, 90]\n", "clones.port_range"),
        ("[clones]\nport_range = [1, 2, 3]\n", "clones.port_range"),
        ("[standby]\ncheckpoint_timeout_s = 0\n", "standby.checkpoint_timeout_s"),
        ("[standby]\nallow_primary = \"perhaps\"\n", "standby.allow_primary"),
        ('[snapshot]\ncluster = "a/b"\n', "snapshot.cluster"),
        ("standby = 3\n", "standby"),
        ("[standby]\nconninfo = \n", "invalid TOML"),
        ('[clones]\nsettings = { archive_mode = "on" }\n',
         "clones.settings: zsnap sets archive_mode itself"),
        ('[clones]\nsettings = { Primary_Conninfo = "host=prod" }\n', "Primary_Conninfo"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    line = str(caught.value)
    assert message in line and str(path) in line
    assert "\n" not in line
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2


def test_more_problems_are_counted_not_listed(tmp_path: Path) -> None:
    path = write(tmp_path, '[standby]\nconnifo = "x"\nos_usr = "y"\n')
    with pytest.raises(ConfigError, match=r"\(and 1 more\)"):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "absent.toml")


def test_where_the_config_comes_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    explicit = tmp_path / "a.toml"
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "b.toml"))
    assert config_path(explicit) == explicit
    assert config_path(None) == tmp_path / "b.toml"
    monkeypatch.delenv(CONFIG_ENV_VAR)
    assert config_path(None) == Path(DEFAULT_CONFIG)


def test_the_environment_wins_over_the_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "z.toml"
    path.write_text('[standby]\nconninfo = "host=file"\n[retention]\nhourly = 10\n'
                    '[clones]\nsettings = { work_mem = "4MB" }\n')
    for name, value in {
        "ZSNAP_STANDBY__CONNINFO": "host=env", "ZSNAP_RETENTION__HOURLY": "5",
        "ZSNAP_CLONES__PORT_RANGE": "[60000, 60010]", "ZSNAP_CLONES__SETTINGS__maintenance_io_"
        "concurrency": "64", "ZSNAP_CHECK": '{"set_age_warning": "1h"}',
        "zsnap_schedule__snapshot": "off", "ZSNAP_TEST_PG_BIN": "/not/the/config's",
    }.items():
        monkeypatch.setenv(name, value)
    cfg = load(path)
    assert cfg.standby.conninfo == "host=env" and cfg.retention.hourly == 5
    assert cfg.clones.port_range == (60000, 60010)
    assert cfg.clones.settings == {"work_mem": "4MB", "maintenance_io_concurrency": "64"}
    assert cfg.check.set_age_warning == timedelta(hours=1) and cfg.schedule.snapshot == "off"
