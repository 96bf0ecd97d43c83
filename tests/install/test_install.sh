#!/usr/bin/env bash
# Installs the build tree into a scratch prefix and uses it as an application
# would: the header must compile on its own (C11 and C++, -Wall -Werror
# -pedantic), libmayfly.so must export only mayfly_* symbols, and a small
# program built with `pkg-config --cflags --libs mayfly` must put and get a
# key through a directory and a memory server started from the installed
# binaries (loopback, free ports). The daemons are killed by PID at exit,
# also when a step fails.
#   test_install.sh BUILD_DIR SOURCE_DIR_OF_THIS_TEST
# MAYFLY_SANITIZE (the build's sanitizers) is passed to the compiler of the
# test program, which has to link the same runtime as the library.
set -euo pipefail
build=$1
here=$2
tmp=$(mktemp -d /tmp/mayfly-install-XXXXXX)
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then
    for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "---- $f"; cat "$f"; }; done
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" > "$tmp/install.log"
for f in bin/mayfly bin/mayfly-directory bin/mayfly-memserver include/mayfly.h; do
  [ -e "$prefix/$f" ] || fail "$f was not installed"
done
pc=$(find "$prefix" -name mayfly.pc)
[ -n "$pc" ] || fail "mayfly.pc was not installed"
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
[ -e "$libdir/libmayfly.so" ] || fail "libmayfly.so is not next to pkgconfig/ ($libdir)"
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

export PKG_CONFIG_PATH=$pcdir
[ "$(pkg-config --modversion mayfly)" = "$(awk '/^Version:/ {print $2}' "$pc")" ] ||
  fail "pkg-config does not read mayfly.pc"
flags=$(pkg-config --cflags --libs mayfly)
echo "pkg-config --cflags --libs mayfly: $flags"
incdir=$(pkg-config --cflags-only-I mayfly | sed 's/^-I//; s/ *$//')
[ "$(realpath "$incdir")" = "$(realpath "$prefix/include")" ] ||
  fail "Cflags name '$incdir', not $prefix/include"

# Only the public API is exported. (Outputs are captured before grep reads
# them: with pipefail, `cmd | grep -q` fails when grep stops cmd early.)
exported=$(nm -D --defined-only "$libdir/libmayfly.so" | awk '{print $3}')
others=$(grep -v '^mayfly_' <<< "$exported" || true)
[ -z "$others" ] || fail "libmayfly.so exports non-API symbols: $others"
grep -qx 'mayfly_kv_get' <<< "$exported" || fail "mayfly_kv_get is not exported"
if grep -q 'mayfly_directory_client' <<< "$exported"; then
  fail "libmayfly.so exports the generated Thrift client"
fi

# The header stands alone: nothing but the installed include directory.
san=()
if [ -n "${MAYFLY_SANITIZE:-}" ]; then san=(-fsanitize="$MAYFLY_SANITIZE"); fi
echo '#include <mayfly.h>
int main(void) { return mayfly_strerror(MAYFLY_ENOKEY)[0] == 0; }' > "$tmp/alone.c"
cc -std=c11 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags mayfly) -c "$tmp/alone.c" \
  -o "$tmp/alone.o" || fail "mayfly.h does not compile alone as C11"
if command -v g++ >/dev/null; then
  cp "$tmp/alone.c" "$tmp/alone.cc"
  g++ -std=c++11 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags mayfly) -c "$tmp/alone.cc" \
    -o "$tmp/alonecc.o" || fail "mayfly.h does not compile alone as C++"
  echo "header compiles alone as C11 and C++11"
else
  echo "header compiles alone as C11 (no g++ here)"
fi
grep -q MAYFLY_ENOKEY "$prefix/include/mayfly.h" || fail "error codes missing from mayfly.h"
if grep -q '#include "' "$prefix/include/mayfly.h"; then fail "mayfly.h includes a project header"; fi

cc -std=c11 -Wall -Werror "${san[@]}" "$here/hello.c" -o "$tmp/hello" $flags ||
  fail "hello.c does not build against the installed tree"

# Waits for a daemon's port file; prints the port.
wait_port() {
  local file=$1 pid=$2
  for _ in $(seq 1 1000); do
    if [ -s "$file" ]; then cat "$file"; return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}
"$prefix/bin/mayfly-directory" --host 127.0.0.1 --port 0 --port-file "$tmp/dir.port" \
  > "$tmp/directory.log" 2>&1 &
pids+=($!)
dport=$(wait_port "$tmp/dir.port" "${pids[-1]}") || fail "the installed directory did not start"
"$prefix/bin/mayfly-memserver" --host 127.0.0.1 --port 0 --port-file "$tmp/ms.port" \
  --directory "127.0.0.1:$dport" --blocks 4 --block-size 4MiB > "$tmp/memserver.log" 2>&1 &
pids+=($!)
mport=$(wait_port "$tmp/ms.port" "${pids[-1]}") || fail "the installed memory server did not start"
up=0
for _ in $(seq 1 500); do
  servers=$("$prefix/bin/mayfly" --directory "127.0.0.1:$dport" servers 2>/dev/null || true)
  if grep -q "127.0.0.1:$mport  up" <<< "$servers"; then up=1; break; fi
  sleep 0.02
done
[ $up = 1 ] || fail "the memory server did not register with the directory"

out=$(LD_LIBRARY_PATH=$libdir "$tmp/hello" "127.0.0.1:$dport") || fail "hello failed: $out"
echo "hello printed: $out"
[ "$out" = "greeting=hello from libmayfly" ] || fail "unexpected output '$out'"
# It ran against the installed library, not another one.
libs=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/hello")
grep -q "$libdir/libmayfly.so" <<< "$libs" || fail "hello did not load $libdir/libmayfly.so: $libs"
# The Python package, from the installed site directory only: it finds the
# libmayfly.so linked beside it (no MAYFLY_LIBRARY, no build tree). A
# sanitized library cannot load into a plain interpreter, so that build skips it.
python=$(command -v /usr/bin/python3 || command -v python3 || true)
if [ -n "$python" ] && [ -z "${MAYFLY_SANITIZE:-}" ]; then
  pkg=$(find "$prefix" -path '*-packages/mayfly/__init__.py')
  [ -n "$pkg" ] || fail "the mayfly Python package was not installed"
  site=$(dirname "$(dirname "$pkg")")
  out=$(cd "$tmp" && env -u MAYFLY_LIBRARY -u MAYFLY_BUILD_DIR PYTHONPATH="$site" "$python" -c '
import sys, mayfly
assert mayfly.library_path.startswith(sys.argv[2]), mayfly.library_path
with mayfly.connect(sys.argv[1]) as c:
    kv = c.mount("/py/kv")
    kv["greeting"] = "hello from python"
    print(kv["greeting"].decode())
' "127.0.0.1:$dport" "$site/mayfly/") || fail "the installed Python package failed: $out"
  [ "$out" = "hello from python" ] || fail "unexpected Python output '$out'"
  echo "python: the installed package works ($site)"
fi
echo "install: every check passed"
