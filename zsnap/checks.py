"""The one vocabulary of checks: `zsnap check` (for monitoring) and `zsnap doctor` (before a
first set) grade what they look at as OK, WARNING, CRITICAL or UNKNOWN, the Nagios plugin
states, whose values are the plugin exit codes. (A verification's checks say passed or failed
instead: they are a test's results, kept on each set.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Status(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3  # could not be looked at (an earlier check failed, nothing answered)


# The worst first decides the overall state: a definite problem outranks an unknown.
SEVERITY = [Status.OK, Status.UNKNOWN, Status.WARNING, Status.CRITICAL]


@dataclass(frozen=True)
class Metric:
    name: str  # Prometheus style: newest_set_age_seconds, pool_free_percent
    value: float
    warn: float | None = None
    crit: float | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    hint: str = ""
    metrics: list[Metric] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name, "status": self.status.name, "summary": self.summary,
            "hint": self.hint,
            "metrics": [
                {"name": m.name, "value": m.value, "warn": m.warn, "crit": m.crit,
                 "labels": dict(m.labels)} for m in self.metrics
            ],
        }


def overall(results: list[Check]) -> Status:
    return max((r.status for r in results), key=SEVERITY.index, default=Status.OK)
