"""`bench all`: the benchmarks of docs/benchmarks.md one after another, on one machine in one
run (issue 21), each into its own results file, and every goal against what this run
measured (goals.md). A benchmark that fails is recorded as failed and the next one runs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cold import Cold
from bench.pause import Pause
from bench.report import Goal, at_least, at_most, goals_of, render, run_goals
from bench.rowsback import RowsBack
from bench.run import BenchRun, Options
from bench.startup import TOGETHER, Startup
from bench.startup import write as write_startup
from zsnap.errors import ZsnapError

log = logging.getLogger(__name__)

# The wall time of a command above `python -c pass` (issue 21).
START_MS = 150.0


@dataclass
class All:
    out_dir: Path
    size_gb: float = 2.0  # bench run's database
    pg_bin: Path | None = None

    def run(self) -> dict[str, dict[str, Any]]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        results: dict[str, dict[str, Any]] = {}
        for name, measure in self._benchmarks().items():
            began = time.monotonic()
            log.info("bench all: %s", name)
            try:
                results[name] = measure()
            except (ZsnapError, AssertionError, OSError) as e:
                log.error("bench all: %s failed: %s", name, e)
                results[name] = {"failed": str(e)}
            results[name]["bench_s"] = round(time.monotonic() - began, 1)
            path = self.out_dir / f"{name}.json"
            if name == "startup":
                write_startup(results[name], path)
            else:
                path.write_text(json.dumps(results[name], indent=2, default=str))
        (self.out_dir / "goals.md").write_text(render_goals(results))
        return results

    def _benchmarks(self) -> dict[str, Callable[[], dict[str, Any]]]:
        run_out = self.out_dir / "run.json"

        def run() -> dict[str, Any]:
            results = BenchRun(Options(size_gb=self.size_gb, out=run_out,
                                       pg_bin=self.pg_bin)).run()
            run_out.with_suffix(".md").write_text(render(results))
            return results

        return {
            "startup": Startup().run,
            "run": run,
            "cold": Cold(clones=5, drop_caches=True, pg_bin=self.pg_bin).run,
            "pause": Pause(pg_bin=self.pg_bin).run,
            "rowsback": RowsBack(pg_bin=self.pg_bin).run,
        }


def all_goals(results: dict[str, dict[str, Any]]) -> list[Goal]:
    """Every goal the published benchmarks have, from the results of one `bench all`."""
    goals: list[Goal] = []
    start = results.get("startup", {}).get("cases")
    if start:
        commands = {k: v for k, v in start.items() if k != "python -c pass"}
        worst = max(commands, key=lambda k: commands[k]["above_python_ms"])
        ms = commands[worst]["above_python_ms"]
        # What zsnap's start cannot go under while it is built on these libraries.
        floor = results["startup"].get("libraries_above_python_ms", {}).get(TOGETHER)
        under = "" if floor is None else f"; its libraries alone {floor:.0f} ms"
        goals.append(Goal("zsnap's start above `python -c pass`, the slowest command line",
                          f"<= {START_MS:g} ms", f"{ms:.0f} ms (`{worst}`{under})",
                          ms <= START_MS))
    outcomes = results.get("run", {}).get("outcomes")
    if outcomes:
        goals += run_goals(outcomes)
    cold = results.get("cold", {}).get("first_over_warm")
    goals.append(Goal("the first clone of a set after a write load / a warm one", "<= 1.3x",
                      "-" if cold is None else f"{cold:.2f}x", at_most(cold, 1.3)))
    versus = results.get("cold", {}).get("pgbackrest_first_over_zsnap_first")
    goals.append(Goal("same start after the load: pgBackRest's first restore / zsnap's first "
                      "clone", ">= 3x", "-" if versus is None else f"{versus:.1f}x",
                      at_least(versus, 3)))
    p95 = results.get("pause", {}).get("pause_ms_p95")
    goals.append(Goal("replay paused per set, p95, unthrottled pgbench", "<= 50 ms",
                      "-" if p95 is None else f"{p95:.0f} ms", at_most(p95, 50)))
    rows = results.get("rowsback", {})
    if "find" in rows:
        f, q = rows["find"], rows["query"]
        goals += [
            Goal("`wal find`, nothing cached", ">= 100 MB/s", f"{f['first_mb_s']} MB/s",
                 f["first_mb_s"] >= 100),
            Goal("`wal find` against pg_waldump's own reading", "<= 2x",
                 f"{f['first_vs_pg_waldump']}x", f["first_vs_pg_waldump"] <= 2),
            Goal("`query --before-xid`, to the answer", "<= 2 s",
                 f"{q['once_answer_s_median']} s (exit {q['once_s_median']} s)",
                 q["once_answer_s_median"] <= 2),
            Goal("`query --keep`, the next query", "<= 0.3 s", f"{q['keep_next_s_median']} s",
                 q["keep_next_s_median"] <= 0.3),
        ]
    return goals


def render_goals(results: dict[str, dict[str, Any]]) -> str:
    failed = [f"- {name} failed: {r['failed']}" for name, r in results.items() if "failed" in r]
    took = ", ".join(f"{name} {r['bench_s'] / 60:.0f} min" for name, r in results.items())
    lines = [f"`python -m bench all`, {datetime.now(UTC):%Y-%m-%d}: {took}.", "",
             goals_of(all_goals(results))]
    return "\n".join(lines + (["", *failed] if failed else [])) + "\n"
