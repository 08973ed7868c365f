"""What zsnap reads from zfs: capabilities from the usage text of the two implementations,
errors classified from stderr, which mount holds a path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zsnap.zfs
from zsnap.errors import (
    CommandNotFound,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    NoSpace,
    NoSuchHold,
    ZfsError,
    ZfsUnsupported,
)
from zsnap.runner import Runner
from zsnap.zfs import (
    BUSY_FIRST_RETRY_S,
    Capabilities,
    Mount,
    Zfs,
    mount_of,
    mounts,
    pool_of,
    zfs_error,
)

DATA = Path(__file__).parent / "data"


def test_zfs_fuse_snapshots_one_at_a_time_and_has_no_list_p() -> None:
    # Captured by running `zfs` without arguments on zfs-fuse 0.7 (this machine).
    caps = Capabilities.from_usage((DATA / "zfs-fuse-0.7-usage.txt").read_text())
    assert caps == Capabilities(atomic_snapshots=False, list_parsable=False,
                                resumable_receive=False, set_several=False)


def test_openzfs_2_snapshots_atomically_and_lists_parsable() -> None:
    # The usage lines of OpenZFS 2.1's zfs_main.c (get_usage).
    caps = Capabilities.from_usage((DATA / "openzfs-2.1-usage.txt").read_text())
    assert caps == Capabilities(atomic_snapshots=True, list_parsable=True,
                                resumable_receive=True, set_several=True)


def test_unknown_usage_assumes_the_least() -> None:
    assert Capabilities.from_usage("zfs: command not understood") == Capabilities(
        False, False, False, False)


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("cannot open 'nopool/x': dataset does not exist", DatasetNotFound),
        ("cannot open 'gone': no such pool", DatasetNotFound),
        ("could not find any snapshots to destroy; check snapshot names.", DatasetNotFound),
        ("cannot create snapshot 'a/b@x': dataset already exists", DatasetExists),
        ("cannot destroy 'a/b': dataset is busy", DatasetBusy),
        ("cannot destroy 'a/b@s': snapshot has dependent clones", DatasetBusy),
        ("cannot create snapshot 'a/b@x': out of space", NoSpace),
        # zfs-fuse's words (this machine) for a release of a tag the snapshot lacks.
        ("cannot release '.send-1-0' from 'a/b@x': no such tag on this dataset", NoSuchHold),
        ("cannot hold snapshot 'a/b@x': tag already exists on this dataset", DatasetExists),
        ("too many arguments\nusage:\n\tsnapshot [-r] ...", ZfsUnsupported),
        ("invalid option 'p'\nusage:\n\tlist [-rH][-d max] ...", ZfsUnsupported),
        ("cannot mount 'a/b': permission denied", ZfsError),
    ],
)
def test_errors_are_typed_from_stderr(stderr: str, kind: type[ZfsError]) -> None:
    error = zfs_error(["zfs", "snapshot", "a/b@x"], 1, stderr)
    assert type(error) is kind
    assert str(error) == f"zfs: {stderr.splitlines()[0]}"
    assert error.argv == ["zfs", "snapshot", "a/b@x"]


TABLE = [
    Mount("/dev/vda", Path("/"), "ext4"),
    Mount("tmpfs", Path("/run"), "tmpfs"),
    Mount("pool_a/pgdata", Path("/srv/pg"), "fuse"),
    Mount("pool_a/ts", Path("/srv/pg/ts"), "fuse"),
    Mount("pool_b/ts", Path("/srv/pg-other"), "fuse"),
]


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("/srv/pg", "pool_a/pgdata"),
        ("/srv/pg/data/base", "pool_a/pgdata"),
        ("/srv/pg/ts/PG_15", "pool_a/ts"),
        ("/srv/pg-other/x", "pool_b/ts"),  # a shared name prefix is not a parent
        ("/srv", "/dev/vda"),
        ("/run/postgresql", "tmpfs"),
    ],
)
def test_mount_of_takes_the_deepest_mountpoint(path: str, source: str) -> None:
    found = mount_of(Path(path), TABLE)
    assert found is not None and found.source == source


def test_the_last_mount_on_a_mountpoint_wins() -> None:
    stacked = [*TABLE, Mount("pool_c/over", Path("/srv/pg"), "zfs")]
    found = mount_of(Path("/srv/pg/data"), stacked)
    assert found is not None and found.source == "pool_c/over"


def test_no_mount_without_a_root() -> None:
    assert mount_of(Path("/srv/pg"), [Mount("x", Path("/other"), "ext4")]) is None


def test_mounts_reads_escaped_mountpoints(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "pool/with\\040space /srv/a\\040b fuse rw 0 0\n"
        "broken\n"
    )
    assert mounts(str(table)) == [
        Mount("/dev/vda", Path("/"), "ext4"),
        Mount("pool/with\\040space", Path("/srv/a b"), "fuse"),
    ]


NAMES = st.text(alphabet="abcdefghij_0123456789", min_size=1, max_size=8)


@given(NAMES, st.lists(NAMES, max_size=3), st.none() | NAMES)
def test_pool_of_is_the_first_component(pool: str, children: list[str], snap: str | None) -> None:
    name = "/".join([pool, *children]) + (f"@{snap}" if snap else "")
    assert pool_of(name) == pool


def test_free_space_is_taken_from_a_listing_that_has_every_pool_in_bytes() -> None:
    # A zfs that is not there: any call to it fails, so a result means none was made.
    zfs = Zfs(Runner(), binary="/nonexistent/zfs")
    listed = [{"name": "a", "used": "750", "available": "250"},
              {"name": "b", "used": "100", "available": "900"},
              {"name": "a/pgdata", "used": "700", "available": "250"}]
    assert zfs.free_percent(["a", "b"], listed) == {"a": 25.0, "b": 90.0}
    # Not in bytes (zfs-fuse has no `zfs list -p`), or a pool missing: zfs is asked.
    in_words = [{**row, "used": "750M"} if row["name"] == "a" else row for row in listed]
    for rows, pools in ((in_words, ["a"]), (listed, ["a", "c"])):
        with pytest.raises(CommandNotFound):
            zfs.free_percent(pools, rows)


@pytest.mark.parametrize("several", [False, True])
def test_properties_are_set_on_every_target_in_as_few_calls_as_zfs_takes(several: bool) -> None:
    # A dry run records the calls it skips; the capabilities are those of the usage text.
    runner = Runner(dry_run=True)
    zfs = Zfs(runner, binary="/nonexistent/zfs")
    zfs.__dict__["capabilities"] = Capabilities(several, several, several, set_several=several)
    zfs.set(["p/a@s", "q/b@s"], {"zsnap:x": "1", "zsnap:y": "2"})
    both = ["p/a@s", "q/b@s"]
    assert runner.skipped == ([["/nonexistent/zfs", "set", "zsnap:x=1", "zsnap:y=2", *both]]
                              if several else
                              [["/nonexistent/zfs", "set", "zsnap:x=1", *both],
                               ["/nonexistent/zfs", "set", "zsnap:y=2", *both]])


def test_one_property_is_set_without_asking_zfs_what_it_takes() -> None:
    runner = Runner(dry_run=True)
    zfs = Zfs(runner, binary="/nonexistent/zfs")  # asking it would fail: CommandNotFound
    zfs.set(["p/a", "p/b"], {"zsnap:x": "1"})
    zfs.set([], {"zsnap:x": "1", "zsnap:y": "2"})
    assert runner.skipped == [["/nonexistent/zfs", "set", "zsnap:x=1", "p/a", "p/b"]]


def test_a_busy_mount_is_retried_soon_and_a_dependent_clone_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `zfs` that answers as zfs-fuse does just after a clone's server stopped: busy once,
    # then done; and one whose snapshot has a clone, which no wait changes.
    calls = tmp_path / "calls"
    fake = tmp_path / "zfs"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$2" in\n'
        "  p/cloned@s) echo \"cannot destroy 'p/cloned@s': snapshot has dependent clones\" >&2;"
        " exit 1;;\n"
        f'  *) [ "$(grep -c "$2" {calls})" -ge 2 ] && exit 0;'
        " echo \"cannot destroy '$2': dataset is busy\" >&2; exit 1;;\n"
        "esac\n")
    fake.chmod(0o755)
    zfs = Zfs(Runner(), binary=str(fake))
    slept: list[float] = []
    monkeypatch.setattr(zsnap.zfs.time, "sleep", slept.append)
    zfs.destroy("p/clone/0")
    assert slept == [BUSY_FIRST_RETRY_S]
    with pytest.raises(DatasetBusy, match="dependent clones"):
        zfs.destroy("p/cloned@s")
    with pytest.raises(DatasetBusy, match="is busy"):
        zfs.destroy("p/never", busy_wait_s=0)
    assert calls.read_text().splitlines() == [
        "destroy p/clone/0", "destroy p/clone/0", "destroy p/cloned@s", "destroy p/never"]
