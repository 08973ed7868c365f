"""The recovery target options that `clone`, `query` and `dump` share, read into one Target."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from zsnap.clone.target import Target
from zsnap.duration import parse_duration
from zsnap.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--at", "at", metavar="TIME",
                 help="ISO 8601 time; without an offset, this machine's local time."),
    click.option("--before-xid", metavar="XID",
                 help="Just before this transaction committed (it is not in; all before are)."),
    click.option("--xid", help="Up to and including the commit of this transaction."),
    click.option("--lsn", help="Up to this WAL location."),
    click.option("--restore-point", help="Up to this named restore point."),
    click.option("--immediate", is_flag=True, help="As soon as the set is consistent."),
    click.option("--set", "set_id", metavar="ID", help="Use this snapshot set (no fallback)."),
]


def target_options(fn: F) -> F:
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def target_from(at: str | None, before_xid: str | None, xid: str | None, lsn: str | None,
                restore_point: str | None, immediate: bool, set_id: str | None) -> Target:
    given = [(at, Target.at_time), (before_xid, Target.before_xid), (xid, Target.at_xid),
             (lsn, Target.at_lsn), (restore_point, Target.at_restore_point)]
    chosen = [(value, make) for value, make in given if value is not None]
    names = "--at, --before-xid, --xid, --lsn, --restore-point or --immediate"
    if len(chosen) + int(immediate) > 1:
        raise UsageError(f"give one target: {names}")
    if chosen:
        value, make = chosen[0]
        return make(value)
    if immediate or set_id is not None:
        return Target.immediate()
    raise UsageError(f"give a target: {names}")


def duration_option(text: str | None, what: str) -> timedelta | None:
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None
    if value.total_seconds() < 1:
        raise UsageError(f"{what}: at least 1s")
    return value
