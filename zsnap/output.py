"""What commands print: JSON for machines (`--json`), rich tables and lines for people. rich
(a fiftieth of a second to load) is loaded when something is printed for people, not by
importing this module: `--json`, `--help` and `--version` never need it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# Piped output (a log, a mail from cron) has no terminal width; rich would assume 80 columns and
# cut identifiers. Use $COLUMNS when set, else room enough for every table zsnap prints.
_COLUMNS = os.environ.get("COLUMNS")
# A $COLUMNS that is no usable width (a typo, 0) must not break every command: rich would take
# 0 as the width and print nothing.
_USABLE = _COLUMNS is not None and _COLUMNS.isdigit() and 20 <= int(_COLUMNS) <= 10000
_FALLBACK = None if _COLUMNS is None or _USABLE else 200
_WIDTH = _FALLBACK if sys.stdout.isatty() else (int(_COLUMNS) if _USABLE and _COLUMNS else 200)


class LazyConsole:
    """A rich Console made on first use; `rich` is the Console itself (for a progress bar)."""

    def __init__(self, **settings: Any):
        self._settings = settings
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._settings)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        self.rich.print(*objects, **options)

    @property
    def is_terminal(self) -> bool:
        return self.rich.is_terminal


# No emoji codes: a name with ":fire:" in it is printed as it is (and rich's table of codes is
# not loaded).
console = LazyConsole(width=_WIDTH, emoji=False)
err_console = LazyConsole(stderr=True, width=_FALLBACK, emoji=False)


def escape(text: str) -> str:
    """Text as rich prints it literally ("[state] dir" stays as written)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _default(value: object) -> object:
    model_dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(model_dump):
        return model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, indent=2)


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(to_json(data) + "\n")
    else:
        human()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for i, c in enumerate(columns):
        # The first column names the row (a set id, a clone, a check): never wrap or cut it.
        t.add_column(c, no_wrap=i == 0)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


def fmt_time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(sep=" ", timespec="seconds")


def error_line(message: str) -> None:
    # The message is text, not markup: "[state] dir" or "[low, high]" must print as written.
    err_console.print(f"[bold red]zsnap:[/] {escape(message)}", highlight=False, soft_wrap=True)
