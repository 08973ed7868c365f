"""`zsnap reinit` (issue 13): a standby damaged three ways is rebuilt from a set and streams
again, with the primary's rows, a clean amcheck, every other set still listed and usable, and
the next set cloning exactly. Killed at its steps, `zsnap reinit` run again finishes the job
and the damaged data stays until discarded. It refuses, in one line, before touching anything
when it must."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, replicated, running_lab, sql
from tests.integration.faults import Stalling
from tests.integration.test_clone import assert_gone, fails
from zsnap.lab import Lab, LabInfo
from zsnap.runner import Runner


@pytest.fixture(scope="module")
def reinit_lab() -> Iterator[LabInfo]:
    with running_lab("r") as info:
        yield info


def datasets(info: LabInfo) -> set[str]:
    """The lab's datasets (other labs may run beside it)."""
    out = Runner().run(["zfs", "list", "-H", "-o", "name"], mutates=False).stdout
    return {d for d in out.split() if d.split("/")[0] in info.pools}


def rows(info: LabInfo, which: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(info.conninfo(which), autocommit=True) as conn:
        return conn.execute("SELECT id, payload FROM lab_a ORDER BY id").fetchall()


def amcheck_clean(info: LabInfo) -> None:
    with psycopg.connect(info.conninfo("standby"), autocommit=True) as conn:
        indexes = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = "
            "i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND "
            "c.relpersistence = 'p' AND i.indisvalid")]
        for index in indexes:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
        assert indexes


def rebuilt_and_streaming(info: LabInfo, cli: Cli, damage: Callable[[], None],
                          *args: str) -> dict[str, Any]:
    """Damage the standby, rebuild it, and check it against the primary."""
    sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('before the damage')")
    replicated(info)
    damage()
    sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('written while it was broken')")
    result: dict[str, Any] = cli.json("reinit", *args)
    assert result["caught_up_s"] is not None
    replicated(info)
    assert rows(info, "standby") == rows(info, "primary")
    amcheck_clean(info)
    return result


def relation_file(info: LabInfo) -> Path:
    path = sql(info, "standby", "SELECT pg_relation_filepath('lab_a')")
    return info.standby_data / str(path)


