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
from datetime import datetime, timedelta, tzinfo

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


def cron_trigger(expr: str, timezone: tzinfo | None = None) -> CronTrigger:
    """The trigger for a cron string; ValueError with a readable message if it is not one."""
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
