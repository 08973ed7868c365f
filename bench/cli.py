"""`python -m bench all|run|knobs|cold|pause|scale|rowsback|startup|report`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench.all import All
from bench.cold import Cold
from bench.knobs import Knobs
from bench.pause import Pause
from bench.report import render
from bench.rowsback import RowsBack
from bench.run import BenchRun, Options
from bench.scale import Scale
from bench.startup import Startup
from bench.startup import render as render_startup
from bench.startup import write as write_startup
from zsnap.errors import ZsnapError


@click.group()
def cli() -> None:
    """Benchmarks of zsnap flashbacks against pgBackRest and pg_basebackup."""


def _measured(measure: Callable[[], dict[str, Any]], out: Path | None = None) -> dict[str, Any]:
    """One benchmark with its progress logged: one line and its exit code when it cannot go
    on, else its results, written as JSON to OUT when given."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("sh").setLevel(logging.WARNING)
    try:
        results = measure()
    except ZsnapError as e:
        click.echo(f"bench: {e}", err=True)
        sys.exit(e.exit_code)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
    return results


@cli.command()
@click.option("--size-gb", default=2.0, show_default=True, help="pgbench database size.")
@click.option("--runs", default=3, show_default=True, help="Runs per path (medians).")
@click.option("--wal-gb", type=float, default=None, help="WAL written after the common start "
              "[default: half the size].")
@click.option("--sets", default=24, show_default=True,
              help="zsnap sets in the write window, which stands for a day (hourly sets).")
@click.option("--primary-checkpoint/--no-primary-checkpoint", default=True, show_default=True,
              help="[snapshot] primary_checkpoint for the lab's sets.")
@click.option("--targets", default=5, show_default=True, help="Random targets in scenario b.")
@click.option("--double/--no-double", default=True, show_default=True,
              help="Scenario c: repeat with twice the data.")
@click.option("--basebackup/--no-basebackup", default=True, show_default=True)
@click.option("--zfs-restore/--no-zfs-restore", default=True, show_default=True,
              help="Also restore with pgBackRest onto a ZFS dataset.")
@click.option("--scale-sets", default=1000, show_default=True)
@click.option("--name", default="zbench", show_default=True, help="Lab name.")
@click.option("--port", default=47320, show_default=True, help="Lab primary port.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The lab's PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Results JSON [default: bench/results/<size>gb.json]; Markdown beside it.")
def run(size_gb: float, runs: int, wal_gb: float | None, sets: int,
        primary_checkpoint: bool, targets: int,
        double: bool, basebackup: bool, zfs_restore: bool, scale_sets: int, name: str,
        port: int, pg_bin: Path | None, keep: bool, out: Path | None) -> None:
    """Build a lab, run every scenario, write results (JSON and Markdown)."""
    out = out or Path(f"bench/results/{size_gb:g}gb.json")
    options = Options(size_gb=size_gb, runs=runs, wal_gb=wal_gb, sets=sets,
                      primary_checkpoint=primary_checkpoint, targets=targets,
                      double=double, basebackup=basebackup, zfs_restore=zfs_restore,
                      scale_sets=scale_sets, name=name, port=port, keep=keep, out=out,
                      pg_bin=pg_bin)
    results = _measured(BenchRun(options).run)
    out.with_suffix(".md").write_text(render(results))
    click.echo(render(results))


@cli.command()
@click.option("--size-gb", default=1.0, show_default=True, help="pgbench database size.")
@click.option("--wal-gb", default=0.5, show_default=True, help="WAL to replay.")
@click.option("--runs", default=3, show_default=True, help="Clones per variant.")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The lab's PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/knobs.json"),
              show_default=True)
def knobs(size_gb: float, wal_gb: float, runs: int, keep: bool, pg_bin: Path | None,
          out: Path) -> None:
    """Replay settings of a clone, one at a time, on the same WAL and target."""
    measure = Knobs(size_gb=size_gb, wal_gb=wal_gb, runs=runs, keep=keep, pg_bin=pg_bin)
    results = _measured(measure.run, out)
    for name, v in results["variants"].items():
        click.echo(f"{v['replay_s_median']:8.2f} s  {name}")
    copy = results["segment_copy"]
    click.echo(f"copying {copy['segments']} segments into pg_wal: {copy['seconds']} s")


@cli.command()
@click.option("--size-gb", default=1.5, show_default=True, help="pgbench database size.")
@click.option("--load-s", default=60.0, show_default=True,
              help="Unthrottled pgbench after the set.")
@click.option("--clones", default=3, show_default=True, help="Clones of the set, in a row.")
@click.option("--recordsize", default=None, help="The lab pools' recordsize [default: ZFS's].")
@click.option("--drop-caches", is_flag=True,
              help="Drop the host's page cache before every other clone.")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The lab's PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/cold.json"),
              show_default=True)
