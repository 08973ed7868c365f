"""The retention policy on generated histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from zsnap.retention import PERIODS, Candidate, Policy, decide

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@st.composite
def histories(draw: st.DrawFn) -> list[Candidate]:
    ages = draw(st.lists(st.integers(0, 400 * 24 * 60), min_size=0, max_size=60, unique=True))
    result = []
    for i, minutes in enumerate(sorted(ages)):
        created = NOW - timedelta(minutes=minutes)
        result.append(Candidate(
            id=f"s{i:03d}", created=created,
            complete=draw(st.booleans().map(lambda b: b or draw(st.integers(0, 5)) > 0)),
            protected=draw(st.sampled_from(["", "", "", "", "clone zsnap-clone-x"])),
        ))
    return draw(st.permutations(result))


policies = st.builds(
    Policy,
    hourly=st.integers(0, 30), daily=st.integers(0, 10), weekly=st.integers(0, 6),
    monthly=st.integers(0, 14),
    keep_within=st.sampled_from([timedelta(0), timedelta(hours=12), timedelta(days=2)]),
    min_sets=st.integers(1, 8),
)


@settings(max_examples=300)
@given(histories(), policies)
def test_policy_invariants(sets: list[Candidate], policy: Policy) -> None:
    decisions = {d.id: d for d in decide(sets, policy, NOW)}
    assert set(decisions) == {c.id for c in sets}
    for d in decisions.values():
        assert d.reasons, "every decision says why"
    if not sets:
        return
    newest = max(sets, key=lambda c: (c.created, c.id))
    assert decisions[newest.id].keep
    for c in sets:
        if c.protected:
            assert decisions[c.id].keep, "a held or cloned set is never pruned"
        if c.complete and now_within(c, policy):
            assert decisions[c.id].keep
    complete = [c for c in sets if c.complete]
    kept_complete = [c for c in complete if decisions[c.id].keep]
    assert len(kept_complete) >= min(policy.min_sets, len(complete))
    # Nothing beyond what the policy allows is kept: the grid, the newest sets, protected
    # ones, recent ones, and min_sets filling up.
    grid = sum(policy.count(p) for p in PERIODS)
    extra = [c for c in kept_complete if not c.protected and not now_within(c, policy)]
    assert len(extra) <= grid + 2 + policy.min_sets
    # An incomplete set older than the newest complete one goes unless protected.
    if complete:
        newest_complete = max(complete, key=lambda c: (c.created, c.id))
        for c in sets:
            if not c.complete and not c.protected and c.created < newest_complete.created:
                assert not decisions[c.id].keep
                assert "incomplete" in decisions[c.id].reasons[0]


def now_within(c: Candidate, policy: Policy) -> bool:
    return bool(policy.keep_within) and NOW - c.created < policy.keep_within


@settings(max_examples=200)
@given(histories(), policies)
def test_pruning_twice_prunes_nothing_more(sets: list[Candidate], policy: Policy) -> None:
    kept_ids = {d.id for d in decide(sets, policy, NOW) if d.keep}
    kept = [c for c in sets if c.id in kept_ids]
    assert all(d.keep for d in decide(kept, policy, NOW))


def test_daily_keeps_the_newest_set_of_each_day() -> None:
    sets = [Candidate(f"d{day}h{hour}", NOW - timedelta(days=day, hours=hour))
            for day in range(5) for hour in (1, 5)]
    decisions = {d.id: d for d in decide(sets, Policy(daily=3, min_sets=1), NOW)}
    kept = sorted(i for i, d in decisions.items() if d.keep)
    assert kept == ["d0h1", "d1h1", "d2h1"]
    assert decisions["d1h1"].reasons == ["daily 2/3"]
    assert "outside the retention policy" in decisions["d3h5"].reasons[0]


def test_an_incomplete_set_newer_than_every_complete_one_may_be_in_progress() -> None:
    sets = [
        Candidate("old", NOW - timedelta(days=2)),
        Candidate("taking", NOW - timedelta(days=1), complete=False),
        Candidate("current", NOW, complete=False),
    ]
    decisions = {d.id: d for d in decide(sets, Policy(min_sets=1), NOW)}
    assert decisions["old"].keep and decisions["old"].reasons == ["newest complete set"]
    assert decisions["taking"].keep and "may be in progress" in decisions["taking"].reasons[0]
    assert decisions["current"].keep
