"""`zsnap replicate`: complete sets to a pool on another host (or this one) with `zfs send -p |
zfs receive -u`, each set whole and oldest first, every member incremental from the newest
snapshot both sides hold of its dataset.

Member DATASET arrives as TARGET/DATASET, unmounted, its user properties (the set's metadata)
with it; a receiving host's catalog (`[catalog] root = TARGET`) reads the sets from there. A set
counts as replicated once every member arrived, so a run that dies half-way leaves a set the
receiving side never chooses and the next run finishes. Holds keep each dataset's newest
replicated snapshot on both sides, the base of the next incremental send, from being pruned
(`zsnap prune` keeps a held set); the previous one is released once the next has arrived."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zsnap.catalog import (
    SNAP_PREFIX,
    Catalog,
    Scope,
    SnapshotSet,
    catalog_of,
    snapshot_name,
    under,
)
from zsnap.config import Config
from zsnap.errors import (
    DatasetExists,
    DatasetNotFound,
    NoSuchHold,
    ReplicationFailed,
    UsageError,
    ZfsError,
)
from zsnap.files import write_durably
from zsnap.lock import locked
from zsnap.runner import Runner
from zsnap.zfs import UNSET, Zfs, pool_of, zfs_error

log = logging.getLogger(__name__)

REPLICATE_LOCK = "replicate"
# The send under way: its pid and snapshots, for the next run to clean up after a killed one.
SENDING = "replicate-send.json"
# On the receiving side: the newest set that arrived, the base of the next send.
REPLICA_HOLD = "zsnap-replica"


def source_hold(target: str) -> str:
    """On the standby's host: the newest set sent to `target`."""
    return f"zsnap-replicate:{target}"


def target_overlap(target: str, datasets: Iterable[str]) -> str | None:
    """Why a target on this host cannot receive sets of `datasets` (the standby's): it is one
    of them, holds one (its pool) or lies inside one. None when it can."""
    for dataset in sorted(datasets):
        if under(dataset, target) or under(target, dataset):
            return (f"[replicate] target {target} overlaps the standby's dataset {dataset}: "
                    "copies would be received into or over the datasets they are copies of; "
                    "choose a dataset of its own (e.g. POOL/zsnap-replica)")
    return None


def standby_datasets(config: Config, zfs: Zfs) -> set[str]:
    """The datasets the cluster's sets are taken of, as their metadata names them (copies
    received on this host name the same ones), whatever [replicate] target excludes."""
    return {d for s in Catalog(zfs, config.snapshot.cluster).sets() for d in s.datasets}


def target_zfs(config: Config, dry_run: bool = False) -> Zfs:
    return Zfs(Runner(dry_run=dry_run), prefix=config.replicate.command)


def target_catalog(config: Config, zfs: Zfs) -> Catalog:
    """The sets on the target as the receiving host's own catalog reads them."""
    return Catalog(zfs, config.snapshot.cluster, Scope(root=config.replicate.target))


@dataclass
class Member:
    snapshot: str  # on the source
    target: str  # the snapshot it becomes on the target
    base: str | None  # the snapshot an incremental send starts from; None: a full send
    # Where an interrupted receive left off (`zfs send -t`), when the member resumes it.
    token: str | None = None
    sent: bool = False  # False: it was on the target already
    bytes: int = 0
    seconds: float = 0.0

    @property
    def resume(self) -> bool:
        return self.token is not None

    def to_json(self) -> dict[str, object]:
        return {"snapshot": self.snapshot, "target": self.target, "base": self.base,
                "resumed": self.resume, "sent": self.sent, "bytes": self.bytes,
                "seconds": round(self.seconds, 3)}


@dataclass
class SetTransfer:
    set: SnapshotSet
    members: list[Member]

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.members)

    def to_json(self) -> dict[str, object]:
        return {"id": self.set.id, "bytes": self.bytes,
                "members": [m.to_json() for m in self.members]}


