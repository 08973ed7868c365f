"""The one way zsnap runs an external command: argv lists (never a shell string), a timeout,
the C locale, optional switch to another OS user, dry-run enforced here, typed errors."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sh

from zsnap.errors import CommandError, CommandNotFound, CommandTimeout, UsageError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0

ErrorFactory = Callable[[Sequence[str], int, str, str], CommandError]


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Runner:
    """Runs commands. With `dry_run`, commands that change something are logged and skipped,
    while read-only ones still run, so a dry run reports what it really would do."""

    dry_run: bool = False
    skipped: list[list[str]] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        mutates: bool = True,
        check: bool = True,
        stdin: str | None = None,
        cwd: str | None = None,
        error: ErrorFactory = CommandError,
    ) -> Result:
        full = as_user(user, argv)
        if self.dry_run and mutates:
            log.info("dry run, skipped: %s", shlex.join(full))
            self.skipped.append(full)
            return Result(full, 0, "", "")
        log.debug("run: %s", shlex.join(full))
        import sh  # loaded by the first command run, not by every zsnap start

        try:
            command = sh.Command(full[0]).bake(_tty_out=False)
        except sh.CommandNotFound:
            raise CommandNotFound(full[0]) from None
        run_env = _c_locale(os.environ if env is None else env)
        # Started in the background and waited for here, with our own watchdog (_watchdog).
        proc = command(
            *full[1:],
            _bg=True,
            _bg_exc=False,
            # Its own process group, so that a timeout or an interrupt takes the command's
            # children along (a shell's, runuser's). pg_ctl's postmaster leaves it by setsid().
            _new_group=True,
            _env=run_env,
            _in=stdin,
            _cwd=cwd,
            _ok_code=list(range(256)),
            _return_cmd=True,
            _preexec_fn=die_with_parent,
        )
        expired, watchdog = _watchdog(timeout, lambda: _kill(proc))
        try:
            proc.wait()
        except sh.SignalException:
            pass  # killed by a signal (ours on timeout, or a crash): exit_code is minus the signal
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM turned into an exception): the child goes too.
            _kill(proc)
            raise
        finally:
            watchdog.cancel()
        if expired.is_set():
            raise CommandTimeout(full, timeout)
        out = _text(proc.stdout)
        err = _text(proc.stderr)
        code = int(proc.exit_code)
        if code != 0:
            log.debug("exit %d: %s", code, err.strip())
            if check:
                raise error(full, code, err, out)
        return Result(full, code, out, err)


    def pipe(
        self,
        source: Sequence[str],
        sink: Sequence[str],
        *,
        timeout: float,
        on_bytes: Callable[[int], None] = lambda n: None,
        on_start: Callable[[int], None] = lambda pid: None,
        error: ErrorFactory = CommandError,
    ) -> int:
        """`source | sink` (both changing something: `zfs send | zfs receive`), the bytes
        passing through zsnap so that they can be counted (`on_bytes` after each chunk;
        `on_start` is told the source's pid). Returns the bytes passed. Both die with zsnap;
        both are killed after `timeout`."""
        if self.dry_run:
            for argv in (source, sink):
                log.info("dry run, skipped: %s", shlex.join(argv))
                self.skipped.append(list(argv))
            return 0
        log.debug("pipe: %s | %s", shlex.join(source), shlex.join(sink))
        env = _c_locale(os.environ)
        with tempfile.TemporaryFile() as src_err, tempfile.TemporaryFile() as dst_err:
            procs = []
            try:
                src = _popen(source, env, stdout=subprocess.PIPE, stderr=src_err)
                procs.append(src)
                dst = _popen(sink, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=dst_err)
                procs.append(dst)
            except FileNotFoundError as e:
                _kill_all(procs)
                raise CommandNotFound(str(e.filename)) from None
            assert src.stdout is not None and dst.stdin is not None
            try:
                on_start(src.pid)
            except BaseException:
                _kill_all(procs)
                raise
            expired, watchdog = _watchdog(timeout, lambda: _kill_all(procs))
            passed = 0
            try:
                with src.stdout, dst.stdin:
                    while chunk := os.read(src.stdout.fileno(), 1 << 20):
                        try:
                            dst.stdin.write(chunk)
                        except BrokenPipeError:
                            break  # the sink gave up: its exit status says why
                        passed += len(chunk)
                        on_bytes(passed)
            except BrokenPipeError:
                pass  # closing the sink's stdin after it died
            except BaseException:
                _kill_all(procs)
                raise
            finally:
                for proc in procs:
                    _wait(proc)
                watchdog.cancel()
            if expired.is_set():
                raise CommandTimeout([*source, "|", *sink], timeout)
            results = [(argv, proc.returncode, _read(f))
                       for argv, proc, f in ((source, src, src_err), (sink, dst, dst_err))]
        _, s_code, s_err = results[0]
        # The sink's failure explains a source stopped by a broken pipe, and not the reverse.
        if s_code in (0, -signal.SIGPIPE, 128 + signal.SIGPIPE) or "pipe" in s_err.lower():
            results.reverse()
        for argv, code, err in results:
            if code != 0:
                log.debug("exit %d: %s", code, err.strip())
                raise error(argv, code, err, "")
        return passed

    def stream(
        self,
        argv: Sequence[str],
        out: Callable[[bytes], object],
        *,
        timeout: float,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        error: ErrorFactory = CommandError,
    ) -> Result:
        """A read-only command whose output is too large to hold (pg_waldump over a gigabyte
        of WAL, pg_dump): each chunk of its stdout goes to `out` as it comes; stderr is kept.
        Dies with zsnap, killed after `timeout`; an exception from `out` kills it too."""
        full = as_user(user, argv)
        log.debug("stream: %s", shlex.join(full))
        run_env = _c_locale(os.environ if env is None else env)
        with tempfile.TemporaryFile() as err_file:
            try:
                proc = _popen(full, run_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=err_file, cwd="/")
            except FileNotFoundError:
                raise CommandNotFound(full[0]) from None
            assert proc.stdout is not None
            expired, watchdog = _watchdog(timeout, lambda: _kill_all([proc]))
            try:
                with proc.stdout:
                    while chunk := os.read(proc.stdout.fileno(), 1 << 20):
                        out(chunk)
            except BaseException:
                _kill_all([proc])
                raise
            finally:
                _wait(proc)
                watchdog.cancel()
            if expired.is_set():
                raise CommandTimeout(full, timeout)
            err = _read(err_file)
        code = proc.returncode
        if code != 0:
            log.debug("exit %d: %s", code, err.strip())
            if check:
                raise error(full, code, err, "")
        return Result(full, code, "", err)

    def spawn_detached(self, argv: Sequence[str], *, log_file: Path) -> int:
        """Start zsnap itself (`argv[0]` is "zsnap": this interpreter's) in a session of its
        own, for work that must outlive this command (a clone's durability); its output goes to
        `log_file`. The one exception to "children die with zsnap". Returns its pid."""
        full = [sys.executable, "-m", *argv] if argv[0] == "zsnap" else list(argv)
        if self.dry_run:
            log.info("dry run, skipped: %s", shlex.join(full))
            self.skipped.append(full)
            return 0
        log.debug("spawn: %s", shlex.join(full))
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        return proc.pid


_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: dlopen after fork in a threaded process can deadlock.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def together(calls: Sequence[Callable[[], object]]) -> None:
    """Each call in a thread of its own, at once; the first failure raised once all have
    ended. For commands that each wait for the same thing (a ZFS transaction group of their
    pool), which commands made together share. An interrupt of the caller still waits for
    every call to end, so that what each did is known when this raises (one call too)."""
    failures: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as e:  # raised in the caller's thread below
            failures.append(e)

    # Each thread waits for its own command, whose death signal is tied to that thread.
    workers = [threading.Thread(target=run, args=(call,)) for call in calls]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    finally:
        for w in workers:  # interrupted meanwhile: the calls still end before this returns
            w.join()
    if failures:
        raise failures[0]


def die_with_parent() -> None:
    """In the child, before exec: the kernel kills it with SIGKILL when zsnap dies, even by
    SIGKILL, so that no `zfs snapshot` finishes a set member after the zsnap that started it is
    gone (the next zsnap may already have resumed replay). Linux only; elsewhere a no-op.
    A command that forks (runuser, a shell) passes it on to none of its own children."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _c_locale(env: Mapping[str, str]) -> dict[str, str]:
    """Parsed output must not depend on the operator's locale."""
    result = {**env, "LC_ALL": "C"}
    result.pop("LANGUAGE", None)
    return result


def _watchdog(timeout: float, kill: Callable[[], None]) -> tuple[threading.Event, threading.Timer]:
    """Our own timer (sh's `_timeout` costs about 100 ms per command and leaves a thread behind
    when interrupted): `kill` after `timeout` seconds, and the event says it fired."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    return expired, timer


def _popen(argv: Sequence[str], env: Mapping[str, str], **streams: Any) -> subprocess.Popen[bytes]:
    # A session of its own (a timeout kills its children too) and SIGKILL when zsnap dies.
    return subprocess.Popen(list(argv), env=env, start_new_session=True,
                            preexec_fn=die_with_parent, **streams)


def _kill_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wait(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child that was told to stop or has nothing more to read; one that lingers
    past a minute is killed."""
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        if time.monotonic() > deadline:
            _kill_all([proc])
        time.sleep(0.01)


def _read(file: Any) -> str:
    file.seek(0)
    return _text(file.read())


def _kill(proc: sh.RunningCommand) -> None:
    import sh

    with contextlib.suppress(OSError, sh.ErrorReturnCode):
        if proc.is_alive():
            proc.kill_group()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def os_user_entry(name: str) -> pwd.struct_passwd:
    """The OS user commands run as ([standby] os_user), or one clear line."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"there is no OS user {name!r} on this host ([standby] os_user)") \
            from None


def as_user(user: str | None, argv: Sequence[str]) -> list[str]:
    """Prefix `runuser` when the command must run as another OS user than ours."""
    if user is None or os.geteuid() == os_user_entry(user).pw_uid:
        return list(argv)
    return ["runuser", "-u", user, "--", *argv]
