"""`zsnap prune`: destroy the snapshot sets the retention policy does not keep, each set as one
unit (every member), and, when configured, the archived WAL no remaining set needs.

Guards, checked again right before anything is destroyed: only snapshots named `zsnap_<id>`
whose `zsnap:set` and `zsnap:cluster` properties say they belong to this set of this cluster;
never one with a hold or a clone (prune releases no hold, whoever placed it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from zsnap.catalog import PREFIX, SNAP_PREFIX, SnapshotSet, catalog_of
from zsnap.config import Config
from zsnap.errors import ZfsError
from zsnap.lock import locked
from zsnap.retention import Candidate, Decision, Policy, decide
from zsnap.wal.archives import configured
from zsnap.wal.prune import WalPrune, WalPruneResult
from zsnap.zfs import UNSET, Zfs

log = logging.getLogger(__name__)

PRUNE_LOCK = "prune"


def policy_of(config: Config) -> Policy:
    r = config.retention
    return Policy(
        hourly=r.hourly, daily=r.daily, weekly=r.weekly, monthly=r.monthly,
        keep_within=r.keep_within, min_sets=r.min_sets,
    )


@dataclass
class Verdict:
    set: SnapshotSet
    decision: Decision
    destroyed: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.set.id,
            "created": self.set.created.isoformat(),
            "complete": self.set.complete,
            "keep": self.decision.keep,
            "reasons": self.decision.reasons,
            "destroyed": self.destroyed,
            "error": self.error,
        }


@dataclass
class PruneResult:
    dry_run: bool
    policy: str
    verdicts: list[Verdict]
    wal: WalPruneResult | None = None

    @property
    def pruned(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.decision.keep and v.error is None]

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.error is not None]


def origins(zfs: Zfs) -> dict[str, str]:
    """Every clone on the host and the snapshot it was made from."""
    out = zfs.run("list", "-H", "-t", "filesystem,volume", "-o", "name,origin", mutates=False)
    rows = (line.split("\t") for line in out.splitlines() if line)
    return {row[0]: row[1] for row in rows if len(row) == 2 and row[1] != UNSET}


def protection(zfs: Zfs, sets: list[SnapshotSet]) -> dict[str, str]:
    """Why each set must stay, by set id: holds (userrefs) and clones on any member."""
    present = {name: s.id for s in sets for name in s.snapshots if name not in s.missing}
    reasons: dict[str, list[str]] = {}
    values = zfs.get(list(present), ["userrefs"]) if present else {}
    for name, props in values.items():
        refs = props.get("userrefs", UNSET)
        if refs not in (UNSET, "0"):
            reasons.setdefault(present[name], []).append(f"{refs} hold(s) on {name}")
    # zfs-fuse has no `clones` property; every clone names its origin.
    for dataset, origin in origins(zfs).items():
        if origin in present:
            reasons.setdefault(present[origin], []).append(f"clone {dataset}")
    return {set_id: "; ".join(r) for set_id, r in reasons.items()}


@dataclass
class Prune:
    config: Config
    zfs: Zfs
    dry_run: bool = False
    now: datetime | None = None

    def plan(self) -> list[Verdict]:
        sets = catalog_of(self.config, self.zfs).sets()
        protected = protection(self.zfs, sets)
        candidates = [
            Candidate(s.id, s.created, s.complete, protected.get(s.id, "")) for s in sets
        ]
        decisions = decide(candidates, policy_of(self.config), self.now or datetime.now(UTC))
        return [Verdict(s, d) for s, d in zip(sets, decisions, strict=True)]

    def run(self) -> PruneResult:
        cfg = self.config
        with locked(cfg.state.dir, PRUNE_LOCK):
            verdicts = self.plan()
            for v in verdicts:
                if not v.decision.keep:
                    self._destroy(v)
            result = PruneResult(self.dry_run, policy_of(cfg).describe(), verdicts)
            if cfg.retention.prune_wal and configured(cfg, self.zfs.runner) is not None:
                catalog = catalog_of(cfg, self.zfs)
                result.wal = WalPrune(cfg, catalog, self.dry_run).run()
        return result

    def _destroy(self, verdict: Verdict) -> None:
        """All members, the control-file dataset's last: a set cut short by an error stays
        recognisable, and is finished as an incomplete set by the next prune."""
        s = verdict.set
        names = [n for n in s.snapshots if n not in s.missing]
        problem = self._guard(s, names)
        if problem:
            verdict.error = problem
            log.warning("set %s kept: %s", s.id, problem)
            return
        for name in reversed(names):
            try:
                self.zfs.destroy(name)
            except ZfsError as e:
                verdict.error = f"{name}: {e}"
                log.error("pruning set %s stopped: %s", s.id, verdict.error)
                return
            verdict.destroyed.append(name)
        log.info("pruned set %s (%s)", s.id, "; ".join(verdict.decision.reasons))

    def _guard(self, s: SnapshotSet, names: list[str]) -> str | None:
        if not names:
            return None
        keys = [PREFIX + "set", PREFIX + "cluster", "userrefs"]
        values = self.zfs.get(names, keys)
        for name in names:
            props = values.get(name, {})
            if name.split("@", 1)[1] != f"{SNAP_PREFIX}{s.id}":
                return f"{name} is not a zsnap snapshot of set {s.id}"
            if props.get(PREFIX + "set") != s.id or props.get(PREFIX + "cluster") != s.cluster:
                return f"{name} does not carry zsnap:set={s.id} of cluster {s.cluster}"
            if props.get("userrefs", "0") not in ("0", UNSET):
                return f"{name} gained a hold"
        return None
