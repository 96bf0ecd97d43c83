#!/usr/bin/env bash
# Installs dependencies, builds Mayfly and runs a local cluster in the
# foreground until Ctrl-C: the directory on 127.0.0.1:${MAYFLY_PORT:-9090}.
# (Memory servers join the local cluster with the data plane.)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build scripts/build.sh

port=${MAYFLY_PORT:-9090}
bin=$PWD/build
logdir=$(mktemp -d /tmp/mayfly-cluster-XXXXXX)
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "Stopping the cluster..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "Stopped. Logs are in $logdir"
}
trap stop INT TERM EXIT

"$bin/directory/mayfly-directory" --host 127.0.0.1 --port "$port" \
  --port-file "$logdir/directory.port" 2> >(tee "$logdir/directory.log" >&2) &
pids+=($!)
for _ in $(seq 100); do [ -s "$logdir/directory.port" ] && break; sleep 0.05; done
if [ ! -s "$logdir/directory.port" ]; then
  echo "mayfly-directory did not start; see $logdir/directory.log" >&2
  exit 1
fi

cat <<TXT

Mayfly is running: directory on 127.0.0.1:$port (logs in $logdir).
Talk to it from another shell:

  export PATH=$bin/client:\$PATH MAYFLY_DIRECTORY=127.0.0.1:$port
  mayfly mkdir -p /job42/stage1
  mayfly tree /
  mayfly leases
  mayfly servers

Press Ctrl-C to stop the cluster.
TXT
wait "${pids[0]}"
