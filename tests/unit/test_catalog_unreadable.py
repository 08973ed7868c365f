"""One snapshot whose zsnap: properties were edited by hand hides no other set: it is listed
as incomplete, saying which property, and never chosen."""

from __future__ import annotations

import pytest

from zsnap.catalog import COMPLETE, PREFIX, Catalog, SnapshotSet, snapshot_name
from zsnap.runner import Runner
from zsnap.zfs import Zfs


def rows(set_id: str, **overrides: str) -> dict[str, dict[str, str]]:
    props = {
        "format": "2", "set": set_id, "cluster": "main", "created": "2026-12-04T10:00:00+00:00",
        "members": "p/pgdata", "layout": "[]", "timeline": "1", "redo_lsn": "0/3000028",
        "checkpoint_lsn": "0/3000060", "consistent_lsn": "0/3000100", "replay_lsn": "0/3000100",
        "replay_timestamp": "2026-12-04T09:59:59+00:00", "system_identifier": "7",
        "server_version": "150018", "wal_segment_size": "16777216", "block_size": "8192",
        "data_checksums": "on", "complete": COMPLETE, "pause_ms": "12",
    }
    props.update(overrides)
    name = f"p/pgdata@{snapshot_name(set_id)}"
    return {name: {"name": name, **{PREFIX + k: v for k, v in props.items()}}}


def build(set_id: str, **overrides: str) -> SnapshotSet:
    return Catalog(Zfs(Runner()), "main")._build(set_id, rows(set_id, **overrides))


def test_a_readable_set_is_complete() -> None:
    s = build("20261204T100000Z")
    assert s.complete and s.missing == [] and s.pause_ms == 12


@pytest.mark.parametrize(
    ("key", "value"),
    [("timeline", "one"), ("redo_lsn", "zz"), ("created", "yesterday"),
     ("wal_segment_size", "16MB"), ("layout", "{not json"), ("replay_timestamp", "x")],
)
def test_an_unreadable_property_makes_the_set_incomplete(key: str, value: str) -> None:
    s = build("20261204T100000Z", **{key: value})
    assert not s.complete
    assert s.missing == [f"{PREFIX}{key} (unreadable: {value!r})"]


def test_an_unreadable_later_property_is_as_if_absent() -> None:
    s = build("20261204T100000Z", pause_ms="fast", rto_s="?")
    assert s.complete and s.pause_ms is None and s.rto_s is None
