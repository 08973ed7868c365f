"""How long a set pauses replay on a busy standby (issue 21, item 3): unthrottled pgbench on
the primary, the standby's shared_buffers at a quarter of memory (so that its restartpoints
have much to write), sets taken one after another, and the replay lag sampled around each
(bench.snapcost). Reports pause_ms at the median and p95."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.lab import LabBenchmark
from bench.machine import describe, filesystem
from bench.snapcost import snapshot_cost
from bench.stats import percentile
from bench.workload import Database, scale_for
from bench.zsnapcli import ZsnapCli
from zsnap.clone.recovery import machine_memory
from zsnap.lab import Lab, LabInfo
from zsnap.runner import Runner
from zsnap.units import GB, MB

log = logging.getLogger(__name__)


@dataclass
class Pause(LabBenchmark):
    size_gb: float = 0.6
    name: str = "zpause"
    port: int = 50320
    sets: int = 12

    def _run(self, info: LabInfo, runner: Runner) -> dict[str, Any]:
        db = Database(info, runner)
        db.init(scale_for(self.size_gb))
        db.archive_all()
        db.wait_standby()
        buffers = f"{min(machine_memory() // 4, 8 * GB) // MB}MB"
        with psycopg.connect(info.conninfo("standby"), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{buffers}'")
        lab = Lab(info.name, port=self.port, pg_bin=info.pg_bin, runner=runner)
        lab.stop(info, "standby")
        lab.start(info, "standby")
        db.wait_standby()
        cost = snapshot_cost(db, ZsnapCli(info.config_file, runner), self.sets, rate=0)
        pauses = [float(p["pause_ms"]) for p in cost["per_set"]]
        return {
            "machine": describe(runner, info.pg_bin),
            "filesystem": filesystem(info.standby_data),
            "standby_shared_buffers": buffers,
            "pause_ms_median": percentile(pauses, 0.5),
            "pause_ms_p95": percentile(pauses, 0.95),
            "snapshot_cost": cost,
        }
