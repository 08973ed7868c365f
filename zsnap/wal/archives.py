"""Where the WAL archive is and what it holds: a directory of WAL files (`[archive] path`), a
pgBackRest repository (`[archive] pgbackrest_stanza`, read only through pgBackRest's own
commands `info`, `repo-ls`, `repo-get`, never by opening its files), a Barman server
(`[archive] barman_server`, read only through `barman sync-info` and `barman get-wal`), or
only a `restore_command` (files fetched one by one, never listed). `listing` is the one answer to
"which segment is where" that `zsnap wal check`, the WAL part of `zsnap check`, the recovery
window and a clone's check before it starts read: a directory's damaged files (zsnap.wal.
integrity) are named there and not counted as archived; pgBackRest checksums what it stores
(`pgbackrest verify`)."""

from __future__ import annotations

import json
import lzma
import os
import re
import shlex
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from zsnap.config import Config
from zsnap.errors import CommandError, UsageError, ZsnapError
from zsnap.lsn import Segment, is_segment_name
from zsnap.runner import Result, Runner, os_user_entry
from zsnap.wal.integrity import Inspector
from zsnap.wal.names import COMPRESSIONS, Archive, split_suffix

TIMEOUT_S = 120.0
# In the state directory: what zsnap.wal.integrity found of each file of a directory archive.
CHECKED = "wal-files.json"
# A file written this recently that is not whole yet is taken as being archived.
ARRIVING_S = 60.0
# A Barman archive's presence check stops after this many get-wal --peek calls.
BARMAN_PEEKS = 64
# pgBackRest stores segment 000000010000000000000008 as
# 0000000100000000/000000010000000000000008-<sha1 of its content>[.gz|.lz4|.zst|.bz2].
_STORED = re.compile(r"^([0-9A-F]{24}(?:\.partial)?)-[0-9a-f]{40}(?:\.[a-z0-9]+)?$")


def archived_name(stored: str) -> str:
    """The name PostgreSQL archived a file under, from the name pgBackRest stores it under."""
    m = _STORED.match(stored)
    return m.group(1) if m else stored


class ArchiveUnreadable(ZsnapError):
    """The archive could not be listed (pgBackRest failed, say)."""


class WalArchive(Protocol):
    @property
    def where(self) -> str:
        """For messages: the directory, or the pgBackRest stanza."""

    @property
    def managed_by(self) -> str | None:
        """The command that removes old WAL from this archive when it is not zsnap's to prune."""

    @property
    def listable(self) -> bool:
        """Whether `names` and `listing` answer (a restore_command alone cannot)."""

    def has(self, name: str) -> bool:
        """Whether archived file NAME can be fetched."""

    def names(self) -> list[str]:
        """Every file, by the name PostgreSQL archived it under (segments, `.partial`,
        `.history` and `.backup` files)."""

    def listing(self, segment_size: int) -> Archive:
        """What it holds, sorted by kind; files that cannot be what their name says named as
        damaged and not counted as there."""

    def identity(self, name: str) -> str:
        """What changes when archived file NAME is replaced ("" when it is not there): what
        was found in a file is kept under its name and this."""

    def history(self, timeline: int) -> str | None:
        """The text of TIMELINE's history file, or None when the archive has none."""

    def recovery_env(self, pgdata: Path) -> dict[str, str]:
        """What the server of an instance in PGDATA needs in its environment for its
        restore_command to fetch from this archive."""

    def fetch(self, name: str, directory: Path) -> Path | None:
        """Archived file NAME, uncompressed, readable by this process: in the archive itself
        where it can be read there, else copied into DIRECTORY (writable by the OS user).
        None when it is not archived, or compressed in a way zsnap cannot undo."""


