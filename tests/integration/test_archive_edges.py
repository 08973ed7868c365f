"""A WAL archive's contents are not trusted blindly (issue 19, item 3): a segment cut short, a
`.gz` holding text, a bad `.xz` or `.bz2` are damaged, named as such, a gap for `wal check`,
`check` and the recovery window, refused before a clone starts; the rest is still listed; and
what zsnap remembers of a file never outlives the file."""

from __future__ import annotations

import bz2
import json
import lzma
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Cli, archive_all, archive_copy, replicated, sql
from zsnap.lab import LabInfo


def ends(listed: dict[str, Any]) -> list[str]:
    return [w["ends"] for w in listed["recovery_window"]["windows"]]


def test_damaged_archive_files_are_gaps_and_never_a_traceback(
        lab: LabInfo, tmp_path: Path) -> None:
    info = lab
    primary = info.conninfo("primary")
    Cli(info.config_file)("snapshot")
    segments = []
    for i in range(6):
        sql(info, "primary", f"INSERT INTO lab_a (payload) VALUES ('edge {i}')")
        archive_all(primary, info.archive)
        replicated(info)
        segments.append(sql(info, "primary",
                            "SELECT pg_walfile_name(pg_current_wal_lsn() - 1)"))
    copy, config = archive_copy(info, "archive-edges", tmp_path / "state")
    cli = Cli(config)
    assert cli.json("wal", "check")["ok"]
    whole = cli.json("list")
    assert ends(whole)[-1] == "the end of the archived WAL"
    end_whole = datetime.fromisoformat(whole["recovery_window"]["windows"][-1]["to"])

    truncated, as_text, as_xz, as_bz2 = segments[1], segments[2], segments[3], segments[4]
    saved = (copy / truncated).read_bytes()
    (copy / truncated).write_bytes(saved[:100000])
    for name, suffix, content in ((as_text, ".gz", b"not gzip at all"),
                                  (as_xz, ".xz", lzma.compress(b"x" * 1000)[:50]),
                                  (as_bz2, ".bz2", bz2.compress(b"x" * 1000)[:-10])):
        (copy / name).unlink()
        (copy / (name + suffix)).write_bytes(content)
    # Damaged an hour ago: a file written just now that is too short may still be growing
    # (archive_command = cp) and counts as not archived yet.
    hour_ago = time.time() - 3600
    for path in copy.iterdir():
        if path.name.startswith((truncated, as_text, as_xz, as_bz2)):
            os.utime(path, (hour_ago, hour_ago))

    listed = cli("list", "--json")
    assert "Traceback" not in listed.stderr
    window = cli.json("list")
    assert window["sets"], "the sets are still listed"
    assert any(f"segment {truncated} is damaged in the archive" in e and "truncated" in e
               for e in ends(window)), ends(window)
    assert datetime.fromisoformat(window["recovery_window"]["windows"][0]["to"]) < end_whole

    report = cli("wal", "check", "--json", check=False)
    assert report.returncode == 1, report.stderr
    checked = json.loads(report.stdout)
    assert set(checked["damaged"]) == {truncated, as_text + ".gz", as_xz + ".xz",
                                       as_bz2 + ".bz2"}
    assert "truncated" in checked["damaged"][truncated]
    assert "not gz data" in checked["damaged"][as_text + ".gz"]
    assert any(g["first"] == truncated for g in checked["gaps"])

    nagios = cli("check", "--nagios", check=False)
    assert nagios.returncode == 2 and nagios.stdout.startswith("ZSNAP CRITICAL"), nagios
    assert f"{truncated} damaged" in nagios.stdout and "Traceback" not in nagios.stderr

    # A time after the damaged segment cannot be reached: the clone says which segment
    # stopped it, and leaves nothing.
    clone = cli("clone", "--at", datetime.now().astimezone().isoformat(), "--name", "dmg",
                check=False)
    assert clone.returncode != 0
    assert f"WAL segment {truncated} is damaged in the archive" in clone.stderr, clone.stderr
    assert not [c for c in cli.json("clones") if c["name"] == "dmg"]

    # Put back whole: read again (what was found of the damaged copy is not kept).
    (copy / truncated).write_bytes(saved)
    for name, suffix in ((as_text, ".gz"), (as_xz, ".xz"), (as_bz2, ".bz2")):
        (copy / (name + suffix)).unlink()
        shutil.copy(info.archive / name, copy / name)
    assert cli.json("wal", "check")["ok"]
    again = cli.json("list")
    assert ends(again)[-1] == "the end of the archived WAL"
    assert datetime.fromisoformat(again["recovery_window"]["windows"][-1]["to"]) >= end_whole

    # A cache that is not zsnap's (hand-edited, another version) is read as no cache.
    (tmp_path / "state" / f"wal-commits-{info.name}.json").write_text("[]")
    (tmp_path / "state" / "wal-files.json").write_text('{"x": 1}')
    assert cli.json("list")["recovery_window"]["windows"]
    shutil.rmtree(copy)
