"""What a snapshot set costs the standby: how long replay stays paused (`pause_ms`) and how
far the standby falls behind the primary around each set, under a steady pgbench load."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.stats import Summary, percentile
from bench.workload import Database, PgbenchLoad
from bench.zsnapcli import ZsnapCli

SAMPLE_S = 0.1
# How long after a set's end its effect on the lag is counted.
AFTER_S = 2.0

LAG_SQL = (
    "SELECT pg_current_wal_lsn()::text, "
    "(SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication LIMIT 1)"
)


@dataclass(frozen=True)
class Sample:
    at: float
    lag_bytes: int
    replay_lag_s: float | None


class LagSampler:
    """Replay lag every 100 ms: bytes between the primary's WAL position and the standby's
    replay position, and the primary's own `pg_stat_replication.replay_lag`."""

    def __init__(self, primary: str, standby: str):
        self.primary = primary
        self.standby = standby
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.primary, autocommit=True) as p, \
                psycopg.connect(self.standby, autocommit=True) as s:
            while not self._stop.is_set():
                row = p.execute(LAG_SQL).fetchone()
                assert row is not None
                lag = s.execute(
                    "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())", (row[0],)
                ).fetchone()
                assert lag is not None
                self.samples.append(Sample(time.monotonic(), max(0, int(lag[0])), row[1]))
                time.sleep(SAMPLE_S)

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _lag_stats(samples: list[Sample]) -> dict[str, float | None]:
    lag = [float(s.lag_bytes) for s in samples]
    seconds = [s.replay_lag_s for s in samples if s.replay_lag_s is not None]
    return {
        "bytes_p50": percentile(lag, 0.5) if lag else None,
        "bytes_p95": percentile(lag, 0.95) if lag else None,
        "bytes_max": max(lag) if lag else None,
        "replay_lag_s_p50": percentile(seconds, 0.5) if seconds else None,
        "replay_lag_s_max": max(seconds) if seconds else None,
    }


def snapshot_cost(
    db: Database, zsnap: ZsnapCli, count: int, rate: int, gap_s: float = 4.0,
    baseline_s: float = 10.0,
) -> dict[str, Any]:
    windows: list[tuple[float, float, int]] = []
    primary, standby = db.info.conninfo("primary"), db.info.conninfo("standby")
    with LagSampler(primary, standby) as sampler:
        load = PgbenchLoad(db, rate=rate).start()
        try:
            time.sleep(baseline_s)
            for _ in range(count):
                began = time.monotonic()
                data = zsnap.snapshot()
                windows.append((began, time.monotonic(), int(data["pause_ms"])))
                time.sleep(gap_s)
        finally:
            transactions = load.stop()
    samples = sampler.samples
    first = windows[0][0]
    baseline = [s for s in samples if s.at < first]
    per_set = []
    for began, ended, pause_ms in windows:
        around = [s for s in samples if began <= s.at <= ended + AFTER_S]
        per_set.append({
            "pause_ms": pause_ms,
            "command_s": round(ended - began, 3),
            "max_lag_bytes": max((s.lag_bytes for s in around), default=None),
            "max_replay_lag_s": max(
                (s.replay_lag_s for s in around if s.replay_lag_s is not None), default=None
            ),
        })
    pauses = Summary.of([float(w[2]) for w in windows])
    max_bytes = [float(p["max_lag_bytes"]) for p in per_set if p["max_lag_bytes"] is not None]
    return {
        "rate_tps": rate,
        "transactions": transactions,
        "sets": count,
        "pause_ms": pauses.__dict__,
        "baseline": _lag_stats(baseline),
        "during_max_lag_bytes": Summary.of(max_bytes).__dict__ if max_bytes else None,
        "per_set": per_set,
    }
