"""The configuration: one TOML file, validated with pydantic. Unknown keys and bad values are
refused with one line naming the key."""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from zsnap.errors import ConfigError

DEFAULT_PATH = Path("/etc/zsnap/zsnap.toml")
ENV_VAR = "ZSNAP_CONFIG"

_toml_path: ContextVar[Path | None] = ContextVar("zsnap_toml_path", default=None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StandbyConfig(Section):
    conninfo: str = "host=/run/postgresql port=5432 user=postgres dbname=postgres"
    os_user: str = "postgres"
    pg_bin: Path | None = None
    # A snapshot of a primary is crash-consistent only; refuse unless asked for.
    allow_primary: bool = False
    pause_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    checkpoint_timeout_s: Annotated[float, Field(gt=0)] = 600.0


class ArchiveConfig(Section):
    restore_command: str = ""
    # A local archive directory; enables WAL gap checks before recovery.
    path: Path | None = None


class ClonesConfig(Section):
    mount_root: Path = Path("/var/lib/zsnap/clones")
    port_range: tuple[int, int] = (55432, 55532)
    listen_addresses: str = "localhost"

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


class StateConfig(Section):
    dir: Path = Path("/var/lib/zsnap")


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="ZSNAP_",
        env_nested_delimiter="__",
    )

    standby: StandbyConfig = StandbyConfig()
    archive: ArchiveConfig = ArchiveConfig()
    clones: ClonesConfig = ClonesConfig()
    snapshot: SnapshotConfig = SnapshotConfig()
    state: StateConfig = StateConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def load(explicit: Path | None = None) -> Config:
    path = config_path(explicit)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give --config PATH or set {ENV_VAR})")
    try:
        with path.open("rb") as f:
            tomllib.load(f)  # parse once here for a clear syntax error
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: invalid TOML: {e}") from None
    token = _toml_path.set(path)
    try:
        return Config()
    except ValidationError as e:
        raise ConfigError(f"config {path}: {describe(e)}") from None
    finally:
        _toml_path.reset(token)


def describe(error: ValidationError) -> str:
    """One line for the first problem, naming the key as it is written in the file."""
    problems = error.errors()
    first = problems[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"unknown key {key}"
    else:
        text = f"{key}: {_message(first)}"
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more)"
    return text


def _message(problem: Any) -> str:
    msg = str(problem["msg"])
    return msg.removeprefix("Value error, ")
