"""`zsnap clone`, `zsnap clones`, `zsnap destroy`: flashback instances."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from zsnap import interrupt
from zsnap.commands import (
    Context,
    dry_run_option,
    json_option,
    pass_ctx,
    seconds_above_zero,
)
from zsnap.commands.targets import duration_option, target_from, target_options
from zsnap.errors import EXIT_FAILURE, UsageError
from zsnap.lsn import Lsn
from zsnap.output import console, emit, err_console, error_line, fmt_time, table

# What runs a command is loaded by it (psycopg, pydantic, rich): `--help` needs none of it.
if TYPE_CHECKING:
    from zsnap.clone import durability, registry
    from zsnap.clone.expire import ExpiredResult
    from zsnap.clone.instance import ReplayState
    from zsnap.clone.request import CloneResult
    from zsnap.pg.binaries import PgTools


@contextmanager
def _progress_bar(show: bool) -> Iterator[Callable[[ReplayState], None] | None]:
    """Replayed WAL against how far replay can go (an LSN target, or the end of the WAL at
    hand), with the last replayed commit's time beside it."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("replaying"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err_console.rich, transient=True) as bar:
        task = bar.add_task("", total=None)
        start: list[Lsn] = []

        def update(state: ReplayState) -> None:
            if state.replay_lsn is None:
                return
            if not start:
                start.append(state.replay_lsn)
            commit = fmt_time(state.replay_time) if state.replay_time else "none yet"
            description = f"{state.replay_lsn}, last commit {commit}"
            if state.goal is not None and state.goal > start[0]:
                bar.update(task, total=state.goal - start[0],
                           completed=min(state.replay_lsn - start[0], state.goal - start[0]),
                           description=description)
            else:
                bar.update(task, description=description)

        yield update


@click.command()
@target_options
@click.option("--name", help="Name of the flashback instance (default clone-<time>).")
@click.option("--port", type=int, help="Port (default: the first free one in port_range).")
@click.option("--pause", is_flag=True,
              help="Stay paused (read-only) at the target instead of promoting.")
@click.option("--no-fast-recovery", is_flag=True,
              help="Replay with the cluster's own settings (fsync on, its buffers).")
@click.option("--timeout", type=float, callback=seconds_above_zero,
              help="Give up if the target takes longer (seconds).")
@click.option("--durable", is_flag=True,
              help="Return only once the instance is durable (else that goes on in the "
                   "background; zsnap clones shows when it is done).")
@click.option("--ttl", metavar="DURATION",
              help="Destroyed by zsnap destroy --expired (and the daemon) after this long, "
                   "e.g. 2h (default: [clones] ttl; unset, it lives until destroyed).")
@dry_run_option
@json_option
@pass_ctx
def clone(obj: Context, at: str | None, before_xid: str | None, xid: str | None,
          lsn: str | None, restore_point: str | None, immediate: bool, set_id: str | None,
          name: str | None, port: int | None, pause: bool, no_fast_recovery: bool,
          timeout: float | None, durable: bool, ttl: str | None, dry_run: bool,
          as_json: bool) -> None:
    """Start a flashback instance: the database as it was at a target."""
    from zsnap.changes.find import target_commit
    from zsnap.clone.create import CreateClone
    from zsnap.clone.request import CloneRequest, Wait

    target = target_from(at, before_xid, xid, lsn, restore_point, immediate, set_id)
    lifetime = duration_option(ttl, "--ttl")
    request = CloneRequest(target, name=name, port=port, pause=pause, set_id=set_id,
                           fast_recovery=not no_fast_recovery, timeout_s=timeout,
                           durability=Wait.WAIT if durable else Wait.BACKGROUND,
                           ttl=lifetime or obj.config.clones.ttl,
                           commit=target_commit(obj.config, obj.zfs(), target))
    if dry_run:
        plan = CreateClone(obj.config, obj.zfs(dry_run=True)).plan(request)
        data: dict[str, Any] = {
            "name": plan.name, "set": plan.set.id, "port": plan.port, "target": str(target),
            "target_note": target.note, "datasets": plan.datasets,
            "mountpoints": [str(plan.paths.mountpoint(i)) for i in range(len(plan.datasets))],
            "dry_run": True,
        }
        emit(data, as_json, lambda: table(
            "flashback instance (dry run: nothing made)", ["what", "value"],
            [[k, v] for k, v in data.items() if k != "dry_run"]))
        return
    # Stopped by a service manager or `kill`: remove the half-made clone as on Ctrl-C.
    interrupt.stop_on_signals()
    with _progress_bar(err_console.is_terminal and not as_json) as on_progress:
        result = CreateClone(obj.config, obj.zfs(), on_progress=on_progress,
                             config_path=obj.config_path).run(request)
    emit(result.to_json(), as_json, lambda: _print_result(result))


