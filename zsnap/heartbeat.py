"""The daemon's heartbeat: a small file in the state directory, rewritten every
[schedule] heartbeat_interval by `zsnap daemon` and read by `zsnap check` and `zsnap
schedule` (is a daemon running, since when, what is it doing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zsnap.files import write_durably

FILE = "daemon.json"


def write(state_dir: Path, data: dict[str, Any]) -> None:
    write_durably(state_dir / FILE, json.dumps(data, indent=2))


def read(state_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((state_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
