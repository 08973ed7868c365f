"""`zsnap reinit`: rebuild the standby from a snapshot set."""

from __future__ import annotations

from typing import Any

import click

from zsnap.commands import (
    Context,
    dry_run_option,
    json_option,
    pass_ctx,
    seconds_above_zero,
)
from zsnap.jobs import Job
from zsnap.output import console, emit


@click.command()
@click.option("--set", "set_id", default=None, help="The set [default: the newest complete].")
@click.option("--discard", is_flag=True,
              help="Destroy the damaged datasets afterwards, with the newer sets they hold.")
@click.option("--force", is_flag=True, help="Even where a Patroni manages the standby.")
@click.option("--timeout", type=float, callback=seconds_above_zero, default=3600.0,
              show_default=True, help="Seconds to wait for the standby to stream again.")
# Patroni's create_replica_methods call passes these (docs/reinit.md); with --datadir, zsnap
# only replaces the datasets and Patroni starts the server.
@click.option("--datadir", default=None, help="Set by Patroni: the data directory to rebuild.")
@click.option("--role", default="replica", hidden=True)
@click.option("--scope", default=None, hidden=True)
@click.option("--connstring", default=None, hidden=True)
@click.option("--keep_data", "keep_data", default=None, hidden=True)
@click.option("--no_leader", "no_leader", default=None, hidden=True)
@click.option("--no_master", "no_master", default=None, hidden=True)
@dry_run_option
@json_option
@pass_ctx
def reinit(obj: Context, set_id: str | None, discard: bool, force: bool, timeout: float,
           datadir: str | None, role: str, scope: str | None, connstring: str | None,
           keep_data: str | None, no_leader: str | None, no_master: str | None,
           dry_run: bool, as_json: bool) -> None:
    """Rebuild a damaged standby from a snapshot set: its datasets are replaced by the set's
    (clone, rename, promote; the damaged ones are kept aside), it starts, and streams again.
    Run again after an interruption, it finishes what it began. As a Patroni replica
    method, it leaves the start to Patroni."""
    from zsnap.reinit import ManagerCall, ReinitStandby

    cfg = obj.config
    manager = None if datadir is None else ManagerCall(datadir, role, scope)
    say = (lambda m: None) if as_json else (lambda m: console.print(m, highlight=False))
    op = ReinitStandby(cfg, obj.zfs(dry_run=dry_run), on_progress=say)
    if dry_run:
        result = op.run(set_id, dry_run=True, discard=discard, force=force, manager=manager)
    else:
        by = f" for {scope or 'a cluster manager'}" if manager else ""
        result = Job("reinit", lambda: op.run(set_id, discard=discard, force=force,
                                              timeout_s=timeout, manager=manager),
                     lambda r: {"detail": f"rebuilt from set {r.plan.set_id}{by}"}).run(
            cfg.state.dir).value()
    plan = result.plan
    data: dict[str, Any] = {
        "set": plan.set_id, "dry_run": dry_run, "resumed": result.resumed,
        "datasets": [{"dataset": r.dataset, "from": r.snapshot, "damaged_kept_as": r.aside,
                      "mountpoint": r.mountpoint} for r in plan.replacements],
        "newer_sets_kept_with_the_damaged": plan.moved_sets,
        "running_s": result.running_s, "caught_up_s": result.caught_up_s,
        "discarded": result.to_discard if dry_run else result.discarded,
    }

    def human() -> None:
        verb = "would rebuild" if dry_run else "rebuilt"
        console.print(f"{verb} the standby from set {plan.set_id}", highlight=False)
        for r in plan.replacements:
            console.print(f"  {r.dataset} <- {r.snapshot} (damaged kept as {r.aside})",
                          highlight=False)
        if plan.moved_sets:
            console.print(f"  newer sets, kept with the damaged datasets: "
                          f"{', '.join(plan.moved_sets)}", highlight=False)
        if manager is not None and not dry_run:
            console.print("  left for the cluster manager to start", highlight=False)
        if result.running_s is not None and result.caught_up_s is not None:
            console.print(f"  running after {result.running_s:.1f} s, streaming after "
                          f"{result.caught_up_s:.1f} s", highlight=False)
        if dry_run and result.to_discard:
            console.print(f"  would destroy: {', '.join(result.to_discard)}", highlight=False)
        elif result.discarded:
            console.print(f"  destroyed: {', '.join(result.discarded)}", highlight=False)
        elif not dry_run:
            asides = " ".join(r.aside for r in plan.replacements)
            console.print(f"  once you no longer need them: zfs destroy -r {asides}",
                          highlight=False)

    emit(data, as_json, human)
