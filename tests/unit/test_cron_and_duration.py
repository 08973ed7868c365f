"""Cron strings mean what they mean in crontab(5); durations read and print back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.cron import cron_trigger, cron_weekdays, next_times, trigger_fields
from zsnap.duration import format_duration, parse_duration

START = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # a Saturday


def cron_day(d: datetime) -> int:
    return (d.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0


@given(st.sets(st.integers(0, 7), min_size=1))
def test_weekday_numbers_fire_on_crons_days(days: set[int]) -> None:
    field = ",".join(str(d) for d in sorted(days))
    expected = {d % 7 for d in days}
    assert cron_weekdays(field) == expected
    times = next_times(cron_trigger(f"0 4 * * {field}", UTC), START, 14)
    assert {cron_day(t) for t in times} == expected
    assert all(t.hour == 4 and t.minute == 0 and t.second == 0 for t in times)


@pytest.mark.parametrize(("field", "days"), [
    ("0", {0}), ("7", {0}), ("sun", {0}), ("1-5", {1, 2, 3, 4, 5}), ("mon-fri", {1, 2, 3, 4, 5}),
    ("5-7", {5, 6, 0}), ("*/2", {0, 2, 4, 6}), ("1-5/2", {1, 3, 5}), ("sat,sun", {6, 0}),
])
def test_weekday_fields(field: str, days: set[int]) -> None:
    assert cron_weekdays(field) == days


def test_sunday_zero_is_not_mondays() -> None:
    # CronTrigger.from_crontab would read 0 as Monday.
    first = next_times(cron_trigger("0 3 * * 0", UTC), START, 1)[0]
    assert first.strftime("%a") == "Sun"


def test_seconds_field_and_macros() -> None:
    times = next_times(cron_trigger("*/15 * * * * *", UTC), START, 3)
    assert [t.second for t in times] == [0, 15, 30]
    assert trigger_fields("@daily") == trigger_fields("0 0 * * *")


@pytest.mark.parametrize("bad", ["1 2 3", "0 0 1 * 1", "0 0 * * 8", "61 * * * *", "0 0 * * 5-1"])
def test_bad_crons_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="bad cron"):
        cron_trigger(bad)


@given(st.integers(0, 400 * 86400))
def test_durations_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_duration_forms() -> None:
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("1w") == timedelta(days=7)
    assert parse_duration("0") == timedelta(0)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("2 days")


def test_the_longest_interval_between_runs() -> None:
    from datetime import UTC, datetime, timedelta

    from zsnap.cron import longest_interval

    start = datetime(2026, 12, 1, 10, 17, tzinfo=UTC)
    assert longest_interval("0 * * * *", start) == timedelta(hours=1)
    assert longest_interval("0 3 * * *", start) == timedelta(days=1)
    # Week days only: the weekend is the longest gap.
    assert longest_interval("0 3 * * mon-fri", start) == timedelta(days=3)
    assert longest_interval("off", start) is None


_FIELD = st.one_of(
    st.just("*"), st.just("?"), st.integers(-1, 70).map(str),
    st.tuples(st.integers(0, 65), st.integers(0, 65)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.tuples(st.sampled_from(["*", "0", "5", "1-20", "0-0", "12", "31", "jan", "feb-may"]),
              st.integers(0, 70)).map(lambda r: f"{r[0]}/{r[1]}"),
    st.sampled_from(["jan", "dec", "mar-jun", "x", "", "1-", "*/", "1,2,3", "0,60", "last",
                     "last/2", "jan-3", "1-mar", "janx", "dec-jan", "?", "sat,sun"]),
)


@given(st.lists(_FIELD, min_size=5, max_size=6).map(" ".join))
def test_the_light_check_agrees_with_apscheduler(expr: str) -> None:
    """`check` (every config load, without APScheduler) refuses exactly what CronTrigger does,
    for crontab(5) syntax."""
    from zsnap.cron import check

    try:
        cron_trigger(expr)
        valid = True
    except ValueError:
        valid = False
    if valid:
        check(expr)
    else:
        with pytest.raises(ValueError, match="bad cron"):
            check(expr)
