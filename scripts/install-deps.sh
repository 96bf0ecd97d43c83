#!/usr/bin/env bash
# Installs the Debian packages Mayfly needs to build, test and run.
# Idempotent and non-interactive: packages already present are skipped, and
# apt-get runs only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  thrift-compiler libthrift-c-glib-dev
  libuv1-dev libglib2.0-dev libjson-glib-dev
  libjemalloc-dev libcunit1-dev libsodium-dev
  python3 python3-pytest python3-redis redis-server iproute2
  etcd-server etcd-client libcurl4-openssl-dev
)
# libsodium-dev signs and checks capabilities and the cluster handshake
# (common/auth.c);
# python3-pytest runs the Python binding's tests (python/tests);
# python3-redis (redis-py) is the anchor client of bench/python_bench.py, which
# measures the Python binding against it on the same redis-server;
# redis-server is the anchor of the benchmarks (and their smoke tests);
# iproute2 (ip, tc) builds the network namespace of test_client_blackhole;
# etcd-server and etcd-client hold the directory's log in HA mode (--etcd) and
# run in its tests (tests/integration/etcdproc.c); libcurl4-openssl-dev is how
# the directory speaks to etcd's JSON gateway (directory/etcd.c).
# Extra packages callers may ask for (e.g. gnuplot-nox for the chart).
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
