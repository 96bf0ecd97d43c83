#!/usr/bin/env bash
# Installs dependencies, builds Mayfly and starts a local highly available
# cluster in the background (docs/ha.md):
#   - a one-member etcd on 127.0.0.1:12379 (peer 12380; MAYFLY_ETCD_PORT to
#     choose the client port, the peer port is the next one), its data in the
#     state directory;
#   - three directories on it (--etcd, --cluster local) on 127.0.0.1:9090,
#     9091 and 9092 (MAYFLY_PORT to move the first; the others follow), one
#     leader and two hot standbys;
#   - three memory servers on free ports, given all three directories
#     (--directory 127.0.0.1:9090,127.0.0.1:9091,127.0.0.1:9092).
# Then it runs the word-count example (C and Python) with MAYFLY_DIRECTORY set
# to the list, prints `mayfly cluster`, and leaves the cluster running.
#
#   scripts/run-ha.sh [start]   build and start (refused while one runs)
#   scripts/run-ha.sh status    the processes and `mayfly cluster`
#   scripts/run-ha.sh restart NAME   start one daemon that died (was killed) again
#                               with its command line: a directory comes back
#                               as a standby (NAME: directory0, memserver2, ...)
#   scripts/run-ha.sh stop      stop everything it started (by the PIDs it wrote)
#
# The state directory (MAYFLY_HA_DIR, default ${TMPDIR:-/tmp}/mayfly-ha-$USER)
# holds the logs, etcd's data, each daemon's command line (cmd.NAME) and the
# PIDs (pids: "NAME PID" lines). scripts/run.sh, the single-directory cluster,
# is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/build
state=${MAYFLY_HA_DIR:-${TMPDIR:-/tmp}/mayfly-ha-${USER:-$(id -un)}}
pidfile=$state/pids
base=${MAYFLY_PORT:-9090}
etcd_port=${MAYFLY_ETCD_PORT:-12379}
etcd_peer=$((etcd_port + 1))
dirs="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"

# The PIDs of the pid file that still run, one "NAME PID" a line.
alive() {
  [ -f "$pidfile" ] || return 0
  while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then echo "$name $pid"; fi
  done <"$pidfile"
}

# Stops what the pid file names: memory servers, then directories, then etcd,
# each with SIGTERM and up to 10 s before SIGKILL.
stop_all() {
  [ -f "$pidfile" ] || { echo "Nothing to stop ($pidfile does not exist)."; return 0; }
  for kind in memserver directory etcd; do
    local pids=()
    while read -r name pid; do
      case $name in "$kind"*) kill -TERM "$pid" 2>/dev/null && pids+=("$pid") ;; esac
    done <"$pidfile"
    for pid in "${pids[@]}"; do
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "PID $pid did not stop on SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  done
  rm -f "$pidfile"
  echo "Stopped. Logs and etcd's data are in $state (the next start begins a new cluster)."
}

status() {
  if [ -z "$(alive)" ]; then
    echo "No cluster of scripts/run-ha.sh is running (state: $state)."
    return 0
  fi
  echo "Running (state: $state):"
  alive | while read -r name pid; do printf '  %-12s PID %s\n' "$name" "$pid"; done
  echo
  "$bin/client/mayfly" --directory "$dirs" cluster || true
}

# Starts NAME again with the command line it was first started with, and
# puts its new PID in the pid file.
restart_one() {
  local name=$1
  [ -f "$state/cmd.$name" ] || { echo "no daemon $name in $state" >&2; return 1; }
  if alive | grep -q "^$name "; then
    echo "$name still runs; kill it first" >&2
    return 1
  fi
  local cmd
  cmd=$(cat "$state/cmd.$name")
  # exec: the PID of the background job is the daemon's own.
  eval "exec setsid $cmd" </dev/null >>"$state/$name.log" 2>&1 &
  local pid=$!
  touch "$pidfile"
  awk -v n="$name" '$1 != n' "$pidfile" >"$pidfile.new"
  echo "$name $pid" >>"$pidfile.new"
  mv "$pidfile.new" "$pidfile"
  echo "$name started again, PID $pid"
}

case "${1:-start}" in
  start) ;;
  stop) stop_all; exit 0 ;;
  status) status; exit 0 ;;
  restart) [ $# -eq 2 ] || { echo "usage: $0 restart NAME" >&2; exit 2; }; restart_one "$2"; exit ;;
  *) echo "usage: $0 [start|status|restart NAME|stop]" >&2; exit 2 ;;
esac

if [ -n "$(alive)" ]; then
  echo "A cluster of scripts/run-ha.sh is already running (PIDs in $pidfile):" >&2
  alive >&2
  echo "Stop it first: $0 stop" >&2
  exit 1
fi

BUILD_DIR=build scripts/build.sh
etcd_bin=$(command -v etcd || true)
if [ -z "$etcd_bin" ]; then
  echo "etcd is not installed (Debian: apt-get install etcd-server etcd-client)" >&2
  exit 1
