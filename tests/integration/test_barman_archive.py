"""A lab whose primary archives into a Barman server on the same host (issue 20): no plain
archive directory anywhere. Clones and verification fetch WAL with `barman get-wal`; doctor,
`zsnap wal check`, the WAL part of `zsnap check`, the recovery window, `zsnap wal find` and the
gap check before a clone read the archive through Barman's own commands (`sync-info`,
`get-wal --peek`, `get-wal`); `zsnap wal prune` leaves it to Barman. The gap is made by
removing a file from Barman's WAL directory behind its back, as a broken disk would: Barman
still catalogues it."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, replicated, running_lab, sql
from tests.integration.test_pgbackrest_archive import (
    archive_with,
    committed,
    config_with,
    flashback_verify_and_check,
    gap_is_named,
    json_of,
    switched,
)
from zsnap.lab import OS_USER, LabInfo
from zsnap.runner import Runner


class Barman:
    """Barman beside the lab, as its documentation sets up file archiving: the primary's
    archive_command copies each file into the server's incoming directory, `barman
    archive-wal` (what `barman cron` runs every minute) moves it into the archive; the
    standby fetches with `barman get-wal`, and the plain archive directory is gone."""

    def __init__(self, info: LabInfo):
        self.info = info
        self.home = info.root / "barman"
        self.conf = self.home / "barman.conf"
        self.server = info.name

    def argv(self, *args: str) -> list[str]:
        return ["barman", "-c", str(self.conf), *args]

    def run(self, *args: str, check: bool = True) -> str:
        return Runner().run(self.argv(*args), user=OS_USER, timeout=300, cwd="/",
                            check=check).stdout

    def shown(self, key: str) -> Path:
        """A directory of the server, as `barman show-server` names it."""
        for line in self.run("show-server", self.server).splitlines():
            name, _, value = line.strip().partition(": ")
            if name == key:
                return Path(value)
        raise AssertionError(f"barman show-server has no {key}")

    def set_up(self) -> None:
        owner = pwd.getpwnam(OS_USER)
        for sub in ("", "home", "log"):
            (self.home / sub).mkdir(exist_ok=True)
            os.chown(self.home / sub, owner.pw_uid, owner.pw_gid)
        primary = self.info.conninfo("primary")
        self.conf.write_text(f"""[barman]
barman_user = {OS_USER}
barman_home = {self.home / 'home'}
log_file = {self.home / 'log' / 'barman.log'}

[{self.server}]
description = "zsnap lab {self.server}"
conninfo = {primary}
streaming_conninfo = {primary}
backup_method = postgres
archiver = on
""")
        self.run("check", self.server, check=False)  # creates the server's directories
        incoming = self.shown("incoming_wals_directory")
        archive_with(self.info, f"test ! -f {incoming}/%f && cp %p {incoming}/%f",
                     f'{shlex.join(self.argv("get-wal", self.server))} %f > "%p"')
        self.switch()
        self.info.archive.rename(self.info.archive.with_name("archive.unused"))

    def config(self, name: str = "zsnap-barman.toml", restore_only: bool = False) -> Path:
        """The lab's zsnap config with the Barman server in place of the directory (or, with
        `restore_only`, only Barman's get-wal as restore_command, as a Barman user who never
        told zsnap more would have)."""
        command = shlex.join(["barman", "-c", str(self.conf)])
        if restore_only:
            get = f'{command} get-wal {self.server} %f > "%p"'
            return config_with(self.info, name, f"restore_command = '{get}'\n")
        return config_with(self.info, name, f'barman_server = "{self.server}"\n'
                                            f"barman_command = '{command}'\n")

    def archived(self) -> set[str]:
        """What Barman catalogues (the test's own look, through `barman sync-info`)."""
        return {w["name"] for w in json.loads(self.run("sync-info", self.server))["wals"]}

    def switch(self) -> str:
        """Finish the current segment and wait until Barman has archived it."""
        return switched(self.info, self.archived, lambda: self.run("archive-wal", self.server))


@pytest.fixture(scope="module")
def barman_lab() -> Iterator[tuple[LabInfo, Barman, Cli]]:
    with running_lab("m") as info:
        barman = Barman(info)
        barman.set_up()
        yield info, barman, Cli(barman.config())


def test_flashback_verify_find_and_checks_read_barman(
        barman_lab: tuple[LabInfo, Barman, Cli]) -> None:
    info, barman, cli = barman_lab
    checks = {c["name"]: c for c in json_of(cli, "doctor")["checks"]}
    assert checks["wal archive"]["status"] == "OK", checks["wal archive"]
    assert f"Barman server {barman.server}" in checks["wal archive"]["summary"]
    # No restore_command in the config: clones fetch with Barman's get-wal.
    assert checks["restore_command"]["status"] == "OK", checks["restore_command"]

    s: dict[str, Any] = cli.json("snapshot")
    sql(info, "primary", "CREATE TABLE barman_t (id int)")
    sql(info, "primary", "INSERT INTO barman_t SELECT generate_series(1, 40)")
    committed(info, "before the target")
    time.sleep(0.2)
    target = committed(info, "at the target")
    time.sleep(0.2)
    after = committed(info, "after the target")
    sql(info, "primary", "DELETE FROM barman_t WHERE id > 10")
    barman.switch()
    replicated(info)

    [window] = cli.json("list")["recovery_window"]["windows"]
    assert window["first_set"] == s["id"]
    assert target < datetime.fromisoformat(window["to"]), window
    check = cli.json("wal", "check")
    assert check["ok"] and check["archive"] == f"Barman server {barman.server}", check
    assert check["newest"] in barman.archived()

    # The DELETE, found in WAL read through get-wal.
    found = json.loads(cli("wal", "find", "--table", "barman_t", "--kind", "delete",
                           "--json").stdout)
    [deleted] = found["transactions"]
    assert deleted["tables"]["public.barman_t"]["deleted"] == 30, deleted

    assert after > target
    flashback_verify_and_check(info, cli, s, target, "frombarman")

    # zsnap removes nothing from an archive Barman manages, and says what the sets need.
    before = barman.archived()
    pruned = cli.json("wal", "prune")
    assert pruned["removed"] == [] and "Barman" in pruned["note"], pruned
    assert barman.archived() == before


def test_a_restore_command_alone_clones_and_says_what_it_cannot_check(
        barman_lab: tuple[LabInfo, Barman, Cli]) -> None:
    """Item 2: Barman known only by its get-wal restore_command (as most Barman users have
    it): clones and verification work; `wal check`, `check`, the recovery window and doctor
    say plainly what zsnap cannot check."""
    info, barman, _ = barman_lab
    cli = Cli(barman.config("zsnap-barman-restore.toml", restore_only=True))
    s: dict[str, Any] = cli.json("snapshot")
    target = committed(info, "restore only")
    committed(info, "after it")  # recovery stops at the first commit past its target
    barman.switch()
    replicated(info)

    proc = cli("wal", "check", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "known only by its restore_command" in proc.stderr
    health = {c["name"]: c for c in json_of(cli, "check")["checks"]}
    assert health["wal_archive"]["status"] == "OK"
    assert "cannot check it for gaps" in health["wal_archive"]["summary"]
    notes = cli.json("list")["recovery_window"]["notes"]
    assert any("known only by its restore_command" in n for n in notes), notes
    doctor = {c["name"]: c for c in json_of(cli, "doctor")["checks"]}
    assert "known only by its restore_command" in doctor["wal archive"]["summary"]

    r = cli.json("clone", "--at", target.isoformat(), "--name", "restoreonly")
    assert r["set"] == s["id"]
    with psycopg.connect(r["dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM lab_a WHERE payload = 'restore only'") \
            .fetchone() == (1,)
    cli("destroy", "restoreonly")
    [verified] = cli.json("verify", s["id"])
    assert verified["outcome"] == "passed", verified


def test_a_segment_lost_from_barman_is_found_and_named(
        barman_lab: tuple[LabInfo, Barman, Cli]) -> None:
    info, barman, cli = barman_lab
    s: dict[str, Any] = cli.json("snapshot")
    for payload in ("one", "two", "three"):
        committed(info, payload)
        barman.switch()
    target = committed(info, "past the gap")
    barman.switch()
    replicated(info)
    # Lose a segment after the set's consistency point behind Barman's back: it stays in
    # Barman's catalogue (xlog.db), get-wal no longer finds it.
    start = sql(info, "primary", f"SELECT pg_walfile_name('{s['consistent_lsn']}')")
    lost = sorted(n for n in barman.archived() if n > start)[0]
    [stored] = barman.shown("wals_directory").rglob(f"{lost}*")
    stored.unlink()
    assert lost in barman.archived()

    gap_is_named(info, cli, s, target, lost, f"Barman server {barman.server}")
    windows = cli.json("list")["recovery_window"]["windows"]
    assert [w["missing_segment"] for w in windows] == [lost], windows
