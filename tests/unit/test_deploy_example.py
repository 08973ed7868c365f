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


# Keys that exclude each other ([archive] names one archive; a host that receives sets sends
# none): uncommented one group at a time.
GROUPS = ({"path", "root"}, {"pgbackrest_stanza", "pgbackrest_config", "target", "command"},
          {"barman_server", "barman_command"})


def uncommented(tmp_path: Path, keep_commented: set[str]) -> config.Config:
    path = tmp_path / "zsnap.toml"
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        m = KEY.match(line)
        lines.append(line[2:] if m and m.group(1) not in keep_commented else line)
    path.write_text("\n".join(lines))
    return config.load(path)


def test_the_example_loads_as_written_and_uncommented(tmp_path: Path) -> None:
    assert config.load(EXAMPLE) == config.Config()
    for other in GROUPS:
        loaded = uncommented(tmp_path, set().union(*(g for g in GROUPS if g is not other)))
        assert loaded.schedule.timezone == "Europe/Berlin"
        assert loaded.retention == config.Config().retention
        assert all(getattr(loaded.archive, key) for key in other if hasattr(loaded.archive, key))
        assert loaded.receiving == ("root" in other)