@dataclass(frozen=True)
class DirectoryArchive:
    path: Path
    # Where what was found of each file is kept (zsnap.wal.integrity); None: not kept.
    checked: Path | None = field(default=None, compare=False)

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def managed_by(self) -> str | None:
        return None

    @property
    def listable(self) -> bool:
        return True

    def _stored(self, name: str) -> Path | None:
        """The file archived file NAME is in: as named, else with a compression suffix."""
        for suffix in ("", *COMPRESSIONS):
            if (self.path / (name + suffix)).is_file():
                return self.path / (name + suffix)
        return None

    def has(self, name: str) -> bool:
        return self._stored(name) is not None

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_file())

    def listing(self, segment_size: int) -> Archive:
        names = self.names()
        found = Archive.from_names(names, segment_size)
        inspector = Inspector(self.checked)
        now = time.time()
        for name in list(found.files.values()):
            plain, compression = split_suffix(name)
            try:
                problem = inspector.problem(self.path / name,
                                            Segment.parse(plain, segment_size), compression)
                # An archive_command that copies in place (`cp`, as PostgreSQL's documentation
                # shows) makes a file that grows for a moment: not archived yet, not damaged.
                arriving = problem is not None and problem.partial and \
                    now - (self.path / name).stat().st_mtime < ARRIVING_S
            except OSError:
                continue  # removed meanwhile (wal prune, say): as if never listed
            if problem is not None:
                found.set_damaged(name, None if arriving else problem.why, segment_size)
        inspector.save(set(names))
        return found

    def identity(self, name: str) -> str:
        path = self._stored(name)
        if path is None:
            return ""
        try:
            stat = path.stat()
        except OSError:  # removed meanwhile
            return ""
        return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"

    def history(self, timeline: int) -> str | None:
        path = self.path / f"{timeline:08X}.history"
        return path.read_text(errors="replace") if path.is_file() else None

    def recovery_env(self, pgdata: Path) -> dict[str, str]:
        return {}

    def fetch(self, name: str, directory: Path) -> Path | None:
        path = self._stored(name)
        return None if path is None else decompressed(path, directory / name)


