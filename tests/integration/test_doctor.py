"""`zsnap doctor` on the real lab: a healthy standby passes; a broken restore_command, a
synchronous standby with remote_apply, a replay left paused by a dead zsnap and missing
privileges are each named while the other checks still run. Also the least-privilege role of
docs/install.md takes a set."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, archive_all, replicated, sql, with_setting
from zsnap.lab import LabInfo
from zsnap.pg import amcheck
from zsnap.pg.replay import MARKER


def checks(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def doctor(cli: Any) -> tuple[int, dict[str, Any]]:
    proc = cli("doctor", "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)


def variant(lab: LabInfo, tmp_path: Path, old: str, new: str) -> Path:
    """The lab's config with one text replaced."""
    text = lab.config_file.read_text()
    assert old in text
    path = tmp_path / "zsnap.toml"
    path.write_text(text.replace(old, new))
    return path


def checkpointing_primary_as(lab: LabInfo, config: Path, user: str) -> Path:
    """`config` with [snapshot] primary_checkpoint reaching the primary as `user`."""
    conninfo = lab.conninfo("primary")
    assert "user=postgres" in conninfo
    setting = f'primary_checkpoint = "{conninfo.replace("user=postgres", f"user={user}")}"'
    return with_setting(config, config, "snapshot", setting)


def on_primary(lab: LabInfo, *statements: str) -> None:
    for statement in statements:
        sql(lab, "primary", statement)


def test_healthy_lab_passes(lab: LabInfo, cli: Any) -> None:
    code, report = doctor(cli)
    assert code == 0 and report["ok"] is True
    found = checks(report)
    for name in ("state dir writable", "replay marker", "standby connection", "server version",
                 "in recovery", "layout on ZFS", "recordsize", "privileges",
                 "synchronous standby", "restore_command", "wal archive"):
        assert found[name]["status"] == "OK", found[name]
    major = int(sql(lab, "standby", "SHOW server_version_num")) // 10000
    assert found["server version"]["summary"].startswith(f"PostgreSQL {major}.")
    layout = report["layout"]
    assert [p["dataset"] for p in layout] == list(lab.datasets)
    assert [p["control_file"] for p in layout] == [True, False, False]
    assert layout[0]["role"] == "pgdata" and layout[0]["path"] == str(lab.standby_data)
    assert {p["oid"] for p in layout[1:]} and all(p["role"] == "tablespace" for p in layout[1:])
    human = cli("doctor").stdout
    assert "all checks passed" in human and "restore_command" in human


def test_sets_more_frequent_than_checkpoints_warn_without_primary_checkpoint(
    lab: LabInfo, tmp_path: Path
) -> None:
    """Issue 9, item 4: a set every minute, the lab's checkpoint_timeout of 5 minutes, and no
    primary_checkpoint: the sets' redo points lag behind them, and doctor says so."""
    hourly = checks(doctor(Cli(lab.config_file))[1])["primary checkpoint"]
    assert hourly["status"] == "OK" and "checkpoint_timeout 300 s" in hourly["summary"], hourly
    config = tmp_path / "zsnap.toml"
    config.write_text(lab.config_file.read_text() + '\n[schedule]\nsnapshot = "* * * * *"\n')
    code, report = doctor(Cli(config))
    found = checks(report)["primary checkpoint"]
    assert found["status"] == "WARNING" and "longer than the interval between sets (60 s)" in \
        found["summary"], found
    assert "primary_checkpoint" in found["hint"]
    assert code == 0  # a warning


def test_broken_restore_command_fails_alone(lab: LabInfo, cli: Any, tmp_path: Path) -> None:
    config = variant(lab, tmp_path, f'restore_command = "cp {lab.archive}/%f %p"',
                     'restore_command = "cp /nonexistent/archive/%f %p"')
    code, report = doctor(replace(cli, config=config))
    assert code == 1 and report["ok"] is False
    found = checks(report)
    assert found["restore_command"]["status"] == "CRITICAL"
    assert "No such file" in found["restore_command"]["summary"]
    assert [c for c in report["checks"] if c["status"] == "CRITICAL"] == [found["restore_command"]]
    assert not list(Path("/tmp").glob("zsnap-doctor-*"))  # the scratch directory is gone


