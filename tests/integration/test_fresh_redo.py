"""`[snapshot] primary_checkpoint` on the real lab: under writes, a set's redo point is a
checkpoint the primary made after the snapshot began (without it, the primary's last one, long
before), the set restores, and a conninfo that reaches the wrong server or none is a warning
in doctor and in the snapshot's log while the set is still taken."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli, archive_all, replicated, sql, with_setting
from zsnap.lab import LabInfo, LoadWriter
from zsnap.lsn import Lsn


def with_primary_checkpoint(lab: LabInfo, path: Path, conninfo: str) -> Cli:
    return Cli(with_setting(lab.config_file, path, "snapshot",
                            f'primary_checkpoint = "{conninfo}"'))


def primary_check(cli: Cli) -> dict[str, str]:
    report = json.loads(cli("doctor", "--json", check=False).stdout)
    return next(c for c in report["checks"] if c["name"] == "primary checkpoint")


def test_sets_start_at_a_checkpoint_asked_of_the_primary(lab: LabInfo, tmp_path: Path) -> None:
    cli = with_primary_checkpoint(lab, tmp_path / "fresh.toml", lab.conninfo("primary"))
    assert primary_check(cli)["status"] == "OK"
    assert cli.json("snapshot", "--dry-run")["primary_checkpoint"] is True

    load = LoadWriter(lab.conninfo("primary")).start()
    try:
        replicated(lab)
        plain = Cli(lab.config_file).json("snapshot")
        before = Lsn.parse(sql(lab, "primary", "SELECT pg_current_wal_lsn()::text"))
        fresh = cli.json("snapshot")
    finally:
        load.stop()
    # Without the option a set starts at the primary's last checkpoint (the lab's primary
    # checkpoints every 5 minutes), which is before `before`; with it, at one made after.
    assert before <= Lsn.parse(fresh["redo_lsn"]) <= Lsn.parse(fresh["consistent_lsn"])
    assert fresh["min_replay_bytes"] == Lsn.parse(fresh["consistent_lsn"]) - Lsn.parse(
        fresh["redo_lsn"])
    # It starts later than the plain set, which took the primary's last checkpoint. (Not its
    # replay distance: a WAL switch by archive_timeout between the checkpoint and the set
    # counts a whole segment, and another test's CHECKPOINT may just have made the plain
    # set's distance small: seen at 16 MB against 0.5 MB.)
    assert Lsn.parse(fresh["redo_lsn"]) > Lsn.parse(plain["redo_lsn"])
    assert fresh["checkpoint_lsn"] == sql(
        lab, "primary", "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()")

    for _ in range(2):  # verification recovers to the consistency point: WAL past it archived
        sql(lab, "primary", "INSERT INTO lab_a (payload) VALUES ('past the set')")
        archive_all(lab.conninfo("primary"), lab.archive)
    [result] = cli.json("verify", fresh["id"])
    assert result["outcome"] == "passed", result
    assert result["wal_replayed_bytes"] < Lsn.parse(fresh["consistent_lsn"]) - Lsn.parse(
        plain["redo_lsn"])


def test_a_wrong_or_unreachable_primary_only_warns(lab: LabInfo, tmp_path: Path) -> None:
    for name, conninfo, said in (
        ("standby", lab.conninfo("standby"), "reaches a server in recovery, not the primary"),
        ("nothing", f"host={lab.socket_dir} port=1 user=postgres connect_timeout=2",
         "cannot connect to the primary"),
    ):
        cli = with_primary_checkpoint(lab, tmp_path / f"{name}.toml", conninfo)
        check = primary_check(cli)
        assert check["status"] == "WARNING" and said in check["summary"], check
        taken = cli("snapshot", "--json")
        assert json.loads(taken.stdout)["complete"] is True
        assert said in taken.stderr and "WARNING" in taken.stderr, taken.stderr
