# connpool - the chart of bench/README.md, from the data files bench/report.py writes.
# SPDX-License-Identifier: MIT
#
# Usage: gnuplot -e "datadir='bench/results'; stamp='(2026-01-01, 2 cores)'" bench/plot.gp
# (bench/run.sh does this). Writes <datadir>/workloads.png with three panels: W2 throughput per
# thread count and pool, W3 throughput per pool, and W3 p99 acquire wait per pool (log scale).
# Each pool keeps one colour throughout: line type 1 connpool (fifo), 2 connpool
# bounded_barging, 3 textbook, 4 SOCI.

if (!exists("datadir")) datadir = "bench/results"
if (!exists("stamp")) stamp = ""

label(x) = x >= 100 ? sprintf("%.0f", x) : sprintf("%.3g", x)  # 1009, not 1.01e+03

set terminal pngcairo size 1500,520 font "sans,10" noenhanced
set output datadir."/workloads.png"
set linetype 1 lc rgb "#1f5fa8"
set linetype 2 lc rgb "#7fb2e5"
set linetype 3 lc rgb "#e07b20"
set linetype 4 lc rgb "#8c8c8c"
set multiplot layout 1,3 title "connpool vs baselines, medians ".stamp

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set key below horizontal
set yrange [0:*]

set xrange [-0.6:2.6]
set title "W2 no-wait: T threads, T connections"
set ylabel "M cycles/s (higher is better)"
plot datadir."/w2.dat" using 2:xtic(1) title "connpool" lt 1, \
     '' using 3 title "textbook" lt 3, \
     '' using 4 title "SOCI" lt 4

unset key
set autoscale x
set offsets 0, 0, graph 0.08, 0   # room above the tallest bar for its label
set xtics rotate by -20
set boxwidth 0.6
set title "W3 contended: 16 threads, 4 connections"
set ylabel "M cycles/s (higher is better)"
plot datadir."/w3.dat" using 0:2:4:xtic(1) with boxes lc variable, \
     '' using 0:2:(label($2)) with labels offset 0,0.7

set title "W3 contended: p99 acquire wait"
set ylabel "µs, log scale (lower is better)"
set logscale y
set yrange [0.01:*]
plot datadir."/w3.dat" using 0:3:4:xtic(1) with boxes lc variable, \
     '' using 0:3:(label($3)) with labels offset 0,0.7

unset multiplot

# A second chart, <datadir>/w3_waits.png: W3's acquire waits as connpool's own wait_time
# histogram recorded them (w3_waits.dat, one column per connpool pool): the share of acquires
# that waited at most each bucket bound.
if (system("test -s ".datadir."/w3_waits.dat && head -1 ".datadir."/w3_waits.dat | wc -w") + 0 > 2) {
  reset
  set terminal pngcairo size 900,520 font "sans,10" noenhanced
  set output datadir."/w3_waits.png"
  set title "W3 contended: acquire waits from PoolStats::wait_time ".stamp
  set xlabel "wait at most (µs, log scale; bucket bounds)"
  set ylabel "share of acquires"
  set logscale x 2
  set format x "%.0f"
  set yrange [0:1.02]
  set grid
  set key bottom right
  columns = int(system("head -1 ".datadir."/w3_waits.dat | wc -w")) - 2
  names = system("head -1 ".datadir."/w3_waits.dat | cut -d' ' -f3-")
  plot for [i=1:columns] datadir."/w3_waits.dat" using 1:(column(i+1)) with steps lw 2 \
       title word(names, i)
}