@dataclass
class ReplicateResult:
    target: str
    dry_run: bool
    newest_before: str | None  # the newest complete set on the target before this run
    transfers: list[SetTransfer] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # sets that arrived whole in this run

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "dry_run": self.dry_run,
                "newest_before": self.newest_before, "replicated": self.done,
                "bytes": sum(t.bytes for t in self.transfers),
                "sets": [t.to_json() for t in self.transfers]}


class Progress:
    """What a person watching sees: each member as it starts, and the bytes as they pass."""

    def member(self, transfer: SetTransfer, member: Member) -> None:
        pass

    def bytes(self, passed: int) -> None:
        pass

    def done(self, member: Member) -> None:
        pass


@dataclass
class Replicate:
    config: Config
    zfs: Zfs
    dry_run: bool = False
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        r = self.config.replicate
        if self.config.receiving:
            raise UsageError("this host receives sets ([catalog] root): it replicates none")
        if not r.target:
            raise UsageError("nowhere to replicate to: set [replicate] target = \"POOL/PREFIX\"")
        self.target = r.target
        self.remote = target_zfs(self.config, self.dry_run)

    def run(self) -> ReplicateResult:
        with locked(self.config.state.dir, REPLICATE_LOCK):
            return self._run()

    def _run(self) -> ReplicateResult:
        self._release_leaked_holds()
        if not self.config.replicate.command:
            overlap = target_overlap(self.target, standby_datasets(self.config, self.zfs))
            if overlap is not None:
                raise UsageError(overlap)
        if not self.remote.exists(pool_of(self.target)):
            where = "on this host" if not self.remote.prefix else \
                f"through {' '.join(self.remote.prefix)}"
            raise ReplicationFailed(f"no pool {pool_of(self.target)} {where}: create it, or fix "
                                    "[replicate] target")
        sets = [s for s in catalog_of(self.config, self.zfs).sets() if s.complete]
        try:
            arrived = [s for s in target_catalog(self.config, self.remote).sets() if s.complete]
        except ZfsError as e:
            raise ReplicationFailed(f"cannot read the target {self.target}: {e}") from None
        newest = arrived[-1].id if arrived else None
        result = ReplicateResult(self.target, self.dry_run, newest)
        # Sets the target pruned stay pruned: only what is newer than its newest is sent.
        todo = [s for s in sets if newest is None or s.id > newest]
        if not todo:
            return result
        snapshots = self._target_snapshots()
        tokens = self._resume_tokens()
        source_names = set(self._source_snapshots({d for s in todo for d in s.datasets}))
        self._ensure_root()
        for s in todo:
            transfer = self._plan(s, snapshots, tokens, source_names)
            result.transfers.append(transfer)
            # Held before it is sent: a prune meanwhile must not take a member away.
            _hold(self.zfs, source_hold(self.target), s.snapshots)
            # The control-file member last: the receiving side's quick listing reads a set
            # from that member alone (Catalog.heads), which then never shows a set half sent.
            for member in reversed(transfer.members):
                if not member.sent:
                    continue
                self.progress.member(transfer, member)
                self._send(member)
                self.progress.done(member)
                dataset = member.target.split("@")[0]
                snapshots.setdefault(dataset, []).append(member.target)
                tokens.pop(dataset, None)
            self._hold(transfer)
            result.done.append(s.id)
            log.info("set %s replicated to %s (%d bytes)", s.id, self.target, transfer.bytes)
        return result

    # --- planning ------------------------------------------------------------------------

    def _plan(
        self, s: SnapshotSet, snapshots: dict[str, list[str]], tokens: dict[str, str],
        source_names: set[str],
    ) -> SetTransfer:
        members = []
        for dataset, snap in zip(s.datasets, s.snapshots, strict=True):
            target = f"{self.target}/{dataset}"
            name = f"{target}@{snapshot_name(s.id)}"
            present = snapshots.get(target, [])
            if name in present:
                members.append(Member(snap, name, None))
                continue
            if target in tokens:
                members.append(Member(snap, name, None, token=tokens[target], sent=True))
                continue
            base = present[-1].split("@", 1)[1] if present else None
            if base is not None:
                # The receiving side takes an incremental stream only from its newest snapshot.
                if not base.startswith(SNAP_PREFIX) or base >= snapshot_name(s.id):
                    raise ReplicationFailed(
                        f"{target} ends at @{base}, not an older zsnap set: it is not a copy "
                        f"of {dataset} that zsnap can add set {s.id} to")
                if f"{dataset}@{base}" not in source_names:
                    self._moved_aside(dataset, base, present, source_names)
                    raise ReplicationFailed(
                        f"{dataset}@{base}, the newest snapshot on the target, is no longer on "
                        f"this host: set {s.id} cannot be sent incrementally (was its hold "
                        f"{source_hold(self.target)} released by hand?)")
                base = f"{dataset}@{base}"
            members.append(Member(snap, name, base, sent=True))
        return SetTransfer(s, members)

    def _moved_aside(self, dataset: str, base: str, present: list[str],
                     source_names: set[str]) -> None:
        """After `zsnap reinit --set OLDER`, the newer sets (the target's newest among them)
        live on the damaged dataset moved aside, and the standby goes on from OLDER: say so,
        and what to do (zsnap never rolls a target back by itself)."""
        out = self.zfs.run("list", "-H", "-t", "snapshot", "-o", "name", mutates=False,
                           timeout=300)
        aside = next((n.split("@")[0] for n in out.split()
                      if n.startswith(f"{dataset}_damaged_") and n.endswith(f"@{base}")), None)
        if aside is None:
            return
        common = [n.split("@", 1)[1] for n in present
                  if f"{dataset}@{n.split('@', 1)[1]}" in source_names]
        since = f"set {common[-1].removeprefix(SNAP_PREFIX)}" if common else "an older set"
        raise ReplicationFailed(
            f"{dataset}@{base}, the newest snapshot on the target, is on {aside} since "
            f"`zsnap reinit` rebuilt the standby from {since}: new sets can go to this target "
            "only once it is rolled back to that set (docs/replication.md, \"After a "
            "reinit\"), or to a new [replicate] target")

    def _target_snapshots(self) -> dict[str, list[str]]:
        """Every snapshot under the target, by dataset, oldest first."""
        try:
            out = self.remote.run("list", "-H", "-t", "snapshot", "-o", "name", "-s",
                                  "createtxg", "-r", self.target, mutates=False, timeout=300)
        except DatasetNotFound:
            return {}
        found: dict[str, list[str]] = {}
        for name in out.split():
            found.setdefault(name.split("@", 1)[0], []).append(name)
        return found

    def _resume_tokens(self) -> dict[str, str]:
        """Datasets with an interrupted receive to resume, and the token to resume it from."""
        if not self.remote.capabilities.resumable_receive:
            return {}
        try:
            out = self.remote.run("get", "-H", "-r", "-o", "name,value", "receive_resume_token",
                                  self.target, mutates=False)
        except DatasetNotFound:
            return {}
        rows = (line.split("\t") for line in out.splitlines() if line)
        return {r[0]: r[1] for r in rows if len(r) == 2 and r[1] not in (UNSET, "")}

    def _source_snapshots(self, datasets: set[str]) -> list[str]:
        if not datasets:
            return []
        out = self.zfs.run("list", "-H", "-t", "snapshot", "-o", "name", "-d", "1",
                           *sorted(datasets), mutates=False, timeout=300)
        return out.split()

    # --- changing ------------------------------------------------------------------------

    def _ensure_root(self) -> None:
        """The target dataset, never mounted: nothing received below it is mounted either."""
        self._ensure(self.target, {"mountpoint": "none"})

    def _send(self, member: Member) -> None:
        dataset = member.target.split("@")[0]
        parent = dataset.rsplit("/", 1)[0]
        caps = self.remote.capabilities
        if member.token is not None:
            send = self.zfs.argv("send", "-t", member.token)
        else:
            if member.base is None and parent != self.target:
                self._ensure(parent, {})
            send = self.zfs.argv("send", "-p", *(["-i", member.base] if member.base else []),
                                 member.snapshot)
        receive = self.remote.argv("receive", "-u", *(["-s"] if caps.resumable_receive else []),
                                   dataset)
        held = [member.snapshot, *([member.base] if member.base else [])]
        started = time.monotonic()
        try:
            member.bytes = self.zfs.runner.pipe(
                send, receive, timeout=self.config.replicate.send_timeout_s,
                on_bytes=self.progress.bytes, error=zfs_error,
                on_start=lambda pid: self._sending(pid, held))
        except ZfsError as e:
            raise ReplicationFailed(f"sending {member.snapshot} to {member.target}: {e}") \
                from None
        self._sending_path.unlink(missing_ok=True)
        member.seconds = time.monotonic() - started
        # `send -p` carries the standby's mountpoint; a copy must never mount over anything.
        if member.base is None:
            self.remote.set([dataset], {"mountpoint": "none"})

    # `zfs send` holds what it sends with a temporary hold `.send-<pid>-<n>`, which OpenZFS
    # releases when the sender exits however it ends; zfs-fuse keeps it when the sender is
    # killed, and a held set is never pruned. The pid is written down before the send, so
    # that the next run can let go of a killed sender's holds.

    @property
    def _sending_path(self) -> Path:
        return self.config.state.dir / SENDING

    def _sending(self, pid: int, snapshots: list[str]) -> None:
        if not self.dry_run:
            self.config.state.dir.mkdir(parents=True, exist_ok=True)
            write_durably(self._sending_path, json.dumps({"pid": pid, "snapshots": snapshots}))

    def _release_leaked_holds(self) -> None:
        try:
            record = json.loads(self._sending_path.read_text())
            pid, snapshots = int(record["pid"]), [str(s) for s in record["snapshots"]]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if Path(f"/proc/{pid}").exists():
            return  # still sending (its zsnap is gone, and the sender goes with it)
        for name in snapshots:
            for seq in (0, 1):  # zfs-fuse counts from 0, OpenZFS from 1
                with contextlib.suppress(NoSuchHold, DatasetNotFound):
                    self.zfs.release(f".send-{pid}-{seq}", [name])
        if not self.dry_run:
            self._sending_path.unlink(missing_ok=True)

    def _ensure(self, dataset: str, props: dict[str, str]) -> None:
        if not self.remote.exists(dataset):
            self.remote.create(dataset, props)

    def _hold(self, transfer: SetTransfer) -> None:
        """The set just sent becomes the base on both sides (held here since before it was
        sent); the older base is let go."""
        s = transfer.set
        _release_others(self.zfs, source_hold(self.target), s.snapshots,
                        self._source_snapshots(set(s.datasets)))
        targets = [m.target for m in transfer.members]
        _hold(self.remote, REPLICA_HOLD, targets)
        listed = self._target_snapshots()
        _release_others(self.remote, REPLICA_HOLD, targets,
                        [n for d in {t.split("@")[0] for t in targets} for n in listed.get(d, [])])


def _hold(zfs: Zfs, tag: str, names: Sequence[str]) -> None:
    """`tag` on every one of `names`, some of which may have it already (a rerun)."""
    try:
        zfs.hold(tag, names)
    except DatasetExists:
        for name in names:
            with contextlib.suppress(DatasetExists):
                zfs.hold(tag, [name])


def _release_others(zfs: Zfs, tag: str, newest: Sequence[str], every: Sequence[str]) -> None:
    """`tag` off every zsnap snapshot of the datasets of `newest` but those (a run killed
    before this leaves one more hold, which the next run releases)."""
    keep = set(newest)
    datasets = {n.split("@")[0] for n in newest}
    others = [n for n in every if n not in keep and n.split("@")[0] in datasets
             and n.split("@", 1)[1].startswith(SNAP_PREFIX)]
    if not others:
        return
    held = zfs.get(others, ["userrefs"])
    for name in others:
        if held.get(name, {}).get("userrefs", "0") not in ("0", UNSET):
            with contextlib.suppress(NoSuchHold):
                zfs.release(tag, [name])
