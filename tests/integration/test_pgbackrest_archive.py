"""A lab whose primary archives with `pgbackrest archive-push` only (issue 12): no plain archive
directory anywhere. Clones and verification fetch WAL with `pgbackrest archive-get`; doctor,
`zsnap wal check`, the WAL part of `zsnap check` and the gap check before a clone read the
repository through pgBackRest's own commands; `zsnap wal prune` leaves it to `pgbackrest
expire`. The gap is made by removing a file from the repository, as a broken archive would."""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, replicated, running_lab, sql
from tests.integration.test_boundary_set import SEGMENT, clone_ends_at_the_set
from tests.integration.test_clone import assert_gone, fails
from zsnap.lab import OS_USER, LabInfo
from zsnap.lsn import Lsn
from zsnap.runner import Runner


class Repo:
    """pgBackRest beside the lab: a repository on local disk, the primary's archive_command
    and the standby's restore_command pointed at it, and the plain archive directory gone."""

    def __init__(self, info: LabInfo):
        self.info = info
        self.home = info.root / "pgbackrest"
        self.conf = self.home / "pgbackrest.conf"
        self.stanza = info.name

    def command(self, *args: str) -> str:
        return f"pgbackrest --config={self.conf} --stanza={self.stanza} " + " ".join(args)

    def run(self, *args: str) -> str:
        argv = ["pgbackrest", f"--config={self.conf}", f"--stanza={self.stanza}", *args]
        return Runner().run(argv, user=OS_USER, timeout=300, cwd="/").stdout

    def set_up(self) -> None:
        owner = pwd.getpwnam(OS_USER)
        for sub in ("", "repo", "log", "lock", "spool"):
            (self.home / sub).mkdir(exist_ok=True)
            os.chown(self.home / sub, owner.pw_uid, owner.pw_gid)
        self.conf.write_text(f"""[global]
repo1-path={self.home / 'repo'}
compress-type=gz
log-path={self.home / 'log'}
lock-path={self.home / 'lock'}
spool-path={self.home / 'spool'}
log-level-console=warn

[{self.stanza}]
pg1-path={self.info.primary_data}
pg1-port={self.info.primary_port}
pg1-socket-path={self.info.socket_dir}
""")
        self.run("stanza-create")
        archive_with(self.info, self.command("archive-push", "%p"),
                     self.command("archive-get", "%f", '"%p"'))
        self.run("check")
        self.info.archive.rename(self.info.archive.with_name("archive.unused"))

    def config(self) -> Path:
        """The lab's zsnap config with the pgBackRest archive in place of the directory, and
        a CHECKPOINT of the primary before each set, so that every set's WAL is in the
        repository (the lab's first segments went to the old directory)."""
        get = self.command("archive-get", "%f", '"%p"')
        return config_with(self.info, "zsnap-pgbackrest.toml",
                           f"restore_command = '{get}'\npgbackrest_stanza = \"{self.stanza}\"\n"
                           f'pgbackrest_config = "{self.conf}"\n')

    def archived(self) -> set[str]:
        """Segment names in the repository, through pgBackRest (the test's own check)."""
        [stanza] = json.loads(self.run("info", "--output=json"))
        archive_id = stanza["archive"][-1]["id"]
        listed = json.loads(self.run("repo-ls", "--recurse", "--output=json",
                                     f"archive/{self.stanza}/{archive_id}"))
        return {p.rsplit("/", 1)[-1][:24] for p, e in listed.items()
                if e["type"] == "file" and len(p.rsplit("/", 1)[-1]) > 24}

    def switch(self) -> None:
        """Finish the current segment and wait until pgBackRest has it."""
        switched(self.info, self.archived)