def _print_result(r: CloneResult) -> None:
    state = "promoted" if r.promoted else "paused at the target (read-only)"
    recovered = r.recovered_to.isoformat(sep=" ") if r.recovered_to else "no commit replayed"
    lines = [
        f"flashback instance [bold]{r.name}[/] is ready, {state}",
        f"  from set      {r.set_id}"
        + (f" (fell back from {', '.join(r.fell_back_from)})" if r.fell_back_from else ""),
        f"  target        {r.target}" + (f"  [yellow]({r.target.note})[/]" if r.target.note
                                         else ""),
        f"  recovered to  {recovered}",
        f"  elapsed       {r.elapsed_s:.1f} s" + _replay_summary(r),
        f"  durability    {_durability_line(r)}",
        f"  connect       psql \"{r.dsn}\"",
        f"  remove        zsnap destroy {r.name}",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def _replay_summary(r: CloneResult) -> str:
    if r.wal_replayed_bytes is None or r.replay_mb_s is None:
        return ""
    return (f" (replayed {r.wal_replayed_bytes / 2**20:.0f} MB of WAL in {r.replay_s:.1f} s, "
            f"{r.replay_mb_s:.0f} MB/s)")


def _durability_line(r: CloneResult) -> str:
    from zsnap.clone.durability import Durability

    if r.durability == Durability.IN_PROGRESS:
        return f"in progress in the background (zsnap durable {r.name} waits for it)"
    return r.durability


def _state(pg: PgTools, c: registry.Clone) -> str:
    from zsnap.clone.instance import owns_pid_file

    if not (c.pgdata / "postmaster.pid").exists():
        return "stopped"
    if not owns_pid_file(c.pgdata):
        # zsnap died before preparing it: the pid file is the standby's, cloned with its data.
        return "unprepared"
    status = pg.run("pg_ctl", "-D", str(c.pgdata), "status", mutates=False, check=False)
    return "running" if status.returncode == 0 else "stopped"


@click.command()
@json_option
@pass_ctx
def clones(obj: Context, as_json: bool) -> None:
    """List the flashback instances."""
    from zsnap.clone import durability, registry
    from zsnap.clone.destroy import half_made
    from zsnap.pg.binaries import PgTools

    cfg = obj.config
    zfs = obj.zfs()
    pg = PgTools.of(cfg, zfs.runner)
    found = registry.read(zfs, cfg.snapshot.cluster)
    durable = {}
    for c in found:
        c.state = _state(pg, c)
        durable[c.name] = durability.status(c)
    rows = [[c.name, c.set, c.target, c.port, c.state, durability.describe(durable[c.name], c.name),
             _size(c.used_bytes), fmt_time(c.created), fmt_time(c.expires_at)] for c in found]
    data = [_clone_json(c, durable[c.name]) for c in found]
    # Killed before its datasets carried their record: listed, so that it can be destroyed.
    for t in half_made(cfg.clones.mount_root, cfg.snapshot.cluster, {c.name for c in found}):
        rows.append([t.name, t.set, "", "", f"half-made (zsnap destroy {t.name})", "", "", "",
                     ""])
        data.append({"name": t.name, "cluster": t.cluster, "set": t.set, "state": "half-made",
                     "dir": str(t.dir), "datasets": t.datasets, "held": t.held})
    emit(data, as_json, lambda: table(
        f"flashback instances of {cfg.snapshot.cluster}",
        ["name", "set", "target", "port", "state", "durability", "used", "created", "expires"],
        rows))


def _clone_json(c: registry.Clone, d: durability.Status) -> dict[str, Any]:
    data = c.model_dump(mode="json", exclude={"durable"})
    data["durability"] = d.state.value
    data["durable"] = d.durable
    data["durable_since"] = d.since.isoformat() if d.since else None
    return data


@click.command()
@click.argument("name")
@click.option("--worker", is_flag=True, hidden=True,
              help="Run as the background worker `zsnap clone` starts.")
@json_option
@pass_ctx
def durable(obj: Context, name: str, worker: bool, as_json: bool) -> None:
    """Make a flashback instance durable, or wait until its background worker has: fsync back
    on, a checkpoint, its datasets flushed. Resumes the work of a worker that died."""
    from zsnap.clone import durability

    if worker:
        interrupt.stop_on_signals()  # stopped by `zsnap destroy`
    status = durability.MakeDurable(obj.config, obj.zfs()).run(name)
    data = {"name": name, "durability": status.state.value, "durable": status.durable,
            "durable_since": status.since.isoformat() if status.since else None}
    emit(data, as_json, lambda: console.print(
        f"flashback instance {name}: {durability.describe(status, name)}", highlight=False))


def _size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.1f}{unit}" if unit != "B" else f"{n}B"
        value /= 1024
    return str(n)


