"""TCP ports on this machine."""

from __future__ import annotations

import socket


def port_free(port: int) -> bool:
    """True if nothing listens on `port` on loopback now (a check, not a reservation)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
