"""The one wrapper every external command goes through, on real (harmless) commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import alive
from zsnap.errors import CommandError, CommandNotFound, CommandTimeout
from zsnap.runner import Runner, as_user, together


def test_output_and_exit_code() -> None:
    result = Runner().run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.stdout, result.stderr, result.returncode) == ("out\n", "err\n", 3)


def test_a_failure_is_typed_and_names_the_last_stderr_line() -> None:
    with pytest.raises(CommandError) as caught:
        Runner().run(["sh", "-c", "echo first >&2; echo 'cannot do it' >&2; exit 1"])
    assert caught.value.returncode == 1
    assert str(caught.value) == "sh failed: cannot do it"


def test_a_custom_error_factory_is_used() -> None:
    class Mine(CommandError):
        pass

    with pytest.raises(Mine):
        Runner().run(["false"], error=Mine)


def test_timeout_kills_the_command() -> None:
    marker = f"sleep {40 + os.getpid() % 7}.5"
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        Runner().run(["sh", "-c", marker], timeout=0.5)
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == ""


def test_missing_program() -> None:
    with pytest.raises(CommandNotFound):
        Runner().run(["no-such-program-zsnap"])


def test_the_c_locale_is_forced() -> None:
    env = dict(os.environ, LC_ALL="de_DE.UTF-8", LANGUAGE="de")
    out = Runner().run(["sh", "-c", 'echo "$LC_ALL ${LANGUAGE:-unset}"'], env=env).stdout
    assert out == "C unset\n"


def test_dry_run_skips_changes_but_runs_reads(tmp_path: os.PathLike[str]) -> None:
    runner = Runner(dry_run=True)
    target = f"{tmp_path}/made"
    assert runner.run(["touch", target]).returncode == 0
    assert not os.path.exists(target)
    assert runner.skipped == [["touch", target]]
    assert runner.run(["echo", "read"], mutates=False).stdout == "read\n"


def test_another_user_goes_through_runuser() -> None:
    assert as_user(None, ["id"]) == ["id"]
    if os.geteuid() == 0:
        assert as_user("postgres", ["id"]) == ["runuser", "-u", "postgres", "--", "id"]
        assert as_user("root", ["id"]) == ["id"]


def test_an_interrupted_run_takes_its_command_along() -> None:
    marker = f"sleep {60 + os.getpid() % 7}.25"
    code = f"from zsnap.runner import Runner; Runner().run(['sh', '-c', '{marker}'], timeout=120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(2)  # SIGINT to the parent only, as `kill -INT` or a service manager sends
    assert proc.wait(timeout=20) != 0
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""


def test_a_command_killed_by_a_signal_is_a_command_error() -> None:
    # zpool aborts (SIGABRT) when zfs-fuse goes away under it: an error to handle, not a crash.
    with pytest.raises(CommandError) as caught:
        Runner().run(["sh", "-c", "kill -ABRT $$"])
    assert caught.value.returncode == -6
    assert Runner().run(["sh", "-c", "kill -ABRT $$"], check=False).returncode == -6


def test_a_command_dies_with_a_zsnap_killed_by_sigkill(tmp_path: Path) -> None:
    """Issue 10, item 2: a `zfs snapshot` must not finish after the zsnap that ran it is gone."""
    pid_file = tmp_path / "child.pid"
    code = ("from zsnap.runner import Runner; "
            f"Runner().run(['sh', '-c', 'echo $$ > {pid_file}; exec sleep 300'], timeout=600)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.02)
    child = int(pid_file.read_text())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(child), "the command outlived the zsnap that ran it"


def test_a_detached_zsnap_outlives_the_command_that_started_it(tmp_path: Path) -> None:
    log = f"{tmp_path}/worker.log"
    code = ("from pathlib import Path; from zsnap.runner import Runner; "
            f"print(Runner().spawn_detached(['sleep', '30'], log_file=Path('{log}')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    try:
        assert alive(pid)
        assert os.getsid(pid) == pid  # a session of its own: no terminal's signals reach it
    finally:
        os.kill(pid, 9)


def test_commands_made_together_run_at_once_and_all_end_before_a_failure_is_raised(
    tmp_path: Path,
) -> None:
    # Each command waits until all three have started: in turn, they would never end.
    started = tmp_path / "started"
    runner = Runner()

    def command(name: str, code: int) -> Callable[[], object]:
        script = (f"echo {name} >> {started}; "
                  f"while [ $(wc -l < {started}) -lt 3 ]; do sleep 0.01; done; "
                  f"touch {tmp_path / name}; exit {code}")
        return lambda: runner.run(["sh", "-c", script], timeout=20)

    with pytest.raises(CommandError):
        together([command("a", 0), command("b", 1), command("c", 0)])
    assert {p.name for p in tmp_path.iterdir()} == {"started", "a", "b", "c"}
    together([])