def cold(size_gb: float, load_s: float, clones: int, recordsize: str | None, drop_caches: bool,
         keep: bool, pg_bin: Path | None, out: Path) -> None:
    """The first clone of a set, right after a write load, against the repeated ones."""
    measure = Cold(size_gb=size_gb, load_s=load_s, clones=clones, recordsize=recordsize,
                   drop_caches=drop_caches, keep=keep, pg_bin=pg_bin)
    results = _measured(measure.run, out)
    for c in results["clones"]:
        cached = "page cache dropped" if c["page_cache_dropped"] else ""
        click.echo(f"clone {c['order']}: replay {c['replay_s']:.2f} s, zfs-fuse wrote "
                   f"{c['zfs_fuse_written_mib']} MiB, {c['zfs_fuse_cpu_s']:.1f} s CPU {cached}")
    click.echo(f"first / warm: {results['first_over_warm']}")
    for r in results["pgbackrest"]:
        cached = "page cache dropped" if r["page_cache_dropped"] else ""
        click.echo(f"pgBackRest restore: {r['total_s']:.2f} s {cached}")
    click.echo(f"pgBackRest first / zsnap first: {results['pgbackrest_first_over_zsnap_first']}")


@cli.command()
@click.option("--size-gb", default=0.6, show_default=True, help="pgbench database size.")
@click.option("--sets", default=12, show_default=True, help="Sets taken under the load.")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The lab's PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/pause.json"),
              show_default=True)
def pause(size_gb: float, sets: int, keep: bool, pg_bin: Path | None, out: Path) -> None:
    """Replay paused per set under unthrottled pgbench, the standby's shared_buffers at a
    quarter of memory."""
    results = _measured(Pause(size_gb=size_gb, sets=sets, keep=keep, pg_bin=pg_bin).run, out)
    cost = results["snapshot_cost"]
    click.echo(f"pause_ms median {results['pause_ms_median']:.0f}, p95 "
               f"{results['pause_ms_p95']:.0f} over {cost['sets']} sets "
               f"({cost['transactions']} transactions)")


@cli.command()
@click.option("--sets", default=1000, show_default=True, help="Sets of three datasets added.")
@click.option("--runs", default=3, show_default=True, help="Runs per command (medians).")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The lab's PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/results/scale.json"),
              show_default=True)
def scale(sets: int, runs: int, pg_bin: Path | None, out: Path) -> None:
    """`zsnap list`, `show` and set selection with many sets, on a small lab of their own."""
    results = _measured(Scale(sets=sets, runs=runs, pg_bin=pg_bin).run, out)
    for command, timed in results["scale"]["after"].items():
        click.echo(f"{timed['seconds']['median']:6.2f} s  {timed['zfs_calls']:3d} zfs calls  "
                   f"{command}")


@cli.command()
@click.option("--size-gb", default=2.0, show_default=True, help="pgbench database size.")
@click.option("--wal-gb", default=1.0, show_default=True,
              help="WAL written between the two sets (what wal find reads).")
@click.option("--after-set-s", default=20.0, show_default=True,
              help="Seconds of pgbench between the newest set and the mistake.")
@click.option("--runs", default=3, show_default=True, help="Runs per measure (medians).")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The lab's PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--out", type=click.Path(path_type=Path),
              default=Path("bench/results/rowsback.json"), show_default=True)
def rowsback(size_gb: float, wal_gb: float, after_set_s: float, runs: int, keep: bool,
             pg_bin: Path | None, out: Path) -> None:
    """wal find against pg_waldump, query --before-xid (and --keep) against a pgBackRest
    restore to the same xid."""
    measure = RowsBack(size_gb=size_gb, wal_gb=wal_gb, after_set_s=after_set_s, runs=runs,
                       keep=keep, pg_bin=pg_bin)
    results = _measured(measure.run, out)
    f, q, b = results["find"], results["query"], results["pgbackrest"]
    click.echo(f"wal find: {f['wal_bytes'] / 2**20:.0f} MB, first {f['first_mb_s']} MB/s "
               f"(pg_waldump {f['pg_waldump_mb_s']} MB/s, x{f['first_vs_pg_waldump']}), "
               f"cached {f['cached_s_median']} s")
    click.echo(f"query --before-xid: {q['once_s_median']} s (answer after "
               f"{q['once_answer_s_median']} s); kept, next: "
               f"{q['keep_next_s_median']} s; pgBackRest restore + query: {b['median_s']} s")


@cli.command("all")
@click.option("--size-gb", default=2.0, show_default=True, help="bench run's database size.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="The labs' PostgreSQL bin directory [default: as zsnap lab up].")
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("bench/results/all"),
              show_default=True)
def all_(size_gb: float, pg_bin: Path | None, out_dir: Path) -> None:
    """startup, run, cold, pause and rowsback one after another, each with its defaults (cold:
    five clones, the page cache dropped before every other); then every goal (goals.md)."""
    _measured(All(out_dir, size_gb=size_gb, pg_bin=pg_bin).run)
    click.echo((out_dir / "goals.md").read_text())


@cli.command()
@click.argument("results", type=click.Path(exists=True, path_type=Path))
def report(results: Path) -> None:
    """Print the Markdown for a results JSON."""
    click.echo(render(json.loads(results.read_text())))


def main() -> None:
    cli()


@cli.command()
@click.option("--runs", default=15, show_default=True, help="Runs per command line (medians).")
@click.option("--out", type=click.Path(path_type=Path),
              default=Path("bench/results/startup.json"), show_default=True)
def startup(runs: int, out: Path) -> None:
    """zsnap's own start: command lines that do nothing else, against `python -c pass`."""
    results = Startup(runs=runs).run()
    write_startup(results, out)
    click.echo(render_startup(results))

