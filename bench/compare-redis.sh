#!/usr/bin/env bash
# Mayfly side by side with Redis on this machine, in one run, against the
# targets of issue 9: installs what it needs (redis-server, gnuplot), builds,
# runs `mayfly-bench compare --targets` (a throwaway redis-server and a Mayfly
# directory + one memory server; kv get and put of 64 B at 16 and 50 clients
# without pipelining and at 50 clients with a pipeline of 16, and of 1 MiB
# values at 4 clients; each row with both loaders, a thread per client
# through libmayfly and one event-driven thread; redis-benchmark on each shape
# as a check of our Redis loaders; the loopback bandwidth as the anchor for
# 1 MiB), prints the table and each target met / not met, and writes
#   docs/bench/compare.csv  the figures
#   docs/bench/compare.svg  the chart (Mayfly / Redis per row and loader)
# SECONDS_PER_ROW (default 2) sets the measuring time of each row and side;
# COMPARE_CSV=FILE renders the table, the targets and the chart from a CSV of
# an earlier run (`mayfly-bench compare --targets --csv`) instead of measuring.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh redis-server gnuplot-nox
BUILD_DIR=build scripts/build.sh >/dev/null
bench=build/bench/mayfly-bench

out=docs/bench
mkdir -p "$out"
secs=${SECONDS_PER_ROW:-2}
if [ -n "${COMPARE_CSV:-}" ]; then
  echo "Mayfly vs Redis on $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), from $COMPARE_CSV"
else
  echo "Mayfly vs Redis on $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%d), ${secs} s per row and side"
fi
# Other work on the machine moves every figure: say how busy it was.
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${COMPARE_CSV:-}" ]; then
  [ "$(realpath "$COMPARE_CSV")" = "$(realpath "$out/compare.csv")" ] || cp "$COMPARE_CSV" "$out/compare.csv"
else
  "$bench" compare --targets --loader both --seconds "$secs" --csv > "$out/compare.csv"
fi

# Columns: 1 workload, 2 loader, 3 clients, 4 pipeline, 5 size, 6 mayfly_ops,
# 7 redis_ops, 8 ratio, 9 mayfly_gbps, 10 redis_gbps, 11/12 p50 us, 13/14 p99
# us (Mayfly, Redis), 15 loopback_gbps, 16 redis_benchmark_ops, 17 its p99 us.
loop=$(awk -F, 'NR==2 {print $15}' "$out/compare.csv")
echo "loopback TCP, one stream, 1 MiB writes: $loop GB/s"
echo
awk -F, 'NR==1 {next}
  { big = ($5 >= 1048576)
    size = big ? "1 MiB" : $5 " B"
    m = big ? sprintf("%.2f GB/s", $9) : sprintf("%d", $6)
    r = big ? sprintf("%.2f GB/s", $10) : sprintf("%d", $7)
    rb = $16 == 0 ? "-" : big ? sprintf("%.2f GB/s", $16 * $5 / 1e9) : sprintf("%d", $16)
    best = ($2 == "event" && $16 > $7) ? $16 : $7
    printf "| %s | %s | %d | %d | %s | %s | %s | %.2fx | %s | %.2fx | %d us | %d us |\n", $1, $2, $3, $4, size, m, r, $8, rb, $6 / best, $13, $14 }' \
  "$out/compare.csv" | { echo "| workload | loader | clients | pipeline | size | Mayfly | Redis | Mayfly / Redis | redis-benchmark | Mayfly / Redis judged | p99 Mayfly | p99 Redis |";
                         echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"; cat; }

