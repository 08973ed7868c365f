"""The retention policy, pure: which snapshot sets to keep and which to prune, with reasons.

Like borg/sanoid/zrepl grids: for each of hourly, daily, weekly (ISO weeks) and monthly, the
newest complete set of each of the last N periods that have a set is kept. On top:
- the newest set is always kept, and so is the newest complete set;
- a protected set (a hold or a clone on any member, i.e. userrefs > 0) is always kept;
- every complete set younger than keep_within is kept;
- at least min_sets complete sets are kept (the newest ones) when that many exist;
- an incomplete set older than the newest complete set can never be restored: prunable. One
  newer than that may still be being taken (members are snapshotted pool by pool): kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from zsnap.duration import format_duration

PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar())[:2],
    "monthly": lambda t: (t.year, t.month),
}


@dataclass(frozen=True)
class Policy:
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    keep_within: timedelta = timedelta(0)
    min_sets: int = 1

    def count(self, period: str) -> int:
        return int(getattr(self, period))

    def describe(self) -> str:
        grid = ", ".join(f"{p} {self.count(p)}" for p in PERIODS if self.count(p))
        parts = [grid or "no periods"]
        if self.keep_within:
            parts.append(f"within {format_duration(self.keep_within)}")
        parts.append(f"min {self.min_sets}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Candidate:
    id: str
    created: datetime
    complete: bool = True
    # Why the set must stay whatever the policy says (a hold, a clone); empty if free.
    protected: str = ""


@dataclass
class Decision:
    id: str
    keep: bool
    reasons: list[str] = field(default_factory=list)


def decide(candidates: Sequence[Candidate], policy: Policy, now: datetime) -> list[Decision]:
    """One decision per candidate, in the order given."""
    newest_first = sorted(candidates, key=lambda c: (c.created, c.id), reverse=True)
    keep: dict[str, list[str]] = {c.id: [] for c in candidates}
    complete = [c for c in newest_first if c.complete]
    newest_complete = complete[0] if complete else None

    if newest_first:
        keep[newest_first[0].id].append("newest set")
    if newest_complete is not None and newest_complete is not newest_first[0]:
        keep[newest_complete.id].append("newest complete set")
    for c in newest_first:
        if c.protected:
            keep[c.id].append(f"protected: {c.protected}")
        if c.complete and policy.keep_within and now - c.created < policy.keep_within:
            keep[c.id].append(f"within {format_duration(policy.keep_within)}")
        if not c.complete and newest_complete is not None and c.created > newest_complete.created:
            keep[c.id].append("incomplete but newer than every complete set (may be in progress)")
        if not c.complete and newest_complete is None:
            keep[c.id].append("incomplete, but no complete set exists")

    for period, key_of in PERIODS.items():
        wanted = policy.count(period)
        seen: list[tuple[int, ...]] = []
        for c in complete:
            if len(seen) >= wanted:
                break
            key = key_of(c.created)
            if key not in seen:
                seen.append(key)
                keep[c.id].append(f"{period} {len(seen)}/{wanted}")

    kept_complete = sum(1 for c in complete if keep[c.id])
    for c in complete:
        if kept_complete >= policy.min_sets:
            break
        if not keep[c.id]:
            keep[c.id].append(f"min_sets {policy.min_sets}")
            kept_complete += 1

    decisions = []
    for c in candidates:
        if keep[c.id]:
            decisions.append(Decision(c.id, True, keep[c.id]))
        elif not c.complete:
            assert newest_complete is not None
            decisions.append(Decision(c.id, False, [
                f"incomplete and older than the newest complete set {newest_complete.id}: "
                "it can never be restored"
            ]))
        else:
            decisions.append(Decision(c.id, False, [
                f"outside the retention policy ({policy.describe()})"
            ]))
    return decisions
