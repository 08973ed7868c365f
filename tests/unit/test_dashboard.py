"""deploy/grafana-dashboard.json charts only metrics that `zsnap check` writes, and every
metric zsnap writes is documented in docs/operations.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

from zsnap.health import METRICS

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bzsnap_([a-z_]+)")


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    found = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.update(NAME.findall(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        found.update(NAME.findall(json.dumps(variable.get("query", ""))))
    return found


def test_the_dashboard_uses_only_metrics_zsnap_writes() -> None:
    used = dashboard_metrics()
    assert used - METRICS.keys() == set()
    # What the issue asks a chart for: set age, pause, replay lag, verification, clones, pools.
    assert {"newest_set_age_seconds", "newest_set_pause_seconds", "replay_lag_seconds",
            "verification_age_seconds", "verification_passed", "clones",
            "pool_free_percent"} <= used


def test_every_metric_is_documented() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    assert [m for m in METRICS if f"`zsnap_{m}" not in text] == []
