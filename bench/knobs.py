"""What makes a clone replay faster: one set, one stretch of pgbench WAL, one target, and the
same clone made again and again with one replay setting changed at a time ([clones] settings),
interleaved so that the machine's drift spreads over every variant. Durability is waited for
after each clone (untimed), so that one variant's checkpoint never runs under the next one's
replay. Each clone's own JSON gives the replay time from its server log and the WAL replayed.
Also timed: copying the replayed segments into a clone's pg_wal, which is what the
restore_command does for every one of them."""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lab import LabBenchmark
from bench.machine import describe, filesystem
from bench.paths import oracle
from bench.workload import Database, PgbenchLoad, scale_for
from bench.zsnapcli import ZsnapCli
from zsnap.clone.recovery import fast_settings, machine_memory
from zsnap.lab import LabInfo
from zsnap.lsn import Lsn, is_segment_name
from zsnap.runner import Runner
from zsnap.units import GB, MB

log = logging.getLogger(__name__)


def variants(memory: int, io_methods: list[str]) -> dict[str, dict[str, str]]:
    """Each a change against zsnap's own fast-recovery settings (name: settings); PostgreSQL
    18's I/O methods other than its default (`worker`) where the build has them."""
    own = fast_settings(memory)
    found = {
        f"zsnap's (shared_buffers {own['shared_buffers']})": {},
        "recovery_prefetch off": {"recovery_prefetch": "off"},
        "maintenance_io_concurrency 100": {"maintenance_io_concurrency": "100"},
        "wal_decode_buffer_size 4MB": {"wal_decode_buffer_size": "4MB"},
        "shared_buffers 128MB": {"shared_buffers": "128MB"},
        "shared_buffers 1/4 of memory": {
            "shared_buffers": f"{min(memory // 4, 8 * GB) // MB}MB"},
        # Restartpoints during replay, as with the cluster's own settings.
        "checkpoint_timeout 5min, max_wal_size 1GB": {
            "checkpoint_timeout": "5min", "max_wal_size": "1GB"},
        "fsync on": {"fsync": "on", "synchronous_commit": "on"},
    }
    found |= {f"io_method {m}": {"io_method": m} for m in io_methods if m != "worker"}
    return found


@dataclass
class Knobs(LabBenchmark):
    size_gb: float = 1.0
    name: str = "zknobs"
    port: int = 48320
    wal_gb: float = 0.5
    runs: int = 3

    def _run(self, info: LabInfo, runner: Runner) -> dict[str, Any]:
        db = Database(info, runner)
        db.init(scale_for(self.size_gb))
        db.archive_all()
        db.wait_standby()
        base = ZsnapCli(info.config_file, runner)
        first = base.snapshot()
        lsn0 = db.lsn()
        load = PgbenchLoad(db).start()
        try:
            while db.wal_since(lsn0) < self.wal_gb * 1024**3:
                time.sleep(0.5)
        finally:
            transactions = load.stop()
        target = db.mark()
        memory = machine_memory()
        io_methods = db.io_methods()
        found: dict[str, list[dict[str, Any]]] = {}
        configs = {name: self._config(info, i, extra)
                   for i, (name, extra) in enumerate(variants(memory, io_methods).items())}
        for _ in range(self.runs):
            for name, config in configs.items():
                cli = ZsnapCli(config, runner)
                timed = cli.clone(target, str(first["id"]))
                data = timed.data
                rows, _ = oracle(str(data["dsn"]))
                cli.timed("durable", str(data["name"]), timeout=3600)
                cli.destroy(str(data["name"]))
                found.setdefault(name, []).append({
                    "total_s": round(timed.seconds, 3), "replay_s": data["replay_s"],
                    "limit_s": data["limit_s"], "wal_bytes": data["wal_replayed_bytes"],
                    "history_rows": rows,
                })
                log.info("%s: replay %.2f s", name, data["replay_s"])
        return {
            "machine": describe(runner, info.pg_bin),
            "filesystem": filesystem(info.standby_data),
            "set": first["id"], "transactions": transactions, "target": target.isoformat(),
            "variants": {name: {"settings": variants(memory, io_methods)[name], "runs": runs,
                                "replay_s_median": statistics.median(r["replay_s"]
                                                                     for r in runs)}
                         for name, runs in found.items()},
            "segment_copy": self._copy_cost(info, str(first["redo_lsn"]), runner),
        }

    def _config(self, info: LabInfo, index: int, extra: dict[str, str]) -> Path:
        text = info.config_file.read_text()
        if extra:
            pairs = ", ".join(f'{k} = "{v}"' for k, v in extra.items())
            text = text.replace("[clones]\n", f"[clones]\nsettings = {{ {pairs} }}\n", 1)
        path = info.root / f"knobs-{index}.toml"
        path.write_text(text)
        return path

    def _copy_cost(self, info: LabInfo, redo: str, runner: Runner) -> dict[str, Any]:
        """cp of every archived segment from the set's redo point on into a directory of a
        dataset of the standby's pool, as restore_command copies them into a clone's pg_wal."""
        first = Lsn.parse(redo).segment(1, 16 * MB).name[8:]
        names = sorted(p.name for p in info.archive.iterdir()
                       if is_segment_name(p.name) and p.name[8:] >= first)
        dest = info.standby_data.parent / "knobs-copy"
        dest.mkdir(exist_ok=True)
        try:
            began = time.monotonic()
            for name in names:
                runner.run(["cp", str(info.archive / name), str(dest / name)])
            seconds = time.monotonic() - began
        finally:
            shutil.rmtree(dest)
        return {"segments": len(names), "seconds": round(seconds, 2),
                "per_segment_ms": round(seconds / max(len(names), 1) * 1000, 1),
                "filesystem": filesystem(info.standby_data)}
