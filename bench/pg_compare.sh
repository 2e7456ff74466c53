#!/usr/bin/env bash
# connpool - issue 6: `SELECT 1` over libpq through connpool, against a connection per request
# and against pgbench with persistent connections.
# SPDX-License-Identifier: MIT
#
# For 1, 4, 16 and 64 client threads (64: 16 callers per pooled connection), runs (all with the
# simple query protocol):
#   pool          build/release/bench/pg_bench --mode pool --reset rollback_only: a connpool
#                 pool of 4 PgConnections, default options (WaitPolicy::bounded_barging); a
#                 release sends nothing, so a request is the same work as pgbench's
#   pool_fifo     the same with --wait-policy fifo
#   pool_async    --mode async --reset rollback_only: N coroutines on min(N, nproc) threads share
#                 an AsyncConnectionPool of 4 (default options) through Asio, libpq's
#                 asynchronous API: pgbench's own client design (needs pg_bench built with Asio: libasio-dev)
#   pool_discard  --mode pool --reset discard_all: DISCARD ALL on every release, as
#                 examples/pg_connection.hpp does by default (two statements per request)
#   direct        pg_bench --mode direct: one persistent PGconn per thread, no pool
#   pgbench       pgbench -n -M simple -f select1.sql -c N -j min(N, nproc) -T S (persistent)
#   pgbench_discard  the same with a script of `SELECT 1;` and `DISCARD ALL;`: pool_discard's work
#   connect       pg_bench --mode connect: PQconnectdb + SELECT 1 + PQfinish per request
#   pgbench_C     the same pgbench with -C: a new connection for every transaction
# repeated --reps times, interleaved (every configuration once per round), and prints the
# medians as a Markdown table, also written with the machine, the server's settings and every
# raw output to bench/results/pg-<UTC date-time>.md.
#
# Usage: bench/pg_compare.sh [--seconds S] [--warmup S] [--reps R] [--threads "1 4 16 64"]
#                            [--build-dir DIR] [--conninfo S]
#   --seconds S    measured seconds per run (default 10; a whole number, as pgbench -T)
#   --warmup S     unmeasured seconds before each run (default 2; 0 = none). pg_bench runs
#                  them inside the same run (--warmup); for pgbench a separate
#                  `pgbench ... -T S` run with the same options comes first.
#   --reps R       rounds (default 3); the table gives the median of the R runs of each cell
#   --threads L    client counts (default "1 4 16 64")
#   --build-dir D  where pg_bench was built (default build/release); build it first with
#                    cmake --preset release && cmake --build build/release -j2 --target pg_bench
#   --conninfo S   use this server (libpq conninfo, also given to pgbench and psql). Default:
#                  start a throwaway server with scripts/pg-server.sh (127.0.0.1:54329,
#                  fsync=off, max_connections=200, the rest at initdb's defaults) and stop
#                  it at the end. 200 covers 64 clients: direct and pgbench hold one
#                  connection per client, connect and pgbench -C at most one per client at a
#                  time (plus backends of closed connections still exiting), the pools 4.
# Latency percentiles are nearest-rank over every request of the run. For pgbench they come
# from its per-transaction log (-l): the time between two consecutive log entries of one
# client, i.e. from the end of its previous transaction to the end of this one, the same
# definition as pg_bench's (see bench/README.md for why not the log's latency field).
# The column "client CPU ms / 1k req" is the client process's user + system CPU time in ms per
# 1,000 requests (= µs per request): for pg_bench its cpu_ms_per_kreq (getrusage over the
# measured period only, see bench/pg_bench.cpp); for pgbench the user + system time of the
# whole measured pgbench process (bash's `time`), its connection set-up and per-transaction log
# included, divided by its "number of transactions actually processed" ("-" if not measured).
# Needs: pgbench and psql (apt-get install postgresql-client-15), awk, sort; the throwaway
# server needs the postgresql package. Exit status: 0, or 1 if a run failed.
set -euo pipefail
script=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$script")/.."
invocation=bench/pg_compare.sh
(($# == 0)) || invocation+=$(printf ' %q' "$@")

seconds=10
warmup=2
reps=3
threads_list="1 4 16 64"
build_dir=build/release
conninfo=""
while (($# > 0)); do
  case $1 in
    --seconds) seconds=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --reps) reps=$2; shift ;;
    --threads) threads_list=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --conninfo) conninfo=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "pg_compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in seconds reps; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "pg_compare.sh: --$v must be a whole number >= 1" >&2; exit 2; }
done
[[ $warmup =~ ^[0-9]+$ ]] || { echo "pg_compare.sh: --warmup must be a whole number" >&2; exit 2; }
for n in $threads_list; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "pg_compare.sh: bad --threads entry $n" >&2; exit 2; }
done

pg_bench=$build_dir/bench/pg_bench
if [[ ! -x $pg_bench ]]; then
  echo "pg_compare.sh: $pg_bench not found; build it with" >&2
  echo "  cmake --preset release && cmake --build $build_dir -j2 --target pg_bench" >&2
  exit 1
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
find_tool() { command -v "$1" 2>/dev/null || { [[ -x $pgbin/$1 ]] && echo "$pgbin/$1"; } || true; }
pgbench=$(find_tool pgbench)
psql=$(find_tool psql)
[[ -n $pgbench && -n $psql ]] || {
  echo "pg_compare.sh: pgbench or psql not found (apt-get install postgresql-client-15)" >&2
  exit 1
}

tmp=$(mktemp -d /tmp/connpool-pg-compare.XXXXXX)
started_server=0
cleanup() {
  rm -rf "$tmp"
  if ((started_server)); then
    ./scripts/pg-server.sh stop || true
  fi
}
trap cleanup EXIT

# The server. pg-server.sh keeps its state in build/pg: never start a second one over it.
server_note="the server given with --conninfo"
if [[ -z $conninfo ]]; then
  port=${PGPORT:-54329}
  if pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
    echo "pg_compare.sh: a server already answers on 127.0.0.1:$port; use it with" >&2
    echo "  bench/pg_compare.sh --conninfo \"\$(cat build/pg/conninfo)\"   (or stop it first)" >&2
    exit 1
  fi
  echo "pg_compare.sh: starting a throwaway server (scripts/pg-server.sh start)"
  started_server=1
  conninfo=$(./scripts/pg-server.sh start)
  server_note="a throwaway server started by scripts/pg-server.sh: initdb --auth=trust --no-sync -E UTF8, then pg_ctl start -o '-c listen_addresses=127.0.0.1 -p $port -c max_connections=200 -c fsync=off' (every other setting at initdb's defaults), on this machine, over TCP loopback"
fi
if ! "$psql" "$conninfo" -XqAt -c 'SELECT 1' >/dev/null; then
  echo "pg_compare.sh: cannot connect with: $conninfo" >&2
  exit 1
fi

server_version=$("$psql" "$conninfo" -XqAt -c 'SELECT version()')
server_settings=$("$psql" "$conninfo" -XqAt -F ' = ' -c "SELECT name, current_setting(name)
  FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers', 'fsync',
  'synchronous_commit', 'full_page_writes', 'wal_level', 'jit', 'huge_pages', 'work_mem',
  'listen_addresses', 'port', 'max_worker_processes', 'ssl', 'password_encryption')
  ORDER BY name" | paste -sd ';' | sed 's/;/; /g')

# What is measured, taken now (the commit may move during the run).
commit="(no git revision)"
if git rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git rev-parse --short HEAD)
  git diff --quiet HEAD -- include examples/pg_connection.hpp bench/pg_bench.cpp ||
    commit+=" + uncommitted changes to include/, examples/pg_connection.hpp or bench/pg_bench.cpp"
fi
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build_dir/CMakeCache.txt" 2>/dev/null || true)
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt" 2>/dev/null || true)
compiler_version=$("${compiler:-c++}" --version 2>/dev/null | head -1 || true)
nproc=$(nproc)
busy_before=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 {printf "%s%s (%s%%)", sep, $2, $1; sep=", "}')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
stamp=$(date -u '+%Y%m%dT%H%M%SZ')

echo 'SELECT 1;' >"$tmp/select1.sql"
printf 'SELECT 1;\nDISCARD ALL;\n' >"$tmp/select1_discard.sql"
raw=$tmp/raw.txt
: >"$raw"
failed=0
declare -A result  # "<contender> <threads> <rep>" -> "throughput p50 p99 max errors cpu"

# pg_bench's line: mode=pool threads=4 ... throughput=... p50_us=... p99_us=... max_us=... errors=0
#   cpu_ms_per_kreq=... vcsw_per_kreq=... ivcsw_per_kreq=...
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2" | head -1; }

run_pg_bench() {  # contender threads rep -- pg_bench arguments
  local contender=$1 n=$2 rep=$3 out rc=0
  shift 4
  out=$("$pg_bench" --conninfo "$conninfo" --threads "$n" --seconds "$seconds" --warmup "$warmup" \
    "$@" 2>&1) || rc=$?
  printf '$ pg_bench %s --threads %s --seconds %s --warmup %s  (round %s)\n%s\n\n' "$*" "$n" \
    "$seconds" "$warmup" "$rep" "$out" >>"$raw"
  local line
  line=$(grep '^mode=' <<<"$out" || true)
  if ((rc != 0)) || [[ -z $line ]]; then
    echo "pg_compare.sh: pg_bench $* --threads $n failed (exit $rc): $out" >&2
    failed=1
    result["$contender $n $rep"]="0 0 0 0 1 -"
    return
  fi
  local cpu
  cpu=$(field cpu_ms_per_kreq "$line")
  result["$contender $n $rep"]="$(field throughput "$line") $(field p50_us "$line") $(field p99_us "$line") $(field max_us "$line") $(field errors "$line") ${cpu:--}"
}

run_pgbench() {  # contender threads rep script [-C]
  local contender=$1 n=$2 rep=$3 script=$4 j out rc=0
  shift 4
  j=$((n < nproc ? n : nproc))
  local args=(-n -M simple -f "$tmp/$script" -c "$n" -j "$j" "$@")
  if ((warmup > 0)); then
    "$pgbench" "${args[@]}" -T "$warmup" "$conninfo" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp/log" && mkdir "$tmp/log"
  # bash's `time` gives the CPU time of the pgbench process (its threads included), in s.
  local TIMEFORMAT='%3U %3S'
  { time "$pgbench" "${args[@]}" -T "$seconds" -l --log-prefix="$tmp/log/pgbench" "$conninfo" \
    >"$tmp/pgbench.out" 2>&1; } 2>"$tmp/time" || rc=$?
  out=$(<"$tmp/pgbench.out")
  # Per client, the time from one log entry to the next (the log's timestamps are read when
  # the entry is written); entries whose latency field is not a number are failures.
  local stats
  stats=$(cat "$tmp/log"/pgbench.* 2>/dev/null | LC_ALL=C awk '
      $3 !~ /^[0-9]+$/ { failures++; next }
      { t = $5 * 1000000 + $6; if ($1 in last) print t - last[$1]; last[$1] = t }
      END { print "failures", failures + 0 > "/dev/stderr" }' 2>"$tmp/failures" |
    LC_ALL=C sort -n | awk '
      # nearest rank: the ceil(n * pct / 100)-th smallest, in integers
      function at(pct,   r) { r = int((NR * pct + 99) / 100); return v[r < 1 ? 1 : r] }
      { v[NR] = $1 }
      END { if (NR == 0) print "0 0 0 0"; else print NR, at(50), at(99), v[NR] }') || true
  local failures tps samples p50 p99 max user sys transactions cpu
  failures=$(awk '{print $2}' "$tmp/failures")
  failures=${failures:-0}
  tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
  read -r samples p50 p99 max <<<"$stats"
  read -r user sys <"$tmp/time" || true
  transactions=$(awk '/^number of transactions actually processed: / {print $6; exit}' <<<"$out")
  # ms of CPU per 1,000 transactions
  cpu=$(awk -v u="$user" -v s="$sys" -v t="$transactions" 'BEGIN {
    if (u ~ /^[0-9.]+$/ && s ~ /^[0-9.]+$/ && t ~ /^[0-9]+$/ && t > 0) printf "%.3f", (u + s) * 1e6 / t
    else print "-" }')
  printf '$ pgbench %s -T %s -l "<conninfo>"  (round %s; after a %s s warm-up run)\n%s\nfrom the log: %s intervals, p50 %s us, p99 %s us, max %s us, %s failed\nclient CPU (the whole pgbench process): user %s s, sys %s s; %s ms per 1,000 transactions\n\n' \
    "${args[*]/#$tmp\//}" "$seconds" "$rep" "$warmup" "$(grep -E '^(number of (clients|threads|trans|failed)|latency|initial|tps)' <<<"$out")" \
    "$samples" "$p50" "$p99" "$max" "$failures" "${user:-?}" "${sys:-?}" "$cpu" >>"$raw"
  rm -rf "$tmp/log"
  if ((rc != 0)) || [[ -z $tps ]] || ((failures > 0)); then
    echo "pg_compare.sh: pgbench ${args[*]} failed (exit $rc, $failures failed transactions): $out" >&2
    failed=1
    result["$contender $n $rep"]="${tps:-0} $p50 $p99 $max $((failures > 0 ? failures : 1)) $cpu"
    return
  fi
  result["$contender $n $rep"]="$tps $p50 $p99 $max 0 $cpu"
}

contenders=(pool pool_fifo pool_async pool_discard direct pgbench pgbench_discard connect pgbench_C)
runs=$((reps * $(wc -w <<<"$threads_list") * ${#contenders[@]}))
echo "pg_compare.sh: $runs runs of ${seconds} s (+ ${warmup} s warm-up each), about $((runs * (seconds + warmup) / 60 + 1)) min"
count=0
for ((rep = 1; rep <= reps; rep++)); do
  for n in $threads_list; do
    for c in "${contenders[@]}"; do
      count=$((count + 1))
      printf 'pg_compare.sh: [%d/%d] round %d, %d clients, %s\n' "$count" "$runs" "$rep" "$n" "$c"
      case $c in
        pool) run_pg_bench "$c" "$n" "$rep" -- --mode pool --pool-size 4 --reset rollback_only ;;
        pool_fifo)
          run_pg_bench "$c" "$n" "$rep" -- --mode pool --pool-size 4 --reset rollback_only \
            --wait-policy fifo ;;
        pool_async)
          run_pg_bench "$c" "$n" "$rep" -- --mode async --pool-size 4 --reset rollback_only \
            --io-threads "$((n < nproc ? n : nproc))" ;;
        pool_discard) run_pg_bench "$c" "$n" "$rep" -- --mode pool --pool-size 4 --reset discard_all ;;
        direct) run_pg_bench "$c" "$n" "$rep" -- --mode direct ;;
        connect) run_pg_bench "$c" "$n" "$rep" -- --mode connect ;;
        pgbench) run_pgbench "$c" "$n" "$rep" select1.sql ;;
        pgbench_discard) run_pgbench "$c" "$n" "$rep" select1_discard.sql ;;
        pgbench_C) run_pgbench "$c" "$n" "$rep" select1.sql -C ;;
      esac
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The median of field k (1-based: throughput p50 p99 max errors cpu) over the rounds of one
# cell; "-" if a round has no figure ("-").
median() {
  local c=$1 n=$2 k=$3 rep
  for ((rep = 1; rep <= reps; rep++)); do
    awk -v k="$k" '{print $k}' <<<"${result["$c $n $rep"]}"
  done | sort -g | awk '$1 !~ /^[0-9.eE+-]*[0-9][0-9.eE+-]*$/ {none = 1} {v[NR] = $1}
    END {if (none) {print "-"; exit}; m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m}'
}
errors_of() {
  local c=$1 n=$2 rep total=0
  for ((rep = 1; rep <= reps; rep++)); do
    total=$((total + $(awk '{print $5}' <<<"${result["$c $n $rep"]}")))
  done
  echo "$total"
}
fmt() { awk -v x="$1" 'BEGIN { if (x == "-") print "-"; else if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) { r = a / b; f = r >= 10 ? "%.0fx" : "%.2fx"; printf f, r } else print "-" }'; }

declare -A label=(
  [pool]="connpool, pool of 4, default options (bounded_barging), rollback_only reset"
  [pool_fifo]="connpool, pool of 4, fifo, rollback_only reset"
  [pool_async]="connpool AsyncConnectionPool of 4, default options, N coroutines on min(N, nproc) threads (Asio)"
  [pool_discard]="connpool, pool of 4, default options, DISCARD ALL on release"
  [direct]="a persistent PGconn per thread (\`pg_bench --mode direct\`)"
  [pgbench]="pgbench, persistent connections"
  [pgbench_discard]="pgbench, persistent, \`SELECT 1; DISCARD ALL\`"
  [connect]="a new connection per request (\`pg_bench --mode connect\`)"
  [pgbench_C]="pgbench -C, a new connection per transaction"
)

table=$tmp/table.md
{
  echo "| Clients | Client | req/s | p50 µs | p99 µs | max µs | client CPU ms / 1k req | errors |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
  for n in $threads_list; do
    for c in "${contenders[@]}"; do
      echo "| $n | ${label[$c]} | $(fmt "$(median "$c" "$n" 1)") | $(fmt "$(median "$c" "$n" 2)") | $(fmt "$(median "$c" "$n" 3)") | $(fmt "$(median "$c" "$n" 4)") | $(fmt "$(median "$c" "$n" 6)") | $(errors_of "$c" "$n") |"
    done
  done
  echo
  echo "| Clients | pool (default) / pgbench | fifo pool / pgbench | async pool / pgbench | DISCARD ALL pool / pgbench with DISCARD ALL | pool / direct | pool / pgbench -C | pool / pg_bench connect | Targets: ≥ 0.9x pgbench persistent; ≥ 100x connect-per-request from 4 clients |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for n in $threads_list; do
    pool=$(median pool "$n" 1) fifo=$(median pool_fifo "$n" 1) discard=$(median pool_discard "$n" 1)
    async=$(median pool_async "$n" 1)
    direct=$(median direct "$n" 1) pgb=$(median pgbench "$n" 1) pgbd=$(median pgbench_discard "$n" 1)
    pgbc=$(median pgbench_C "$n" 1) conn=$(median connect "$n" 1)
    met=$(awk -v p="$pool" -v b="$fifo" -v g="$pgb" -v c1="$pgbc" -v c2="$conn" -v n="$n" 'BEGIN {
      f = (g > 0 && p / g >= 0.9) ? "yes" : "**no**"
      k = (g > 0 && b / g >= 0.9) ? "yes" : "**no**"
      if (n < 4) c = "-"; else c = (c1 > 0 && c2 > 0 && p / c1 >= 100 && p / c2 >= 100) ? "yes" : "**no**"
      printf "0.9x: default %s, fifo %s; 100x: %s", f, k, c }')
    echo "| $n | $(ratio "$pool" "$pgb") | $(ratio "$fifo" "$pgb") | $(ratio "$async" "$pgb") | $(ratio "$discard" "$pgbd") | $(ratio "$pool" "$direct") | $(ratio "$pool" "$pgbc") | $(ratio "$pool" "$conn") | $met |"
  done
} >"$table"

out=bench/results/pg-$stamp.md
{
  echo "# SELECT 1 over libpq: connpool, connection per request, pgbench ($started)"
  echo
  echo "Command: \`$invocation\`; medians of $reps interleaved round(s) of $seconds s, each after $warmup s of warm-up."
  echo
  echo "- connpool: commit $commit; pg_bench built ${build_type:-?} with ${compiler_version:-?} ($(date -u -r "$pg_bench" '+%Y-%m-%d %H:%M UTC'))"
  echo "- Machine: $nproc CPUs ($cpu), Linux $(uname -r); load average $load_before before, $load_after after${busy_before:+; busy before: $busy_before}"
  echo "- Client tools: $("$pgbench" --version), libpq $(dpkg-query -W -f '${Version}' libpq5 2>/dev/null || echo '?')"
  echo "- Server: $server_version"
  echo "- Server started as: $server_note"
  echo "- Server settings: $server_settings"
  echo
  cat "$table"
  echo
  echo "## Raw outputs"
  echo
  echo '```text'
  cat "$raw"
  echo '```'
} >"$out"

echo
cat "$table"
echo
echo "pg_compare.sh: wrote $out"
exit "$failed"
