#!/usr/bin/env bash
# Build the lab (if it is not up), check it with `zsnap doctor`, take three snapshot sets while
# rows are written into both pools, list them, then the point of it all: a DELETE with the
# wrong WHERE on the primary, found in the archived WAL (`zsnap wal find`), the rows as they
# were just before it (`zsnap query --before-xid`), and taken back (`zsnap dump`, restored into
# a database of its own). `zsnap lab down` removes it all again.
#   ZSNAP_LAB_PORT   the lab primary's port (the standby gets +1); default 54320
#   ZSNAP_LAB_NAME   the lab's name; default zlab
set -euo pipefail
cd "$(dirname "$0")/.."
Z=.venv/bin/zsnap
NAME=${ZSNAP_LAB_NAME:-zlab}
PORT=${ZSNAP_LAB_PORT:-54320}
ROOT=/var/tmp/zsnap-lab/$NAME
CONFIG=$ROOT/zsnap.toml
if [ ! -f "$ROOT/lab.json" ]; then
    echo "== building lab $NAME (primary port $PORT, standby port $((PORT + 1)))"
    $Z lab up --name "$NAME" --port "$PORT"
fi
echo "== zsnap doctor"
$Z --config "$CONFIG" doctor
echo "== three snapshot sets while rows are written into both pools"
$Z lab load --name "$NAME" --seconds 12 &
load=$!
trap 'kill "$load" 2>/dev/null || true' EXIT
for _ in 1 2 3; do
    sleep 3
    $Z --config "$CONFIG" snapshot
done
wait "$load"
trap - EXIT
echo "== the sets, read back from the snapshots' ZFS properties"
$Z --config "$CONFIG" list

echo "== a mistake on the primary: a DELETE with the wrong WHERE"
PSQL=("$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['pg_bin'])" \
    "$ROOT/lab.json")/psql" -X -At -v ON_ERROR_STOP=1)
primary() { runuser -u postgres -- "${PSQL[@]}" "host=$ROOT/run port=$PORT dbname=${2:-postgres}" -c "$1"; }
echo "lab_a has $(primary "SELECT count(*) FROM lab_a") rows"
started=$(primary "SELECT now()")
sleep 1
primary "DELETE FROM lab_a WHERE id % 10 = 0" >/dev/null
echo "\$ DELETE FROM lab_a WHERE id % 10 = 0     -- meant: one row"
echo "lab_a has $(primary "SELECT count(*) FROM lab_a") rows now"
# The WAL holding the mistake is read from the archive: switch segments and wait for it there.
segment=$(primary "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 300); do [ -f "$ROOT/archive/$segment" ] && break; sleep 0.2; done

echo
echo "== what deleted rows since $started? zsnap reads the archived WAL"
echo "\$ zsnap wal find --table lab_a --kind delete --since '$started'"
$Z --config "$CONFIG" wal find --table lab_a --kind delete --since "$started"
xid=$($Z --config "$CONFIG" wal find --table lab_a --kind delete --since "$started" --json \
    | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['transactions'][-1]['xid'])")
echo "the primary agrees: transaction $xid committed at $(primary \
    "SELECT pg_xact_commit_timestamp('$xid'::xid) AT TIME ZONE 'UTC'") UTC"

echo
echo "== the rows as they were just before transaction $xid"
echo "\$ zsnap query --before-xid $xid \"SELECT count(*) ... FROM lab_a WHERE id % 10 = 0\""
$Z --config "$CONFIG" query --before-xid "$xid" \
    "SELECT count(*) AS deleted_rows, min(id) AS first_id, max(id) AS last_id FROM lab_a WHERE id % 10 = 0"

echo
echo "== and taken back: a dump of lab_a as it was, restored into a database of its own"
dump=$ROOT/lab_a-before-$xid.sql
echo "\$ zsnap dump --before-xid $xid --table lab_a -f $dump"
$Z --config "$CONFIG" dump --before-xid "$xid" --table lab_a -f "$dump"
primary "DROP DATABASE IF EXISTS rescue" >/dev/null 2>&1
primary "CREATE DATABASE rescue" >/dev/null
runuser -u postgres -- "${PSQL[@]}" -q "host=$ROOT/run port=$PORT dbname=rescue" <"$dump" >/dev/null
echo "database rescue (on the lab's primary, written by this demo): $(primary \
    "SELECT count(*) FROM lab_a WHERE id % 10 = 0" rescue) deleted rows back, ready to copy"
echo "no instance is left running: $($Z --config "$CONFIG" clones --json | .venv/bin/python -c \
    "import json,sys; print(len(json.load(sys.stdin)))") flashback instance(s)"
echo
echo "lab config: $CONFIG"
echo "try:    $Z --config $CONFIG clone --at '$started' --ttl 1h"
echo "remove: $Z lab down --name $NAME"
