"""From a mistake to the rows back, on a real lab: `zsnap wal find` names each transaction with
the primary's own commit timestamp (track_commit_timestamp, to the microsecond) and its row
counts, while another session writes all along; `zsnap query` before and after each mistake is
exact; `zsnap dump` of a dropped table restores elsewhere with every row; bad input is one
line. Then a timeline switch, and clones that expire."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, archive_all, archive_copy, replicated, running_lab, with_setting
from tests.integration.failover import fail_over
from zsnap.lab import LabInfo


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    with running_lab("r") as info:
        yield info


def run(conninfo: str, *statements: str) -> int:
    """The statements in one transaction; its xid."""
    with psycopg.connect(conninfo) as conn:
        for s in statements:
            conn.execute(s)
        row = conn.execute("SELECT txid_current()").fetchone()
        assert row is not None
        conn.commit()
    return int(row[0])


def one(conninfo: str, sql: str) -> Any:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


def db(info: LabInfo, name: str, which: str = "primary") -> str:
    return info.conninfo(which).replace("dbname=postgres", f"dbname={name}")


class Noise:
    """Another session committing small transactions all along."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS noise (id serial, at timestamptz)")
            while not self.stop_flag.is_set():
                conn.execute("INSERT INTO noise (at) VALUES (clock_timestamp())")
                time.sleep(0.01)

    def __enter__(self) -> Noise:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(30)


