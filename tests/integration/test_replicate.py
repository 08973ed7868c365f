"""Sets replicated to another pool standing for a second host (a local pipe: `[replicate]
command` empty), and served there by a config with `[catalog] root`: full, then incremental
sends; a send killed mid-stream and finished by the next run; pruning on each side on its own;
a flashback on the receiving side exact against the primary's commit timestamps; the
replication lag and the recovery window in `zsnap check` and `zsnap list`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, archive_all, sql, with_setting
from tests.integration.faults import wait_for, wrapped_zfs
from tests.integration.test_clone import Load, assert_gone, check_clone, fails, userrefs
from zsnap.lab import LabInfo, destroy_pool
from zsnap.runner import Runner

TARGET_POOL_SIZE = "1G"


@dataclass
class Pair:
    info: LabInfo
    source: Cli
    receiving: Cli
    pool: str
    target: str
    receiving_config: Path


@pytest.fixture
def pair(fresh_lab: LabInfo) -> Iterator[Pair]:
    info = fresh_lab
    pool = f"{info.name}_dr"
    image = info.root / "dr.img"
    runner = Runner()
    runner.run(["truncate", "-s", TARGET_POOL_SIZE, str(image)])
    runner.run(["zpool", "create", "-m", "none", pool, str(image)], timeout=120)
    target = f"{pool}/zsnap"
    try:
        text = info.config_file.read_text()
        info.config_file.write_text(text + f'\n[replicate]\ntarget = "{target}"\n')
        # The receiving host: the same cluster's sets under its root, its own state and
        # clones (where the postgres user can reach them); no standby at all.
        host = info.root / "receiving"
        host.mkdir()
        receiving = host / "zsnap.toml"
        receiving.write_text(
            text.replace(str(info.root / "state"), str(host / "state"))
            .replace(str(info.clone_root), str(host / "clones"))
            .replace(f"port={info.standby_port}", "port=1")
            + f'\n[catalog]\nroot = "{target}"\n')
        yield Pair(info, Cli(info.config_file), Cli(receiving), pool, target, receiving)
    finally:
        destroy_pool(runner, pool)
        image.unlink(missing_ok=True)


def snapshots(prefix: str) -> set[str]:
    out = Runner().run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name"], mutates=False)
    return {n for n in out.stdout.split() if n.startswith(prefix)}


def ids(cli: Cli) -> dict[str, bool]:
    return {s["id"]: s["complete"] for s in cli.json("list")["sets"]}


def doctor_check(cli: Cli, name: str) -> dict[str, Any]:
    proc = cli("doctor", "--json", check=False)
    return next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == name)


def checks(cli: Cli) -> dict[str, dict[str, Any]]:
    """`zsnap check --json` by check name (it exits with the worst state, as Nagios wants)."""
    proc = cli("check", "--json", check=False)
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


THROTTLED_RECEIVE = """
case "$*" in
  *receive*{dataset})
    python3 -c '
import sys, time, pathlib
out = sys.stdout.buffer
while chunk := sys.stdin.buffer.read(1 << 18):
    out.write(chunk); out.flush()
    pathlib.Path("{flowing}").touch()
    time.sleep(0.5)
' | {real} "$@"
    exit $? ;;
