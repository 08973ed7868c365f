"""bench's pure helpers: summaries, ratios and the Markdown tables built from results."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.all import render_goals
from bench.report import (
    doubling_table,
    goals_table,
    profile_table,
    restore_table,
    schedule_table,
    short_fs,
    table,
)
from bench.stats import Summary, percentile, ratio
from bench.zsnapcli import zfs_calls

floats = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(st.lists(floats, min_size=1))
def test_summary_median_lies_within_the_spread(values: list[float]) -> None:
    s = Summary.of(values)
    assert s.n == len(values)
    assert s.low <= s.median <= s.high


def test_summary_of_three_runs() -> None:
    assert Summary.of([3.0, 1.0, 2.0]) == Summary(3, 2.0, 1.0, 3.0)


def test_summary_refuses_no_values() -> None:
    with pytest.raises(ValueError):
        Summary.of([])


def test_ratio() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(1.0, 0.0) is None


@given(st.lists(floats, min_size=1), st.floats(min_value=0, max_value=1))
def test_percentile_is_one_of_the_values(values: list[float], fraction: float) -> None:
    assert percentile(values, fraction) in values


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 1.0) == 20.0
    assert percentile(values, 0.0) == 1.0


def test_table_renders_none_as_dash() -> None:
    assert table(["a", "b"], [[None, 1.23456]]) == "| a | b |\n|---|---|\n| - | 1.23 |"


def outcome(scenario: str, path: str, total: float, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": scenario, "path": path, "total_s": total, "copy_s": None,
        "recover_s": None, "filesystem": "ext4 (/dev/vda)", "history_rows": 100,
        "size_bytes": 2 * 1024**3, **extra,
    }


def test_restore_table_ratios_to_zsnap() -> None:
    outcomes = [outcome("a", "zsnap", t) for t in (2.0, 4.0, 3.0)]
    outcomes += [outcome("a", "pgbackrest", t, copy_s=1.0, recover_s=t - 1) for t in (9, 12, 6)]
    text = restore_table(outcomes, "a")
    zsnap_row, pgbr_row = text.splitlines()[2:]
    assert "3.0 s (2.0-4.0)" in zsnap_row and "1.0x" in zsnap_row
    assert "9.0 s (6.0-12.0)" in pgbr_row and "3.0x" in pgbr_row


def test_schedule_table_has_a_median_row() -> None:
    outcomes = [
        outcome("b", "zsnap", 1.0, hour=0.5, detail={"set": "S1"}),
        outcome("b", "pgbackrest", 5.0, hour=0.5),
        outcome("b", "zsnap", 3.0, hour=14.0, detail={"set": "S2"}),
        outcome("b", "pgbackrest", 9.0, hour=14.0),
    ]
    lines = schedule_table(outcomes).splitlines()
    assert "| hour 0.5 | 1.0 s (set S1) |" in lines[2]
    assert lines[-1] == "| **median** | **2.0 s** | **7.0 s** |"
    # Results of runs that placed targets in days still render.
    old = [outcome("b", "zsnap", 1.0, day=0.94)]
    assert "day 0.94" in schedule_table(old)


def clone_outcome(scenario: str, total: float, limit: float) -> dict[str, Any]:
    clone = {"steps_s": {"clone": 0.2, "consistent": 0.3, "target": total - 1, "promote": 0.01},
             "limit_s": limit, "wal_replayed_bytes": 100 * 2**20, "replay_mb_s": 50.0}
    return outcome(scenario, "zsnap", total, detail={"clone": clone, "durable_after_s": 4.0})


def test_the_goals_and_the_profile() -> None:
    outcomes = [clone_outcome("a", 10.0, 9.5), outcome("a", "pgbackrest", 12.0),
                clone_outcome("b", 2.0, 1.2), outcome("b", "pgbackrest", 12.0),
                clone_outcome("c", 11.0, 10.4), outcome("c", "pgbackrest", 20.0),
                clone_outcome("b2", 2.0, 1.3), outcome("b2", "pgbackrest", 16.0)]
    goals = goals_table(outcomes)
    assert "| a. same start: pgBackRest / zsnap | >= 1.0x | 1.2x | met |" in goals
    assert ">= 5x | 6.0x | met |" in goals and "growing with size | 8.0x | met |" in goals
    assert "<= 1.15 | 1.1x | met |" in goals
    assert "<= 1 s | 0.65 s | met |" in goals  # median of 0.5 and 0.8
    slower = [*outcomes[:2], clone_outcome("c", 13.0, 12.4), outcome("c", "pgbackrest", 20.0)]
    assert "<= 1.15 | 1.3x | **missed** |" in goals_table(slower)
    assert "| >= 5x | - | not measured |" in goals_table(slower)
    profile = profile_table(outcomes).splitlines()
    assert len(profile) == 2 + 4
    assert profile[2].startswith("| a | zsnap clone --at T | 1 | 10.0 |")
    assert profile[2].endswith("| 0.50 | 4.00 |")


def test_doubling_table_compares_sizes() -> None:
    outcomes = [outcome("a", "pgbackrest", 10.0), outcome("c", "pgbackrest", 18.0,
                                                         size_bytes=4 * 1024**3)]
    row = doubling_table(outcomes).splitlines()[2]
    assert "2.00 GiB" in row and "4.00 GiB" in row and "1.8x" in row


def test_short_fs_names_the_pool() -> None:
    assert short_fs("zfs-fuse (zb_a/zsnap-clones/clone-1/0)") == "zfs-fuse (pool zb_a)"
    assert short_fs("zfs-fuse (zb_a/benchrestore)") == "zfs-fuse (pool zb_a)"
    assert short_fs("ext4 (/dev/vda)") == "ext4 (/dev/vda)"


def test_bench_all_judges_every_goal_and_says_what_it_did_not_measure() -> None:
    results: dict[str, dict[str, Any]] = {
        "startup": {"cases": {"python -c pass": {"above_python_ms": 0.0},
                              "zsnap --version": {"above_python_ms": 30.0},
                              "zsnap list": {"above_python_ms": 201.4}},
                    "libraries_above_python_ms": {"click": 25.0, "together": 196.2},
                    "bench_s": 60.0},
        "run": {"failed": "lab down", "bench_s": 120.0},
        "cold": {"first_over_warm": 1.25, "pgbackrest_first_over_zsnap_first": 2.6,
                 "bench_s": 400.0},
        "pause": {"pause_ms_p95": 306.0, "bench_s": 200.0},
        "rowsback": {"find": {"first_mb_s": 306.0, "first_vs_pg_waldump": 3.1},
                     "query": {"once_answer_s_median": 2.31, "once_s_median": 4.1,
                               "keep_next_s_median": 0.25}, "bench_s": 600.0},
    }
    text = render_goals(results)
    assert ("| <= 150 ms | 201 ms (`zsnap list`; its libraries alone 196 ms) | **missed** |"
            in text)
    assert "| <= 1.3x | 1.25x | met |" in text
    assert "| >= 3x | 2.6x | **missed** |" in text
    assert "| <= 50 ms | 306 ms | **missed** |" in text
    assert "| >= 100 MB/s | 306.0 MB/s | met |" in text and "| <= 2x | 3.1x | **missed** |" in text
    assert "| <= 2 s | 2.31 s (exit 4.1 s) | **missed** |" in text
    assert "| <= 0.3 s | 0.25 s | met |" in text
    assert "same start: pgBackRest / zsnap" not in text  # the run failed: no row of its own
    assert "- run failed: lab down" in text and "run 2 min" in text


def test_zfs_calls_are_the_runners_records_not_the_usage_text_it_logs() -> None:
    # `zsnap --debug clone --dry-run` on a lab (zfs-fuse), as printed.
    stderr = """DEBUG zsnap.runner: run: zfs
DEBUG zsnap.runner: exit 2: usage: zfs command args ...
For the property list, run: zfs set|get
For the delegated permission list, run: zfs allow|unallow
DEBUG zsnap.runner: run: zfs list -H -t filesystem -o name,zsnap:sets_of
DEBUG zsnap.runner: run: zfs list -H -t snapshot -o name,zsnap:format
DEBUG zsnap.runner: run: zfs get -H -p -o name,property,value zsnap:format
DEBUG zsnap.runner: run: zfsx
DEBUG zsnap.runner: run: runuser -u postgres -- pg_ctl"""
    assert zfs_calls(stderr) == 4


def test_startup_tables_name_the_libraries_floor() -> None:
    from bench.startup import render as render_startup

    text = render_startup({
        "cases": {"python -c pass": {"median_ms": 27.0, "above_python_ms": 0.0,
                                     "imports_ms": {"enum": 2.1, "total": 18.1}}},
        "libraries_above_python_ms": {"click": 25.0, "together": 196.2}})
    assert "| `python -c pass` | 27.0 | 0.0 | 18.1: enum 2.1 |" in text
    assert "| click | 25.0 |" in text and "| all four | 196.2 |" in text
