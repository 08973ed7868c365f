"""The configuration: one TOML file, validated with pydantic. Unknown keys and bad values are
refused with one line naming the key."""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from zsnap import CONFIG_ENV_VAR, DEFAULT_CONFIG
from zsnap.cron import check as check_cron
from zsnap.cron import is_off
from zsnap.duration import parse_duration
from zsnap.errors import ConfigError, UsageError

ENV_PREFIX = "ZSNAP_"



def _to_duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _to_optional_duration(value: object) -> object:
    """A threshold that "off" switches off."""
    if isinstance(value, str) and is_off(value):
        return None
    return _to_duration(value)


def _no_bool(value: object) -> object:
    """`hourly = true` is a mistake, not 1 (pydantic would take it as one)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _not_empty(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty (an empty path would mean the current directory)")
    return value


def _absolute(value: Path | None) -> Path | None:
    # zsnap runs from cron, systemd and Patroni, each in its own working directory.
    if value is not None and not value.is_absolute():
        raise ValueError(f"must be an absolute path, got {str(value)!r}")
    return value


# Written as "2d", "12h", "1d12h", "30m", "90s", "1w".
Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
Threshold = Annotated[timedelta | None, BeforeValidator(_to_optional_duration)]
OptionalDuration = Threshold
Int = Annotated[int, BeforeValidator(_no_bool)]
Number = Annotated[float, BeforeValidator(_no_bool)]
Percent = Annotated[Number, Field(ge=0, le=100)]
FilePath = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(_absolute)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StandbyConfig(Section):
    conninfo: str = "host=/run/postgresql port=5432 user=postgres dbname=postgres"
    os_user: str = "postgres"
    pg_bin: FilePath | None = None
    # A primary is snapshotted in backup mode, which acts on production; refuse unless asked.
    allow_primary: bool = False
    pause_timeout_s: Annotated[Number, Field(gt=0)] = 30.0
    checkpoint_timeout_s: Annotated[Number, Field(gt=0)] = 600.0


class ArchiveConfig(Section):
    restore_command: str = ""
    # Where zsnap looks for gaps before recovery, in `wal check` and `check`: a directory of
    # WAL files, a pgBackRest stanza or a Barman server (each read with its tool's own
    # commands, as os_user).
    path: FilePath | None = None
    pgbackrest_stanza: str = ""
    pgbackrest_config: FilePath | None = None
    barman_server: str = ""
    # How Barman is reached: `barman`, `barman -c FILE`, `ssh barman@backup-host barman`.
    barman_command: str = "barman"

    @field_validator("barman_command")
    @classmethod
    def _a_command(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as e:
            raise ValueError(f"not a command line: {e}") from None
        if not words:
            raise ValueError("must name the barman command")
        return value

    @model_validator(mode="after")
    def _one_archive(self) -> ArchiveConfig:
        named = [k for k, v in (("path", self.path), ("pgbackrest_stanza", self.pgbackrest_stanza),
                                ("barman_server", self.barman_server)) if v]
        if len(named) > 1:
            raise ValueError(f"set {' or '.join(named)}, not both: zsnap reads one archive")
        return self


class ClonesConfig(Section):
    mount_root: FilePath = Path("/var/lib/zsnap/clones")
    port_range: tuple[Int, Int] = (55432, 55532)
    listen_addresses: str = "localhost"
    # PostgreSQL settings for every clone, written after zsnap's own (replay tuning, say
    # maintenance_io_concurrency); never those that keep a clone apart from production.
    settings: dict[str, str] = {}
    # How long a clone made without --ttl lives before `zsnap destroy --expired` (and the
    # daemon) remove it; unset: until destroyed.
    ttl: OptionalDuration = None

    @field_validator("ttl")
    @classmethod
    def _ttl_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("settings")
    @classmethod
    def _not_isolation(cls, value: dict[str, str]) -> dict[str, str]:
        from zsnap.clone.recovery import PROTECTED

        taken = sorted(k for k in value if k.lower() in PROTECTED)
        if taken:
            raise ValueError(f"zsnap sets {', '.join(taken)} itself in every clone")
        return value

    @field_validator("port_range")
    @classmethod
    def _ports_ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low <= high <= 65535:
            raise ValueError("must be [low, high] with 1024 <= low <= high <= 65535")
        return value


class SnapshotConfig(Section):
    # Recorded on every set, so that several clusters can share one host and its pools.
    cluster: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "main"
    # A conninfo of the primary, to CHECKPOINT it before each set so that the set's redo
    # point, where every clone of it starts replaying, is recent (zsnap/pg/fresh_redo.py).
    primary_checkpoint: str = ""
    primary_checkpoint_wait_s: Annotated[Number, Field(gt=0)] = 120.0


# A dataset name as zfs spells it: the pool, then components; nothing a shell would expand, as
# the name may travel through [replicate] command (ssh joins its arguments into a command line).
_DATASET = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*$"


def _no_dot_components(value: str) -> str:
    """`pool/../x` would make a dataset named `pool/..`: no component is . or .."""
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r}: a dataset name has no . or .. component")
    return value


DatasetName = Annotated[str, Field(pattern=_DATASET + "|^$"), AfterValidator(_no_dot_components)]


class ReplicateConfig(Section):
    """Where `zsnap replicate` sends complete sets (zsnap/replicate.py)."""

    # Each member DATASET of a set is received as TARGET/DATASET; empty: no replication.
    target: DatasetName = ""
    # An argv prefix that runs a command on the receiving host, e.g. ["ssh", "-o",
    # "BatchMode=yes", "dr1"]; empty: the target is on this host.
    command: list[str] = []
    # For one member's send, the longest it may take (a first full send of a large database).
    send_timeout_s: Annotated[Number, Field(gt=0)] = 86400.0


class CatalogConfig(Section):
    """Where this host's sets are: empty for a standby's own; on a receiving host, the
    [replicate] target the sets arrive under (no standby is needed there)."""

    root: DatasetName = ""


class StateConfig(Section):
    dir: FilePath = Path("/var/lib/zsnap")


class ScheduleConfig(Section):
    """When `zsnap daemon` runs each job: cron strings (5 fields, or 6 with seconds first;
    day of week 0 or 7 is Sunday as in cron), or "off"."""

    # A set every hour: a clone replays at most an hour of WAL after its set (docs/operations.md
    # has what a set costs); pruned every hour too, so the hourly sets roll over.
    snapshot: str = "0 * * * *"
    prune: str = "30 * * * *"
    verify: str = "off"
    # `zsnap replicate`: every set to [replicate] target soon after it is taken.
    replicate: str = "off"
    # `zsnap destroy --expired`: clones whose --ttl / [clones] ttl has passed, and the
    # instances `zsnap query`/`dump`/`wal find` make, left by a zsnap that was killed.
    expire: str = "*/10 * * * *"
    # A run that could not start on time (daemon busy or down) still runs if it is late by
    # less than this; several missed runs of one job coalesce into one.
    misfire_grace: Duration = timedelta(hours=6)
    # IANA zone for the cron strings; the system's local zone when unset.
    timezone: str | None = None
    # How often the daemon rewrites its heartbeat file (read by `zsnap check`).
    heartbeat_interval: Duration = timedelta(seconds=30)

    @field_validator("snapshot", "prune", "verify", "replicate", "expire")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_off(value):
            check_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("misfire_grace", "heartbeat_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value


class RetentionConfig(Section):
    """Which snapshot sets `zsnap prune` keeps: the newest set of each of the last N hours,
    days, ISO weeks and months that have one, every set younger than keep_within, and never
    fewer than min_sets complete sets."""

    # sanoid's way: the last 36 hours at most an hour apart, then a month of dailies, two
    # months of weeklies, half a year of monthlies (docs/operations.md: the space it costs).
    hourly: Annotated[Int, Field(ge=0)] = 36
    daily: Annotated[Int, Field(ge=0)] = 30
    weekly: Annotated[Int, Field(ge=0)] = 8
    monthly: Annotated[Int, Field(ge=0)] = 6
    keep_within: Duration = timedelta(0)
    min_sets: Annotated[Int, Field(ge=1)] = 1
    # After pruning sets, also remove archived WAL that no remaining set needs
    # (needs [archive] path; only when zsnap alone owns that archive).
    prune_wal: bool = False


class CheckConfig(Section):
    """Thresholds of `zsnap check` (warning, critical); "off" skips one."""

    # Sets are hourly by default: warn after three missed, critical after half a day.
    set_age_warning: Threshold = timedelta(hours=3)
    set_age_critical: Threshold = timedelta(hours=12)
    verify_age_warning: Threshold = timedelta(days=8)
    verify_age_critical: Threshold = timedelta(days=15)
    replay_lag_warning: Threshold = timedelta(minutes=5)
    replay_lag_critical: Threshold = timedelta(minutes=30)
    heartbeat_age_critical: Threshold = timedelta(minutes=5)
    # Age of the newest set on [replicate] target (checked where a target is configured).
    replication_lag_warning: Threshold = timedelta(hours=3)
    replication_lag_critical: Threshold = timedelta(hours=12)
    # A flashback instance pins its set and the space its writes take: warn past this age.
    clone_age_warning: Threshold = timedelta(days=7)
    pool_free_warning_pct: Percent = 20.0
    pool_free_critical_pct: Percent = 10.0
    # Write the results for node_exporter's textfile collector on every `zsnap check`.
    prometheus_textfile: FilePath | None = None


class VerifyConfig(Section):
    """What `zsnap verify` checks in a set's throwaway instance, besides recovery, the system
    identifier and (when data checksums are on) pg_checksums."""

    # bt_index_check(heapallindexed) on every btree index, verify_heapam on every table.
    amcheck: bool = True
    # Queries run in the instance (in the database of [standby] conninfo); each must return
    # true in its first column of its first row. Named sql[0], sql[1]... in the results.
    sql: list[str] = []


class Config(BaseModel):
    """The file, with `ZSNAP_<SECTION>__<KEY>` variables over it (zsnap.config.load)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    standby: StandbyConfig = StandbyConfig()
    archive: ArchiveConfig = ArchiveConfig()
    clones: ClonesConfig = ClonesConfig()
    snapshot: SnapshotConfig = SnapshotConfig()
    state: StateConfig = StateConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    retention: RetentionConfig = RetentionConfig()
    check: CheckConfig = CheckConfig()
    verify: VerifyConfig = VerifyConfig()
    replicate: ReplicateConfig = ReplicateConfig()
    catalog: CatalogConfig = CatalogConfig()

    @property
    def receiving(self) -> bool:
        """A host that holds sets received from a standby elsewhere, and no standby."""
        return bool(self.catalog.root)

    def require_standby(self, doing: str) -> None:
        if self.receiving:
            raise UsageError(f"this host receives sets ([catalog] root = {self.catalog.root}) "
                             f"and has no standby: {doing} runs on the standby's host")

    @model_validator(mode="after")
    def _not_both(self) -> Config:
        if self.catalog.root and self.replicate.target:
            raise ValueError("catalog.root: a receiving host does not replicate further; "
                             "set [catalog] root or [replicate] target, not both")
        return self