@dataclass(frozen=True)
class PgBackRestArchive:
    """A stanza's WAL archive, through pgBackRest as the OS user that owns its repository. A
    stanza upgraded across PostgreSQL majors has an archive id per major (15-1, 16-2): all
    are read, as `archive-get` would."""

    runner: Runner
    stanza: str
    config_file: Path | None
    os_user: str

    @property
    def where(self) -> str:
        return f"pgBackRest stanza {self.stanza}"

    @property
    def managed_by(self) -> str | None:
        return "pgbackrest expire"

    @property
    def listable(self) -> bool:
        return True

    def has(self, name: str) -> bool:
        return name in self._listing()

    def _argv(self, *args: str) -> list[str]:
        argv = ["pgbackrest", f"--stanza={self.stanza}", "--log-level-console=error"]
        if self.config_file is not None:
            argv.insert(1, f"--config={self.config_file}")
        return [*argv, *args]

    def _run(self, *args: str) -> str:
        try:
            result = self.runner.run(self._argv(*args), user=self.os_user, mutates=False,
                                     timeout=TIMEOUT_S, cwd="/")
        except CommandError as e:
            raise ArchiveUnreadable(f"{self.where}: pgbackrest {args[0]} failed: {e}") from None
        return result.stdout

    def _archive_ids(self) -> list[str]:
        try:
            [stanza] = json.loads(self._run("info", "--output=json"))
            return [str(a["id"]) for a in stanza["archive"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ArchiveUnreadable(f"{self.where}: unexpected pgbackrest info output ({e})") \
                from None

    def _listing(self) -> dict[str, str]:
        """name -> its path in the repository, newest archive id last (and so winning)."""
        found: dict[str, str] = {}
        for archive_id in self._archive_ids():
            base = f"archive/{self.stanza}/{archive_id}"
            try:
                entries = json.loads(self._run("repo-ls", "--recurse", "--output=json", base))
            except ValueError as e:
                raise ArchiveUnreadable(f"{self.where}: unexpected repo-ls output ({e})") \
                    from None
            for path, entry in entries.items():
                if entry.get("type") != "file":
                    continue
                found[archived_name(path.rsplit("/", 1)[-1])] = f"{base}/{path}"
        return found

    def names(self) -> list[str]:
        return sorted(self._listing())

    def listing(self, segment_size: int) -> Archive:
        return Archive.from_names(self.names(), segment_size)

    def identity(self, name: str) -> str:
        # archive-push refuses a different file under a name already stored: the first stays.
        return "archived"

    def recovery_env(self, pgdata: Path) -> dict[str, str]:
        """archive-get refuses to run for a server whose data directory is not the stanza's
        pg1-path (the standby's or the primary's, in pgbackrest.conf); the environment
        overrides the file, and reaches whatever restore_command calls pgbackrest."""
        return {"PGBACKREST_PG1_PATH": str(pgdata)}

    def restore_command(self) -> str:
        config = f" --config={shlex.quote(str(self.config_file))}" if self.config_file else ""
        return f'pgbackrest{config} --stanza={shlex.quote(self.stanza)} archive-get %f "%p"'

    def history(self, timeline: int) -> str | None:
        path = self._listing().get(f"{timeline:08X}.history")
        return None if path is None else self._run("repo-get", path)

    def fetch(self, name: str, directory: Path) -> Path | None:
        """As stored (repo-get decrypts but does not decompress), then uncompressed here.
        Not archive-get: it wants a data directory with a pg_control to check against."""
        stored = self._listing().get(name)
        if stored is None:
            return None
        raw = directory / stored.rsplit("/", 1)[-1]
        try:
            _output_into(self.runner, self._argv("repo-get", stored), raw, self.os_user)
        except CommandError as e:
            raise ArchiveUnreadable(f"{self.where}: pgbackrest repo-get failed: {e}") from None
        return decompressed(raw, directory / name)


@dataclass(frozen=True)
class BarmanArchive:
    """A Barman server's WAL archive, through Barman's own commands run as the OS user:
    `sync-info` for its catalogue of archived files (xlog.db, as JSON), `get-wal --peek` for
    which of the catalogued segments are really there (a file removed behind Barman's back
    stays catalogued), `get-wal` for one file, uncompressed, on standard output. `command`
    is how Barman is reached: `barman`, `barman -c FILE`, `ssh barman@backup-host barman`."""

    runner: Runner
    server: str
    command: str
    os_user: str

    @property
    def where(self) -> str:
        return f"Barman server {self.server}"

    @property
    def managed_by(self) -> str | None:
        return "Barman's retention policy (barman cron)"

    @property
    def listable(self) -> bool:
        return True

    def _argv(self, *args: str) -> list[str]:
        return [*shlex.split(self.command), *args]

    def _run(self, *args: str, check: bool = True) -> Result:
        try:
            return self.runner.run(self._argv(*args), user=self.os_user, mutates=False,
                                   check=check, timeout=TIMEOUT_S, cwd="/")
        except CommandError as e:
            raise ArchiveUnreadable(f"{self.where}: barman {args[0]} failed: {e}") from None

    def _catalogue(self) -> list[str]:
        """What Barman has archived, by its own record. Not the rest of sync-info's output:
        it holds Barman's configuration, conninfo passwords included."""
        try:
            found = json.loads(self._run("sync-info", self.server).stdout)["wals"]
            return sorted(str(wal["name"]) for wal in found)
        except (ValueError, KeyError, TypeError) as e:
            raise ArchiveUnreadable(f"{self.where}: unexpected barman sync-info output "
                                    f"({type(e).__name__})") from None

    def _peek(self, name: str, count: int) -> list[str]:
        """The segments from NAME on that are there, in order, up to COUNT: get-wal --peek
        stops at the first one missing."""
        found = self._run("get-wal", "--peek", str(count), self.server, name).stdout
        return [word for word in found.split() if is_segment_name(word)]

    def has(self, name: str) -> bool:
        return self._peek(name, 1) == [name]

    def names(self) -> list[str]:
        """The catalogue, less the segments get-wal cannot find: one peek per run of
        consecutive catalogued segments, and one more after each one missing. Past
        BARMAN_PEEKS peeks (an archive with that many holes) the rest counts as missing."""
        catalogue = self._catalogue()
        segments = [n for n in catalogue if is_segment_name(n)]
        there = {n for n in catalogue if not is_segment_name(n)}
        i = 0
        for _ in range(BARMAN_PEEKS):
            if i >= len(segments):
                break
            peeked = self._peek(segments[i], len(segments) - i)
            run = 0
            while run < len(peeked) and peeked[run] == segments[i + run]:
                run += 1
            there.update(segments[i:i + run])
            i += max(run, 1)  # segments[i + run] is missing, or the catalogue skips ahead
        return sorted(there)

    def listing(self, segment_size: int) -> Archive:
        return Archive.from_names(self.names(), segment_size)

    def identity(self, name: str) -> str:
        # Barman refuses a different file under a name it has (it goes to its errors
        # directory): the first stays.
        return "archived"

    def _absent(self, result: Result) -> bool:
        """Whether a get-wal that failed did so because the file is not archived (exit 1 and
        "not found", as Barman says it), rather than for any other reason."""
        if result.returncode == 0:
            return False
        if result.returncode == 1 and "not found" in result.stderr:
            return True
        raise ArchiveUnreadable(f"{self.where}: barman get-wal failed: "
                                f"{result.stderr.strip() or f'exit {result.returncode}'}")

    def history(self, timeline: int) -> str | None:
        result = self._run("get-wal", self.server, f"{timeline:08X}.history", check=False)
        return None if self._absent(result) else result.stdout

    def recovery_env(self, pgdata: Path) -> dict[str, str]:
        return {}

    def restore_command(self) -> str:
        return f'{shlex.join(self._argv("get-wal", self.server))} %f > "%p"'

    def fetch(self, name: str, directory: Path) -> Path | None:
        dest = directory / name
        result = _output_into(self.runner, self._argv("get-wal", self.server, name), dest,
                              self.os_user, check=False)
        if result.returncode != 0:
            dest.unlink(missing_ok=True)
        return None if self._absent(result) else dest


def _output_into(runner: Runner, argv: Sequence[str], dest: Path, user: str, *,
                 check: bool = True) -> Result:
    """ARGV run as USER, its standard output written into DEST by USER's shell: the file is
    theirs, like the directory fetch() was given for it."""
    shell = f"{shlex.join(argv)} > {shlex.quote(str(dest))}"
    return runner.run(["sh", "-c", shell], user=user, mutates=False, check=check,
                      timeout=TIMEOUT_S, cwd="/")


def expand_restore_command(command: str, file_name: str, path: str, restart_file: str) -> str:
    """What PostgreSQL runs for one file: %f the file name, %p the destination, %r the
    restartpoint's segment, %% a percent sign (one left-to-right pass, as in the server)."""
    values = {"f": file_name, "p": path, "r": restart_file, "%": "%"}
    return re.sub(r"%([fpr%])", lambda m: values[m.group(1)], command)


@dataclass(frozen=True)
class RestoreCommandArchive:
    """An archive known only by `[archive] restore_command` (WAL-G, Barman, a script): files
    can be fetched one by one, as PostgreSQL fetches them, but not listed. Read only where
    reading in order up to the first file it does not return is enough (`zsnap wal find`)."""

    runner: Runner
    command: str
    os_user: str

    @property
    def where(self) -> str:
        return "the restore_command"

    @property
    def managed_by(self) -> str | None:
        return "the tool behind the restore_command"

    @property
    def listable(self) -> bool:
        return False

    def has(self, name: str) -> bool:
        """Fetched into a directory of its own, then let go."""
        return self._fetched_text(name) is not None

    def names(self) -> list[str]:
        raise ArchiveUnreadable("an archive known only by its restore_command cannot be listed")

    def listing(self, segment_size: int) -> Archive:
        return Archive.from_names(self.names(), segment_size)

    def identity(self, name: str) -> str:
        return "archived"  # nothing tells more: a file is taken as the tool behind it gives it

    def history(self, timeline: int) -> str | None:
        return self._fetched_text(f"{timeline:08X}.history")

    def _fetched_text(self, name: str) -> str | None:
        with tempfile.TemporaryDirectory(prefix="zsnap-fetch-") as tmp:
            directory = Path(tmp)
            user = os_user_entry(self.os_user)
            os.chown(directory, user.pw_uid, user.pw_gid)
            path = self.fetch(name, directory)
            return None if path is None else path.read_text(errors="replace")

    def recovery_env(self, pgdata: Path) -> dict[str, str]:
        return {}

    def fetch(self, name: str, directory: Path) -> Path | None:
        """The restore_command run as os_user with %p in DIRECTORY; None when it fails or
        returns nothing (not archived, or past the end of the archive)."""
        dest = directory / name
        argv = ["sh", "-c", expand_restore_command(self.command, name, str(dest), name)]
        result = self.runner.run(argv, user=self.os_user, mutates=False, check=False,
                                 timeout=TIMEOUT_S, cwd="/")
        if result.returncode != 0 or not dest.is_file():
            dest.unlink(missing_ok=True)
            return None
        return dest


def decompressed(path: Path, dest: Path) -> Path | None:
    """`path` uncompressed as `dest` (`path` itself when it is not compressed); None for a
    compression zsnap has no codec for (lz4, zstd)."""
    _, compression = split_suffix(path.name)
    if compression is None:
        return path
    if compression.opener is None:
        return None
    try:
        with compression.opener(path) as source, dest.open("wb") as out:
            shutil.copyfileobj(source, out)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        dest.unlink(missing_ok=True)
        raise ArchiveUnreadable(f"archived file {path.name} cannot be decompressed ({e})") \
            from None
    return dest


def read_archive(archive: WalArchive, segment_size: int) -> tuple[Archive, dict[int, str]]:
    """What `archive` holds and the text of its timeline history files."""
    found = archive.listing(segment_size)
    histories = {tli: text for tli in found.histories
                 if (text := archive.history(tli)) is not None}
    return found, histories


def restore_command(config: Config, runner: Runner) -> str:
    """What a flashback instance fetches WAL with: `[archive] restore_command`, else, with a
    pgBackRest stanza, its archive-get, with a Barman server, its get-wal."""
    if config.archive.restore_command:
        return config.archive.restore_command
    archive = configured(config, runner)
    if isinstance(archive, PgBackRestArchive | BarmanArchive):
        return archive.restore_command()
    return ""


def configured(config: Config, runner: Runner) -> WalArchive | None:
    """The archive the config names; None when it names none (recovery alone then finds a
    missing segment)."""
    a = config.archive
    if a.barman_server:
        return BarmanArchive(runner, a.barman_server, a.barman_command, config.standby.os_user)
    if a.pgbackrest_stanza:
        return PgBackRestArchive(runner, a.pgbackrest_stanza, a.pgbackrest_config,
                                 config.standby.os_user)
    if a.path is not None:
        return DirectoryArchive(a.path, config.state.dir / CHECKED)
    return None


def known(config: Config, runner: Runner) -> WalArchive | None:
    """The archive the config names, else the one its restore_command fetches from; None
    when it has neither."""
    archive = configured(config, runner)
    if archive is None and config.archive.restore_command:
        return RestoreCommandArchive(runner, config.archive.restore_command,
                                     config.standby.os_user)
    return archive


def readable(config: Config, runner: Runner) -> WalArchive:
    """The archive to read WAL from: the one the config names, else its restore_command."""
    archive = known(config, runner)
    if isinstance(archive, RestoreCommandArchive):
        return archive
    return required(config, runner)


def required(config: Config, runner: Runner) -> WalArchive:
    """The archive a WAL command works on, or one line saying how to name it."""
    archive = configured(config, runner)
    if archive is None:
        raise UsageError(not_listed(config))
    if isinstance(archive, DirectoryArchive) and not archive.path.is_dir():
        raise UsageError(f"[archive] path {archive.path} is not a directory")
    return archive


def not_listed(config: Config) -> str:
    """Why zsnap cannot look into the archive (`configured` found none), in one line."""
    named = "set [archive] path (a directory), pgbackrest_stanza or barman_server"
    if config.archive.restore_command:
        return ("the WAL archive is known only by its restore_command, which fetches a file "
                "but cannot list the archive: zsnap cannot check it for gaps or damaged files "
                "(before a clone, in `wal check`, in `check`) nor tell the recovery window; "
                f"clones and verification still fetch with it. For those checks, {named}")
    return f"no WAL archive to look into: {named}"