def test_restore_command_without_local_archive_path(
    lab: LabInfo, cli: Any, tmp_path: Path
) -> None:
    """No [archive] path: the segment before the last restartpoint's is fetched."""
    config = variant(lab, tmp_path, f'path = "{lab.archive}"\n', "")
    code, report = doctor(replace(cli, config=config))
    assert checks(report)["restore_command"]["status"] == "OK", report
    assert code == 0


def test_synchronous_standby_with_remote_apply_fails(lab: LabInfo, cli: Any) -> None:
    try:
        on_primary(lab, "ALTER SYSTEM SET synchronous_standby_names = 'walreceiver'",
                   "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
                   "SELECT pg_reload_conf()")
        time.sleep(0.5)
        code, report = doctor(cli)
        sync = checks(report)["synchronous standby"]
        assert code == 1 and sync["status"] == "CRITICAL", sync
        assert "remote_apply" in sync["summary"] and "walreceiver" in sync["hint"]
        on_primary(lab, "ALTER SYSTEM SET synchronous_commit = 'on'", "SELECT pg_reload_conf()")
        time.sleep(0.5)
        code, report = doctor(cli)
        assert code == 0 and checks(report)["synchronous standby"]["status"] == "WARNING"
    finally:
        on_primary(lab, "ALTER SYSTEM RESET synchronous_standby_names",
                   "ALTER SYSTEM RESET synchronous_commit", "SELECT pg_reload_conf()")


def test_unreachable_primary_is_a_warning(lab: LabInfo, cli: Any, tmp_path: Path) -> None:
    """With the primary stopped the standby cannot be checked for synchronous replication
    from there: doctor says so rather than guessing."""
    from zsnap.lab import Lab

    the_lab = Lab(lab.name, base=lab.root.parent)
    the_lab.stop(lab, "primary")
    try:
        code, report = doctor(cli)
        sync = checks(report)["synchronous standby"]
        assert sync["status"] == "WARNING" and "cannot ask the primary" in sync["summary"]
        assert code == 0
    finally:
        the_lab.start(lab, "primary")


def test_stale_marker_is_reported_and_replay_resumed(lab: LabInfo, cli: Any) -> None:
    marker = lab.root / "state" / MARKER
    with psycopg.connect(lab.conninfo("standby"), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        # A marker as a zsnap that died would have left it (no process holds the lock).
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(
            {"pid": 999999, "conninfo": lab.conninfo("standby"), "at": time.time()}
        ))
        code, report = doctor(cli)
        found = checks(report)["replay marker"]
        assert found["status"] == "WARNING" and "resumed" in found["summary"]
        assert code == 0
        row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
        assert row is not None and row[0] == "not paused"
    assert not marker.exists()


@pytest.fixture(scope="module")
def roles(lab: LabInfo) -> Iterator[None]:
    """The least-privilege role of docs/install.md, and one without any grant."""
    on_primary(
        lab,
        "CREATE ROLE zsnap_test LOGIN",
        "GRANT EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume() TO zsnap_test",
        "GRANT pg_checkpoint, pg_read_all_settings TO zsnap_test",
        "CREATE ROLE zsnap_nobody LOGIN",
    )
    replicated(lab)
    try:
        yield
    finally:
        on_primary(
            lab,
            "REVOKE EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume() "
            "FROM zsnap_test",
            "DROP ROLE zsnap_test", "DROP ROLE zsnap_nobody",
        )


