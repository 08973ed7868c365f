"""deploy/zsnap.example.toml shows every configuration key, and is valid with them all set."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from zsnap import config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "zsnap.example.toml"
KEY = re.compile(r"^# ?([a-z_]+) = ")


def test_every_key_is_in_the_example() -> None:
    shown: set[tuple[str, str]] = set()
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        if m := re.match(r"^\[(\w+)\]$", line):
            section = m.group(1)
        elif m := KEY.match(line):
            shown.add((section, m.group(1)))
    expected = set()
    for name, field in config.Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        expected |= {(name, key) for key in model.model_fields}
    assert expected - shown == set(), "keys missing from deploy/zsnap.example.toml"
    assert shown - expected == set(), "keys in the example that zsnap does not know"


def test_the_example_loads_as_written_and_uncommented(tmp_path: Path) -> None:
    assert config.load(EXAMPLE) == config.Config()
    uncommented = tmp_path / "zsnap.toml"
    uncommented.write_text("\n".join(
        line[2:] if KEY.match(line) else line for line in EXAMPLE.read_text().splitlines()
    ))
    loaded = config.load(uncommented)
    assert loaded.schedule.timezone == "Europe/Berlin"
    assert loaded.retention == config.Config().retention
