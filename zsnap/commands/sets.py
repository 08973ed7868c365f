"""`zsnap snapshot`, `zsnap list`, `zsnap show`: taking and reading snapshot sets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from zsnap.commands import Context, dry_run_option, json_option, pass_ctx
from zsnap.output import console, emit, escape, fmt_time, table

if TYPE_CHECKING:
    from zsnap.catalog import SnapshotSet


def set_summary(s: SnapshotSet) -> dict[str, Any]:
    data = s.model_dump(mode="json", exclude={"layout"})
    # ISO 8601 with an explicit offset (+00:00), the form datetime.fromisoformat and
    # PostgreSQL's timestamptz input both read.
    for key in ("created", "replay_timestamp", "verified_at"):
        value = getattr(s, key)
        data[key] = value.isoformat() if value is not None else None
    data["consistent_at"] = s.consistent_at.isoformat()
    data["min_replay_bytes"] = s.min_replay_bytes
    return data


SET_COLUMNS = ["set", "consistent at", "tli", "consistent lsn", "datasets", "pause ms", "state",
               "verified"]


def set_rows(sets: list[SnapshotSet]) -> list[list[object]]:
    rows: list[list[object]] = []
    for s in sets:
        state = "complete" if s.complete else f"INCOMPLETE ({len(s.missing)} missing)"
        verified = s.verify_outcome or ""
        if s.verified_at:
            verified += f" {fmt_time(s.verified_at)}"
        rows.append([
            s.id, fmt_time(s.consistent_at), s.timeline, s.consistent_lsn, len(s.datasets),
            s.pause_ms, state, verified,
        ])
    return rows


@click.command()
@json_option
@dry_run_option
@pass_ctx
def snapshot(obj: Context, as_json: bool, dry_run: bool) -> None:
    """Take one consistent snapshot set of the standby."""
    from zsnap.snapshot import TakeSnapshot

    if dry_run:
        plan = TakeSnapshot(obj.config, obj.zfs(dry_run=True)).plan()
        emit(
            {"dry_run": True, "id": plan.id, "datasets": plan.datasets, "calls": plan.calls,
             "pause_replay": plan.pause_replay, "primary_checkpoint": plan.primary_checkpoint},
            as_json,
            lambda: table(
                f"would take set {plan.id}"
                + (", after a CHECKPOINT on the primary" if plan.primary_checkpoint else "")
                + (" (replay paused meanwhile)" if plan.pause_replay else ""),
                ["zfs snapshot call", "snapshots"],
                [[i, " ".join(names)] for i, names in enumerate(plan.calls, 1)],
            ),
        )
        return
    from zsnap.jobs import Job, snapshot_summary

    cfg = obj.config
    s = Job("snapshot", TakeSnapshot(cfg, obj.zfs()).run, snapshot_summary).run(
        cfg.state.dir).value()
    emit(set_summary(s), as_json, lambda: table("snapshot set taken", SET_COLUMNS, set_rows([s])))


@click.command("list")
@click.option("--all-members", is_flag=True,
              help="Look at every member of every set (slower with many sets): say which "
                   "ones a member destroyed by hand made INCOMPLETE.")
@json_option
@pass_ctx
def list_sets(obj: Context, all_members: bool, as_json: bool) -> None:
    """List the snapshot sets, oldest first. Each set is read from its control-file member,
    where zsnap records that it proved the set consistent; `show`, `check`, `prune`, `clone`
    and `verify` look at every member of the sets they act on."""
    from zsnap.wal.window import recovery_window

    catalog = obj.catalog()
    sets = (None if all_members else catalog.heads()) or catalog.sets()
    window = recovery_window(obj.config, sets, catalog.zfs.runner)
    title = f"snapshot sets of {obj.config.snapshot.cluster}"

    def human() -> None:
        table(title, SET_COLUMNS, set_rows(sets))
        table("recovery window: a flashback can reach any time inside",
              ["from", "to", "tli", "first set", "sets", "ends with"],
              [[fmt_time(w.start), fmt_time(w.end), w.timeline, w.first_set, len(w.sets),
                w.ends] for w in window.windows])
        for note in window.notes:
            console.print(f"note: {escape(note)}", highlight=False)

    emit({"sets": [set_summary(s) for s in sets], "recovery_window": window.to_json()},
         as_json, human)


@click.command()
@click.argument("set_id")
@json_option
@pass_ctx
def show(obj: Context, set_id: str, as_json: bool) -> None:
    """Show one snapshot set in full."""
    s = obj.catalog().get(set_id)
    data = set_summary(s)
    places = s.parsed_layout.places
    data["layout"] = [
        {"role": p.role, "oid": p.oid, "path": p.path, "dataset": p.dataset, "subpath": p.subpath}
        for p in places
    ]

    def human() -> None:
        for key, value in data.items():
            if key not in ("layout", "datasets", "missing"):
                console.print(f"[bold]{key:>20}[/] {value}", highlight=False)
        table("members, in the order taken", ["dataset", "snapshot"],
              [[d, snap] for d, snap in zip(s.datasets, s.snapshots, strict=True)])
        table("layout", ["role", "oid", "path", "dataset", "subpath"],
              [[p.role, p.oid, p.path, p.dataset, p.subpath] for p in places])

    emit(data, as_json, human)
