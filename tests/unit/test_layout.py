"""The layout stored with every set, and the order its datasets are snapshotted in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zsnap.pg.layout import (
    ROLE_PG_WAL,
    ROLE_PGDATA,
    ROLE_POLAR,
    ROLE_TABLESPACE,
    Layout,
    Place,
)
from zsnap.snapshot import order_for_snapshot, parse_size, pool_groups, snapshot_calls
from zsnap.zfs import pool_of

POOLS = st.sampled_from(["tank", "fast", "slow", "p_3"])
DATASETS = st.builds(lambda pool, name: f"{pool}/{name}", POOLS,
                     st.sampled_from(["pgdata", "ts1", "ts2", "wal", "a/b"]))
PATHS = st.text(alphabet="abc/_- é", min_size=1, max_size=12).map(lambda s: "/" + s)


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    places = [Place(ROLE_PGDATA, draw(PATHS), draw(DATASETS), draw(PATHS).lstrip("/"))]
    if draw(st.booleans()):
        places.append(Place(ROLE_POLAR, draw(PATHS), draw(DATASETS), "polar"))
    for oid in draw(st.lists(st.integers(16384, 2**32 - 1), max_size=4, unique=True)):
        places.append(Place(ROLE_TABLESPACE, draw(PATHS), draw(DATASETS), "ts", oid))
    if draw(st.booleans()):
        places.append(Place(ROLE_PG_WAL, draw(PATHS), draw(DATASETS), "wal"))
    return Layout(tuple(draw(st.permutations(places))))


@given(layouts())
def test_layout_json_round_trip(layout: Layout) -> None:
    assert Layout.from_json(layout.to_json()) == layout


@given(layouts())
def test_control_file_place_is_polar_datadir_else_pgdata(layout: Layout) -> None:
    roles = {p.role for p in layout.places}
    assert layout.control.role == (ROLE_POLAR if ROLE_POLAR in roles else ROLE_PGDATA)
    assert layout.datasets[0] == layout.control.dataset
    assert sorted(layout.datasets) == sorted({p.dataset for p in layout.places})


@given(layouts())
def test_order_puts_control_first_and_pools_together(layout: Layout) -> None:
    order = order_for_snapshot(layout)
    assert order[0] == layout.control.dataset
    assert sorted(order) == sorted(set(order)) == sorted(layout.datasets)
    groups = pool_groups(order)
    pools = [pool_of(group[0]) for group in groups]
    assert len(pools) == len(set(pools))  # one group (one zfs call) per pool
    assert all(pool_of(d) == pool_of(group[0]) for group in groups for d in group)
    assert [d for group in groups for d in group] == order
    assert groups[0][0] == layout.control.dataset


@given(layouts(), st.booleans())
def test_snapshot_calls_cover_every_dataset_in_order(layout: Layout, atomic: bool) -> None:
    order = order_for_snapshot(layout)
    calls = snapshot_calls(order, "20261121T053611Z", atomic)
    assert [n for call in calls for n in call] == [
        f"{d}@zsnap_20261121T053611Z" for d in order
    ]
    if atomic:
        assert len(calls) == len({pool_of(d) for d in order})
        assert all(len({pool_of(n) for n in call}) == 1 for call in calls)
    else:
        assert all(len(call) == 1 for call in calls)


def test_parse_size_as_show_prints_it() -> None:
    assert parse_size("16MB") == 16 * 2**20
    assert parse_size("1GB") == 2**30
    assert parse_size("8kB") == 8192
    assert parse_size("8192B") == 8192
    assert parse_size("8192") == 8192
