#!/usr/bin/env bash
# Build the lab (if it is not up), check it with `zsnap doctor`, take three snapshot sets while
# rows are written into both pools, list them, then the point of it all: a row deleted on the
# primary comes back in a flashback instance at a moment before the delete, which is then
# destroyed. `zsnap lab down` removes it all again.
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

echo "== a mistake on the primary, and a flashback to just before it"
PSQL=("$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['pg_bin'])" \
    "$ROOT/lab.json")/psql" -X -At -v ON_ERROR_STOP=1)
primary() { runuser -u postgres -- "${PSQL[@]}" "host=$ROOT/run port=$PORT dbname=postgres" -c "$1"; }
victim=$(primary "SELECT id FROM lab_a ORDER BY id DESC LIMIT 1")
echo "row $victim of lab_a: $(primary "SELECT left(payload, 24) || '...' FROM lab_a WHERE id = $victim")"
before=$(primary "SELECT clock_timestamp()")
sleep 1
primary "DELETE FROM lab_a WHERE id = $victim" >/dev/null
echo "deleted at $(primary "SELECT clock_timestamp()"); on the primary now: $(primary \
    "SELECT count(*) FROM lab_a WHERE id = $victim") rows with id $victim"
# A time target needs the WAL after it archived: the delete's segment, switched and waited for.
segment=$(primary "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 300); do [ -f "$ROOT/archive/$segment" ] && break; sleep 0.2; done
echo "\$ zsnap clone --at '$before' --name demo-flashback"
$Z --config "$CONFIG" clone --at "$before" --name demo-flashback
dsn=$($Z --config "$CONFIG" clones --json | .venv/bin/python -c \
    "import json,sys; c=[c for c in json.load(sys.stdin) if c['name']=='demo-flashback'][0]; \
print(f\"host={c['dir']}/run port={c['port']} dbname=postgres\")")
echo "in the flashback instance: $(runuser -u postgres -- "${PSQL[@]}" "$dsn" \
    -c "SELECT 'row ' || id || ' is back: ' || left(payload, 24) || '...' FROM lab_a WHERE id = $victim")"
$Z --config "$CONFIG" destroy demo-flashback
echo "lab config: $CONFIG"
echo "try:    $Z --config $CONFIG show <set id>"
echo "remove: $Z lab down --name $NAME"