def archive_with(info: LabInfo, push: str, get: str) -> None:
    """The lab's primary archiving with PUSH (its archive_command), its standby fetching with
    GET (its restore_command)."""
    for which, setting, command in (("primary", "archive_command", push),
                                    ("standby", "restore_command", get)):
        with psycopg.connect(info.conninfo(which), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET {setting} = '{command}'")
            conn.execute("SELECT pg_reload_conf()")


def config_with(info: LabInfo, name: str, archive: str) -> Path:
    """The lab's zsnap config, as NAME beside it, with ARCHIVE (its keys) as its [archive]
    section, and a CHECKPOINT of the primary before each set, so that every set's WAL is in
    that archive (the lab's first segments went to the lab's own directory)."""
    text = info.config_file.read_text()
    start, end = text.index("[archive]"), text.index("[clones]")
    text = text[:start] + f"[archive]\n{archive}\n" + text[end:]
    text = text.replace("# primary_checkpoint =", "primary_checkpoint =")
    path = info.root / name
    path.write_text(text)
    return path


def switched(info: LabInfo, archived: Callable[[], set[str]],
             nudge: Callable[[], object] = lambda: None) -> str:
    """The segment the primary finished, once ARCHIVED() names it; NUDGE() runs between
    looks (what moves a received file into the archive)."""
    with psycopg.connect(info.conninfo("primary"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert row is not None
    deadline = time.monotonic() + 120
    while row[0] not in archived():
        assert time.monotonic() < deadline, f"{row[0]} was not archived"
        time.sleep(0.2)
        nudge()
    return str(row[0])


@pytest.fixture(scope="module")
def repo_lab() -> Iterator[tuple[LabInfo, Repo, Cli]]:
    with running_lab("b") as info:
        repo = Repo(info)
        repo.set_up()
        yield info, repo, Cli(repo.config())


def json_of(cli: Cli, command: str) -> Any:
    """The JSON of a command that may exit non-zero (doctor and check exit with a state)."""
    return json.loads(cli(command, "--json", check=False).stdout)


def committed(info: LabInfo, payload: str) -> datetime:
    with psycopg.connect(info.conninfo("primary"), autocommit=True) as conn:
        conn.execute("INSERT INTO lab_a (payload) VALUES (%s)", (payload,))
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def flashback_verify_and_check(info: LabInfo, cli: Cli, s: dict[str, Any], target: datetime,
                               name: str) -> None:
    """The same for every kind of archive: a clone of set S at TARGET holds exactly the rows
    committed by then, having fetched WAL from the archive; the set verifies; the WAL part of
    `zsnap check` is OK."""
    r = cli.json("clone", "--at", target.isoformat(), "--name", name)
    assert r["set"] == s["id"]
    with psycopg.connect(r["dsn"], autocommit=True) as conn:
        rows = {p for (p,) in conn.execute(
            "SELECT payload FROM lab_a WHERE payload LIKE '%the target'")}
    assert rows == {"before the target", "at the target"}
    log = (info.clone_root / name / "postgresql.log").read_text()
    assert "restored log file" in log and "from archive" in log
    cli("destroy", name)
    assert_gone(info, name)

    [verified] = cli.json("verify", s["id"])
    assert verified["outcome"] == "passed", verified
    health = {c["name"]: c for c in json_of(cli, "check")["checks"]}
    assert health["wal_archive"]["status"] == "OK", health["wal_archive"]


def gap_is_named(info: LabInfo, cli: Cli, s: dict[str, Any], target: datetime, lost: str,
                 where: str) -> None:
    """The same for every kind of archive: segment LOST, gone from the archive WHERE after
    set S, is the gap `wal check` and `check` name, and a clone of S to TARGET past it is
    refused before it starts, naming both."""
    proc = cli("wal", "check", "--json", check=False)
    assert proc.returncode == 1
    gaps = json.loads(proc.stdout)["gaps"]
    assert [g["first"] for g in gaps] == [lost], gaps
    health = {c["name"]: c for c in json_of(cli, "check")["checks"]}
    assert health["wal_archive"]["status"] == "CRITICAL"
    assert lost in health["wal_archive"]["summary"]

    code, message = fails(cli, "clone", "--at", target.isoformat(), "--set", s["id"],
                          "--name", "pastgap")
    assert code == 4 and lost in message and where in message
    assert_gone(info, "pastgap")


def test_flashback_verify_and_checks_read_the_repository(
    repo_lab: tuple[LabInfo, Repo, Cli],
) -> None:
    info, repo, cli = repo_lab
    report = json_of(cli, "doctor")
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["restore_command"]["status"] == "OK", checks["restore_command"]
    s: dict[str, Any] = cli.json("snapshot")
    committed(info, "before the target")
    time.sleep(0.2)
    target = committed(info, "at the target")
    time.sleep(0.2)
    after = committed(info, "after the target")
    repo.switch()
    replicated(info)
    # The recovery window reads the repository's segments through archive-get.
    [window] = cli.json("list")["recovery_window"]["windows"]
    assert window["first_set"] == s["id"]
    assert target < datetime.fromisoformat(window["to"]) <= after, window

    check = cli.json("wal", "check")
    assert check["ok"] and check["archive"] == f"pgBackRest stanza {repo.stanza}", check
    assert check["newest"] in repo.archived()

    flashback_verify_and_check(info, cli, s, target, "fromrepo")

    # zsnap removes nothing from a repository pgBackRest manages.
    before = repo.archived()
    pruned = cli.json("wal", "prune")
    assert pruned["removed"] == [] and "pgbackrest expire" in pruned["note"]
    assert repo.archived() == before


def test_a_set_at_a_segment_boundary_verifies_and_clones(
        repo_lab: tuple[LabInfo, Repo, Cli]) -> None:
    """As with a directory and with a restore_command alone (test_boundary_set.py): a set of
    an idle standby, consistent exactly at a segment boundary, verifies and clones to its
    consistency point (issue 19: the same WAL tests for each kind of archive)."""
    info, repo, _ = repo_lab
    plain = info.root / "zsnap-pgbackrest-plain.toml"  # no CHECKPOINT of the primary per set
    plain.write_text(repo.config().read_text().replace("primary_checkpoint =",
                                                        "# primary_checkpoint ="))
    cli = Cli(plain)
    sql(info, "primary", "CHECKPOINT")  # a redo point whose WAL is in the repository
    for _ in range(10):
        sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('before the switch')")
        repo.switch()
        replicated(info)
        s: dict[str, Any] = cli.json("snapshot")
        if Lsn.parse(s["consistent_lsn"]).value % SEGMENT == 0:
            break
        time.sleep(1)
    else:
        raise AssertionError("no set at a segment boundary")
    [result] = cli.json("verify", s["id"])
    assert result["outcome"] == "passed", result
    clone_ends_at_the_set(info, cli, s, "before the switch")


def test_a_gap_in_the_repository_is_found_and_named(repo_lab: tuple[LabInfo, Repo, Cli]) -> None:
    info, repo, cli = repo_lab
    s: dict[str, Any] = cli.json("snapshot")
    for payload in ("one", "two", "three"):
        committed(info, payload)
        repo.switch()
    target = committed(info, "past the gap")
    repo.switch()
    replicated(info)
    # Lose a segment after the set's consistency point, as a broken repository would.
    lost = sorted(n for n in repo.archived() if n > sql(
        info, "primary", f"SELECT pg_walfile_name('{s['consistent_lsn']}')"))[0]
    [stored] = (info.root / "pgbackrest" / "repo").rglob(f"{lost}-*")
    stored.unlink()

    gap_is_named(info, cli, s, target, lost, f"pgBackRest stanza {repo.stanza}")
