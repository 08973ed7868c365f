"""An instance of the past that answers and goes: a flashback instance at a target, made for
one question (`zsnap query`, `zsnap dump`, naming the tables of a set) and destroyed after it,
or kept for `--keep` so that the next question at the same target is answered at once. Every
such instance carries an expiry from its start, so one left behind by a zsnap that was killed
is removed by `zsnap destroy --expired` (and the daemon).

It is promoted at the target, not left paused there, and its transactions are read-only
(default_transaction_read_only): a paused instance still holds the locks of the transactions in
flight at the target, and the one a `--before-xid` target stops before is, when it is the
mistake, the TRUNCATE or DROP TABLE whose table the question is about. Promotion ends them
(they never committed there), so every table reads as it was."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from zsnap.clone import registry
from zsnap.clone.naming import ClonePaths
from zsnap.clone.request import CloneRequest, CloneResult, Wait
from zsnap.clone.target import Target
from zsnap.config import Config
from zsnap.errors import ZsnapError
from zsnap.pg.connection import conninfo_for, instance_conninfo
from zsnap.zfs import Zfs

log = logging.getLogger(__name__)

# How long an instance made for one question may outlive a zsnap killed while it asked.
THROWAWAY_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class PastInstance:
    name: str
    port: int
    socket_dir: Path
    set_id: str
    target: Target
    standby_conninfo: str
    reused: bool  # a kept instance made by an earlier question
    expires_at: datetime | None = None
    made: CloneResult | None = None  # how it was made (None: reused)
    # The database an xid target's transaction changed, by its name there: what `query` and
    # `dump` ask without --db. None: the one the standby's conninfo names.
    database: str | None = None

    def conninfo(self, dbname: str | None = None) -> str:
        """Full (zsnap's own connections); never printed."""
        return instance_conninfo(self.standby_conninfo, str(self.socket_dir), self.port, dbname)

    def dsn(self, dbname: str | None = None) -> str:
        """What a person may see and psql needs: no password."""
        return instance_conninfo(self.standby_conninfo, str(self.socket_dir), self.port, dbname,
                                 public=True)


def kept_name(cluster: str, target: Target, set_id: str | None) -> str:
    """One name per target (and forced set), so that the next question finds the instance."""
    digest = hashlib.sha1(f"{cluster}|{target}|{set_id or ''}".encode()).hexdigest()[:12]
    return f"asof-{digest}"


# Every statement of an instance of the past is read-only unless it asks otherwise.
READ_ONLY = {"default_transaction_read_only": "on"}


def _answers(clone: registry.Clone, standby_conninfo: str) -> tuple[bool, str | None]:
    """Whether a kept instance is up and still read-only, and (in the same connection) the
    name of its xid target's database there."""
    paths = ClonePaths(clone.name, clone.dir.parent)
    conninfo = instance_conninfo(standby_conninfo, str(paths.socket_dir), clone.port)
    try:
        with psycopg.connect(conninfo_for(conninfo, connect_timeout=2), autocommit=True) as c:
            row = c.execute("SELECT current_setting('default_transaction_read_only'), "
                            "(SELECT datname FROM pg_database WHERE oid = %s)",
                            (clone.database_oid,)).fetchone()
    except psycopg.Error:
        return False, None
    if row is None or row[0] != "on":
        return False, None
    return True, row[1]


@contextlib.contextmanager
def past_instance(
    config: Config, zfs: Zfs, request: CloneRequest, *, keep: timedelta | None = None,
    purpose: str = "asof", now: datetime | None = None,
) -> Iterator[PastInstance]:
    """A read-only instance at `request.target`, for the `with` block."""
    now = now or datetime.now(UTC)
    cluster = config.snapshot.cluster
    instance: PastInstance | None = None
    if keep is not None:
        name = kept_name(cluster, request.target, request.set_id)
        found = next((c for c in registry.read(zfs, cluster, sizes=False) if c.name == name),
                     None)
        answers, database = (_answers(found, config.standby.conninfo)
                             if found is not None and not registry.expired(found, now)
                             else (False, None))
        if found is not None and answers:
            expires = now + keep
            # Each question extends the instance's life; a property written waits for a ZFS
            # transaction group, so only a move by a tenth of --keep or more is written.
            if found.expires_at is None or expires - found.expires_at >= keep / 10:
                zfs.set(found.datasets, {registry.EXPIRES: expires.isoformat(timespec="seconds")})
            else:
                expires = found.expires_at
            instance = PastInstance(name, found.port, ClonePaths(name, found.dir.parent)
                                    .socket_dir, found.set, request.target,
                                    config.standby.conninfo, True, expires,
                                    database=database)
        elif found is not None:
            from zsnap.clone.destroy import DestroyClone

            DestroyClone(config, zfs).run(name)
    else:
        name = f"{purpose}-{now.strftime('%Y%m%dT%H%M%S')}-{os.getpid() % 100000}"
    if instance is None:
        from zsnap.changes.find import target_commit
        from zsnap.clone.create import CreateClone

        # Looked up only now: a kept instance answers without reading the WAL again (nor
        # loading what makes an instance).
        commit = request.commit or target_commit(config, zfs, request.target)
        made = CreateClone(config, zfs).run(replace(
            request, name=name, ttl=keep or THROWAWAY_TTL, pause=False,
            durability=Wait.SKIP, settings={**request.settings, **READ_ONLY}, commit=commit))
        instance = PastInstance(
            made.name, made.port, ClonePaths(made.name, config.clones.mount_root).socket_dir,
            made.set_id, request.target, config.standby.conninfo, False,
            now + (keep or THROWAWAY_TTL), made, made.database)
    try:
        yield instance
    finally:
        if keep is None:
            _remove(config, zfs, instance.name)


def _remove(config: Config, zfs: Zfs, name: str) -> None:
    """Never raised over the answer (or the error) the instance gave: logged, with what to do."""
    from zsnap.clone.destroy import DestroyClone  # not loaded by a kept instance's answer

    try:
        DestroyClone(config, zfs).run(name)
    except ZsnapError as e:
        log.error("could not remove instance %s (%s): zsnap destroy %s (it also expires)",
                  name, e, name)
