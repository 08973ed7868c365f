"""The amcheck functions `zsnap verify` calls, and what a role that is not a superuser needs to
call them (docs/install.md): one text for `zsnap doctor`'s hint and `zsnap verify`'s note."""

from __future__ import annotations

FUNCTIONS = ("bt_index_check(regclass, boolean), "
             "verify_heapam(regclass, boolean, boolean, text, bigint, bigint)")


def grant(user: str) -> str:
    return (f"on the primary, in every database: CREATE EXTENSION amcheck; GRANT EXECUTE ON "
            f"FUNCTION {FUNCTIONS} TO {user} (or set [verify] amcheck = false)")
