"""zsnap as a Patroni replica method (issue 13): a real etcd, a Patroni leader and a Patroni
replica whose data directory is on ZFS. Patroni calls `zsnap reinit` through
`create_replica_methods` (as the postgres user, through sudo, as docs/reinit.md says): with no
set yet, zsnap refuses and Patroni falls back to pg_basebackup; once a set exists,
`patronictl reinit` of the damaged replica has zsnap replace its dataset, keep the damaged one
aside, and leave the start to Patroni. The replica streams again with the leader's rows."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_BIN, TEST_BASE, Cli, free_port_block
from zsnap.lab import destroy_pool, ensure_zfs
from zsnap.pg.binaries import find_bindir
from zsnap.runner import Runner

PATRONI = shutil.which("patroni")
ETCD = shutil.which("etcd")
SUDOERS = Path("/etc/sudoers.d/zsnap-patroni-test")
ZSNAP = Path(sys.executable).parent / "zsnap"


@dataclass
class Cluster:
    root: Path
    pool: str
    base_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    scope = "zsnaptest"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def replica_data(self) -> Path:
        return self.root / "mnt" / "pgdata" / "data"

    @property
    def zsnap_config(self) -> Path:
        return self.root / "zsnap.toml"

    def port(self, which: str) -> int:
        order = ("etcd", "etcd-peer", "leader", "replica", "leader-api", "replica-api")
        return self.base_port + order.index(which)

    def conninfo(self, which: str) -> str:
        return f"host={self.sock} port={self.port(which)} user=postgres dbname=postgres"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def patroni_config(self, name: str, data_dir: Path) -> dict[str, Any]:
        archive_command = f"test ! -f {self.archive}/%f && cp %p {self.archive}/%f"
        return {
            "scope": self.scope,
            "name": name,
            "restapi": {"listen": f"127.0.0.1:{self.port(name + '-api')}",
                        "connect_address": f"127.0.0.1:{self.port(name + '-api')}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self.port('etcd')}"]},
            "bootstrap": {
                "dcs": {"ttl": 20, "loop_wait": 1, "retry_timeout": 5, "postgresql": {
                    "use_pg_rewind": False,
                    "parameters": {"wal_level": "replica", "hot_standby": "on",
                                   "track_commit_timestamp": "on", "archive_mode": "on",
                                   "archive_command": archive_command,
                                   "wal_keep_size": "512MB", "max_wal_senders": 10}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
                "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                           "local replication all trust",
                           "host replication all 127.0.0.1/32 trust"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port(name)}",
                "connect_address": f"127.0.0.1:{self.port(name)}",
                "data_dir": str(data_dir),
                "bin_dir": str(find_bindir(PG_BIN)),
                "pgpass": str(self.sock / f"pgpass-{name}"),
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(self.sock)},
                # The snippet of docs/reinit.md.
                "create_replica_methods": ["zsnap", "basebackup"],
                "zsnap": {"command": f"sudo -n {ZSNAP} --config {self.zsnap_config} reinit",
                          "keep_data": True},
            },
        }

    def start(self, name: str, argv: list[str]) -> None:
        with self.log(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, cwd="/")

    def start_patroni(self, name: str, data_dir: Path) -> None:
        config = self.root / f"{name}.yml"
        config.write_text(json.dumps(self.patroni_config(name, data_dir)))  # JSON is YAML
        assert PATRONI is not None
        self.start(name, ["runuser", "-u", "postgres", "--", PATRONI, str(config)])

    def api(self, name: str, path: str) -> int:
        try:
            url = f"http://127.0.0.1:{self.port(name + '-api')}/{path}"
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def wait_role(self, name: str, role: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.api(name, role) != 200:
            assert self.procs[name].poll() is None and time.monotonic() < deadline, \
                f"{name} is not a running {role}:\n{self.log(name).read_text()[-3000:]}"
            time.sleep(0.5)

    def patronictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["patronictl", "-c", str(self.root / "replica.yml"), *args],
                              capture_output=True, text=True, timeout=300, check=True)


def sql(c: Cluster, which: str, statement: str) -> Any:
    with psycopg.connect(c.conninfo(which), autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else None


def caught_up(c: Cluster, timeout: float = 120) -> None:
    written = sql(c, "leader", "SELECT pg_current_wal_lsn()::text")[0][0]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if sql(c, "replica", f"SELECT pg_last_wal_replay_lsn() >= '{written}'")[0][0]:
                return
        except psycopg.Error:
            pass
        assert time.monotonic() < deadline, "the replica did not replay"
        time.sleep(0.2)


def rows(c: Cluster, which: str) -> Any:
    return sql(c, which, "SELECT id, payload FROM items ORDER BY id")


def datasets(c: Cluster) -> list[str]:
    out = Runner().run(["zfs", "list", "-H", "-o", "name", "-r", c.pool], mutates=False).stdout
    return out.split()


def write_zsnap_config(c: Cluster) -> None:
    low = c.base_port + 10
    c.zsnap_config.write_text(f"""[standby]
conninfo = "{c.conninfo('replica')}"
os_user = "postgres"
pg_bin = "{find_bindir(PG_BIN)}"

[archive]
restore_command = "cp {c.archive}/%f %p"
path = "{c.archive}"

[clones]
mount_root = "{c.root / 'clones'}"
port_range = [{low}, {low + 40}]