fi

# A port some process already listens on (bash's /dev/tcp connects or not).
taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$etcd_port" "$etcd_peer" "$base" "$((base + 1))" "$((base + 2))"; do
  if taken "$p"; then
    echo "port $p on 127.0.0.1 is taken; choose others with MAYFLY_PORT (directories)" \
      "or MAYFLY_ETCD_PORT (etcd)" >&2
    exit 1
  fi
done

mkdir -p "$state"
# A start is a new cluster: the memory servers start empty, so a tree kept in
# etcd from an earlier run would only name blocks that are gone (and servers
# that no longer answer).
rm -rf "$state/etcd-data"
: >"$pidfile"
started_ok=0
# A start that fails half-way stops what it started.
cleanup() { [ "$started_ok" = 1 ] || { echo "Start failed; stopping what was started." >&2; stop_all; }; }
trap cleanup EXIT

# launch NAME COMMAND...: runs a daemon in the background, detached from this
# shell (its own session: it survives the script and the terminal), its
# output in NAME.log, its command line in cmd.NAME and its PID in the pid file.
launch() {
  local name=$1
  shift
  printf '%q ' "$@" >"$state/cmd.$name"
  echo >>"$state/cmd.$name"
  setsid "$@" </dev/null >"$state/$name.log" 2>&1 &
  echo "$name $!" >>"$pidfile"
}

# wait_for NAME TRIES COMMAND...: retries COMMAND every 0.1 s while NAME runs.
wait_for() {
  local name=$1 tries=$2
  shift 2
  local pid
  pid=$(awk -v n="$name" '$1 == n { print $2 }' "$pidfile")
  for _ in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not come up; see $state/$name.log:" >&2
  tail -5 "$state/$name.log" >&2
  return 1
}

etcd_url=http://127.0.0.1:$etcd_port
launch etcd "$etcd_bin" --name mayfly-local --data-dir "$state/etcd-data" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "mayfly-local=http://127.0.0.1:$etcd_peer" --initial-cluster-state new
wait_for etcd 300 etcdctl --endpoints "$etcd_url" endpoint health

for i in 0 1 2; do
  port=$((base + i))
  launch "directory$i" "$bin/directory/mayfly-directory" --host 127.0.0.1 --port "$port" \
    --etcd "$etcd_url" --cluster local --leader-ttl 3s
done
for i in 0 1 2; do wait_for "directory$i" 300 taken "$((base + i))"; done
# A leader serves once `mayfly stats` succeeds: standbys answer it with "not
# the leader", which the CLI follows, and nobody answers it before an election.
wait_for directory0 300 "$bin/client/mayfly" --directory "$dirs" stats

for i in 1 2 3; do
  launch "memserver$i" "$bin/memserver/mayfly-memserver" --host 127.0.0.1 --port 0 \
    --directory "$dirs" --blocks 32 --block-size 16MiB
done
# Wait until the leader lists all three memory servers as up.
up=0
for _ in $(seq 100); do
  up=$("$bin/client/mayfly" --directory "$dirs" servers 2>/dev/null | grep -c ' up ' || true)
  [ "$up" -ge 3 ] && break
  sleep 0.1
done
if [ "$up" -lt 3 ]; then
  echo "only $up of 3 memory servers registered; see $state/memserver*.log" >&2
  exit 1
fi
started_ok=1
"$bin/client/mayfly" --directory "$dirs" servers

export MAYFLY_DIRECTORY=$dirs
echo
echo "== Example: a serverless-style word count (4 mappers, 2 reducers) =="
"$bin/bench/mayfly-wordcount" --mappers 4 --reducers 2

echo
echo "== The same word count in Python (python/examples/wordcount.py, multiprocessing) =="
PYTHONPATH="$root/python" MAYFLY_LIBRARY="$bin/client/libmayfly.so" \
  python3 python/examples/wordcount.py --mappers 4 --reducers 2

echo
echo "== mayfly cluster =="
"$bin/client/mayfly" cluster

cat <<TXT

Mayfly HA is running in the background: etcd on $etcd_url, three directories
($dirs: one leader, two standbys), three memory servers. Logs, etcd's data,
command lines and PIDs are in $state.
Talk to it from another shell:

  export PATH=$bin/client:\$PATH MAYFLY_DIRECTORY=$dirs
  mayfly cluster
  mayfly create /job42/counts --kind kv --blocks 3
  mayfly put /job42/counts apples 3 && mayfly get /job42/counts apples

Fail over: kill -9 the leader (its PID is on the directoryN line of $pidfile,
N = its port - $base), and within the leader TTL (3 s) another directory leads:

  mayfly get /job42/counts apples && mayfly cluster

Start the killed one again (it comes back as a standby, with the command line
it was first started with):

  $0 restart directoryN

Stop everything: $0 stop      (status: $0 status)
TXT
