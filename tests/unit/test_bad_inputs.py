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


def test_emoji_codes_in_a_message_are_printed_as_written(tmp_path: Path) -> None:
    path = tmp_path / "a:fire:b.toml"
    assert str(path) in one_line(*zsnap("--config", str(path), "list"))


def test_a_state_dir_is_one_clusters(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for cluster in ("main", "other"):
        (tmp_path / f"{cluster}.toml").write_text(
            f'[state]\ndir = "{state}"\n[snapshot]\ncluster = "{cluster}"\n')
    assert zsnap("--config", str(tmp_path / "main.toml"), "history", "--json")[0] == 0
    assert (state / "cluster").read_text() == "main\n"
    for command in (("history", "--json"), ("daemon",)):
        message = one_line(*zsnap("--config", str(tmp_path / "other.toml"), *command))
        assert "holds the state of cluster 'main', not 'other'" in message
    assert zsnap("--config", str(tmp_path / "main.toml"), "history", "--json")[0] == 0


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


def with_env(**env: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ZSNAP_")}, **env}


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ZSNAP_CLONES__PORT_RANGE": "abc"}, "ZSNAP_CLONES__PORT_RANGE: not valid JSON"),
        ({"ZSNAP_REPLICATE__COMMAND": "ssh"}, "ZSNAP_REPLICATE__COMMAND: not valid JSON"),
        ({"ZSNAP_ARCHIVE__PATH": ""}, "ZSNAP_ARCHIVE__PATH: archive.path: must not be empty"),
        ({"ZSNAP_STATE__DIR": "state"}, "state.dir: must be an absolute path"),
        ({"ZSNAP_STANDBY__CONNINF": "x"}, "ZSNAP_STANDBY__CONNINF: unknown key standby.conninf"),
        ({"ZSNAP_STANDBYY__CONNINFO": "x"}, "ZSNAP_STANDBYY__CONNINFO: no section [standbyy]"),
        ({"ZSNAP_STANDBY_CONNINFO": "x"}, "two underscores: ZSNAP_STANDBY__CONNINFO"),
        ({"ZSNAP_RETENTION__HOURLY": "-1"}, "ZSNAP_RETENTION__HOURLY: retention.hourly"),
    ],
)
def test_a_bad_environment_variable_is_one_line_naming_it(
    config: Path, env: dict[str, str], words: str
) -> None:
    proc = subprocess.run([sys.executable, "-m", "zsnap", "--config", str(config), "history"],
                          capture_output=True, text=True, timeout=60, env=with_env(**env))
    assert words in one_line(proc.returncode, proc.stderr.strip())


def test_other_zsnap_variables_are_left_alone(config: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "zsnap", "--config", str(config), "history"],
                          capture_output=True, text=True, timeout=60,
                          env=with_env(ZSNAP_TEST_PG_BIN="/x", ZSNAP_RETENTION__HOURLY="5"))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[retention]\nhourly = true\n', "retention.hourly: must be a number, not true"),
        ('[state]\ndir = ""\n', "state.dir: must not be empty"),
        ('[clones]\nmount_root = "clones"\n', "clones.mount_root: must be an absolute path"),
        ('[standby]\npause_timeout_s = false\n', "standby.pause_timeout_s: must be a number"),
        ('[replicate]\ntarget = "pool/../x"\n', "has no . or .. component"),
        ('[catalog]\nroot = "pool/./x"\n', "has no . or .. component"),
    ],
)
def test_bad_values_in_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "zsnap.toml"
    path.write_text(text)
    assert words in one_line(*zsnap("--config", str(path), "history"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("clone", "--at", "0001-01-01", "--dry-run"), "time out of range"),
        (("history", "--limit", "-1"), "-1 is not in the range x>=1"),
        (("schedule", "--count", "0"), "0 is not in the range x>=1"),
        (("lab", "up", "--port", "70000"), "70000 is not in the range 1024<=x<=65534"),
        (("lab", "up", "--port", "0"), "0 is not in the range 1024<=x<=65534"),
        (("lab", "up", "--name", "ünï"), "lab name must be up to 20 ASCII letters"),
    ],
)
def test_bad_arguments_are_one_line(config: Path, args: tuple[str, ...], words: str) -> None:
    assert words in one_line(*zsnap("--config", str(config), *args))


@pytest.mark.parametrize(
    ("where", "words"),
    [("{tmp}", "must name a file, not a directory"), ("", "must name a file"),
     ("/nonexistent-zsnap/x.prom", "directory /nonexistent-zsnap does not exist")],
)
def test_a_prometheus_textfile_that_cannot_be(config: Path, tmp_path: Path, where: str,
                                              words: str) -> None:
    """UNKNOWN (3) for monitoring, one line, and nothing made or left behind."""
    target = where.format(tmp=tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    message = one_line(*zsnap("--config", str(config), "check", "--prometheus", target),
                       expected_code=3)
    assert words in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/nonexistent-zsnap").exists()


def test_any_error_is_one_line_with_its_exit_code() -> None:
    import psycopg

    from zsnap.errors import EXIT_FAILURE, NotFoundError, described

    assert described(NotFoundError("no set x")) == ("no set x", 4)
    assert described(FileNotFoundError(2, "No such file", "/x")) == \
        ("/x: No such file", EXIT_FAILURE)
    line, code = described(psycopg.errors.UndefinedTable('relation "t" does not exist\n'
                                                         "LINE 1: ..."))
    assert line == 'PostgreSQL: relation "t" does not exist' and code == EXIT_FAILURE
    line, code = described(KeyError("x"))
    assert line.startswith("internal error: KeyError") and "--debug" in line