def test_a_standby_damaged_three_ways_is_rebuilt(reinit_lab: LabInfo) -> None:
    info = reinit_lab
    cli = Cli(info.config_file)
    old = cli.json("snapshot")
    sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('after the old set')")
    replicated(info)
    newer = cli.json("snapshot")
    lab = Lab(info.name, info.root.parent, info.primary_port)

    # 1. As in the story: pg_resetwal -f -x on the standby.
    def resetwal() -> None:
        lab.stop(info, "standby")
        Runner().run([str(info.pg_bin / "pg_resetwal"), "-f", "-x", "123456",
                      str(info.standby_data)], user="postgres", cwd="/")

    before = datasets(info)
    r = rebuilt_and_streaming(info, cli, resetwal, "--set", old["id"])
    assert r["set"] == old["id"] and r["newer_sets_kept_with_the_damaged"] == [newer["id"]]
    asides = {d["damaged_kept_as"] for d in r["datasets"]}
    assert asides <= datasets(info) and before <= datasets(info) | asides
    # Every set is still listed and complete; the newer one, now on the damaged datasets,
    # still clones.
    listed = {s["id"]: s for s in cli.json("list")["sets"]}
    assert listed[old["id"]]["complete"] and listed[newer["id"]]["complete"]
    assert set(listed[newer["id"]]["datasets"]) == asides
    c = cli.json("clone", "--set", newer["id"], "--name", "fromnewer")
    with psycopg.connect(c["dsn"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM lab_a WHERE payload = 'after the old set'"
                           ).fetchone()
    assert row == (1,)
    cli("destroy", "fromnewer")
    assert_gone(info, "fromnewer")

    # 2. A relation file deleted under the running standby: the newest set of the standby's
    # own datasets is chosen (the newer one now lives on the datasets moved aside).
    r = rebuilt_and_streaming(info, cli, lambda: relation_file(info).unlink())
    assert r["set"] == old["id"]
    code, message = fails(cli, "reinit", "--set", newer["id"], "--dry-run")
    assert code == 2 and "moved aside" in message
    # 3. PGDATA's global/ removed.
    rebuilt_and_streaming(info, cli, lambda: shutil.rmtree(info.standby_data / "global"))

    # The next set clones exactly: the newest row is in it.
    sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('after the rebuild')")
    replicated(info)
    after = cli.json("snapshot")
    c = cli.json("clone", "--set", after["id"], "--name", "afterrebuild")
    with psycopg.connect(c["dsn"], autocommit=True) as conn:
        got = conn.execute("SELECT id, payload FROM lab_a ORDER BY id").fetchall()
    assert got == rows(info, "primary")
    cli("destroy", "afterrebuild")

    # --discard: the damaged datasets go, with the sets they held.
    r = cli.json("reinit", "--discard")
    assert set(r["discarded"]) == {d["damaged_kept_as"] for d in r["datasets"]}
    assert not set(r["discarded"]) & datasets(info)


def test_refusals_touch_nothing(reinit_lab: LabInfo, tmp_path: Path) -> None:
    info = reinit_lab
    cli = Cli(info.config_file)
    cli("snapshot")
    before = datasets(info)
    code, message = fails(cli, "reinit", "--set", "20000101T000000Z")
    assert code == 4 and "no snapshot set 20000101T000000Z" in message
    on_primary = tmp_path / "primary.toml"
    on_primary.write_text(info.config_file.read_text().replace(
        f"port={info.standby_port}", f"port={info.primary_port}"))
    code, message = fails(Cli(on_primary), "reinit")
    assert code == 2 and "is a primary" in message
    cli("clone", "--immediate", "--name", "inway")
    code, message = fails(cli, "reinit")
    assert code == 2 and "inway" in message
    cli("destroy", "inway")
    plan = cli.json("reinit", "--dry-run")
    assert plan["dry_run"] and plan["running_s"] is None
    # Only the clone's parent datasets (`<pool>/zsnap-clones`, kept for later clones) are new.
    assert {d for d in datasets(info) if "/zsnap-clones" not in d} == {
        d for d in before if "/zsnap-clones" not in d}
    assert sql(info, "standby", "SELECT pg_is_in_recovery()") is True


def test_killed_at_its_steps_reinit_again_finishes(reinit_lab: LabInfo, tmp_path: Path) -> None:
    info = reinit_lab
    cli = Cli(info.config_file)
    stall = Stalling(tmp_path / "stall")
    argv = [sys.executable, "-m", "zsnap", "--config", str(info.config_file), "reinit"]
    cli("snapshot")
    stall.arm(0)
    done = subprocess.run(argv, env=stall.env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    total = stall.calls()
    # Kill points spread over the run: in the first clone, the renames, a promote, the start.
    for nth in sorted({2, total // 4, total // 2, 3 * total // 4, total - 2}):
        sql(info, "primary", f"INSERT INTO lab_a (payload) VALUES ('kill at {nth}')")
        replicated(info)
        cli("snapshot")
        stalled = stall.killed_at(argv, nth)
        again = cli.json("reinit")
        assert again["caught_up_s"] is not None, (nth, stalled)
        replicated(info)
        assert rows(info, "standby") == rows(info, "primary"), (nth, stalled)
        # The damaged datasets of every run stay until discarded.
        assert {d["damaged_kept_as"] for d in again["datasets"]} <= datasets(info)
    assert all(s["complete"] for s in cli.json("list")["sets"])


def test_the_least_privilege_role_sees_the_rebuilt_standby_stream(
    reinit_lab: LabInfo, tmp_path: Path
) -> None:
    """pg_stat_wal_receiver shows its status only to superusers and pg_read_all_stats, which
    docs/install.md's role does not have: reinit then reads the standby's server log."""
    info = reinit_lab
    grants = "EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume()"
    for statement in ("CREATE ROLE zsnap_reinit LOGIN", f"GRANT {grants} TO zsnap_reinit",
                      "GRANT pg_checkpoint, pg_read_all_settings TO zsnap_reinit"):
        sql(info, "primary", statement)
    replicated(info)
    try:
        config = tmp_path / "zsnap.toml"
        config.write_text(info.config_file.read_text().replace("user=postgres",
                                                               "user=zsnap_reinit"))
        limited = Cli(config)
        limited("snapshot")
        result = limited.json("reinit", "--timeout", "120")
        assert result["caught_up_s"] is not None
        assert sql(info, "standby", "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    finally:
        sql(info, "primary", f"REVOKE {grants} FROM zsnap_reinit")
        sql(info, "primary", "DROP ROLE zsnap_reinit")
        replicated(info)
