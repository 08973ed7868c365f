"""The run history file, and how check results are rendered for monitoring."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from zsnap import history as history_module
from zsnap.checks import Check, Metric, Status, overall
from zsnap.errors import LockBusy, ZsnapError
from zsnap.health import nagios_line, prometheus_text
from zsnap.history import History
from zsnap.jobs import Job


def test_runs_are_recorded_with_outcome_and_duration(tmp_path: Path) -> None:
    """One job runner for the command line and the daemon: ok, failed (raised, or a result
    that says it failed: shown first, then its error), busy."""
    state = tmp_path / "state"

    def raises(error: ZsnapError) -> str:
        raise error

    def partly(result: str) -> dict[str, str]:
        raise ZsnapError(f"1 set pruned, 1 could not be: {result}")

    done = Job("snapshot", lambda: "X", lambda s: {"detail": f"set {s}", "set": s}).run(
        state, origin="daemon")
    assert done.value() == "X" and done.detail == "set X"
    with pytest.raises(ZsnapError):
        Job("prune", lambda: raises(ZsnapError("zfs: cannot destroy")), dict).run(state)
    kept = Job("prune", lambda: "b kept", partly).run(state)
    assert kept.result == "b kept" and isinstance(kept.error, ZsnapError)
    with pytest.raises(ZsnapError, match="could not be"):
        kept.value()
    with pytest.raises(LockBusy):
        Job("snapshot", lambda: raises(LockBusy("another zsnap snapshot is running (pid 1)")),
            dict).run(state)
    h = History(state)
    entries = h.entries()
    assert [(e.what, e.outcome) for e in entries] == [
        ("snapshot", "ok"), ("prune", "failed"), ("prune", "failed"), ("snapshot", "busy")]
    assert entries[0].detail == "set X" and entries[0].data == {"set": "X"}
    assert entries[0].origin == "daemon" and entries[0].duration_s >= 0
    assert entries[1].detail == "zfs: cannot destroy" and entries[1].origin == "cli"
    assert entries[2].detail == "1 set pruned, 1 could not be: b kept"
    last = h.last("snapshot")
    assert last is not None and last.outcome == "busy"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    h = History(tmp_path)
    h.record("check", "ok", started=datetime.now(UTC), duration_s=0.1)
    with h.path.open("a") as f:
        f.write('{"what": "snap')  # a crash mid-write
    assert [e.what for e in h.entries()] == ["check"]


def test_the_file_is_trimmed_to_its_newer_half(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "MAX_BYTES", 2000)
    h = History(tmp_path)
    for i in range(40):
        h.record("check", "ok", started=datetime.now(UTC), duration_s=0, detail=str(i))
    details = [e.detail for e in h.entries()]
    assert h.path.stat().st_size <= 2000 + 200
    assert details[-1] == "39" and "0" not in details
    assert details == [str(i) for i in range(40 - len(details), 40)]


def results() -> list[Check]:
    return [
        Check("newest_set", Status.OK, "newest set X is 1h old", "",
                    [Metric("newest_set_age_seconds", 3600.0, 93600.0, 180000.0)]),
        Check("pool_free", Status.WARNING, "a 15.0% free", "grow | prune",
                    [Metric("pool_free_percent", 15.0, 20.0, 10.0, (("pool", "a"),))]),
        Check("scheduler", Status.UNKNOWN, "cannot read"),
    ]


def test_overall_state_prefers_a_definite_problem() -> None:
    r = results()
    assert overall(r) == Status.WARNING
    assert overall(r[:1]) == Status.OK
    assert overall([*r, Check("x", Status.CRITICAL, "bad")]) == Status.CRITICAL
    assert overall([r[0], r[2]]) == Status.UNKNOWN


def test_nagios_line_has_state_problems_and_perfdata() -> None:
    line = nagios_line(results())
    text, perf = line.split(" | ")
    assert text.startswith("ZSNAP WARNING - pool_free: a 15.0% free; scheduler: cannot read")
    assert "'newest_set_age_seconds'=3600;93600;180000" in perf
    assert "'pool_free_percent_a'=15;20;10" in perf
    assert line.count("|") == 1


def test_prometheus_textfile() -> None:
    text = prometheus_text(results(), "main", datetime(2026, 1, 1, tzinfo=UTC))
    assert 'zsnap_check_status{cluster="main",check="pool_free"} 1' in text
    assert 'zsnap_pool_free_percent{cluster="main",pool="a"} 15' in text
    assert "# TYPE zsnap_newest_set_age_seconds gauge" in text
    assert text.endswith("zsnap_check_timestamp_seconds{cluster=\"main\"} 1767225600\n")


def test_every_metric_the_checks_emit_has_its_help_text() -> None:
    """A metric without a line in METRICS would stop `zsnap check --prometheus` (UNKNOWN)."""
    import re

    from zsnap import health

    source = Path(health.__file__).read_text()
    emitted = set(re.findall(r'Metric\(\s*"(\w+)"', source))
    assert emitted and emitted <= set(health.METRICS), emitted - set(health.METRICS)
