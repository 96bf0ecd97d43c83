#!/usr/bin/env bash
# Mayfly side by side with Redis on this machine, in one run: installs what it
# needs (redis-server, gnuplot), builds, runs `mayfly-bench compare` (a
# throwaway redis-server and a Mayfly directory + one memory server, the same
# clients / pipeline / value sizes against both, the loopback bandwidth as the
# anchor for bulk transfers), prints the table and writes
#   docs/bench/compare.csv  the figures
#   docs/bench/compare.svg  the chart (Mayfly / Redis per workload)
# SECONDS_PER_ROW (default 2) sets the measuring time of each row and side.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh redis-server gnuplot-nox
BUILD_DIR=build scripts/build.sh >/dev/null

out=docs/bench
mkdir -p "$out"
secs=${SECONDS_PER_ROW:-2}
echo "Mayfly vs Redis on $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%Y-%m-%d), ${secs} s per row and side"
build/bench/mayfly-bench compare --seconds "$secs" --csv > "$out/compare.csv"

loop=$(awk -F, 'NR==2 {print $14}' "$out/compare.csv")
echo "loopback TCP, one stream, 1 MiB writes: $loop GB/s"
echo
awk -F, 'NR==1 {next}
  { big = ($4 >= 1048576)
    size = big ? "1MiB" : $4 "B"
    m = big ? sprintf("%.2f GB/s", $8) : sprintf("%d", $5)
    r = big ? sprintf("%.2f GB/s", $9) : sprintf("%d", $6)
    printf "| %s | %d | %d | %s | %s | %s | %.2fx | %d us | %d us |\n", $1, $2, $3, size, m, r, $7, $12, $13 }' \
  "$out/compare.csv" | { echo "| workload | clients | pipeline | size | Mayfly | Redis | ratio | p99 Mayfly | p99 Redis |";
                         echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"; cat; }

# The chart: one bar per workload, Mayfly's throughput as a multiple of Redis's.
awk -F, 'NR>1 { big = ($4 >= 1048576); printf "\"%s %s c%d p%d\" %.3f\n", $1, big ? "1MiB" : $4 "B", $2, $3, $7 }' \
  "$out/compare.csv" > "$out/compare.dat"
gnuplot <<GP
set terminal svg size 1100,620 font "sans,10" background "white"
set output "$out/compare.svg"
set title "Mayfly throughput / Redis throughput, same load ($(date -u +%Y-%m-%d), $(nproc) vCPUs, loopback $loop GB/s)"
set style fill solid 0.8 border -1
set boxwidth 0.7
set yrange [0:*]
set ylabel "ratio (1.0 = as fast as Redis)"
set xtics rotate by -60 font "sans,8"
set grid ytics
set key off
set rmargin 10
set bmargin 9
plot "$out/compare.dat" using 0:2:xtic(1) with boxes lc rgb "#3b7dd8", 1 with lines lc rgb "#d83b3b" lw 2
GP
rm -f "$out/compare.dat"
echo
echo "wrote $out/compare.csv and $out/compare.svg"
