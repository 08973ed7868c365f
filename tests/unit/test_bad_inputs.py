"""Bad input gets one clear line and a non-zero exit, never a traceback (issue 10, item 10):
the real command line, on inputs refused before anything touches ZFS or PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zsnap.errors import UsageError
from zsnap.runner import os_user_entry


def zsnap(*args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "zsnap", *args], capture_output=True,
                          text=True, timeout=60)
    return proc.returncode, proc.stderr.strip()


def one_line(code: int, message: str, expected_code: int = 2) -> str:
    assert code == expected_code, message
    assert message.count("\n") == 0 and "Traceback" not in message, message
    assert message.startswith("zsnap: ")
    return message


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "zsnap.toml"
    path.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n')
    return path


def test_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "zsnap.toml"
    path.write_bytes(b'[standby]\nconninfo = "\xff\xfe"\n')
    message = one_line(*zsnap("--config", str(path), "list"))
    assert "not UTF-8" in message and str(path) in message


def test_brackets_in_a_message_are_printed_as_written(tmp_path: Path) -> None:
    path = tmp_path / "zsnap.toml"
    path.write_text("[clones]\nport_range = [80, 90]\n")
    message = one_line(*zsnap("--config", str(path), "list"))
    assert "must be [low, high] with 1024 <= low" in message


def test_a_state_dir_that_cannot_be_made(tmp_path: Path) -> None:
    path = tmp_path / "zsnap.toml"
    path.write_text('[state]\ndir = "/proc/no/such/state"\n')
    message = one_line(*zsnap("--config", str(path), "snapshot"))
    assert "[state] dir /proc/no/such/state" in message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--xid", "0"), "not a transaction id"),
        (("--xid", "2"), "not a transaction id"),
        (("--xid", str(2**64)), "not a transaction id"),
        (("--restore-point", "before\nupgrade"), "no control characters"),
        (("--restore-point", "x" * 64), "1 to 63 bytes"),
        (("--immediate", "--timeout", "-5"), "not a number of seconds above 0"),
        (("--immediate", "--timeout", "0"), "not a number of seconds above 0"),
        (("--immediate", "--timeout", "nan"), "not a number of seconds above 0"),
        (("--immediate", "--port", "abc"), "'abc' is not a valid integer"),
    ],
)
def test_bad_clone_arguments(config: Path, args: tuple[str, ...], words: str) -> None:
    message = one_line(*zsnap("--config", str(config), "clone", *args, "--dry-run"))
    assert words in message


def test_an_unknown_command_is_one_line() -> None:
    message = one_line(*zsnap("nosuch"))
    assert "No such command 'nosuch'" in message and "--help" in message


def test_an_os_user_that_does_not_exist() -> None:
    with pytest.raises(UsageError, match=r"no OS user 'nosuchuser-zsnap' .*\[standby\] os_user"):
        os_user_entry("nosuchuser-zsnap")


@pytest.mark.parametrize("columns", ["abc", "", "0", "-3"])
def test_a_columns_that_is_no_width_breaks_nothing(columns: str, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": columns}
    proc = subprocess.run([sys.executable, "-m", "zsnap", "--version"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "zsnap" in proc.stdout, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "zsnap", "--config", str(tmp_path / "no.toml"),
                           "list"], capture_output=True, text=True, timeout=60, env=env)
    one_line(proc.returncode, proc.stderr.strip())


def test_a_password_is_never_in_a_connection_error(config: Path) -> None:
    config.write_text(config.read_text() + '[standby]\nconninfo = "host=/nonexistent '
                      'user=zs password=s3cret-pw dbname=nosuchdb"\n')
    code, message = zsnap("--config", str(config), "snapshot")
    assert code != 0 and "cannot connect" in message
    assert "s3cret-pw" not in message and "user=zs" in message


def test_wal_find_bad_input(config: Path) -> None:
    message = one_line(*zsnap("--config", str(config), "wal", "find", "--kind", "merge"))
    assert "unknown --kind merge" in message
    message = one_line(*zsnap("--config", str(config), "query", "--xid", "1", "--at",
                              "2026-01-01", "SELECT 1"))
    assert "give one target" in message
    one_line(*zsnap("--config", str(config), "clone", "--immediate", "--ttl", "soon"))
    one_line(*zsnap("--config", str(config), "destroy", "x", "--expired"))