def find(cli: Cli, *args: str) -> dict[str, Any]:
    out = cli("wal", "find", "--json", *args)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def by_xid(found: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {t["xid"]: t for t in found["transactions"]}


def count(cli: Cli, target: list[str], sql: str, *more: str) -> Any:
    out = json.loads(cli("query", *target, "--json", *more, sql).stdout)
    return out["rows"][0][out["columns"][0]], out


def failing(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    proc = cli(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_a_mistake_found_in_the_wal_and_its_rows_back(lab: LabInfo, tmp_path: Path) -> None:
    info = lab
    cli = Cli(info.config_file)
    primary = info.conninfo("primary")
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop2")
        conn.execute("CREATE DATABASE restored")
    run(primary,
        "CREATE TABLE orders (id int PRIMARY KEY, note text)",
        "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g",
        "CREATE TABLE items (id int, what text)",
        "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g",
        "CREATE TABLE gone (id int PRIMARY KEY, payload text)",
        "INSERT INTO gone SELECT g, repeat('p', 3000) || g FROM generate_series(1, 50) g",
        "CREATE TABLE vac (id int, v text)",
        "INSERT INTO vac SELECT g, 'v' FROM generate_series(1, 200) g")
    run(db(info, "shop2"), "CREATE TABLE orders (id int)",
        "INSERT INTO orders SELECT generate_series(1, 10)")
    replicated(info)
    set_a = cli.json("snapshot")["id"]

    with Noise(primary):
        xid: dict[str, int] = {}
        xid["delete"] = run(primary, "DELETE FROM orders WHERE id <= 100")
        xid["update"] = run(primary, "UPDATE orders SET note = 'oops'")
        xid["burst"] = run(primary, "INSERT INTO items SELECT g, 'burst' FROM "
                                    "generate_series(101, 600) g")
        with psycopg.connect(primary) as conn:
            with conn.cursor().copy("COPY items (id, what) FROM STDIN") as copy:
                for i in range(601, 901):
                    copy.write_row((i, "copied"))
            row = conn.execute("SELECT txid_current()").fetchone()
            assert row is not None
            xid["copy"] = int(row[0])
            conn.commit()
        xid["subxacts"] = run(primary,
                              "DELETE FROM orders WHERE id BETWEEN 950 AND 959",
                              "SAVEPOINT a", "DELETE FROM orders WHERE id BETWEEN 960 AND 969",
                              "RELEASE a", "SAVEPOINT b",
                              "DELETE FROM orders WHERE id BETWEEN 970 AND 979",
                              "ROLLBACK TO b")
        xid["vac_before"] = run(primary, "DELETE FROM vac WHERE id <= 10")
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("VACUUM FULL vac")
        replicated(info)
        set_b = cli.json("snapshot")["id"]
        xid["vac_after"] = run(primary, "DELETE FROM vac WHERE id <= 20")
        one(primary, "SELECT pg_create_restore_point('before-truncate')")
        xid["truncate"] = run(primary, "TRUNCATE items")
        xid["drop"] = run(primary, "DROP TABLE gone")
        xid["shop2"] = run(db(info, "shop2"), "DELETE FROM orders")
        with psycopg.connect(primary) as conn:
            conn.execute("INSERT INTO orders VALUES (5000, 'never')")
            row = conn.execute("SELECT txid_current()").fetchone()
            assert row is not None
            rolled_back = int(row[0])
            conn.rollback()
        time.sleep(0.2)
    archive_all(primary, info.archive)

    everything = find(cli)
    found = by_xid(everything)
    # The oracle: every transaction found, the noise included, committed exactly then.
    with psycopg.connect(primary, autocommit=True) as conn:
        for t in everything["transactions"]:
            row = conn.execute("SELECT pg_xact_commit_timestamp(%s::text::xid)",
                               (t["xid"],)).fetchone()
            assert row is not None
            assert datetime.fromisoformat(t["committed_at"]) == row[0], t
    assert len([t for t in found.values() if "public.noise" in t["tables"]]) > 10

    def change(name: str, table: str = "public.orders") -> dict[str, Any]:
        tables: dict[str, Any] = found[xid[name]]["tables"]
        return dict(tables[table])

    assert change("delete")["deleted"] == 100
    assert change("update")["updated"] == 900
    assert change("burst", "public.items")["inserted"] == 500
    assert change("copy", "public.items")["inserted"] == 300
    assert change("subxacts")["deleted"] == 20  # the rolled back savepoint's 10 are not
    # Before and after VACUUM FULL (a new file, named by the set before it and by the standby).
    assert change("vac_before", "public.vac")["deleted"] == 10
    assert change("vac_after", "public.vac")["deleted"] == 10
    assert any(t["tables"].get("public.vac", {}).get("rewritten") for t in found.values())
    assert change("truncate", "public.items")["truncated"]
    assert change("drop", "public.gone")["dropped"]
    assert found[xid["shop2"]]["database"] == "shop2"
    assert change("shop2")["deleted"] == 10
    assert rolled_back not in found
    assert [p["name"] for p in everything["restore_points"]] == ["before-truncate"]

    # Filters: a dropped table by its name, kinds, sizes, a database.
    gone = find(cli, "--table", "gone", "--kind", "drop")
    assert [t["xid"] for t in gone["transactions"]] == [xid["drop"]]
    big = find(cli, "--kind", "delete", "--min-rows", "100")
    assert [t["xid"] for t in big["transactions"]] == [xid["delete"]]
    other = find(cli, "--db", "shop2", "--table", "orders")
    assert [t["xid"] for t in other["transactions"]] == [xid["shop2"]]
    # The second time, every segment but the newest comes from the cache; what no search can
    # ask again is removed (a segment before every set, a set gone, a look before it, zsnap
    # 0.1's layout of the summaries); another cluster's is left alone.
    state = info.root / "state"
    unreachable = [state / "wal-changes" / f"{info.name}-000000010000000000000000.summary",
                   state / "wal-changes" / "000000010000000000000005.json",
                   state / "relations" / f"{info.name}-20000101T000000Z.json",
                   state / "relations" / f"{info.name}-before-xid-5-0_10.json"]
    others = [state / "relations" / f"{info.name}-2-20000101T000000Z.json",
              state / "wal-changes" / f"{info.name}-2-000000010000000000000000.summary"]
    for path in [*unreachable, *others]:
        path.write_text("{}")
    kept = {d: sorted((state / d).iterdir()) for d in ("relations", "wal-changes")}
    again = find(cli)
    assert again["scanned"]["cached"] >= again["scanned"]["segments"] - 2
    assert by_xid(again).keys() == found.keys()
    assert not any(p.exists() for p in unreachable)
    for d, before in kept.items():
        assert set(before) - set(unreachable) <= set((state / d).iterdir())

    # Ask the past: just before each mistake, and at it.
    before = ["--before-xid", str(xid["delete"])]
    assert count(cli, before, "SELECT count(*) FROM orders")[0] == 1000
    assert count(cli, ["--xid", str(xid["delete"])], "SELECT count(*) FROM orders")[0] == 900
    n, first = count(cli, ["--before-xid", str(xid["update"])],
                     "SELECT count(*) FROM orders WHERE note = 'oops'", "--keep", "10m")
    assert n == 0 and not first["reused"]
    n, second = count(cli, ["--before-xid", str(xid["update"])],
                      "SELECT count(*) FROM orders WHERE note <> 'oops'", "--keep", "10m")
    assert n == 900 and second["reused"] and second["instance"] == first["instance"]
    # Extended only when that moves the expiry by a tenth of --keep or more (each write
    # waits for a txg): the second question, asked at once, leaves it where the first put it.
    def expiry() -> datetime:
        [listed] = cli.json("clones")
        return datetime.fromisoformat(listed["expires_at"])

    kept = expiry()
    assert datetime.fromisoformat(second["kept_until"]) == kept
    _, third = count(cli, ["--before-xid", str(xid["update"])], "SELECT 1", "--keep", "1h")
    assert third["reused"]
    assert datetime.fromisoformat(third["kept_until"]) - kept > timedelta(minutes=45)
    assert abs((expiry() - datetime.fromisoformat(third["kept_until"])).total_seconds()) < 1
    cli("destroy", first["instance"])
    # Without --db, the database the transaction changed (shop2 has an orders table too),
    # a kept instance's as well; --db asks another.
    shop2 = ["--before-xid", str(xid["shop2"])]
    n, made = count(cli, shop2, "SELECT count(*) FROM orders", "--keep", "10m")
    assert (n, made["database"]) == (10, "shop2")
    n, kept_one = count(cli, shop2, "SELECT count(*) FROM orders", "--keep", "10m")
    assert (n, kept_one["database"], kept_one["reused"]) == (10, "shop2", True)
    assert count(cli, shop2, "SELECT count(*) FROM orders", "--db", "postgres", "--keep",
                 "10m")[0] == 880
    cli("destroy", made["instance"])
    cloned = cli.json("clone", *shop2)
    assert cloned["database"] == "shop2" and "dbname=shop2" in cloned["dsn"]
    cli("destroy", cloned["name"])
    assert count(cli, ["--before-xid", str(xid["truncate"])], "SELECT count(*) FROM items")[0] \
        == 900
    assert count(cli, ["--restore-point", "before-truncate"],
                 "SELECT count(*) FROM items")[0] == 900
    csv = cli("query", "--before-xid", str(xid["drop"]), "--csv",
              "SELECT id, length(payload) AS n FROM gone ORDER BY id LIMIT 2").stdout
    assert csv.splitlines() == ["id,n", "1,3001", "2,3001"]

    # The rows back: a dump of the dropped table restores elsewhere with every row.
    dump = tmp_path / "gone.sql"
    cli("dump", "--before-xid", str(xid["drop"]), "--table", "gone", "-f", str(dump))
    assert dump.stat().st_mode & 0o777 == 0o600
    psql = [str(info.pg_bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q",
            db(info, "restored")]
    subprocess.run(["runuser", "-u", "postgres", "--", *psql], input=dump.read_text(),
                   text=True, check=True, capture_output=True)
    assert one(db(info, "restored"), "SELECT count(*) FROM gone") == 50
    assert one(db(info, "restored"), "SELECT sum(length(payload)) FROM gone") == \
        sum(3000 + len(str(g)) for g in range(1, 51))
    custom = subprocess.run(
        [*cli_argv(cli), "dump", "--before-xid", str(xid["delete"]), "--table", "orders",
         "--format", "custom"], capture_output=True, check=True)
    assert custom.stdout.startswith(b"PGDMP")
    shop2_dump = tmp_path / "shop2.sql"
    dumped = json.loads(cli("dump", *shop2, "--table", "orders", "-f", str(shop2_dump),
                            "--json").stdout)
    assert dumped["database"] == "shop2"
    assert "COPY public.orders (id) FROM stdin" in shop2_dump.read_text()
    assert "order 1" not in shop2_dump.read_text()  # postgres' orders has a note column
    # Nothing was written to the primary, and nothing is left behind.
    assert one(primary, "SELECT count(*) FROM orders") == 880
    assert cli.json("clones") == []

    # Bad input: one line each.
    assert "no table public.nosuch" in failing(cli, "wal", "find", "--table", "nosuch").stderr
    failing(cli, "wal", "find", "--until", "2001-01-01T00:00:00+00:00")
    assert failing(cli, "wal", "find", "--table", "items", "--kind", "drop").returncode == 4
    assert "rolled back" in failing(cli, "query", "--before-xid", str(rolled_back),
                                    "SELECT 1").stderr
    assert "not in the archived WAL" in failing(cli, "query", "--before-xid", "99999999",
                                                "SELECT 1").stderr
    writing = failing(cli, "query", *before, "DELETE FROM orders")
    assert "read-only" in writing.stderr and writing.returncode == 2
    assert "does not exist" in failing(cli, "query", *before, "SELECT nope").stderr
    assert "no table public.gone" in failing(cli, "dump", "--xid", str(xid["drop"]),
                                             "--table", "gone").stderr
    assert cli.json("clones") == []
    assert {set_a, set_b} <= {s["id"] for s in cli.json("list")["sets"]}


def cli_argv(cli: Cli) -> list[str]:
    return [sys.executable, "-m", "zsnap", "--config", str(cli.config)]


def test_clones_that_expire(lab: LabInfo) -> None:
    cli = Cli(lab.config_file)
    cli("snapshot")
    cli("clone", "--immediate", "--name", "shortlived", "--ttl", "1s")
    cli("clone", "--immediate", "--name", "forever")
    listed = {c["name"]: c for c in cli.json("clones")}
    assert listed["shortlived"]["expires_at"] is not None
    assert listed["forever"]["expires_at"] is None
    time.sleep(1.5)
    assert cli.json("destroy", "--expired", "--dry-run")["destroyed"] == ["shortlived"]
    assert {c["name"] for c in cli.json("clones")} == {"shortlived", "forever"}
    assert cli.json("destroy", "--expired")["destroyed"] == ["shortlived"]
    assert [c["name"] for c in cli.json("clones")] == ["forever"]
    cli("destroy", "forever")
    # [clones] ttl: the default expiry of a clone made without --ttl.
    with_ttl = Cli(with_setting(lab.config_file, lab.root / "ttl.toml", "clones", 'ttl = "1h"'))
    with_ttl("clone", "--immediate", "--name", "defaulted")
    [made] = with_ttl.json("clones")
    expires = datetime.fromisoformat(made["expires_at"])
    assert (expires - datetime.fromisoformat(made["created"])).total_seconds() == 3600
    with_ttl("destroy", "defaulted")


def test_damaged_segments_are_named_and_never_cached(lab: LabInfo, tmp_path: Path) -> None:
    """A copy of the archive with one segment cut short and one `.gz` that is not gzip: both
    are named as unreadable, the transactions in the other segments are listed, and once the
    segment is whole again it is read (the cache never outlives what it described)."""
    info = lab
    primary = info.conninfo("primary")
    run(primary, "CREATE TABLE dmg (id int)", "INSERT INTO dmg SELECT generate_series(1, 30)")
    replicated(info)
    Cli(info.config_file)("snapshot")
    first = run(primary, "DELETE FROM dmg WHERE id <= 10")
    archive_all(primary, info.archive)
    second = run(primary, "DELETE FROM dmg WHERE id <= 20")
    archive_all(primary, info.archive)
    third = run(primary, "DELETE FROM dmg")
    archive_all(primary, info.archive)
    copy, config = archive_copy(info, "archive-copy", tmp_path / "state")
    cli = Cli(config)
    whole = by_xid(find(cli, "--table", "dmg"))
    assert {first, second, third} <= whole.keys()
    cut = whole[second]["commit_lsn"]
    name = one(primary, f"SELECT pg_walfile_name('{cut}'::pg_lsn)")
    gz_name = one(primary, f"SELECT pg_walfile_name('{whole[third]['commit_lsn']}'::pg_lsn)")
    assert name != gz_name
    saved = (copy / name).read_bytes()
    (copy / name).write_bytes(saved[:100000])
    hour_ago = time.time() - 3600  # not a copy still being written
    os.utime(copy / name, (hour_ago, hour_ago))
    (copy / gz_name).unlink()
    (copy / f"{gz_name}.gz").write_text("not gzip at all")
    damaged = find(cli, "--table", "dmg")
    problems = {u["segment"]: u["problem"] for u in damaged["scanned"]["unreadable"]}
    assert "truncated" in problems[name] and gz_name in problems
    listed = by_xid(damaged)
    assert first in listed and second not in listed and third not in listed
    (copy / name).write_bytes(saved)
    assert second in by_xid(find(cli, "--table", "dmg"))
    # The same archive known only by its restore_command: read up to the first segment it
    # does not return, the same transactions found.
    (copy / f"{gz_name}.gz").unlink()
    shutil.copy(info.archive / gz_name, copy / gz_name)
    for path in (copy / name, copy / gz_name):
        shutil.chown(path, "postgres", "postgres")
    only = tmp_path / "restore-command.toml"
    only.write_text(config.read_text().replace(f'path = "{copy}"\n', "").replace(
        f'dir = "{tmp_path / "state"}"', f'dir = "{tmp_path / "state2"}"'))
    assert "path =" not in only.read_text().split("[archive]")[1].split("[")[0]
    assert f"cp {copy}/%f %p" in only.read_text()
    by_command = find(Cli(only), "--table", "dmg")
    assert {first, second, third} <= by_xid(by_command).keys()
    assert by_command["scanned"]["unreadable"] == []


def test_transactions_across_a_timeline_switch(lab: LabInfo) -> None:
    """Found on each side of a failover with its own timeline; a query before the one on
    timeline 2 is exact."""
    info = lab
    cli = Cli(info.config_file)
    primary = info.conninfo("primary")
    run(primary, "CREATE TABLE tl (id int)", "INSERT INTO tl SELECT generate_series(1, 40)")
    replicated(info)
    cli("snapshot")
    on_1 = run(primary, "DELETE FROM tl WHERE id <= 10")
    new_primary = fail_over(info)
    on_2 = run(new_primary, "DELETE FROM tl WHERE id <= 25")
    archive_all(new_primary, info.archive)
    found = by_xid(find(cli, "--table", "tl"))
    assert (found[on_1]["timeline"], found[on_2]["timeline"]) == (1, 2)
    assert found[on_1]["tables"]["public.tl"]["deleted"] == 10
    assert found[on_2]["tables"]["public.tl"]["deleted"] == 15
    assert count(cli, ["--before-xid", str(on_2)], "SELECT count(*) FROM tl")[0] == 30
