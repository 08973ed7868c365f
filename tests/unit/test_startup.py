"""zsnap's start is every command's (issue 21): what each command line loads, as a budget of
modules rather than a clock. `--version`, `--help` and every command's `--help` load none of
the heavy libraries; a command loads those it uses (python -m bench startup measures them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zsnap.cli import COMMANDS

# What each costs to import on these machines (python -X importtime, one run, ms): psycopg 45,
# pydantic 45 (with the config's models), rich 20, sh 29 (it loads asyncio), apscheduler 20.
HEAVY = ("psycopg", "pydantic", "rich", "sh", "apscheduler")

PROBE = """
import contextlib, io, json, sys
sys.argv = ["zsnap", *sys.argv[1:]]
from zsnap.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main()
    except SystemExit:
        pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))))
""".replace("HEAVY", repr(HEAVY))


def loaded(*argv: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(proc.stdout))


@pytest.mark.parametrize("argv", [("--version",), ("--help",),
                                  *((name, "--help") for name in sorted(COMMANDS))])
def test_help_and_version_load_nothing_heavy(argv: tuple[str, ...]) -> None:
    assert loaded(*argv) == set()


def test_a_command_loads_what_it_uses_and_no_more(tmp_path: Path) -> None:
    config = tmp_path / "zsnap.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n')
    # The configuration is validated by pydantic; nothing here talks to PostgreSQL or ZFS.
    assert loaded("--config", str(config), "history", "--json") == {"pydantic"}
    assert loaded("--config", str(config), "history") == {"pydantic", "rich"}
    assert loaded("--config", str(config), "schedule", "--json") == {"pydantic", "apscheduler"}
