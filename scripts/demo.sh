#!/usr/bin/env bash
# Build the lab (if it is not up), check it with `zsnap doctor`, take three snapshot sets while
# rows are written into both pools, and list them. `zsnap lab down` removes it all again.
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
echo "lab config: $CONFIG"
echo "try:    $Z --config $CONFIG show <set id>"
echo "remove: $Z lab down --name $NAME"
