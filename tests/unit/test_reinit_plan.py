"""The pure parts of `zsnap reinit`: where a newer set's members go, which sets are the
standby's own, and the plan file that a rerun finishes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from zsnap.catalog import SnapshotSet
from zsnap.pg.layout import Layout, Place
from zsnap.reinit import (
    ReinitPlan,
    Replacement,
    aside_name,
    in_place,
    logs_streaming,
    moved_members,
)

LAYOUT = Layout((Place("pgdata", "/srv/pg/data", "tank/pg", "data"),
                 Place("tablespace", "/srv/ts1", "tank/ts1", "", 16384)))


def a_set(layout: Layout = LAYOUT) -> SnapshotSet:
    return SnapshotSet(
        id="20261201T000000Z", cluster="c", created=datetime(2026, 12, 1, tzinfo=UTC),
        timeline=1, redo_lsn="0/2000028", checkpoint_lsn="0/2000060",
        consistent_lsn="0/3000000", replay_lsn="0/3000000", replay_timestamp=None,
        system_identifier=1, server_version=150000, wal_segment_size=16 << 20,
        block_size=8192, data_checksums=True,
        datasets=[p.dataset for p in layout.places], layout=layout.to_json(), complete=True,
        missing=[],
    )


def test_a_newer_sets_members_follow_the_renamed_datasets() -> None:
    renamed = {"tank/pg": aside_name("tank/pg", "T"), "tank/ts1": aside_name("tank/ts1", "T")}
    members, layout = moved_members("tank/pg,tank/ts1", LAYOUT.to_json(), renamed)
    assert members == "tank/pg_damaged_T,tank/ts1_damaged_T"
    places = Layout.from_json(layout).places
    assert [p.dataset for p in places] == ["tank/pg_damaged_T", "tank/ts1_damaged_T"]
    # Paths, roles and tablespace oids stay what the set recorded.
    assert [(p.role, p.path, p.oid) for p in places] == [
        ("pgdata", "/srv/pg/data", None), ("tablespace", "/srv/ts1", 16384)]
    # Done twice, nothing changes: a rerun after a kill rewrites nothing again.
    assert moved_members(members, layout, renamed) == (members, layout)


def test_only_sets_on_the_standbys_mounted_datasets_are_in_place() -> None:
    s = a_set()
    assert in_place(s, {"tank/pg": "/srv/pg", "tank/ts1": "/srv/ts1"})
    assert not in_place(s, {"tank/pg": "none", "tank/ts1": "/srv/ts1"})  # moved aside
    assert not in_place(s, {"tank/ts1": "/srv/ts1"})  # dataset gone


def test_the_plan_survives_its_file() -> None:
    plan = ReinitPlan("20261201T000000Z", "/srv/pg/data", "/srv/pg/data",
                      [Replacement("tank/pg", "tank/pg@zsnap_20261201T000000Z",
                                   "tank/pg_zsnap_reinit", "tank/pg_damaged_T", "/srv/pg")],
                      ["20261201T010000Z"])
    again = ReinitPlan.from_json(plan.to_json())
    assert again == plan and again.renamed == {"tank/pg": "tank/pg_damaged_T"}


def test_streaming_is_read_in_the_log_after_this_start_only(tmp_path: Path) -> None:
    log = tmp_path / "reinit-standby.log"
    log.write_text("LOG:  started streaming WAL from primary at 0/3000000 on timeline 1\n")
    begins = log.stat().st_size  # an earlier start's line
    assert not logs_streaming(log, begins)
    with log.open("a") as f:
        f.write("LOG:  database system is ready to accept read-only connections\n")
    assert not logs_streaming(log, begins)
    with log.open("a") as f:
        f.write("LOG:  started streaming WAL from primary at 0/A000000 on timeline 1\n")
    assert logs_streaming(log, begins)
    assert not logs_streaming(tmp_path / "absent.log", 0)
