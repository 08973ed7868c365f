#!/usr/bin/env bash
# Build the lab (if it is not up), take three snapshot sets while rows are written into both
# pools, and list them. `zsnap lab down` removes it all again.
set -euo pipefail
cd "$(dirname "$0")/.."
Z=.venv/bin/zsnap
CONFIG=/var/tmp/zsnap-lab/zlab/zsnap.toml
[ -f /var/tmp/zsnap-lab/zlab/lab.json ] || $Z lab up
$Z lab load --seconds 12 &
load=$!
for _ in 1 2 3; do
    sleep 3
    $Z --config "$CONFIG" snapshot
done
wait "$load"
$Z --config "$CONFIG" list
echo "lab config: $CONFIG   (remove everything with: $Z lab down)"