[snapshot]
cluster = "{c.pool}"

[state]
dir = "{c.root / 'state'}"
""")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if PATRONI is None or ETCD is None:
        pytest.fail("no patroni or etcd: run scripts/bootstrap.sh")
    tag = os.getpid() % 100000
    c = Cluster(TEST_BASE / f"patroni{tag}", f"pz{tag}", free_port_block())
    owner = pwd.getpwnam("postgres")
    runner = Runner()
    ensure_zfs(runner)
    try:
        c.root.mkdir(parents=True)
        os.chmod(c.root, 0o755)
        for d in (c.sock, c.archive, c.root / "leader", c.root / "state"):
            d.mkdir(mode=0o700)
            os.chown(d, owner.pw_uid, owner.pw_gid)
        image = c.root / "pool.img"
        runner.run(["truncate", "-s", "1G", str(image)])
        runner.run(["zpool", "create", "-m", "none", c.pool, str(image)], timeout=120)
        SUDOERS.write_text(f"postgres ALL=(root) NOPASSWD: {ZSNAP}\n")
        os.chmod(SUDOERS, 0o440)
        runner.run(["zfs", "create", "-o", f"mountpoint={c.replica_data.parent}",
                    f"{c.pool}/pgdata"])
        c.replica_data.mkdir(mode=0o700)
        os.chown(c.replica_data, owner.pw_uid, owner.pw_gid)
        write_zsnap_config(c)
        peer = f"http://127.0.0.1:{c.port('etcd-peer')}"
        client = f"http://127.0.0.1:{c.port('etcd')}"
        c.start("etcd", [ETCD, "--name", "zt", "--data-dir", str(c.root / "etcd"),
                         "--listen-client-urls", client, "--advertise-client-urls", client,
                         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                         "--initial-cluster", f"zt={peer}"])
        yield c
    finally:
        Cli(c.zsnap_config)("destroy", "afterpatroni", check=False)
        for name in ("replica", "leader", "etcd"):
            proc = c.procs.get(name)
            if proc is None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)  # Patroni stops its PostgreSQL
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for data in (c.replica_data, c.root / "leader" / "data"):
            if (data / "postmaster.pid").exists():
                runner.run(["runuser", "-u", "postgres", "--",
                            str(find_bindir(PG_BIN) / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "stop"], check=False, cwd="/")
        SUDOERS.unlink(missing_ok=True)
        try:
            # The replica's PostgreSQL, which Patroni stops, may still hold its mount.
            destroy_pool(runner, c.pool)
        finally:
            shutil.rmtree(c.root, ignore_errors=True)


def test_patronictl_reinit_rebuilds_the_replica_from_a_set(cluster: Cluster) -> None:
    c = cluster
    c.start_patroni("leader", c.root / "leader" / "data")
    c.wait_role("leader", "primary")
    sql(c, "leader", "CREATE EXTENSION amcheck")
    sql(c, "leader", "CREATE TABLE items (id bigserial PRIMARY KEY, payload text NOT NULL)")
    sql(c, "leader", "INSERT INTO items (payload) SELECT 'first ' || g "
                     "FROM generate_series(1, 1000) g")

    # No set yet: zsnap says so, and Patroni builds the replica with pg_basebackup.
    c.start_patroni("replica", c.replica_data)
    c.wait_role("replica", "replica")
    log = c.log("replica").read_text()
    assert "Error creating replica using method zsnap" in log
    assert "replica has been created using basebackup" in log
    caught_up(c)

    cli = Cli(c.zsnap_config)
    taken = cli.json("snapshot")
    # Refusals, in one line, before anything is touched: by hand while Patroni runs; a data
    # directory other than the set's; a role other than replica.
    for args, message in ((("--dry-run",), "a Patroni runs on this host"),
                          (("--datadir=/srv/other", "--dry-run"), "is not the one of set"),
                          ((f"--datadir={c.replica_data}", "--role=master"), "replicas only")):
        proc = cli("reinit", *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (c.root / "state" / "reinit.json").exists()
    sql(c, "leader", "INSERT INTO items (payload) VALUES ('after the set')")
    caught_up(c)
    relation = sql(c, "replica", "SELECT pg_relation_filepath('items')")[0][0]
    (c.replica_data / relation).unlink()  # the damage
    sql(c, "leader", "INSERT INTO items (payload) VALUES ('while it was broken')")

    c.patronictl("reinit", c.scope, "replica", "--force", "--wait")
    c.wait_role("replica", "replica")
    assert "replica has been created using zsnap" in c.log("replica").read_text()
    caught_up(c)
    assert rows(c, "replica") == rows(c, "leader")
    sql(c, "replica", "SELECT bt_index_check('items_pkey', true)")
    aside = [d for d in datasets(c) if d.startswith(f"{c.pool}/pgdata_damaged_")]
    assert len(aside) == 1  # the damaged data is kept until the user discards it
    assert not Path(c.root / "state" / "reinit.json").exists()

    # The set used and a set taken afterwards are listed, complete, and the new one clones.
    after = cli.json("snapshot")
    listed = {s["id"]: s["complete"] for s in cli.json("list")["sets"]}
    assert listed[taken["id"]] and listed[after["id"]]
    clone = cli.json("clone", "--set", after["id"], "--name", "afterpatroni")
    with psycopg.connect(clone["dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1002,)
    cli("destroy", "afterpatroni")
