"""SIGKILL at every external command of snapshot, clone, destroy, prune and verify (issue 10):
a wrapper for `zfs`, `runuser` and `sync` on PATH counts the calls of one zsnap run and stalls
the Nth; the test kills zsnap there, for every N the command makes. After each: replay is not
left paused by zsnap, no set is complete that was not proven, the catalog and ZFS agree, and
`zsnap destroy` of what `zsnap clones` lists leaves no hold, dataset, directory or process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, running_lab
from tests.integration.faults import Stalling, replay_state, zsnap_snapshots
from tests.integration.test_verify import archive_past
from zsnap.lab import LabInfo
from zsnap.runner import Runner


@pytest.fixture(scope="module")
def kill_lab() -> Iterator[LabInfo]:
    with running_lab("k") as info:
        yield info


def zsnap_argv(info: LabInfo, *args: str) -> list[str]:
    return [sys.executable, "-m", "zsnap", "--config", str(info.config_file), *args]


def userrefs(names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    out = Runner().run(["zfs", "get", "-H", "-p", "-o", "name,value", "userrefs", *sorted(names)],
                       mutates=False)
    return {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.stdout.splitlines()}


def clean_up_and_check(cli: Cli, info: LabInfo, proven_before: set[str],
                       stalled: str = "") -> None:
    """The invariants after a kill, and the clean-up the next commands do."""
    sets = {s["id"]: s for s in cli.json("list")["sets"]}  # any command resumes an abandoned pause
    assert replay_state(info) == "not paused"
    new = {i for i, s in sets.items() if s["complete"] and i not in proven_before}
    if stalled.startswith("zfs snapshot"):
        # Killed while taking a member: whatever it left is never complete.
        assert new == set(), (stalled, new)
    for i in new:  # a set completed by the killed run: proven, so every member is there
        assert sets[i]["missing"] == []
    # Every zsnap snapshot belongs to a listed set: the catalog and ZFS agree.
    members = {f"{d}@zsnap_{s['id']}" for s in sets.values() for d in s["datasets"]}
    assert zsnap_snapshots(info.pools) <= members
    for clone in cli.json("clones"):
        cli("destroy", clone["name"])
    leftovers = [d for d in Runner().run(["zfs", "list", "-H", "-o", "name"],
                                         mutates=False).stdout.split()
                 if "/zsnap-clones/" in d and d.split("/")[0] in info.pools]
    assert leftovers == []
    assert not info.clone_root.exists() or not any(info.clone_root.iterdir())
    assert {n: r for n, r in userrefs(zsnap_snapshots(info.pools)).items() if r} == {}


def kill_at_every_call(
    info: LabInfo, tmp_path: Path, args: tuple[str, ...], prepare: Callable[[Cli], None],
) -> int:
    """Run `zsnap ARGS` once to count its external calls, then once per call, killed there."""
    cli = Cli(info.config_file)
    stall = Stalling(tmp_path / "stall")
    prepare(cli)
    stall.arm(0)
    done = subprocess.run(zsnap_argv(info, *args), env=stall.env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    total = stall.calls()
    assert total > 0
    clean_up_and_check(cli, info, set())
    for nth in range(1, total + 1):
        prepare(cli)
        proven = {s["id"] for s in cli.json("list")["sets"] if s["complete"]}
        stalled = stall.killed_at(zsnap_argv(info, *args), nth)
        clean_up_and_check(cli, info, proven, stalled)
    return total


def test_snapshot(kill_lab: LabInfo, tmp_path: Path) -> None:
    assert kill_at_every_call(kill_lab, tmp_path, ("snapshot",), lambda cli: None) >= 3


def test_clone(kill_lab: LabInfo, tmp_path: Path) -> None:
    def a_set(cli: Cli) -> None:
        if not any(s["complete"] for s in cli.json("list")["sets"]):
            cli("snapshot")

    assert kill_at_every_call(kill_lab, tmp_path,
                              ("clone", "--immediate", "--name", "victim", "--durable"),
                              a_set) >= 5


def test_destroy(kill_lab: LabInfo, tmp_path: Path) -> None:
    def a_clone(cli: Cli) -> None:
        if not any(s["complete"] for s in cli.json("list")["sets"]):
            cli("snapshot")
        cli("clone", "--immediate", "--name", "victim", "--durable")

    assert kill_at_every_call(kill_lab, tmp_path, ("destroy", "victim"), a_clone) >= 3


def test_prune(kill_lab: LabInfo, tmp_path: Path) -> None:
    def two_sets(cli: Cli) -> None:
        cli("snapshot")  # the older sets of this hour become prunable
        cli("snapshot")

    assert kill_at_every_call(kill_lab, tmp_path, ("prune",), two_sets) >= 1


def test_verify(kill_lab: LabInfo, tmp_path: Path) -> None:
    def a_verifiable_set(cli: Cli) -> None:
        cli("snapshot")
        archive_past(kill_lab)

    assert kill_at_every_call(kill_lab, tmp_path, ("verify", "--latest"),
                              a_verifiable_set) >= 5