esac
"""


def test_sets_replicate_whole_and_flash_back_exactly_on_the_receiving_side(pair: Pair) -> None:
    info, cli, dr = pair.info, pair.source, pair.receiving
    primary = info.conninfo("primary")
    control = next(d for d in info.datasets if d.endswith("/pgdata"))
    load = Load(primary)
    try:
        time.sleep(0.5)
        a = cli.json("snapshot")["id"]
        assert doctor_check(cli, "replication target")["status"] == "OK"
        assert doctor_check(dr, "received sets")["status"] == "CRITICAL", "nothing received yet"
        dry = cli.json("replicate", "--dry-run")
        assert dry["dry_run"] is True and [s["id"] for s in dry["sets"]] == [a]
        assert snapshots(pair.target) == set(), "a dry run sends nothing"

        # The first set goes whole, every member a full stream with its properties.
        first = cli.json("replicate")
        assert first["replicated"] == [a] and first["newest_before"] is None
        assert [m["base"] for m in first["sets"][0]["members"]] == [None] * 3
        assert ids(dr) == {a: True}
        shown = dr.json("show", a)
        assert shown["datasets"] == [f"{pair.target}/{d}" for d in cli.json("show", a)["datasets"]]
        assert {p["dataset"] for p in shown["layout"]} == set(shown["datasets"])
        assert doctor_check(dr, "received sets")["status"] == "OK"

        time.sleep(0.5)
        between = load.point()
        time.sleep(0.5)
        b = cli.json("snapshot")["id"]
        second = cli.json("replicate")
        members = second["sets"][0]["members"]
        assert second["replicated"] == [b]
        assert all(m["base"] and m["base"].endswith(f"@zsnap_{a}") for m in members)
        assert sum(m["bytes"] for m in members) < sum(
            m["bytes"] for m in first["sets"][0]["members"]), "incremental, not full"
        # The base of the next send is held on both sides, the older one released.
        assert userrefs(f"{control}@zsnap_{b}") == 1 and userrefs(f"{control}@zsnap_{a}") == 0
        assert userrefs(f"{pair.target}/{control}@zsnap_{b}") == 1

        # A send killed mid-stream (the control-file member, sent last): the set never counts as
    # arrived; the next run finishes it.
        time.sleep(1)
        c = cli.json("snapshot")["id"]
    finally:
        load.stop()
    archive_all(primary, info.archive)

    flowing = pair.info.root / "flowing"
    env = wrapped_zfs(pair.info.root, THROTTLED_RECEIVE.format(
        dataset=f"{pair.target}/{control}", flowing=flowing, real=shutil.which("zfs")))
    proc = subprocess.Popen([sys.executable, "-m", "zsnap", "--config", str(info.config_file),
                             "replicate"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(flowing.exists, "the throttled send never started", 120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not any(f"{pair.target}/{control}" in line for line in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
        if "receive" in line), "the receive outlived its zsnap", 30)
    arrived = snapshots(f"{pair.target}/")
    assert f"{pair.target}/{control}@zsnap_{c}" not in arrived
    assert len({n for n in arrived if n.endswith(f"@zsnap_{c}")}) == 2, "the others went first"
    assert c not in ids(dr), "a set half sent is not listed on the target"
    half = {s["id"]: s for s in dr.json("list", "--all-members")["sets"]}[c]
    assert half["complete"] is False and f"{pair.target}/{control}@zsnap_{c}" in half["missing"]
    lag = checks(cli)["replication"]
    assert lag["status"] == "OK" and "1 set(s) not sent yet" in str(lag["summary"])
    third = cli.json("replicate")
    assert third["replicated"] == [c] and third["newest_before"] == b
    # The killed sender's temporary holds are gone too (zfs-fuse leaves them behind).
    assert userrefs(f"{control}@zsnap_{b}") == 0 and userrefs(f"{control}@zsnap_{c}") == 1
    assert ids(dr) == {a: True, b: True, c: True}
    assert cli.json("replicate")["replicated"] == [], "nothing left to send"

    # A flashback on the receiving side, from the set before the target, exact to the commit.
    r = dr.json("clone", "--at", between.isoformat(), "--name", "dr-between")
    assert r["set"] == a and all(d.startswith(pair.pool + "/") for d in r["datasets"])
    check_clone(r, primary, between)
    assert {c["name"] for c in dr.json("clones")} == {"dr-between"}
    dr.json("destroy", "dr-between")
    assert not [d for d in Runner().run(["zfs", "list", "-H", "-o", "name"], mutates=False)
                .stdout.split() if "/zsnap-clones/dr-between" in d]
    assert_gone(info, "dr-between")

    # The receiving host has no standby: its checks leave the standby out, and it takes none.
    on_dr = checks(dr)
    assert "replay_lag" not in on_dr and "replication" not in on_dr
    assert on_dr["newest_set"]["status"] == "OK" and c in on_dr["newest_set"]["summary"]
    assert dr.json("list")["recovery_window"]["windows"][0]["first_set"] == a
    code, message = fails(dr, "snapshot")
    assert code == 2 and "receives sets" in message
    [verified] = dr.json("verify", "--latest")
    assert verified["set"] == c and verified["outcome"] == "passed", verified

    # Pruning on each side on its own: the source keeps only its newest, the target all.
    keep_one = "[retention]\nhourly = 0\ndaily = 0\nweekly = 0\nmonthly = 0\nmin_sets = 1\n"
    info.config_file.write_text(info.config_file.read_text() + keep_one)
    verdicts = cli.json("prune")["sets"]
    assert {v["id"] for v in verdicts if v["destroyed"]} == {a, b}, [
        (v["id"], v["reasons"]) for v in verdicts]
    assert ids(cli) == {c: True} and ids(dr) == {a: True, b: True, c: True}
    # An incremental from the set both sides still hold, after the source pruned the rest.
    time.sleep(1)
    d = cli.json("snapshot")["id"]
    # Not sent yet: the held base stays on the source whatever its retention says.
    held = {v["id"]: v for v in cli.json("prune")["sets"]}
    assert held[c]["keep"] and "hold" in " ".join(held[c]["reasons"])
    fourth = cli.json("replicate")
    assert fourth["replicated"] == [d]
    assert all(m["base"].endswith(f"@zsnap_{c}") for m in fourth["sets"][0]["members"])
    pair.receiving_config.write_text(pair.receiving_config.read_text() + keep_one)
    dropped = {v["id"] for v in dr.json("prune")["sets"] if v["destroyed"]}
    assert dropped == {a, b, c}
    assert ids(dr) == {d: True} and set(ids(cli)) == {c, d}
    assert userrefs(f"{pair.target}/{control}@zsnap_{d}") == 1


def replaced(source: Path, dest: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text
    dest.write_text(text.replace(old, new))
    return dest


def test_targets_roots_and_reinit_at_the_edges(pair: Pair, tmp_path: Path) -> None:
    """Issue 19, item 4: a target that overlaps the standby, one whose pool does not exist, a
    receiving root set to the standby's own pool, a clone on the receiving side during a
    reinit, a reinit --discard that cannot discard, and replication after a reinit from an
    older set."""
    info, cli, dr = pair.info, pair.source, pair.receiving
    control = next(d for d in info.datasets if d.endswith("/pgdata"))
    a = cli.json("snapshot")["id"]
    for target in (control.split("/")[0], control, f"{control}/copies"):
        bad = Cli(replaced(info.config_file, tmp_path / "overlap.toml",
                           f'target = "{pair.target}"', f'target = "{target}"'))
        code, message = fails(bad, "replicate")
        assert code == 2 and f"overlaps the standby's dataset {control}" in message, message
        assert doctor_check(bad, "replication target")["status"] == "CRITICAL"
    nowhere = Cli(replaced(info.config_file, tmp_path / "nowhere.toml",
                           f'target = "{pair.target}"', 'target = "nosuchpool_zz/zsnap"'))
    code, message = fails(nowhere, "replicate", "--dry-run")
    assert code == 1 and "no pool nosuchpool_zz on this host" in message
    wrong_root = Cli(replaced(pair.receiving_config, tmp_path / "root.toml",
                              f'root = "{pair.target}"', f'root = "{control.split("/")[0]}"'))
    for args in (["list"], ["list", "--all-members"]):
        code, message = fails(wrong_root, *args)
        assert code == 2 and "not a copy received under it" in message, message
    checked = json.loads(wrong_root("check", "--json", check=False).stdout)
    assert checked["status"] != "OK" and "not a copy received under it" in json.dumps(checked)

    assert cli.json("replicate")["replicated"] == [a]
    time.sleep(1)
    b = cli.json("snapshot")["id"]
    assert cli.json("replicate")["replicated"] == [b]
    dr.json("clone", "--set", a, "--immediate", "--name", "dr-a")
    # Set b is held as the base of the next send: discarding it is refused before anything.
    code, message = fails(cli, "reinit", "--set", a, "--discard", "--dry-run")
    assert code == 2 and "which is held" in message and f"@zsnap_{b}" in message, message
    # A clone of a received copy does not depend on the standby's datasets.
    plan = cli.json("reinit", "--set", a, "--dry-run")
    assert plan["newer_sets_kept_with_the_damaged"] == [b] and plan["discarded"] == []
    cli.json("reinit", "--set", a)
    time.sleep(1)
    cli.json("snapshot")
    code, message = fails(cli, "replicate")
    assert code == 1 and f"is on {control}_damaged_" in message, message
    assert f"rebuilt the standby from set {a}" in message and "After a reinit" in message
    dr("destroy", "dr-a")
    assert_gone(info, "dr-a")


def test_recovery_window_runs_to_the_last_archived_commit_and_splits_at_missing_wal(
    pair: Pair,
) -> None:
    info, cli = pair.info, pair.source
    primary = info.conninfo("primary")
    # Each set's redo point its own moment, so that a set after a hole in the WAL is usable.
    with_setting(info.config_file, info.config_file, "snapshot",
                 f'primary_checkpoint = "{primary}"')

    def write_and_archive() -> None:
        load = Load(primary)
        try:
            time.sleep(1)
        finally:
            load.stop()
        archive_all(primary, info.archive)

    first = cli.json("snapshot")
    write_and_archive()
    write_and_archive()
    hole = sorted(p.name for p in info.archive.iterdir() if len(p.name) == 24)[-1]
    second = cli.json("snapshot")
    write_and_archive()
    last_commit = datetime.fromisoformat(str(sql(
        info, "primary", "SELECT timestamp::text FROM pg_last_committed_xact()")))

    [window] = cli.json("list")["recovery_window"]["windows"]
    assert datetime.fromisoformat(window["from"]) == datetime.fromisoformat(first["consistent_at"])
    assert datetime.fromisoformat(window["to"]) == last_commit
    assert window["sets"] == [first["id"], second["id"]]
    assert checks(cli)["recovery_window"]["status"] == "OK"

    # A segment gone from the archive splits the window; the newer set starts the next one.
    aside = info.root / hole
    (info.archive / hole).rename(aside)
    try:
        before, after = cli.json("list")["recovery_window"]["windows"]
        assert hole in before["ends"] and before["sets"] == [first["id"]]
        assert after["first_set"] == second["id"]
        assert datetime.fromisoformat(after["to"]) == last_commit
        split = checks(cli)["recovery_window"]
        assert split["status"] == "WARNING" and hole in split["hint"]
    finally:
        aside.rename(info.archive / hole)


SSHD_CONFIG = """\
ListenAddress {address}
Port 2222
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {dir}/sshd.pid
"""


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[list[str]]:
    """A second host to replicate to: sshd in a network namespace of its own, reached over a
    veth pair. It shares this machine's ZFS, as another host shares nothing but the link:
    what crosses is what ssh carries. Yields the `[replicate] command` that reaches it."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    assert Path(sshd).exists(), "no sshd: run scripts/bootstrap.sh (openssh-server)"
    tag = f"{os.getpid() % 10000}"
    ns, near, far = f"zsnap-dr{tag}", f"zsd{tag}a", f"zsd{tag}b"
    subnet = os.getpid() % 250 + 1
    address = f"10.213.{subnet}.2"
    runner = Runner()
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host_key", "client_key"):
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)])
    (keys / "authorized_keys").write_text((keys / "client_key.pub").read_text())
    (keys / "sshd_config").write_text(SSHD_CONFIG.format(address=address, dir=keys))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    runner.run(["ip", "netns", "add", ns])
    daemon = None
    try:
        runner.run(["ip", "link", "add", near, "type", "veth", "peer", "name", far])
        runner.run(["ip", "link", "set", far, "netns", ns])
        runner.run(["ip", "addr", "add", f"10.213.{subnet}.1/30", "dev", near])
        runner.run(["ip", "link", "set", near, "up"])
        for argv in (["ip", "addr", "add", f"{address}/30", "dev", far],
                     ["ip", "link", "set", far, "up"], ["ip", "link", "set", "lo", "up"]):
            runner.run(["ip", "netns", "exec", ns, *argv])
        daemon = subprocess.Popen(["ip", "netns", "exec", ns, sshd, "-D", "-e", "-f",
                                   str(keys / "sshd_config")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        command = ["ssh", "-i", str(keys / "client_key"), "-p", "2222", "-o", "BatchMode=yes",
                   "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "LogLevel=ERROR", f"root@{address}"]
        wait_for(lambda: runner.run([*command, "true"], check=False, timeout=10,
                                    mutates=False).returncode == 0, "sshd did not answer", 30)
        yield command
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        runner.run(["ip", "netns", "delete", ns], check=False)
        runner.run(["ip", "link", "delete", near], check=False)


def test_sets_replicate_over_ssh_to_a_host_in_a_network_namespace(
    pair: Pair, ssh_host: list[str]
) -> None:
    info, cli = pair.info, pair.source
    with_setting(info.config_file, info.config_file, "replicate",
                 f"command = {json.dumps(ssh_host)}")
    a = cli.json("snapshot")["id"]
    assert cli.json("replicate")["replicated"] == [a]
    load = Load(info.conninfo("primary"))
    try:
        time.sleep(1)
    finally:
        load.stop()
    b = cli.json("snapshot")["id"]
    sent = cli.json("replicate")
    assert sent["replicated"] == [b] and sent["newest_before"] == a
    assert all(m["base"] for m in sent["sets"][0]["members"])
    assert ids(pair.receiving) == {a: True, b: True}
    lag = checks(cli)["replication"]
    assert lag["status"] == "OK" and b in lag["summary"]
