"""zsnap's own start (issue 21): the wall time of command lines that do nothing else, against
`python -c pass`, interleaved, medians; where an import's time goes (python -X importtime, by
top-level package); and the floor under it, the libraries zsnap is built on imported alone.
The commands need no lab: a configuration with a state directory of its own, and `zsnap list`
on whatever pools the host has."""

from __future__ import annotations

import compileall
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zsnap
from bench.machine import describe
from zsnap.errors import ZsnapError
from zsnap.lab import ensure_zfs
from zsnap.pg.binaries import find_bindir
from zsnap.runner import Runner

# What each case runs after `python -m zsnap --config CONFIG` (None: `python -c pass`).
CASES: dict[str, list[str] | None] = {
    "python -c pass": None,
    "zsnap --version": ["--version"],
    "zsnap clone --help": ["clone", "--help"],
    "zsnap history --json": ["history", "--json"],
    "zsnap history": ["history"],
    "zsnap list --json": ["list", "--json"],
    "zsnap list": ["list"],
}
# The libraries the slowest command line (`zsnap list` for people) loads, each as zsnap imports
# it: the command line interface, the configuration's models, the runner, the tables. Imported
# together they are the floor of that command's start, whatever zsnap's own code does.
LIBRARIES: dict[str, str] = {
    "click": "import click",
    "pydantic": "from pydantic import BaseModel",
    "sh": "import sh",
    "rich": "import rich.console, rich.table",
}
TOGETHER = "together"
_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")


@dataclass
class Startup:
    runs: int = 15

    def run(self) -> dict[str, Any]:
        # zsnap as installed, its bytecode written (pip does): with PYTHONDONTWRITEBYTECODE
        # set, as on these machines, every start would compile its changed sources again.
        compileall.compile_dir(Path(zsnap.__file__).parent, quiet=1)
        # `zsnap list` asks zfs: without a daemon to answer (zfs-fuse), it would time its
        # error path (which loads rich to say so) instead of the command.
        ensure_zfs(Runner())
        with tempfile.TemporaryDirectory(prefix="zsnap-startup-") as tmp:
            config = Path(tmp) / "zsnap.toml"
            config.write_text(f'[state]\ndir = "{Path(tmp) / "state"}"\n')
            argv = {name: self._argv(config, args) for name, args in CASES.items()}
            libraries = {name: [sys.executable, "-c", code] for name, code in
                         {**LIBRARIES, TOGETHER: "; ".join(LIBRARIES.values())}.items()}
            commands = {**argv, **libraries}
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(self.runs):
                for name, command in commands.items():  # interleaved: drift hits all alike
                    started = time.perf_counter()
                    proc = subprocess.run(command, capture_output=True, text=True, check=False)
                    times[name].append(time.perf_counter() - started)
                    if proc.returncode != 0:
                        raise ZsnapError(f"{name} failed: {proc.stderr.strip()}")
            imports = {name: self._imports(command) for name, command in argv.items()}
        base = statistics.median(times["python -c pass"])

        def above(name: str) -> float:
            return round((statistics.median(times[name]) - base) * 1000, 1)

        return {
            "machine": describe(Runner(), find_bindir(None)),
            "runs": self.runs,
            "cases": {name: {"median_ms": round(statistics.median(t) * 1000, 1),
                             "above_python_ms": above(name), "imports_ms": imports[name]}
                      for name, t in times.items() if name in argv},
            "libraries_above_python_ms": {name: above(name) for name in libraries},
        }

    @staticmethod
    def _argv(config: Path, args: list[str] | None) -> list[str]:
        if args is None:
            return [sys.executable, "-c", "pass"]
        return [sys.executable, "-m", "zsnap", "--config", str(config), *args]

    @staticmethod
    def _imports(command: list[str]) -> dict[str, float]:
        """Import time by top-level package (self times), the ten largest and the total."""
        proc = subprocess.run([command[0], "-X", "importtime", *command[1:]],
                              capture_output=True, text=True, check=False)
        by_package: Counter[str] = Counter()
        for m in _IMPORT.finditer(proc.stderr):
            by_package[m.group(2).split(".")[0]] += int(m.group(1))
        top = {k: round(v / 1000, 1) for k, v in by_package.most_common(10)}
        return {**top, "total": round(sum(by_package.values()) / 1000, 1)}


def render(results: dict[str, Any]) -> str:
    lines = ["| command | median ms | above python ms | imports ms (largest) |",
             "|---|---|---|---|"]
    for name, case in results["cases"].items():
        imports = case["imports_ms"]
        largest = ", ".join(f"{k} {v}" for k, v in imports.items() if k != "total")
        lines.append(f"| `{name}` | {case['median_ms']} | {case['above_python_ms']} | "
                     f"{imports['total']}: {largest} |")
    libraries = results.get("libraries_above_python_ms")
    if libraries:
        lines += ["", "| libraries alone | above python ms |", "|---|---|"]
        lines += [f"| {'all four' if name == TOGETHER else name} | {ms} |"
                  for name, ms in libraries.items()]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(render(results) + "\n")
