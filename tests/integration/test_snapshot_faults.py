"""Faults in the middle of `zsnap snapshot` (issue 10, items 2 and 3): a set is complete only
once zsnap has proven it consistent after its last member exists; whatever stops it before
that leaves no complete set, and nothing that outlives zsnap finishes one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import Cli, alive
from tests.integration.faults import replay_state, wait_for, wrapped_zfs
from tests.integration.faults import zsnap_snapshots as snapshots
from zsnap.lab import OS_USER, LabInfo
from zsnap.pg.replay import MARKER


def on_pool(pool: str, then: str) -> str:
    """Shell for the wrapper: run `then` before a `zfs snapshot` of a dataset of `pool`."""
    return f"""case "$1 $*" in
    "snapshot "*" {pool}/"*) {then} ;;
esac"""


def complete_ids(cli: Cli) -> set[str]:
    return {s["id"] for s in cli.json("list")["sets"] if s["complete"]}


def test_sigkill_during_the_last_member_leaves_no_complete_set(
    fresh_lab: LabInfo, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    good = cli.json("snapshot")["id"]
    before = snapshots(info.pools)
    hung = tmp_path / "hung.pid"
    # The last pool's member: the wrapper stalls, then would finish it if it still lived.
    env = wrapped_zfs(tmp_path, on_pool(info.pools[1], f"echo $$ > {hung}; sleep 3"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsnap", "--config", str(info.config_file), "snapshot"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(hung.exists, "zsnap never reached the last member")
    assert replay_state(info) == "paused"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    child = int(hung.read_text())
    wait_for(lambda: not alive(child), "the zfs call outlived the zsnap that ran it", 10)
    time.sleep(3.5)  # when the wrapper would have gone on to snapshot the member
    made = snapshots(info.pools) - before
    assert made and all(n.split("/")[0] == info.pools[0] for n in made), made
    (killed,) = {n.split("@zsnap_")[1] for n in made}

    # The next command resumes the pause the dead zsnap made; its set is never complete.
    listed = {s["id"]: s for s in cli.json("list")["sets"]}
    assert replay_state(info) == "not paused"
    assert not (info.root / "state" / MARKER).exists()
    assert listed[killed]["complete"] is False
    assert complete_ids(cli) == {good}
    plan = cli.json("clone", "--immediate", "--dry-run")
    assert plan["set"] == good
    # A new set is taken as usual; once it is complete, prune removes the killed one.
    newer = cli.json("snapshot")
    assert newer["complete"] is True
    pruned = cli.json("prune")
    assert killed in {s["id"] for s in pruned["sets"] if not s["keep"]}, pruned
    assert not {n for n in snapshots(info.pools) - before if killed in n}


def test_a_standby_restart_during_the_snapshot_calls_leaves_no_complete_set(
    fresh_lab: LabInfo, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    good = cli.json("snapshot")["id"]
    before = snapshots(info.pools)
    restart = (f"runuser -u {OS_USER} -- {info.pg_bin}/pg_ctl -D {info.standby_data} "
               f"-m immediate -w -l {info.log_dir}/standby.log restart >/dev/null")
    env = wrapped_zfs(tmp_path, on_pool(info.pools[1], restart))
    proc = cli("snapshot", check=False, env=env)
    message = proc.stderr.strip()
    assert proc.returncode != 0 and message.count("\n") == 0 and "Traceback" not in message, \
        message
    assert "removed the" in message, message
    # Nothing of that set is left, and only the good set is complete.
    assert snapshots(info.pools) == before
    assert complete_ids(cli) == {good}
    assert replay_state(info) == "not paused"
    result: dict[str, Any] = cli.json("snapshot")
    assert result["complete"] is True


RESUME = ("""{python} -c 'import psycopg; psycopg.connect("{conninfo}", autocommit=True)"""
          """.execute("SELECT pg_wal_replay_resume()")'""")


def test_a_pause_someone_else_lifts_is_taken_again(fresh_lab: LabInfo, tmp_path: Path) -> None:
    """Patroni's HA loop resumes a paused replay on PostgreSQL 14+. A set whose pause another
    session lifted is removed and taken again; when it happens every time, no set is left."""
    info = fresh_lab
    cli = Cli(info.config_file)
    before = snapshots(info.pools)
    resume = RESUME.format(python=sys.executable, conninfo=info.conninfo("standby"))
    once = tmp_path / "once"
    once.touch()
    # Before the last pool's member, once: another session resumes replay.
    env = wrapped_zfs(tmp_path, on_pool(info.pools[1],
                                        f"if [ -e {once} ]; then rm {once}; {resume}; fi"))
    proc = cli("snapshot", "--json", env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "taking the set again (attempt 2 of 3)" in proc.stderr
    taken = json.loads(proc.stdout)
    assert taken["complete"] is True
    made = snapshots(info.pools) - before
    assert {n.split("@zsnap_")[1] for n in made} == {taken["id"]}, "the first try was removed"

    always = wrapped_zfs(tmp_path, on_pool(info.pools[1], resume))
    before = snapshots(info.pools)
    proc = cli("snapshot", env=always, check=False)
    assert proc.returncode == 1 and "replay did not stay frozen" in proc.stderr
    assert snapshots(info.pools) == before
    assert replay_state(info) == "not paused"
