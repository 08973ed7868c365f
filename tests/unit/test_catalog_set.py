"""What a set's metadata tells without ZFS or PostgreSQL."""

from tests.unit.test_clone_select import make_set
from zsnap.catalog import NONE


def test_min_replay_is_the_wal_from_redo_to_consistency() -> None:
    s = make_set(0, 0x1000000 + 8192)  # redo 0/1000000
    assert s.min_replay_bytes == 8192


def test_a_pending_primary_set_has_no_min_replay_yet() -> None:
    s = make_set(0, 0x1000000).model_copy(update={"consistent_lsn": NONE})
    assert s.min_replay_bytes is None
