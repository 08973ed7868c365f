"""A clone or destroy killed half-way leaves nothing that `zsnap destroy` does not remove, and
verify never removes a user's clone (issue 10, items 4, 5 and 7)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cli, alive
from tests.integration.faults import wait_for, wrapped_zfs
from tests.integration.test_clone import assert_gone, fails, userrefs
from zsnap.lab import LabInfo


def stall(subcommand: str, nth: int, pid_file: Path, *, done_first: bool = False) -> str:
    """Shell for the wrapper: the `nth` call of `zfs <subcommand>` made by a `zsnap clone`
    hangs (its pid in `pid_file`; `done_first`: after doing its work); the counter lives
    beside it."""
    count = pid_file.with_suffix(".count")
    first = f'{shutil.which("zfs")} "$@"; ' if done_first else ""
    caller = "tr '\\0' ' ' < /proc/$PPID/cmdline | grep -q ' clone '"
    return f"""if [ "$1" = {subcommand} ] && {caller}; then
    n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}
    if [ $n -eq {nth} ]; then echo $$ > {pid_file}; {first}exec sleep 3600; fi
fi"""


def killed_clone(info: LabInfo, env: dict[str, str], pid_file: Path, name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsnap", "--config", str(info.config_file), "clone",
         "--immediate", "--name", name], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(pid_file.exists, "the clone never reached the stalled zfs call")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    hung = int(pid_file.read_text())
    wait_for(lambda: not alive(hung), "the stalled zfs call outlived its zsnap", 10)


def test_a_clone_killed_while_it_takes_its_holds_is_destroyed_whole(
    fresh_lab: LabInfo, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    s = cli.json("snapshot")
    snapshots = [f"{d}@zsnap_{s['id']}" for d in s["datasets"]]
    pid_file = tmp_path / "hold.pid"
    # The hold call is made, and the zsnap dies in it: the holds are taken, nothing else.
    env = wrapped_zfs(tmp_path, stall("hold", 1, pid_file, done_first=True))
    killed_clone(info, env, pid_file, "orphan")
    assert [userrefs(n) for n in snapshots] == [1, 1, 1]
    listed = {c["name"]: c for c in cli.json("clones")}
    assert listed["orphan"]["state"] == "half-made"
    code, msg = fails(cli, "clone", "--immediate", "--name", "orphan")
    assert code == 2 and "taken" in msg, msg
    assert cli.json("destroy", "orphan")["destroyed"] is True
    assert [userrefs(n) for n in snapshots] == [0, 0, 0]
    assert_gone(info, "orphan")
    # The name is free again, and the set can be pruned once a newer one exists.
    r = cli.json("clone", "--immediate", "--name", "orphan")
    assert r["state"] == "promoted"
    cli("destroy", "orphan")
    assert_gone(info, "orphan")


def test_a_clone_killed_between_its_datasets_is_destroyed_whole(
    fresh_lab: LabInfo, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    s = cli.json("snapshot")
    snapshots = [f"{d}@zsnap_{s['id']}" for d in s["datasets"]]
    pid_file = tmp_path / "clone.pid"
    env = wrapped_zfs(tmp_path, stall("clone", 2, pid_file))  # the second member's clone
    killed_clone(info, env, pid_file, "halfway")
    assert cli.json("destroy", "halfway")["destroyed"] is True
    assert [userrefs(n) for n in snapshots] == [0, 0, 0]
    assert_gone(info, "halfway")
    code, msg = fails(cli, "destroy", "halfway")
    assert code == 4, msg


def test_verify_never_removes_a_users_clone_of_its_instance_name(fresh_lab: LabInfo) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    s = cli.json("snapshot")
    mine = f"verify-{info.name}-{s['id']}"
    cli.json("clone", "--set", s["id"], "--name", mine)
    code, msg = fails(cli, "verify", s["id"])
    assert code == 2 and f"{mine} exists and is not a verification instance" in msg, msg
    listed = {c["name"]: c for c in cli.json("clones")}
    assert listed[mine]["state"] == "running"
    cli("destroy", mine)
    assert_gone(info, mine)