# The targets of issue 9, each met or not met. A target holds when every row
# it covers holds; the figures of those rows follow. The ratio judged (r) is
# against Redis driven the same way: for the threads loader, our RESP client
# with a thread per client, as libmayfly is used; for the event loader, the
# better of our event-driven RESP loader and redis-benchmark (also one
# event-driven thread; for pipelined rows it is often the faster), so no
# target is met through a slow Redis loader.
echo
echo "| target | loader | result |"
echo "|---|---|---|"
target() { # description loader rows-condition holds-condition (awk, on the CSV columns)
  local p99=0
  case "$4" in *'$13'*) p99=1 ;; esac
  awk -F, -v desc="$1" -v loader="$2" -v loop="$loop" -v p99="$p99" "
    NR == 1 || \$2 != loader { next }
    { r = \$6 / ((\$2 == \"event\" && \$16 > \$7) ? \$16 : \$7) }
    ($3) { n++; bad += !($4)
           s = s sprintf(\"%s%s %d cl p%d %.2fx\", n > 1 ? \", \" : \"\", \$1, \$3, \$4, r)
           if (\$5 >= 1048576) s = s sprintf(\" %.0f%% of loopback\", 100 * \$9 / loop)
           if (p99) s = s sprintf(\" p99 %d/%d us\", \$13, \$14) }
    END { if (n == 0) printf \"| %s | %s | no rows |\\n\", desc, loader
          else printf \"| %s | %s | **%s**: %s |\\n\", desc, loader, bad ? \"not met\" : \"met\", s }" \
    "$out/compare.csv"
}
small_p1='$5 == 64 && $4 == 1 && ($3 == 16 || $3 == 50)'
target "kv get and put 64 B, 16 and 50 clients, pipeline 1: ≥ 1.0x Redis (through libmayfly)" threads "$small_p1" 'r >= 1.0'
target "kv get and put 64 B, 16 and 50 clients, pipeline 1: ≥ 1.2x Redis (event-driven loader)" event "$small_p1" 'r >= 1.2'
for l in event threads; do
  target "kv get and put 64 B, 50 clients, pipeline 16: ≥ 1.3x Redis" $l '$5 == 64 && $4 == 16 && $3 == 50' 'r >= 1.3'
done
for l in event threads; do
  target "kv get and put 1 MiB: ≥ 1.3x Redis and ≥ 90 % of loopback" $l '$5 >= 1048576' 'r >= 1.3 && $9 >= 0.9 * loop'
done
for l in event threads; do
  target "p99 at 50 clients ≤ Redis's" $l '$3 == 50' '$13 <= $14'
done

# --- per-entry memory: `mayfly-bench memory`, Mayfly and Redis in the same run ---
# (skipped by a build without the subcommand)
if [ -z "${COMPARE_CSV:-}" ] && "$bench" memory --help >/dev/null 2>&1; then
  echo
  "$bench" memory
fi
# --- end of per-entry memory ---

# The chart: Mayfly's throughput as a multiple of Redis's (r above), per row,
# one bar per loader.
awk -F, 'NR > 1 { key = sprintf("%s %s c%d p%d", $1, ($5 >= 1048576) ? "1MiB" : $5 "B", $3, $4)
                  if (!(key in seen)) { seen[key] = 1; order[++n] = key }
                  v[key, $2] = $6 / (($2 == "event" && $16 > $7) ? $16 : $7) }
         END { for (i = 1; i <= n; i++) { k = order[i]
                 printf "\"%s\" %s %s\n", k, ((k, "threads") in v) ? v[k, "threads"] : "NaN",
                        ((k, "event") in v) ? v[k, "event"] : "NaN" } }' \
  "$out/compare.csv" > "$out/compare.dat"
gnuplot <<GP
set terminal svg size 1100,620 font "sans,10" background "white"
set output "$out/compare.svg"
set title "Mayfly throughput / Redis throughput driven the same way (event: the better of our loader and redis-benchmark) ($(date -u +%Y-%m-%d), $(nproc) vCPUs, loopback $loop GB/s)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set ylabel "ratio (1.0 = as fast as Redis)"
set xtics rotate by -45 font "sans,9"
set grid ytics
set key top left
set bmargin 8
plot "$out/compare.dat" using 2:xtic(1) title "thread per client (libmayfly)" lc rgb "#3b7dd8", \
     "" using 3 title "event-driven loader (data protocol)" lc rgb "#3bb873", \
     1 with lines lc rgb "#d83b3b" lw 2 notitle
GP
rm -f "$out/compare.dat"
echo
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrote $out/compare.csv and $out/compare.svg"