# Each section's model, by its name in the file and in ZSNAP_<SECTION>__<KEY>.
_SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation for name, field in Config.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV_VAR)
    return Path(env) if env else Path(DEFAULT_CONFIG)


def load(explicit: Path | None = None) -> Config:
    path = config_path(explicit)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give --config PATH or set "
                          f"{CONFIG_ENV_VAR})")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"config {path}: {e.strerror}") from None
    merged = _with_environment(data)
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        loc = [str(part) for part in e.errors()[0]["loc"]]
        names = _environment(*loc) if loc else []
        where = f"environment: {names[0]}" if names else f"config {path}"
        raise ConfigError(f"{where}: {describe(e)}") from None


def _with_environment(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (the file) with the ZSNAP_ variables over it: `ZSNAP_<SECTION>__<KEY>` one key
    (a list or table written as JSON), `ZSNAP_<SECTION>` a whole section as a JSON table. A
    typo would be ignored silently (a section misspelt, or one underscore where two separate
    it from its key): refused, naming the variable. Variables that name no section at all
    (ZSNAP_TEST_PG_BIN, say) are left alone."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name, rest, value in _variables():
        section, sep, key = rest.partition("__")
        model = _SECTIONS.get(section)
        if model is None:
            head, _, tail = section.partition("_")
            if sep:
                raise ConfigError(f"environment: {name}: no section [{section}] (sections: "
                                  f"{', '.join(sorted(_SECTIONS))})")
            if head in _SECTIONS and tail:
                raise ConfigError(f"environment: {name}: a key is separated from its section "
                                  f"by two underscores: {ENV_PREFIX}{head.upper()}__"
                                  f"{tail.upper()}")
            continue
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # the file's own mistake, which validation names
        if not sep:
            table = _json(name, value)
            if not isinstance(table, dict):
                raise ConfigError(f"environment: {name}: not a JSON table of [{section}] keys")
            target.update(table)
            continue
        key, deeper, sub = key.partition("__")
        field = model.model_fields.get(key)
        if deeper:
            nested = target.setdefault(key, {})
            if isinstance(nested, dict):
                nested[sub] = value
            continue
        structured = field is not None and get_origin(field.annotation) in (list, dict, tuple)
        target[key] = _json(name, value) if structured else value
    return merged


def _variables() -> list[tuple[str, str, str]]:
    """The ZSNAP_ variables but ZSNAP_CONFIG, sorted: each name, the rest of it after ZSNAP_
    in lower case (names are not case-sensitive), and its value."""
    return sorted((name, name.upper().removeprefix(ENV_PREFIX).lower(), value)
                  for name, value in os.environ.items()
                  if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_ENV_VAR)


def _json(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ConfigError(f"environment: {name}: not valid JSON (lists and tables are written "
                          "as JSON, e.g. ZSNAP_CLONES__PORT_RANGE='[55432, 55532]')") from None


def _environment(*loc: str) -> list[str]:
    """The ZSNAP_ variables that set the key at `loc` (or a part of it, or a whole section)."""
    wanted = "__".join(loc).lower()
    return [name for name, rest, _ in _variables()
            if rest and (wanted.startswith(rest) or rest.startswith(wanted + "__"))]


def describe(error: ValidationError) -> str:
    """One line for the first problem, naming the key as it is written in the file."""
    problems = error.errors()
    first = problems[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"unknown key {key}"
    elif not key:  # a rule across sections names its keys itself
        text = _message(first)
    else:
        text = f"{key}: {_message(first)}"
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more)"
    return text


def _message(problem: Any) -> str:
    msg = str(problem["msg"])
    return msg.removeprefix("Value error, ")
