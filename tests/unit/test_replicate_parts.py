"""The pieces of replication that need no ZFS: which snapshots a catalog calls its own and
under which names (a receiving host reads the standby's member names under its root), the
byte pipe between `zfs send` and `zfs receive`, and what a receiving host's config means."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsnap import config
from zsnap.catalog import PREFIX, Catalog, Scope
from zsnap.daemon import crons
from zsnap.errors import CommandError, CommandTimeout, ConfigError, UsageError
from zsnap.pg.layout import Layout, Place
from zsnap.runner import Runner
from zsnap.zfs import Zfs

LAYOUT = Layout((Place("pgdata", "/srv/pg/data", "tank/pg", "data"),
                 Place("tablespace", "/srv/ts", "fast/ts", ".", 16400))).to_json()


def row(name: str, set_id: str = "20261202T120000Z") -> dict[str, str]:
    """A member's properties as `zfs list` gives them."""
    values = {"format": "2", "set": set_id, "cluster": "c", "created": "2026-12-02T12:00:00+00:00",
              "members": "tank/pg,fast/ts", "layout": LAYOUT, "timeline": "1",
              "redo_lsn": "0/2000028", "checkpoint_lsn": "0/2000060",
              "consistent_lsn": "0/3000000", "replay_lsn": "0/3000000",
              "system_identifier": "7", "server_version": "150000",
              "wal_segment_size": str(16 << 20), "block_size": "8192", "data_checksums": "on",
              "complete": "yes"}
    return {"name": name, **{PREFIX + k: v for k, v in values.items()}}


def catalog(scope: Scope) -> Catalog:
    return Catalog(Zfs(Runner()), "c", scope)


SNAP = "@zsnap_20261202T120000Z"


def test_a_receiving_catalog_reads_members_under_its_root() -> None:
    rows = [row(f"dr/zsnap/tank/pg{SNAP}"), row(f"dr/zsnap/fast/ts{SNAP}"),
            row(f"tank/pg{SNAP}"), row(f"fast/ts{SNAP}")]
    [s] = catalog(Scope(root="dr/zsnap"))._sets(rows)
    assert s.complete and s.datasets == ["dr/zsnap/tank/pg", "dr/zsnap/fast/ts"]
    assert [p.dataset for p in s.parsed_layout.places] == ["dr/zsnap/tank/pg", "dr/zsnap/fast/ts"]
    assert [p.path for p in s.parsed_layout.places] == ["/srv/pg/data", "/srv/ts"]


def test_a_set_half_arrived_is_incomplete_on_the_receiving_side() -> None:
    [s] = catalog(Scope(root="dr/zsnap"))._sets([row(f"dr/zsnap/tank/pg{SNAP}")])
    assert not s.complete and s.missing == [f"dr/zsnap/fast/ts{SNAP}"]


def test_the_standbys_catalog_leaves_copies_on_a_local_target_out() -> None:
    copies = [row(f"dr/zsnap/tank/pg{SNAP}"), row(f"dr/zsnap/fast/ts{SNAP}")]
    pruned_here = [r | {"name": r["name"].replace("120000Z", "110000Z"),
                        PREFIX + "set": "20261202T110000Z"} for r in copies]
    own = [row(f"tank/pg{SNAP}"), row(f"fast/ts{SNAP}")]
    [s] = catalog(Scope(exclude="dr/zsnap"))._sets(copies + pruned_here + own)
    assert s.datasets == ["tank/pg", "fast/ts"] and s.complete


@pytest.mark.parametrize(("name", "owned"), [
    ("dr/zsnap/tank/pg@x", True), ("dr/zsnap@x", False), ("dr/zsnapper/tank@x", False),
    ("tank/pg@x", False)])
def test_a_root_owns_only_what_is_below_it(name: str, owned: bool) -> None:
    assert Scope(root="dr/zsnap").owns(name) is owned


def test_the_pipe_counts_bytes_and_passes_them_through(tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[int] = []
    pids: list[int] = []
    passed = Runner().pipe(["head", "-c", "3000000", "/dev/zero"],
                           ["sh", "-c", f"cat > {out}"], timeout=30,
                           on_bytes=seen.append, on_start=pids.append)
    assert passed == 3_000_000 == out.stat().st_size == seen[-1]
    assert seen == sorted(seen) and len(pids) == 1


def test_the_sinks_failure_explains_a_broken_pipe() -> None:
    with pytest.raises(CommandError) as caught:
        Runner().pipe(["sh", "-c", "yes"],
                      ["sh", "-c", "head -c 10 >/dev/null; echo 'cannot receive: no' >&2; exit 1"],
                      timeout=30)
    assert caught.value.argv[0] == "sh" and "cannot receive: no" in str(caught.value)


def test_the_sources_own_failure_is_named() -> None:
    with pytest.raises(CommandError) as caught:
        Runner().pipe(["sh", "-c", "echo 'cannot send: gone' >&2; exit 1"], ["cat"], timeout=30)
    assert "cannot send: gone" in str(caught.value)


def test_a_pipe_past_its_timeout_is_killed() -> None:
    with pytest.raises(CommandTimeout):
        Runner().pipe(["sleep", "30"], ["cat"], timeout=0.5)


def test_a_dry_run_pipes_nothing() -> None:
    runner = Runner(dry_run=True)
    assert runner.pipe(["false"], ["false"], timeout=1) == 0
    assert runner.skipped == [["false"], ["false"]]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zsnap.toml"
    path.write_text(text)
    return path


def test_a_receiving_host_takes_and_sends_no_sets(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[catalog]\nroot = "dr/zsnap"\n'
                                      '[schedule]\nreplicate = "10 * * * *"\n'))
    assert cfg.receiving
    jobs = crons(cfg)
    assert jobs["snapshot"] == jobs["replicate"] == "off" and jobs["prune"] != "off"
    with pytest.raises(UsageError, match="receives sets"):
        cfg.require_standby("zsnap snapshot")


@pytest.mark.parametrize(("text", "message"), [
    ('[catalog]\nroot = "a/b"\n[replicate]\ntarget = "c/d"\n', "not both"),
    ('[replicate]\ntarget = "tank/$(reboot)"\n', "replicate.target"),
    ('[replicate]\ntarget = "/tank"\n', "replicate.target"),
    ('[catalog]\nroot = "tank zsnap"\n', "catalog.root"),
])
def test_bad_replication_settings_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text))
    assert message in str(caught.value) and "\n" not in str(caught.value)
