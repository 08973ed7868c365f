"""Which snapshot sets can serve a target, best first. Pure: the catalog and the clock come in."""

from __future__ import annotations

from datetime import datetime

from zsnap.catalog import SnapshotSet
from zsnap.clone.target import Kind, Target
from zsnap.errors import NotFoundError, UsageError
from zsnap.output import fmt_time


class TargetOutOfRange(UsageError):
    """The target lies where no set can reach it: before the oldest set, or in the future."""


def candidates(
    sets: list[SnapshotSet], target: Target, now: datetime, forced: str | None = None
) -> list[SnapshotSet]:
    """The complete sets a clone for `target` may start from, cheapest first: replay starts at
    a set's redo point, so the set whose redo point is nearest before the target replays the
    least WAL (usually the newest set that reaches the target, but not when a newer set's
    restartpoint lags behind an older one's, e.g. an older set taken with a fresh checkpoint);
    between equal redo points the newer set. The others are fallbacks for when PostgreSQL
    finds the stop point before the set's consistency point (commit timestamps are not
    monotonic in WAL order). A forced set (`--set`) is the only candidate."""
    if target.time is not None and target.time > now:
        raise TargetOutOfRange(
            f"target {fmt_time(target.time)} is in the future (now {fmt_time(now)})"
        )
    complete = [s for s in sets if s.complete]
    if forced is not None:
        chosen = next((s for s in sets if s.id == forced), None)
        if chosen is None:
            raise NotFoundError(f"no snapshot set {forced}")
        if not chosen.complete:
            raise UsageError(f"set {forced} is incomplete (missing {', '.join(chosen.missing)})")
        if not reaches(chosen, target):
            raise TargetOutOfRange(f"target {target} is before set {forced} is consistent "
                                   f"({_consistency(chosen, target)})")
        return [chosen]
    if not complete:
        raise NotFoundError("there is no complete snapshot set to clone (zsnap snapshot)")
    eligible = [s for s in complete if reaches(s, target)]
    if not eligible:
        oldest = complete[0]
        raise TargetOutOfRange(
            f"target {target} is before the oldest set {oldest.id} "
            f"(consistent at {_consistency(oldest, target)}): nothing to flash back from"
        )
    return sorted(eligible, key=replay_cost_order, reverse=True)


def replay_cost_order(s: SnapshotSet) -> tuple[int, str]:
    """Larger is cheaper: the later redo point, then the newer set."""
    return (s.redo.value, s.id)


def reaches(s: SnapshotSet, target: Target) -> bool:
    """Can recovery from `s` stop at `target`? Only time and LSN targets can be placed before
    a set; an xid or restore point is searched for in the WAL after the newest set."""
    if target.kind is Kind.TIME and target.time is not None:
        return s.consistent_at <= target.time
    if target.kind is Kind.LSN and target.lsn is not None:
        return s.consistent <= target.lsn
    return True


def _consistency(s: SnapshotSet, target: Target) -> str:
    return s.consistent_lsn if target.kind is Kind.LSN else fmt_time(s.consistent_at)
