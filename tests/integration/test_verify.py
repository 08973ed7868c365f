"""`zsnap verify` on real labs: a good set proves restorable, a set holding a corrupt page fails
with the check that found it, a user check can fail a set, the daemon runs the job, and in
every case the throwaway instance leaves nothing behind (datasets, directory, server, holds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, archive_all, replicated, running_lab, sql
from zsnap.daemon import Daemon
from zsnap.lab import LabInfo
from zsnap.runner import Runner


@pytest.fixture(scope="module")
def verify_lab() -> Iterator[LabInfo]:
    with running_lab("v") as info:
        yield info


def archive_past(info: LabInfo) -> None:
    """Two segment switches with a write before each, both archived: verification recovers
    to the set's consistency point, which needs a WAL record after it in the archive."""
    for _ in range(2):
        sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('past the set')")
        archive_all(info.conninfo("primary"), info.archive)


def config_with(info: LabInfo, path: Path, extra: str) -> Path:
    """The lab's config plus sections of its own."""
    path.write_text(info.config_file.read_text() + "\n" + extra)
    return path


def snapshots_of(info: LabInfo, set_id: str) -> list[str]:
    """The set's snapshots in this lab's pools (another lab may take a set the same second)."""
    out = Runner().run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name"],
                       mutates=False).stdout
    return [n for n in out.split()
            if n.endswith(f"@zsnap_{set_id}") and n.split("/", 1)[0] in info.pools]


def userrefs(snapshot: str) -> int:
    out = Runner().run(["zfs", "get", "-H", "-p", "-o", "value", "userrefs", snapshot],
                       mutates=False).stdout
    return int(out.strip())


def assert_nothing_left(info: LabInfo, set_id: str) -> None:
    name = f"verify-{info.name}-{set_id}"
    out = Runner().run(["zfs", "list", "-H", "-o", "name"], mutates=False).stdout
    clones = [d for d in out.split() if "zsnap-clones/" in d and d.startswith(tuple(info.pools))]
    assert clones == []
    assert not (info.clone_root / name).exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert str(info.clone_root / name) not in ps.stdout
    members = snapshots_of(info, set_id)
    assert len(members) == 3
    assert [userrefs(s) for s in members] == [0, 0, 0]


def one_line_failure(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


def listed(cli: Cli, set_id: str) -> dict[str, Any]:
    return next(s for s in cli.json("list")["sets"] if s["id"] == set_id)


def verification_status(cli: Cli) -> dict[str, Any]:
    """`zsnap check`'s verification check (the command exits with the overall Nagios code)."""
    proc = cli("check", "--json", check=False)
    return next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "verification")


def test_a_good_set_verifies_and_a_failing_user_check_fails_it(verify_lab: LabInfo,
                                                               tmp_path: Path) -> None:
    info = verify_lab
    checks = '[verify]\nsql = ["SELECT count(*) > 0 FROM lab_a", "SELECT true"]\n'
    cli = Cli(config_with(info, tmp_path / "zsnap.toml", checks))
    sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('in the set')")
    replicated(info)
    set_id = cli.json("snapshot")["id"]
    archive_past(info)

    [result] = cli.json("verify")
    assert result["set"] == set_id and result["outcome"] == "passed", result
    assert result["failed_check"] is None
    assert [c["name"] for c in result["checks"]] == [
        "recovery", "system_identifier", "amcheck", "sql[0]", "sql[1]", "checksums"]
    assert all(c["outcome"] == "passed" for c in result["checks"]), result["checks"]
    assert result["rto_s"] > 0 and result["wal_replayed_bytes"] > 0
    assert_nothing_left(info, set_id)

    shown = listed(cli, set_id)
    assert shown["verify_outcome"] == "passed" and shown["verify_failed_check"] is None
    assert shown["rto_s"] == pytest.approx(result["rto_s"], abs=0.001)
    assert datetime.fromisoformat(shown["verified_at"]).utcoffset() is not None
    entry = next(e for e in map(json.loads, (info.root / "state" / "history.jsonl")
                                .read_text().splitlines()) if e["what"] == "verify")
    assert entry["outcome"] == "ok" and entry["data"]["sets"][0]["set"] == set_id

    # The same set with a user check that does not hold: failed, that check named.
    strict = Cli(config_with(info, tmp_path / "strict.toml",
                             '[verify]\nsql = ["SELECT true", "SELECT count(*) = 0 FROM lab_a"]\n'))
    message = one_line_failure(strict("verify", set_id, check=False))
    assert message == (f"zsnap: set {set_id} failed verification: sql[1] "
                       "(returned False, not true)")
    shown = listed(cli, set_id)
    assert shown["verify_outcome"] == "failed" and shown["verify_failed_check"] == "sql[1]"
    status = verification_status(cli)
    assert status["status"] == "CRITICAL" and "sql[1]" in status["summary"], status
    assert_nothing_left(info, set_id)

    # Verified again with checks that hold: passed, the failed check cleared.
    assert cli("verify", "--latest").returncode == 0
    shown = listed(cli, set_id)
    assert shown["verify_outcome"] == "passed" and shown["verify_failed_check"] is None
    assert verification_status(cli)["status"] == "OK"
    # Every complete set has been verified now: nothing to do.
    assert cli.json("verify", "--unverified") == []


