"""The exception tree. Every error a user can cause or meet is a ZsnapError with one clear line;
the CLI prints `str(error)` and exits with `exit_code`, never a traceback."""

from __future__ import annotations

from collections.abc import Sequence

# Exit codes, stable for monitoring and scripts.
EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed (PostgreSQL, ZFS, recovery)
EXIT_USAGE = 2  # bad input: configuration, arguments, a name or time that cannot work
EXIT_BUSY = 3  # another zsnap run holds the lock
EXIT_NOT_FOUND = 4  # no such set, clone or segment


def first_line(error: BaseException) -> str:
    """The first line of an error's message (PostgreSQL adds DETAIL/HINT lines), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def described(error: BaseException) -> tuple[str, int]:
    """What the CLI prints for any error, one line, and the exit code it ends with."""
    if isinstance(error, ZsnapError):
        return str(error), error.exit_code
    if isinstance(error, OSError):
        # A file zsnap could not read or write (a state dir, a log, a metrics file).
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", EXIT_FAILURE
    if type(error).__module__.split(".")[0] == "psycopg":
        # A server error outside the connection helpers: PostgreSQL's first line (a server's
        # message holds no conninfo; a connection error's is masked where it is raised).
        return f"PostgreSQL: {first_line(error)}", EXIT_FAILURE
    return (f"internal error: {type(error).__name__}: {first_line(error)} (run with --debug "
            "for the traceback, and please report it)", EXIT_FAILURE)


class ZsnapError(Exception):
    exit_code = EXIT_FAILURE


class UsageError(ZsnapError):
    """Input that can never work as given."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    pass


class NotFoundError(ZsnapError):
    exit_code = EXIT_NOT_FOUND


class LockBusy(ZsnapError):
    exit_code = EXIT_BUSY


class CommandError(ZsnapError):
    """An external command exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, stdout: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.stdout = stdout
        detail = self.stderr.splitlines()[-1] if self.stderr else f"exit code {returncode}"
        super().__init__(f"{self.argv[0]} failed: {detail}")


class CommandTimeout(ZsnapError):
    def __init__(self, argv: Sequence[str], timeout: float):
        self.argv = list(argv)
        super().__init__(f"{argv[0]} did not finish within {timeout:g} s: {' '.join(argv)}")


class CommandNotFound(ZsnapError):
    def __init__(self, name: str):
        super().__init__(f"command not found: {name} (is it installed and on PATH?)")


class ZfsError(CommandError):
    """`zfs`/`zpool` said `cannot <action> '<dataset>': <reason>`."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, stdout: str = ""):
        super().__init__(argv, returncode, stderr, stdout)
        line = self.stderr.splitlines()[0] if self.stderr else f"exit code {returncode}"
        self.args = (f"zfs: {line}",)


class DatasetNotFound(ZfsError):
    pass


class DatasetExists(ZfsError):
    pass


class DatasetBusy(ZfsError):
    pass


class NoSpace(ZfsError):
    pass


class NoSuchHold(ZfsError):
    """`zfs release` of a tag the snapshot does not carry."""


class PoolFull(ZsnapError):
    """A pool zsnap would write into is below [check] pool_free_critical_pct."""


class ZfsUnsupported(ZfsError):
    """The zfs implementation refused the syntax (an older zfs, such as zfs-fuse)."""


class NotOnZfs(UsageError):
    pass


class PostgresError(ZsnapError):
    pass


class NotInRecovery(PostgresError):
    """The configured standby is a primary: a configuration error, as the README says."""

    exit_code = EXIT_USAGE


class RecoveryFailed(PostgresError):
    pass


class WalMissing(RecoveryFailed):
    exit_code = EXIT_NOT_FOUND


class SnapshotFailed(ZsnapError):
    """A snapshot set could not be completed; the members already taken were removed."""


class ReplayResumed(SnapshotFailed):
    """Someone else resumed replay while a set was taken (Patroni does, on PostgreSQL 14+):
    that set is not consistent, and was removed."""


class ReplicationFailed(ZsnapError):
    """A set could not be sent to the [replicate] target; what arrived stays for the next run."""


class VerificationFailed(ZsnapError):
    """A set was restored and a named check of it failed (or it did not restore)."""
