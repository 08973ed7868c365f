"""A signal's KeyboardInterrupt lost in a callback whose exceptions Python ignores (an at-fork
hook) is raised again by the next wait."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from zsnap import interrupt


def test_a_lost_interrupt_is_raised_again_once() -> None:
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        interrupt.stop_on_signals()
        # Swallowed, as Python does where it ignores exceptions (an at-fork hook).
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as this returns
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        interrupt.check()  # once
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