def test_the_daemon_runs_the_verify_job(verify_lab: LabInfo, tmp_path: Path) -> None:
    info = verify_lab
    state = tmp_path / "state"
    path = tmp_path / "zsnap.toml"
    # The lab's config with a state directory and a schedule of its own.
    text = info.config_file.read_text().replace(
        f'dir = "{info.root / "state"}"', f'dir = "{state}"')
    path.write_text(text + '\n[schedule]\nsnapshot = "off"\nprune = "off"\n'
                    'verify = "*/2 * * * * *"\n')
    set_id = Cli(path).json("snapshot")["id"]
    archive_past(info)
    history = state / "history.jsonl"

    def finished() -> list[dict[str, Any]]:
        # Runs falling due while one goes are recorded as busy; those are not what we wait for.
        runs = map(json.loads, history.read_text().splitlines()) if history.exists() else []
        return [r for r in runs if r["what"] == "verify" and r["outcome"] != "busy"]

    daemon = Daemon(path)
    daemon.start()
    try:
        deadline = time.monotonic() + 300
        while not finished():
            assert time.monotonic() < deadline, "the verify job did not run"
            time.sleep(0.5)
    finally:
        daemon.stop()
    run = finished()[0]
    assert run["origin"] == "daemon" and run["outcome"] == "ok", run
    assert run["data"]["sets"][0]["set"] == set_id
    assert listed(Cli(path), set_id)["verify_outcome"] == "passed"
    assert_nothing_left(info, set_id)


def test_a_set_holding_a_corrupt_page_fails_naming_the_check(fresh_lab: LabInfo) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    # A static table and index, not written afterwards; a primary checkpoint after them, so
    # that replay from any later redo point never touches their pages again.
    sql(info, "primary", "CREATE TABLE still (id int PRIMARY KEY, payload text)")
    sql(info, "primary",
        "INSERT INTO still SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g")
    sql(info, "primary", "CHECKPOINT")
    replicated(info)
    # A restartpoint at that checkpoint: the table's pages are on the standby's dataset.
    sql(info, "standby", "CHECKPOINT")
    relation = info.standby_data / sql(info, "standby", "SELECT pg_relation_filepath('still')")
    assert relation.stat().st_size >= 3 * 8192
    # Bytes in the middle of block 1, among its tuples; the page header (and checksum) stays.
    fd = os.open(relation, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xde\xad\xbe\xef" * 8, 8192 + 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
    set_id = cli.json("snapshot")["id"]
    archive_past(info)

    proc = cli("verify", set_id, "--json", check=False)
    message = one_line_failure(proc)
    assert message.startswith(f"zsnap: set {set_id} failed verification: amcheck ("), message
    assert "invalid page in block 1" in message
    [result] = json.loads(proc.stdout)
    outcome = {c["name"]: c["outcome"] for c in result["checks"]}
    assert outcome == {"recovery": "passed", "system_identifier": "passed",
                       "amcheck": "failed", "checksums": "failed"}, result["checks"]
    checksums = next(c for c in result["checks"] if c["name"] == "checksums")
    assert "block 1" in checksums["detail"]
    shown = listed(cli, set_id)
    assert shown["verify_outcome"] == "failed" and shown["verify_failed_check"] == "amcheck"
    status = verification_status(cli)
    assert status["status"] == "CRITICAL" and "amcheck" in status["summary"], status
    assert_nothing_left(info, set_id)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_nothing_and_records_nothing(verify_lab: LabInfo,
                                                               tmp_path: Path,
                                                               signum: int) -> None:
    info = verify_lab
    cli = Cli(info.config_file)
    set_id = cli.json("snapshot")["id"]
    archive_past(info)
    instance = info.clone_root / f"verify-{info.name}-{set_id}"
    # A user check that takes a minute keeps the run in its checks long enough to be caught
    # there, however fast or loaded the machine is.
    slow = config_with(info, tmp_path / "slow.toml",
                       '[verify]\nsql = ["SELECT pg_sleep(60) IS NOT NULL"]\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsnap", "--config", str(slow), "verify", set_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server_log = instance / "postgresql.log"

    def checking() -> bool:
        """Promoted and checkpointed: the clone is made, the checks (amcheck first) begin."""
        text = server_log.read_text(errors="replace") if server_log.exists() else ""
        promoted = text.find("selected new timeline ID")
        return promoted >= 0 and "checkpoint complete" in text[promoted:]

    try:
        deadline = time.monotonic() + 300
        # Interrupted while the checks run: the instance has datasets, holds and a server.
        while not checking():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the instance was not promoted"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err.strip() == "zsnap: interrupted", err
    assert_nothing_left(info, set_id)
    shown = listed(cli, set_id)
    assert shown["verified_at"] is None and shown["verify_outcome"] is None
