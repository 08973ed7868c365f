"""Configuration errors through the real command line: one line naming the key, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def zsnap(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zsnap", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[standby]\nconnifo = "host=/run/postgresql"\n', "unknown key standby.connifo"),
        ('[snapshots]\ncluster = "main"\n', "unknown key snapshots"),
        ("[clones]\nport_range = [70000, 1]\n", "clones.port_range"),
        ('[standby]\npause_timeout_s = "soon"\n', "standby.pause_timeout_s"),
        ("[standby]\npause_timeout_s = -1\n", "standby.pause_timeout_s"),
        ('[snapshot]\ncluster = "has space"\n', "snapshot.cluster"),
        ("[standby\nconninfo = 1\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "zsnap.toml"
    config.write_text(toml)
    for command in (["list"], ["snapshot"], ["doctor", "--json"]):
        proc = zsnap(config, *command)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert expected in lines[0] and str(config) in lines[0]
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    proc = zsnap(missing, "list")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"config file not found: {missing}" in lines[0]


def test_config_from_environment(tmp_path: Path) -> None:
    """Without --config, ZSNAP_CONFIG names the file."""
    config = tmp_path / "env.toml"
    config.write_text('[standby]\nconnifo = "x"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "zsnap", "list"], capture_output=True, text=True, timeout=120,
        env={"ZSNAP_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2 and "unknown key standby.connifo" in proc.stderr
