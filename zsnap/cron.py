"""Cron strings from the config, turned into APScheduler 3 triggers with cron's own meaning.

Five fields (minute hour day-of-month month day-of-week) as in crontab(5), or six with a
leading seconds field. Two places where APScheduler differs from cron are bridged here:
- day of week: cron counts 0 (and 7) as Sunday, APScheduler 0 as Monday, so the field is
  expanded to a set of days and handed over as day names;
- cron runs a job when *either* a restricted day of month or a restricted day of week matches,
  APScheduler when both do: restricting both is refused rather than silently changed.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

OFF = ("", "off", "none", "never")
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# cron's numbering: index = cron day number (7 is Sunday again).
CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
FIELDS = ("minute", "hour", "day", "month", "day_of_week")


def is_off(expr: str) -> bool:
    return expr.strip().lower() in OFF


def _day_number(token: str) -> int:
    name = token.lower()[:3]
    if name in CRON_DAYS:
        return CRON_DAYS.index(name)
    if not token.isdigit() or not 0 <= int(token) <= 7:
        raise ValueError(f"bad day of week {token!r} (0-7 or sun..sat)")
    return int(token) % 7


def cron_weekdays(field: str) -> set[int]:
    """The days (0 = Sunday) a crontab day-of-week field selects."""
    days: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in day of week {item!r}")
        if span in ("*", "?"):
            first, last = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            first = _day_number(a)
            # 7 closes a range on Sunday (5-7 = fri,sat,sun); keep it past 6 to walk there.
            last = 7 if b == "7" else _day_number(b)
            if last < first:
                raise ValueError(f"day-of-week range {span!r} runs backwards")
        else:
            first = _day_number(span)
            last = 6 if step_text else first
        days.update(d % 7 for d in range(first, last + 1, step))
    return days


def _weekday_names(field: str) -> str:
    if field in ("*", "?"):
        return "*"
    days = cron_weekdays(field)
    # APScheduler names, in its own Monday-first order.
    order = [1, 2, 3, 4, 5, 6, 0]
    return ",".join(CRON_DAYS[d] for d in order if d in days)


def trigger_fields(expr: str) -> dict[str, str]:
    """APScheduler CronTrigger keyword arguments for a cron string."""
    text = MACROS.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) == 5:
        second = "0"
    elif len(parts) == 6:
        second, parts = parts[0], parts[1:]
    else:
        raise ValueError("needs 5 fields (minute hour day month weekday) or 6 with seconds first")
    fields = dict(zip(FIELDS, parts, strict=True))
    if fields["day"] not in ("*", "?") and fields["day_of_week"] not in ("*", "?"):
        raise ValueError(
            "it restricts both day of month and day of week; cron would run on either, "
            "zsnap only on both: restrict one of them"
        )
    fields["day_of_week"] = _weekday_names(fields["day_of_week"])
    fields["second"] = second
    return fields


# crontab(5) fields as APScheduler reads them (names for months; the day of week is checked
# by cron_weekdays): the range of each, for `check` to refuse what CronTrigger would.
_RANGES = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "day": (1, 31),
           "month": (1, 12)}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")


def check(expr: str) -> None:
    """Refuse, as `cron_trigger` would, a string that is not a cron, without loading
    APScheduler (a fiftieth of a second, with asyncio): every configuration load checks the
    schedule, and most commands never compute a run time. Agreement with CronTrigger is
    tested (tests/unit/test_cron_and_duration.py)."""
    try:
        fields = trigger_fields(expr)
        for name, (low, high) in _RANGES.items():
            for item in fields[name].lower().split(","):
                if item == "?":  # "no specific value": CronTrigger takes it for weekdays only
                    raise ValueError(f"? is for the day of week, not the {name}")
                if name == "day" and re.fullmatch(r"last(/[0-9]+)?", item):
                    continue  # APScheduler's: the month's last day
                _check_item(item, low, high, _MONTHS if name == "month" else None)
    except ValueError as e:
        raise ValueError(f"bad cron {expr!r}: {e}") from None


def _check_item(item: str, low: int, high: int, names: list[str] | None) -> None:
    if names is not None and item[:1].isalpha():
        # As CronTrigger reads a month: a name, or a range of names, at the start (whatever
        # follows them is ignored there).
        named = re.match(r"([a-z]+)(?:-([a-z]+))?", item)
        assert named is not None
        first_name, last_name = named.groups()
        if first_name not in names or (last_name is not None and last_name not in names):
            raise ValueError(f"unrecognized month in {item!r}")
        if last_name is not None and names.index(last_name) < names.index(first_name):
            raise ValueError(f"the range {item!r} runs backwards")
        return
    m = _ITEM.match(item)
    if not m:
        raise ValueError(f"unrecognized expression {item!r}")
    star, first_text, last_text, step_text = m.groups()
    if not star and not (first_text.isdigit() and (last_text or "0").isdigit()):
        raise ValueError(f"unrecognized expression {item!r}")
    step = int(step_text) if step_text is not None else None
    if step == 0:
        raise ValueError(f"a step of 0 in {item!r}")
    if star:
        span = high - low
    else:
        # CronTrigger's RangeExpression, whose checks this follows one by one.
        first = int(first_text)
        last = int(last_text) if last_text is not None else (first if step is None else None)
        if last is not None and first > last:
            raise ValueError(f"the range {item!r} runs backwards")
        if first < low or (last is not None and last > high):
            raise ValueError(f"{item!r} is not within {low}-{high}")
        span = (last or high) - first
    if step and step > span:
        raise ValueError(f"the step in {item!r} is larger than its range")


def cron_trigger(expr: str, timezone: tzinfo | None = None) -> CronTrigger:
    """The trigger for a cron string; ValueError with a readable message if it is not one."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger(timezone=timezone, **trigger_fields(expr))
    except ValueError as e:
        raise ValueError(f"bad cron {expr!r}: {e}") from None


def next_times(trigger: CronTrigger, after: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    previous: datetime | None = None
    now = after
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = fire
        now = fire
    return times


def longest_interval(expr: str, after: datetime, count: int = 50) -> timedelta | None:
    """The longest gap between `count` consecutive runs of a cron string from `after` on (the
    time a target can lie from the set before it); None for "off"."""
    if is_off(expr):
        return None
    times = next_times(cron_trigger(expr, after.tzinfo), after, count)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return max(gaps) if gaps else None