@click.command()
@click.argument("name", required=False)
@click.option("--expired", is_flag=True,
              help="Every flashback instance whose expiry (--ttl, [clones] ttl) has passed.")
@dry_run_option
@json_option
@pass_ctx
def destroy(obj: Context, name: str | None, expired: bool, dry_run: bool, as_json: bool) -> None:
    """Stop a flashback instance and destroy its datasets, leaving nothing behind. With
    --expired, every instance whose expiry has passed (never one without an expiry)."""
    from zsnap.clone.destroy import DestroyClone

    if expired:
        if name is not None:
            raise UsageError("give a NAME or --expired, not both")
        from zsnap.clone.expire import DestroyExpired

        op = DestroyExpired(obj.config, obj.zfs(dry_run=dry_run))
        if dry_run:
            done = op.run(dry_run=True)
        else:
            from zsnap.jobs import Job, expire_summary

            done = Job("expire", op.run, expire_summary).run(obj.config.state.dir).result
        verb = "would destroy" if dry_run else "destroyed"
        emit(done.to_json(), as_json, lambda: _print_expired(done, verb))
        if done.failed:
            sys.exit(EXIT_FAILURE)
        return
    if name is None:
        raise UsageError("give the NAME of a flashback instance (zsnap clones), or --expired")
    result = DestroyClone(obj.config, obj.zfs(dry_run=dry_run)).run(name, dry_run=dry_run)
    verb = "would destroy" if dry_run else "destroyed"
    emit(result.to_json(), as_json, lambda: console.print(
        f"{verb} flashback instance {name}: {len(result.datasets)} datasets, {result.dir}",
        highlight=False))


def _print_expired(done: ExpiredResult, verb: str) -> None:
    if not done.destroyed and not done.failed:
        console.print("no flashback instance has expired", highlight=False)
    for name in done.destroyed:
        console.print(f"{verb} expired flashback instance {name}", highlight=False)
    for name, why in done.failed.items():
        error_line(f"expired flashback instance {name} not destroyed: {why}")
