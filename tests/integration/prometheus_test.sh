#!/usr/bin/env bash
# connpool - tests: examples/metrics_server as Prometheus sees it.
#
#   prometheus_test.sh <metrics_server binary> promtool
#       `promtool check metrics` on its /metrics: no problem but one (see below).
#   prometheus_test.sh <metrics_server binary> scrape
#       a real Prometheus server on loopback scrapes it; the in-use count, the acquire count and
#       the p99 wait read back through Prometheus's HTTP query API must match the pool's /stats.
#
# The example runs with --hold 3: after a second of work it keeps 3 connections and stops, so
# every figure stays still while Prometheus scrapes. Needs promtool and prometheus (Debian
# package prometheus), curl and jq; without them the test is skipped (exit 77), unless
# CONNPOOL_REQUIRE_SERVERS=1, when that is a failure.
#
# The one promtool problem allowed: "db_client_connection_count non-histogram and non-summary
# metrics should not have "_count" suffix". OpenTelemetry names the gauge of open connections
# db.client.connection.count, and its Prometheus form keeps the suffix that promtool's lint
# reserves for histograms and summaries; the name is the public contract (README, "Metrics").
set -euo pipefail

server_bin=${1:?usage: prometheus_test.sh <metrics_server> promtool|scrape}
mode=${2:?usage: prometheus_test.sh <metrics_server> promtool|scrape}

skip() {
  if [[ ${CONNPOOL_REQUIRE_SERVERS:-0} == 1 ]]; then
    echo "prometheus_test: FAILED: $* (CONNPOOL_REQUIRE_SERVERS=1)" >&2
    exit 1
  fi
  echo "prometheus_test: skipped: $*"
  exit 77
}
fail() {
  echo "prometheus_test: FAILED: $*" >&2
  exit 1
}

for tool in promtool curl jq; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install prometheus curl jq)"
done
if [[ $mode == scrape ]]; then
  command -v prometheus >/dev/null || skip "prometheus is not installed (apt-get install prometheus)"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Polls `command` every 0.2 s until it succeeds or `seconds` pass.
wait_until() {
  local seconds=$1
  shift
  local end=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

"$server_bin" --port 0 --seconds 600 --hold 3 >"$tmp/server.out" 2>"$tmp/server.err" &
pids+=($!)
wait_until 60 grep -q '^holding 3 connections$' "$tmp/server.out" ||
  fail "metrics_server did not start holding: $(cat "$tmp/server.out" "$tmp/server.err")"
port=$(sed -n 's|^serving http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$tmp/server.out")
[[ -n $port ]] || fail "no port in: $(cat "$tmp/server.out")"
base="http://127.0.0.1:$port"

if [[ $mode == promtool ]]; then
  for legacy in no yes; do
    # The example serves the legacy names only when started with --legacy; the current text is
    # checked here, and the legacy families through a second instance below.
    if [[ $legacy == yes ]]; then
      "$server_bin" --port 0 --seconds 600 --hold 1 --legacy >"$tmp/legacy.out" 2>/dev/null &
      pids+=($!)
      wait_until 60 grep -q '^holding 1 connections$' "$tmp/legacy.out" ||
        fail "metrics_server --legacy did not start"
      lport=$(sed -n 's|^serving http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$tmp/legacy.out")
      url="http://127.0.0.1:$lport/metrics"
    else
      url="$base/metrics"
    fi
    curl -sf "$url" >"$tmp/metrics.txt" || fail "GET $url failed"
    grep -q '^db_client_connection_wait_time_seconds_bucket{' "$tmp/metrics.txt" ||
      fail "no wait-time histogram in $url"
    rc=0
    promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.txt" 2>&1 || rc=$?
    problems=$(grep -v -x -F \
      'db_client_connection_count non-histogram and non-summary metrics should not have "_count" suffix' \
      "$tmp/promtool.txt" | grep -v '^$' || true)
    if [[ -n $problems ]]; then
      fail "promtool check metrics (legacy names: $legacy, exit $rc): $problems"
    fi
    echo "promtool check metrics (legacy names: $legacy): no problems but the OpenTelemetry" \
      "name db_client_connection_count (exit $rc: $(wc -l <"$tmp/promtool.txt") line(s))"
  done
  exit 0
fi

# --- scrape: a real Prometheus on a free loopback port ----------------------------------------
prom_port=""
for p in $(seq 19090 19190); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    prom_port=$p
    break
  fi
done
[[ -n $prom_port ]] || fail "no free port in 19090-19190 for Prometheus"
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: connpool
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$prom_port/api/v1/query"

# The first value of an instant query, or nothing.
query() {
  curl -sfG "$api" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // empty'
}
scraped() {
  [[ $(query 'up{job="connpool"}') == 1 && -n $(query 'db_client_connection_count{state="used"}') ]]
}
wait_until 90 scraped || fail "Prometheus did not scrape the example: $(tail -5 "$tmp/prometheus.log")"

stats=$(curl -sf "$base/stats") || fail "GET /stats failed"
used=$(query 'db_client_connection_count{state="used"}')
in_use=$(jq -r .in_use <<<"$stats")
count=$(query 'db_client_connection_wait_time_seconds_count')
acquired=$(jq -r .wait_time_count <<<"$stats")
p99=$(query 'histogram_quantile(0.99, db_client_connection_wait_time_seconds_bucket)')
p99_bound_ms=$(jq -r .wait_time_p99_ms <<<"$stats")
echo "Prometheus: used $used, acquires $count, p99 wait ${p99} s;" \
  "the pool: in_use $in_use, wait_time_count $acquired, p99 bucket bound $p99_bound_ms ms"

[[ $used == "$in_use" && $in_use == 3 ]] || fail "in-use: Prometheus $used, the pool $in_use"
[[ $count == "$acquired" ]] || fail "acquires: Prometheus $count, the pool $acquired"
# histogram_quantile() interpolates inside the bucket that holds the quantile; the pool answers
# with that bucket's upper bound. So Prometheus's value lies in (bound / 2, bound], or [0, 1 us]
# for the first bucket.
awk -v p="$p99" -v bound="$p99_bound_ms" 'BEGIN {
  ms = p * 1000
  low = (bound <= 0.001) ? 0 : bound / 2
  exit !(ms > low - 1e-9 && ms <= bound + 1e-9)
}' || fail "p99 wait: Prometheus ${p99} s is not in the pool's bucket (bound $p99_bound_ms ms)"
echo "prometheus_test: the scrape matches the pool's figures"
