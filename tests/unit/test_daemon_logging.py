"""`zsnap daemon --json`: one JSON object per log line."""

from __future__ import annotations

import json
import logging

from zsnap.daemon import JsonFormatter


def test_a_record_is_one_json_line() -> None:
    record = logging.LogRecord("zsnap.daemon", logging.WARNING, __file__, 1,
                               "snapshot: %s\nsecond line", ("late",), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "zsnap.daemon"
    assert entry["message"] == "snapshot: late\nsecond line"
    assert entry["time"].endswith("+00:00")