@pytest.mark.usefixtures("roles")
def test_least_privilege_role_passes_and_takes_a_set(
    lab: LabInfo, cli: Any, tmp_path: Path
) -> None:
    config = variant(lab, tmp_path, "user=postgres", "user=zsnap_test")
    checkpointing_primary_as(lab, config, "zsnap_test")
    limited = replace(cli, config=config)
    code, report = doctor(limited)
    privileges = checks(report)["privileges"]
    assert code == 0 and privileges["status"] == "OK", report
    assert "superuser" not in privileges["summary"]
    assert checks(report)["primary checkpoint"]["status"] == "OK", report
    taken = limited("snapshot", "--json")
    assert json.loads(taken.stdout)["complete"] is True
    assert "WARNING" not in taken.stderr, taken.stderr  # the primary's CHECKPOINT was allowed
    with psycopg.connect(lab.conninfo("standby"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
    assert row is not None and row[0] == "not paused"


@pytest.mark.usefixtures("roles")
def test_least_privilege_role_makes_flashback_instances_promoted_and_durable(
    lab: LabInfo, cli: Any, tmp_path: Path
) -> None:
    """Promotion and durability need no grant beyond docs/install.md's: not pg_promote()
    (which would let the role promote the standby), ALTER SYSTEM nor pg_reload_conf()."""
    limited = replace(cli, config=variant(lab, tmp_path, "user=postgres", "user=zsnap_test"))
    set_id = limited.json("snapshot")["id"]
    sql(lab, "primary", "CREATE TABLE IF NOT EXISTS least_privilege (set_id text)")
    sql(lab, "primary", f"INSERT INTO least_privilege VALUES ('{set_id}')")
    at = sql(lab, "primary", "SELECT pg_xact_commit_timestamp(xmin) FROM least_privilege "
                             f"WHERE set_id = '{set_id}'")
    sql(lab, "primary", "INSERT INTO least_privilege VALUES ('after')")  # ends the target
    archive_all(lab.conninfo("primary"), lab.archive)
    made = {
        "immediate": limited.json("clone", "--set", set_id, "--immediate", "--durable",
                                  "--name", "lp-immediate"),
        "time": limited.json("clone", "--at", at.isoformat(), "--durable", "--name", "lp-time"),
    }
    try:
        for result in made.values():
            assert result["state"] == "promoted" and result["durability"] == "durable", result
        with psycopg.connect(made["time"]["dsn"].replace("user=zsnap_test", "user=postgres"),
                             autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM least_privilege WHERE set_id = %s",
                                (set_id,)).fetchone() == (1,)
            row = conn.execute("SELECT setting, sourcefile FROM pg_settings "
                               "WHERE name = 'fsync'").fetchone()
        assert row is not None and row[0] == "on", row
    finally:
        for name in made:
            limited("destroy", f"lp-{name}", check=False)


@pytest.mark.usefixtures("roles")
def test_role_without_grants_is_named(lab: LabInfo, cli: Any, tmp_path: Path) -> None:
    config = variant(lab, tmp_path, "user=postgres", "user=zsnap_nobody")
    checkpointing_primary_as(lab, config, "zsnap_nobody")
    code, report = doctor(replace(cli, config=config))
    assert code == 1
    primary = checks(report)["primary checkpoint"]
    assert primary["status"] == "WARNING" and "may not CHECKPOINT" in primary["summary"], primary
    privileges = checks(report)["privileges"]
    assert privileges["status"] == "CRITICAL"
    for missing in ("pg_wal_replay_pause()", "pg_wal_replay_resume()", "pg_checkpoint",
                    "pg_read_all_settings"):
        assert missing in privileges["summary"]
    assert "GRANT" in privileges["hint"]
    # The checks that could still run did.
    assert checks(report)["restore_command"]["status"] == "OK"



@pytest.mark.usefixtures("roles")
def test_verify_privileges_follow_the_amcheck_grants(
    lab: LabInfo, cli: Any, tmp_path: Path
) -> None:
    limited = replace(cli, config=variant(lab, tmp_path, "user=postgres", "user=zsnap_test"))
    before = checks(doctor(limited)[1])["verify privileges"]
    assert before["status"] == "WARNING", before
    assert "may not run amcheck" in before["summary"] and "GRANT EXECUTE" in before["hint"]
    # Verified all the same: recovery and the other checks pass, amcheck says what it lacks
    # (a missing grant is not damage: the set does not fail for it, the exit code is 0).
    set_id = limited.json("snapshot")["id"]
    [verified] = limited.json("verify", set_id)
    outcomes = {c["name"]: c for c in verified["checks"]}
    assert outcomes["recovery"]["outcome"] == "passed", verified
    found = outcomes["amcheck"]
    assert found["outcome"] == "skipped" and "postgres" in found["detail"], found
    assert "GRANT EXECUTE" in found["detail"], found
    on_primary(lab, f"GRANT EXECUTE ON FUNCTION {amcheck.FUNCTIONS} TO zsnap_test")
    try:
        replicated(lab)
        after = checks(doctor(limited)[1])["verify privileges"]
        assert after["status"] == "OK", after
    finally:
        on_primary(lab, f"REVOKE EXECUTE ON FUNCTION {amcheck.FUNCTIONS} FROM zsnap_test")
        replicated(lab)
