"""SIGTERM (and Ctrl-C) as an interrupt for the commands that make something and remove it if
they do not finish (`clone`, `verify`, the durability worker): a service manager's stop,
`timeout` or `kill` cleans up as Ctrl-C does.

A KeyboardInterrupt raised while Python runs a callback whose exceptions it ignores is lost
("Exception ignored in ..."): the at-fork hooks that run as each external command starts are
such callbacks, and a SIGTERM that arrived as `pg_ctl promote` started let a clone finish
instead of stopping. So the signal is also recorded, and the loops that wait for a flashback
instance raise it again (`check`)."""

from __future__ import annotations

import signal
from types import FrameType

_pending = False


def stop_on_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def check() -> None:
    """The interrupt a signal meant, should it have been lost on its way."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt
