#!/usr/bin/env bash
# connpool - runs the workloads of issue 3 and renders their results.
# SPDX-License-Identifier: MIT
#
# Builds the `release` preset, runs build/release/bench/workloads_bench with interleaved
# repetitions, and writes into the output directory (bench/results by default):
#   workloads.json  Google Benchmark's JSON (aggregates only)
#   machine.txt     date, commit, CPU, kernel, compiler, load average before and after
#   results.md      the table of medians with ratios and issue 3's targets (bench/report.py)
#   workloads.png   W2/W3 throughput and W3 p99 wait per pool (bench/plot.gp, gnuplot)
#   w3_waits.png    W3's wait distribution from connpool's wait_time histograms (bench/plot.gp)
#
# Usage: bench/run.sh [--quick] [--repetitions N] [--min-time S] [--w3-min-time S]
#                     [--filter REGEX] [--out DIR] [--no-build] [--update-readme]
#                     [--wait-quiet SECONDS] [--label TEXT]
#   --quick           3 repetitions of 0.1 s each, into bench/results/quick (a check of the
#                     pipeline, not figures to quote)
#   --repetitions N   repetitions per benchmark (default 10)
#   --min-time S      minimum seconds per repetition (default 0.5)
#   --w3-min-time S   the same for W3 (default 2: its fairness figure needs windows much
#                     longer than the scheduler's time slices)
#   --filter REGEX    only the benchmarks matching REGEX (e.g. 'W3')
#   --out DIR         output directory
#   --no-build        use the existing build/release
#   --update-readme   replace the results block of bench/README.md with the new results.md
#   --wait-quiet S    first wait up to S seconds for the 1-minute load average to drop below 0.5
#   --label TEXT      what was measured, for machine.txt and the table (default: the commit the
#                     binary was built from)
# Needs: cmake, g++, libbenchmark-dev, python3, gnuplot (apt-get install gnuplot-nox);
# libsoci-dev adds SOCI's pool to the comparison.
set -euo pipefail
script=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$script")/.."
invocation=bench/run.sh
(($# == 0)) || invocation+=$(printf ' %q' "$@")

repetitions=10
min_time=0.5
w3_min_time=2
filter=""
out=""
build=1
update_readme=0
wait_quiet=0
label=""
while (($# > 0)); do
  case $1 in
    --quick) repetitions=3 min_time=0.1 w3_min_time=0.2 out=${out:-bench/results/quick} ;;
    --repetitions) repetitions=$2; shift ;;
    --min-time) min_time=$2; shift ;;
    --w3-min-time) w3_min_time=$2; shift ;;
    --filter) filter=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    --update-readme) update_readme=1 ;;
    --wait-quiet) wait_quiet=$2; shift ;;
    --label) label=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-bench/results}
mkdir -p "$out"

if ((build)); then
  cmake --preset release >/dev/null
  cmake --build --preset release --target workloads_bench cycle_bench
fi
bin=build/release/bench/workloads_bench
[[ -x $bin ]] || { echo "run.sh: $bin not built (drop --no-build)" >&2; exit 1; }
# What is measured, taken now: the commit may move while the benchmark runs.
if [[ -z $label ]] && git rev-parse --git-dir >/dev/null 2>&1; then
  label="connpool at commit $(git rev-parse --short HEAD)"
  git diff --quiet HEAD -- include || label+=" + uncommitted include/ changes"
fi
label="${label:-connpool (no git revision)}, binary built $(date -u -r "$bin" '+%H:%M UTC')"
((build)) || label+=" (--no-build)"

busy() { awk '{ exit !($1 >= 0.5) }' /proc/loadavg; }  # 1-minute load average >= 0.5
if ((wait_quiet > 0)); then
  deadline=$((SECONDS + wait_quiet))
  while busy && ((SECONDS < deadline)); do
    sleep 10
  done
fi

# Other load during the run: the CPU time the whole machine used (from /proc/stat, steal
# included: a VM's neighbours count too) minus the CPU time of this shell's children (the
# benchmark), both in clock ticks.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
steal_ticks() { awk '/^cpu / { print $9; exit }' /proc/stat; }
children_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }  # $$: this script, also in $(...)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
busy_before=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 {printf "%s%s (%s%%)", sep, $2, $1; sep=", "}')
ticks_before=$(machine_ticks) steal_before=$(steal_ticks) children_before=$(children_ticks)
start=$(date +%s.%N)
args=(--benchmark_repetitions="$repetitions"
  --benchmark_enable_random_interleaving=true
  --benchmark_report_aggregates_only=true
  --benchmark_min_time="$min_time"
  --benchmark_out="$out/workloads.json"
  --benchmark_out_format=json)
[[ -n $filter ]] && args+=(--benchmark_filter="$filter")
command="CONNPOOL_BENCH_W3_MIN_TIME=$w3_min_time $bin ${args[*]}"
echo "run.sh: $command"
CONNPOOL_BENCH_W3_MIN_TIME=$w3_min_time "$bin" "${args[@]}"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
other_load=$(awk -v t="$(($(machine_ticks) - ticks_before))" -v c="$(($(children_ticks) - children_before))" \
  -v st="$(($(steal_ticks) - steal_before))" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
  -v s="$start" -v e="$(date +%s.%N)" \
  'BEGIN { a = (e - s) * n; o = (t - c) / hz; if (o < 0) o = 0
           printf "other processes used %.1f%% of the CPU time during the run (steal %.1f%%)",
             100 * o / a, 100 * st / hz / a }')

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $label"
  echo "$(nproc) CPUs ($cpu), Linux $(uname -r), $(g++ --version | head -1), Release"
  echo "load average ${load_before} before, ${load_after} after${busy_before:+; busy before: $busy_before}; $other_load"
} >"$out/machine.txt"

python3 bench/report.py "$out/workloads.json" "$out" --machine "$out/machine.txt" \
  --command "$invocation"

if ! grep -q '^"' "$out/w3.dat" || ! grep -q '^T=.*[0-9]\.' "$out/w2.dat"; then
  echo "run.sh: no W2 or W3 results (filtered out?); no chart" >&2
elif command -v gnuplot >/dev/null 2>&1; then
  w3_waits=""
  [[ $(head -1 "$out/w3_waits.dat" 2>/dev/null | wc -w) -gt 2 ]] && w3_waits=yes
  what=${label%%, binary built*}
  ((${#what} <= 80)) || what="${what:0:77}..."
  gnuplot -e "datadir='$out'; stamp='($(date -u +%Y-%m-%d), $(nproc) cores, ${what//\'/})'" \
    bench/plot.gp
  echo "run.sh: wrote $out/workloads.png${w3_waits:+ and $out/w3_waits.png}"
else
  echo "run.sh: gnuplot not found (apt-get install gnuplot-nox); no chart" >&2
fi

if ((update_readme)); then
  python3 - "$out/results.md" bench/README.md <<'PY'
import re, sys
results, readme = sys.argv[1], sys.argv[2]
text = open(readme).read()
block = "<!-- results:begin (bench/run.sh --update-readme) -->\n" + open(results).read().strip() \
    + "\n<!-- results:end -->"
new, n = re.subn(r"<!-- results:begin.*?<!-- results:end -->", lambda m: block, text, flags=re.S)
if n != 1:
    sys.exit("run.sh: no results block in " + readme)
open(readme, "w").write(new)
print("run.sh: updated the results block of " + readme)
PY
fi
echo "run.sh: wrote $out/results.md"
