#!/usr/bin/env bash
# Installs dependencies, builds Mayfly and runs a local cluster in the
# foreground until Ctrl-C: the directory (127.0.0.1:9090, or a free port if
# 9090 is taken; MAYFLY_PORT to choose) and three memory servers on free
# ports. Once the cluster is up it runs the word-count example against it.
# The directory keeps its state durable in a data directory (MAYFLY_DATA_DIR
# to choose one, e.g. to restart on it; else a new one beside the logs).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build scripts/build.sh

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

# start NAME PORTFILE COMMAND...: runs a daemon, waits for its port file.
start() {
  local name=$1 portfile=$2
  shift 2
  "$@" --port-file "$portfile" 2>"$logdir/$name.log" &
  pids+=($!)
  for _ in $(seq 200); do
    [ -s "$portfile" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start; see $logdir/$name.log:" >&2
  tail -5 "$logdir/$name.log" >&2
  return 1
}

port=${MAYFLY_PORT:-9090}
datadir=${MAYFLY_DATA_DIR:-$logdir/directory-data}
if ! start directory "$logdir/directory.port" "$bin/directory/mayfly-directory" \
      --host 127.0.0.1 --port "$port" --data-dir "$datadir"; then
  [ -n "${MAYFLY_PORT:-}" ] && exit 1
  echo "port $port is taken; using a free port instead" >&2
  start directory "$logdir/directory.port" "$bin/directory/mayfly-directory" \
    --host 127.0.0.1 --port 0 --data-dir "$datadir"
fi
directory=127.0.0.1:$(cat "$logdir/directory.port")

for i in 1 2 3; do
  start "memserver$i" "$logdir/memserver$i.port" "$bin/memserver/mayfly-memserver" \
    --host 127.0.0.1 --port 0 --directory "$directory" --blocks 32 --block-size 16MiB
done
# Wait until the directory lists all three servers as up.
for _ in $(seq 100); do
  [ "$("$bin/client/mayfly" --directory "$directory" servers | grep -c ' up ')" -ge 3 ] && break
  sleep 0.05
done
"$bin/client/mayfly" --directory "$directory" servers

echo
echo "== Example: a serverless-style word count (4 mappers, 2 reducers) =="
"$bin/bench/mayfly-wordcount" --directory "$directory" --mappers 4 --reducers 2

echo
echo "== The same word count in Python (python/examples/wordcount.py, multiprocessing) =="
PYTHONPATH="$PWD/python" MAYFLY_LIBRARY="$bin/client/libmayfly.so" \
  python3 python/examples/wordcount.py --directory "$directory" --mappers 4 --reducers 2

cat <<TXT

Mayfly is running: directory on $directory, three memory servers (logs in $logdir).
The directory's state is durable in $datadir: kill -9 it and start it again with
--port ${directory##*:} --data-dir $datadir, and the tree and every namespace are still there.
Talk to it from another shell:

  export PATH=$bin/client:\$PATH MAYFLY_DIRECTORY=$directory
  mayfly servers
  mayfly create /job42/counts --kind kv --blocks 3
  mayfly put /job42/counts apples 3 && mayfly get /job42/counts apples
  mayfly create /job42/inbox --kind queue && mayfly push /job42/inbox hello && mayfly pop /job42/inbox
  mayfly create /job42/blob --kind file && mayfly write /job42/blob < /etc/hostname && mayfly cat /job42/blob
  mayfly tree / && mayfly leases

Namespaces expire when nobody renews them (mayfly renew PATH; libmayfly renews what it mounts).
Press Ctrl-C to stop the cluster.
TXT
wait "${pids[0]}"
