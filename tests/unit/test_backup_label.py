"""The backup label of a primary's set: stored as one base64 line in a ZFS user property, read
back by the catalog (a set still waiting for pg_backup_stop's results is incomplete), and
written into a clone's PGDATA."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.catalog import (
    BACKUP_END,
    COMPLETE,
    FORMAT,
    NONE,
    PENDING_BACKUP,
    PREFIX,
    SET_PROPS,
    UNPROVEN,
    Catalog,
    SnapshotSet,
)
from zsnap.clone.recovery import DataDir, prepare
from zsnap.errors import PostgresError
from zsnap.pg.backup_mode import BackupLabel
from zsnap.pg.layout import ROLE_PGDATA, Layout, Place
from zsnap.runner import Runner
from zsnap.zfs import UNSET, Zfs

LABEL = """START WAL LOCATION: 0/4000418 (file 000000020000000000000004)
CHECKPOINT LOCATION: 0/4004670
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-21 06:30:39 UTC
LABEL: zsnap main 20261121T063039Z
START TIMELINE: 2
"""


def test_the_label_fields() -> None:
    label = BackupLabel(LABEL)
    assert label.start_lsn == "0/4000418"
    assert label.checkpoint_lsn == "0/4004670"
    assert label.timeline == 2


def test_a_label_without_a_field_is_refused() -> None:
    with pytest.raises(PostgresError, match="CHECKPOINT LOCATION"):
        _ = BackupLabel("START WAL LOCATION: 0/1 (file x)\n").checkpoint_lsn


@given(st.text())
def test_encoding_is_one_line_and_round_trips(text: str) -> None:
    encoded = BackupLabel(text.replace("\x00", "")).encode()
    assert "\n" not in encoded and "\t" not in encoded and encoded.isascii()
    assert BackupLabel.decode(encoded).text == text.replace("\x00", "")


def test_a_damaged_value_is_refused() -> None:
    with pytest.raises(PostgresError, match="not valid base64"):
        BackupLabel.decode("not base64!")


def member(dataset: str, **props: str) -> dict[str, str]:
    row = {PREFIX + key: UNSET for key in SET_PROPS}
    row.update({
        "name": f"{dataset}@zsnap_20261121T063039Z",
        PREFIX + "format": FORMAT,
        PREFIX + "set": "20261121T063039Z",
        PREFIX + "cluster": "main",
        PREFIX + "created": "2026-11-21T06:30:39+00:00",
        PREFIX + "members": "p/pgdata,p/ts1",
        PREFIX + "timeline": "2",
        PREFIX + "consistent_lsn": "0/40197E8",
        PREFIX + "backup_label": BackupLabel(LABEL).encode(),
        PREFIX + "pending": NONE,
    })
    if dataset == "p/pgdata":  # the control-file member carries the proof
        row[PREFIX + "complete"] = COMPLETE
    row.update({PREFIX + key: value for key, value in props.items()})
    return row


def build(*rows: dict[str, str]) -> SnapshotSet:
    catalog = Catalog(Zfs(Runner()), "main")
    return catalog._build("20261121T063039Z", {r["name"]: r for r in rows})


def test_a_finished_primary_set_is_complete_with_its_label() -> None:
    s = build(member("p/pgdata"), member("p/ts1"))
    assert s.complete is True
    assert s.backup_label == LABEL


def test_a_set_never_proven_consistent_is_incomplete() -> None:
    """Issue 10, items 2 and 3: every member exists, but zsnap died (or the standby moved)
    before it proved the set consistent: never chosen."""
    s = build(member("p/pgdata", complete=UNSET), member("p/ts1"))
    assert s.complete is False and s.missing == [UNPROVEN]
    # The mark counts only on the control-file member.
    s = build(member("p/pgdata", complete=UNSET), member("p/ts1", complete=COMPLETE))
    assert s.complete is False


def test_a_verification_is_read_from_its_one_property_on_the_control_member() -> None:
    """Issue 10, item 6: written in one `zfs set`, so never half there; an older zsnap's four
    properties are read where it is absent."""
    s = build(member("p/pgdata", verification=f"2026-11-21T07:00:00+00:00|failed|amcheck|{NONE}",
                     verify_outcome="passed"), member("p/ts1"))
    assert (s.verify_outcome, s.verify_failed_check, s.rto_s) == ("failed", "amcheck", None)
    assert s.verified_at is not None and s.verified_at.hour == 7
    old = build(member("p/pgdata", verified_at="2026-11-20T07:00:00+00:00",
                       verify_outcome="passed", rto_s="2.5"), member("p/ts1"))
    assert (old.verify_outcome, old.rto_s) == ("passed", 2.5)


def test_a_set_of_the_first_format_needs_no_mark() -> None:
    s = build(member("p/pgdata", format="1", complete=UNSET), member("p/ts1", format="1"))
    assert s.complete is True


def test_a_member_still_pending_makes_the_set_incomplete() -> None:
    # zsnap died after writing pg_backup_stop's results onto the first member only.
    s = build(member("p/pgdata"), member("p/ts1", pending=PENDING_BACKUP))
    assert s.complete is False
    assert s.missing == [BACKUP_END]


def test_a_standby_set_has_no_label_and_is_complete() -> None:
    s = build(member("p/pgdata", pending=UNSET, backup_label=UNSET),
              member("p/ts1", pending=UNSET, backup_label=UNSET))
    assert s.complete is True and s.backup_label is None


def test_an_unreadable_label_makes_the_set_unusable() -> None:
    s = build(member("p/pgdata", backup_label="%%%"), member("p/ts1", backup_label="%%%"))
    assert s.complete is False


def pgdata(tmp_path: Path) -> DataDir:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(b"")
    (tmp_path / "postmaster.pid").write_text("1\n")
    layout = Layout((Place(ROLE_PGDATA, str(tmp_path), "p/pgdata", ""),))
    return DataDir(layout, ["p/pgdata"], [tmp_path])


@pytest.mark.skipif(os.geteuid() != 0, reason="prepare() gives files to the cluster's owner")
def test_prepare_writes_the_label_private_to_the_owner(tmp_path: Path) -> None:
    data = pgdata(tmp_path)
    prepare(data, {"port": "55432"}, "postgres", LABEL)
    written = tmp_path / "backup_label"
    assert written.read_text() == LABEL
    assert written.stat().st_mode & 0o777 == 0o600
    assert written.stat().st_uid == pwd.getpwnam("postgres").pw_uid
    assert not (tmp_path / "postmaster.pid").exists()
    assert not list(tmp_path.glob("*.zsnap"))


@pytest.mark.skipif(os.geteuid() != 0, reason="prepare() gives files to the cluster's owner")
def test_prepare_writes_no_label_for_a_standby_set(tmp_path: Path) -> None:
    prepare(pgdata(tmp_path), {"port": "55432"}, "postgres")
    assert not (tmp_path / "backup_label").exists()
