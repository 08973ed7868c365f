"""Finding a running zfs-fuse from /proc: the lab starts one only when none runs, and removes a
pid file left behind by a daemon that is gone (zfs-fuse refuses to start over it)."""

from pathlib import Path

from zsnap.lab import zfs_fuse_running


def _process(proc: Path, pid: int, comm: str, state: str = "S") -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1\n")


def test_a_running_zfs_fuse_is_found(tmp_path: Path) -> None:
    _process(tmp_path, 1, "init")
    _process(tmp_path, 2907, "zfs-fuse")
    assert zfs_fuse_running(tmp_path)


def test_other_processes_and_zombies_are_not_a_running_zfs_fuse(tmp_path: Path) -> None:
    _process(tmp_path, 1, "init")
    _process(tmp_path, 42, "zfs-fuse) S (x")  # a name made to look like one
    _process(tmp_path, 43, "zfs-fuse", state="Z")  # exited, not reaped yet
    (tmp_path / "self").mkdir()  # not a pid: ignored
    assert not zfs_fuse_running(tmp_path)
