"""`zsnap lab`: the self-contained sandbox."""

from __future__ import annotations

from pathlib import Path

import click

from zsnap.commands import dry_run_option, json_option
from zsnap.lab import DEFAULT_ROOT, Lab, LoadWriter, lab_root, load_info
from zsnap.output import console, emit, table

name_option = click.option("--name", default="zlab", show_default=True, help="Lab name.")
base_option = click.option(
    "--base", type=click.Path(path_type=Path), default=DEFAULT_ROOT, show_default=True,
    help="Directory that holds labs.",
)


@click.group()
def lab() -> None:
    """A sandbox: pools on files, a primary with a WAL archive, a standby on ZFS."""


@lab.command()
@name_option
@base_option
@click.option("--port", type=click.IntRange(1024, 65534), default=54320, show_default=True,
              help="Primary port; the standby's is +1.")
@click.option("--pool-size", default="4G", show_default=True, help="Size of each pool file.")
@click.option("--pg-bin", type=click.Path(path_type=Path), default=None,
              help="PostgreSQL's bin directory [default: pg_config's, else the newest Debian's].")
@json_option
def up(name: str, base: Path, port: int, pool_size: str, pg_bin: Path | None,
       as_json: bool) -> None:
    """Build the lab and write its zsnap config."""
    info = Lab(name, base, port, pool_size, pg_bin=pg_bin).up()
    emit(
        {"name": info.name, "root": str(info.root), "config": str(info.config_file)},
        as_json,
        lambda: console.print(
            f"lab {info.name} is up at {info.root}\n"
            f"use it with: zsnap --config {info.config_file} snapshot",
            highlight=False,
        ),
    )


@lab.command()
@name_option
@base_option
@dry_run_option
@json_option
def down(name: str, base: Path, dry_run: bool, as_json: bool) -> None:
    """Stop the lab's servers and remove its pools and files."""
    the_lab = Lab(name, base)
    if dry_run:
        plan = the_lab.down_plan()

        def human() -> None:
            for server in plan["servers"]:
                console.print(f"would stop the server in {server}", highlight=False)
            for pool in plan["pools"]:
                console.print(f"would destroy pool {pool}", highlight=False)
            if plan["directory"]:
                console.print(f"would remove {plan['directory']}", highlight=False)

        emit({"name": name, "dry_run": True, **plan}, as_json, human)
        return
    the_lab.down()
    emit({"name": name, "down": True}, as_json, lambda: console.print(f"lab {name} is down"))


@lab.command()
@name_option
@base_option
@json_option
def status(name: str, base: Path, as_json: bool) -> None:
    """Show what runs in the lab."""
    state = Lab(name, base).status()

    def human() -> None:
        rows = [[k, v] for k, v in state.items() if k not in ("primary", "standby", "datasets")]
        rows += [[f"primary {k}", v] for k, v in state["primary"].items()]
        rows += [[f"standby {k}", v] for k, v in state["standby"].items()]
        rows += [[f"dataset {k}", v] for k, v in state["datasets"].items()]
        table(f"lab {name}", ["what", "value"], rows)

    emit(state, as_json, human)


@lab.command()
@name_option
@base_option
@click.option("--seconds", default=10.0, show_default=True, help="How long to write.")
@json_option
def load(name: str, base: Path, seconds: float, as_json: bool) -> None:
    """Write rows into tables on both tablespaces of the primary."""
    info = load_info(lab_root(name, base))
    committed = LoadWriter(info.conninfo("primary")).run_for(seconds)
    emit(
        {"committed": committed, "seconds": seconds},
        as_json,
        lambda: console.print(f"committed {committed} transactions in {seconds:g} s"),
    )
