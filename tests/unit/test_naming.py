"""Set ids and snapshot names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from zsnap.catalog import is_set_id, new_set_id, snapshot_name

TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
)


def test_set_id_is_utc_to_the_second() -> None:
    local = timezone(timedelta(hours=2))
    assert new_set_id(datetime(2026, 11, 21, 7, 36, 11, 999, tzinfo=local)) == "20261121T053611Z"
    assert snapshot_name("20261121T053611Z") == "zsnap_20261121T053611Z"


@given(TIMES)
def test_set_ids_sort_as_their_times(moment: datetime) -> None:
    earlier = new_set_id(moment)
    later = new_set_id(moment + timedelta(seconds=1))
    assert is_set_id(earlier) and is_set_id(later)
    assert earlier < later
    assert datetime.strptime(earlier, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) == moment.replace(
        microsecond=0
    )


def test_not_set_ids() -> None:
    for text in ("", "20261121T053611", "20261121053611Z", "zsnap_20261121T053611Z",
                 "20261121T053611Z ", "2026-11-21T05:36:11Z"):
        assert not is_set_id(text)
