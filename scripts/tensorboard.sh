#!/usr/bin/env bash
# Start TensorBoard for one run, one sweep, or everything under outputs/.
#   scripts/tensorboard.sh [DIR] [PORT]   DIR defaults to outputs/tensorboard (every run, by
#   name), PORT to 6006
# It listens on 127.0.0.1 only; TENSORBOARD_HOST=0.0.0.0 exposes it to the network.
set -euo pipefail
logdir=${1:-outputs/tensorboard}
port=${2:-6006}
if [ ! -d "$logdir" ]; then
  echo "error: $logdir: no such directory; give a run or sweep directory under outputs/" >&2
  exit 2
fi
host=${TENSORBOARD_HOST:-127.0.0.1}
echo "TensorBoard for $logdir at http://$host:$port/"
exec "${PYTHON:-python}" -m tensorboard.main --logdir "$logdir" --host "$host" --port "$port"
