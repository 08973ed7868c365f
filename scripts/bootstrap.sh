#!/usr/bin/env bash
# Everything zsnap's lab, tests and benchmarks need on a fresh Debian 12 machine, as root:
# zfs-fuse (when the kernel has no ZFS), PostgreSQL 15 with contrib, pgBackRest and Barman,
# Patroni with etcd and sudo (the Patroni test), sshd (a second host for replication),
# and a virtualenv in .venv with zsnap and its development tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v zpool >/dev/null || need_apt+=(zfs-fuse)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15)
command -v pgbackrest >/dev/null || need_apt+=(pgbackrest)
# A Barman server beside the lab (tests/integration/test_barman_archive.py).
command -v barman >/dev/null || need_apt+=(barman)
command -v runuser >/dev/null || need_apt+=(util-linux)
# A real Patroni replica rebuilt by zsnap reinit (tests/integration/test_patroni.py).
command -v patroni >/dev/null || need_apt+=(patroni)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v sudo >/dev/null || need_apt+=(sudo)
# A second host for `zsnap replicate` over ssh, in a network namespace (test_replicate.py).
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ip >/dev/null || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postgresql package starts a default cluster; zsnap's lab makes its own.
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[dev]'
