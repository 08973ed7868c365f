"""`zsnap verify`: restore a set into a throwaway instance and check it."""

from __future__ import annotations

import click

from zsnap import interrupt
from zsnap.commands import Context, dry_run_option, json_option, pass_ctx
from zsnap.errors import UsageError
from zsnap.jobs import Job, verify_summary
from zsnap.output import console, emit, escape, table

STYLE = {"passed": "green", "failed": "bold red", "skipped": "yellow"}


@click.command()
@click.argument("set_id", metavar="[ID]", required=False)
@click.option("--latest", is_flag=True, help="Verify the newest complete set (the default).")
@click.option("--unverified", is_flag=True, help="Verify every complete set never verified.")
@dry_run_option
@json_option
@pass_ctx
def verify(obj: Context, set_id: str | None, latest: bool, unverified: bool, dry_run: bool,
           as_json: bool) -> None:
    """Prove that snapshot sets restore: clone each into a throwaway instance, recover it to
    the set's consistency point, check it, record the outcome on the set, remove it.

    Exits 0 when every set passed, 1 when a check failed."""
    from zsnap.verify import Selection, VerifySet, instance_name

    if sum([set_id is not None, latest, unverified]) > 1:
        raise UsageError("give a set ID, --latest or --unverified, not several")
    cfg = obj.config
    selection = Selection(set_id=set_id, unverified=unverified)
    if dry_run:
        chosen = VerifySet(cfg, obj.zfs(dry_run=True)).select(selection)
        data = {"dry_run": True,
                "sets": [{"set": s.id, "instance": instance_name(s.cluster, s.id)} for s in chosen]}
        emit(data, as_json, lambda: table(
            "would verify (dry run: nothing made)", ["set", "throwaway instance"],
            [[s.id, instance_name(s.cluster, s.id)] for s in chosen]))
        return
    # Stopped by a service manager, `timeout` or `kill`: remove the instance as on Ctrl-C.
    interrupt.stop_on_signals()
    outcome = Job("verify", lambda: VerifySet(cfg, obj.zfs()).run(selection),
                  verify_summary).run(cfg.state.dir)
    results = outcome.result

    def human() -> None:
        if not results:
            console.print("nothing to verify: every complete set has been verified",
                          highlight=False)
        for v in results:
            rows = [[c.name, f"[{STYLE[c.outcome.value]}]{c.outcome.value}[/]",
                     escape(c.detail)] for c in v.checks]
            table(escape(v.summary()), ["check", "outcome", "detail"], rows)

    emit([v.to_json() for v in results], as_json, human)
    outcome.value()  # a set that failed: its line, and the exit code, after the results
