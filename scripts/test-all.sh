#!/usr/bin/env bash
# connpool - run every check that CI runs, on a fresh Debian 12 machine.
#
#   ./scripts/test-all.sh                 format check, then ci-gcc, ci-clang, ci-asan, ci-tsan
#   ./scripts/test-all.sh ci-gcc ci-tsan  format check, then only the named workflow presets
#
# As root, installs the Debian packages it needs (fast when they are all present); otherwise it
# prints the apt-get command to run. Stops at the first failure. Build trees: build/<preset>.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/ensure-packages.sh cmake g++ clang make catch2 libbenchmark-dev libsoci-dev clang-format-14 libasio-dev \
  postgresql libpq-dev redis-server libhiredis-dev nginx prometheus curl jq pkg-config

if (($# > 0)); then
  workflows=("$@")
else
  workflows=(ci-gcc ci-clang ci-asan ci-tsan)
fi

# clang-14's TSan cannot map its shadow memory with more than 28 bits of mmap randomisation.
if [[ " ${workflows[*]} " == *" ci-tsan "* && -r /proc/sys/vm/mmap_rnd_bits ]] &&
  (($(cat /proc/sys/vm/mmap_rnd_bits) > 28)); then
  echo "test-all: warning: vm.mmap_rnd_bits > 28; clang-14 TSan may fail to start" \
    "(sysctl -w vm.mmap_rnd_bits=28)" >&2
fi

# Servers for the integration tests: a throwaway PostgreSQL, Redis and nginx on loopback ports,
# and a PostgreSQL primary with two streaming standbys (scripts/pg-cluster.sh), stopped at the
# end, unless CONNPOOL_PG_CONNINFO / CONNPOOL_REDIS_ADDR / CONNPOOL_HTTP_ADDR /
# CONNPOOL_PGCLUSTER_CONNINFO already name servers.
started=()
stop_servers() {
  local s
  for s in "${started[@]}"; do
    if [[ $s == pg-cluster ]]; then
      ./scripts/pg-cluster.sh stop || true
    else
      "./scripts/$s-server.sh" stop || true
    fi
  done
}
trap stop_servers EXIT
if [[ -z ${CONNPOOL_PG_CONNINFO:-} ]]; then
  CONNPOOL_PG_CONNINFO=$(./scripts/pg-server.sh start)
  started+=(pg)
  export CONNPOOL_PG_CONNINFO
  export CONNPOOL_PG_RESTART="$PWD/scripts/pg-server.sh restart"
fi
if [[ -z ${CONNPOOL_REDIS_ADDR:-} ]]; then
  CONNPOOL_REDIS_ADDR=$(./scripts/redis-server.sh start)
  started+=(redis)
  export CONNPOOL_REDIS_ADDR
fi
if [[ -z ${CONNPOOL_HTTP_ADDR:-} ]]; then
  CONNPOOL_HTTP_ADDR=$(./scripts/nginx-server.sh start)
  started+=(nginx)
  export CONNPOOL_HTTP_ADDR
fi
# The cluster's three conninfos, node 0 (the primary) first, joined by '|'. The failover tests
# (tests/integration/pg_replicas_test.cpp) restart it with CONNPOOL_PGCLUSTER_SCRIPT before each
# case that changes it, since every workflow preset runs them against the same cluster.
if [[ -z ${CONNPOOL_PGCLUSTER_CONNINFO:-} ]]; then
  started+=(pg-cluster)  # before start: a half-started cluster is stopped too
  CONNPOOL_PGCLUSTER_CONNINFO=$(./scripts/pg-cluster.sh start | paste -sd '|' -)
  export CONNPOOL_PGCLUSTER_CONNINFO
  export CONNPOOL_PGCLUSTER_SCRIPT="$PWD/scripts/pg-cluster.sh"
fi

log_dir=build/test-all
mkdir -p "$log_dir"
start=$SECONDS
passed_tests=0
done_steps=()

fail() {
  echo
  echo "test-all: FAILED at step '$1' (exit $2); log: $3" >&2
  echo "test-all: steps passed before it: ${done_steps[*]:-none}" >&2
  exit 1
}

# run_step <name> <command>...: run, tee to build/test-all/<name>.log, stop on failure.
run_step() {
  local name=$1
  shift
  local log="$log_dir/$name.log"
  local t0=$SECONDS
  echo
  echo "==> test-all: $name: $*"
  local rc=0
  "$@" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
  ((rc == 0)) || fail "$name" "$rc" "$log"
  # ctest ends with "100% tests passed, 0 tests failed out of N".
  local total
  total=$(grep -Eo 'tests failed out of [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+$' || true)
  passed_tests=$((passed_tests + ${total:-0}))
  done_steps+=("$name")
  echo "==> test-all: $name OK ($((SECONDS - t0))s${total:+, $total tests})"
}

run_step format ./scripts/format.sh
# The README's usage example must stay identical to examples/readme_usage.cpp, which CI builds.
run_step readme-example bash -c \
  'diff <(awk "/^\`\`\`cpp\$/{f=1;next} f&&/^\`\`\`\$/{exit} f" README.md) \
        <(sed -n "/^#include/,\$p" examples/readme_usage.cpp) && echo "README usage matches examples/readme_usage.cpp"'
# The fault-injection stress tests run CONNPOOL_STRESS_SECONDS per scenario: 3 s by default, 20 s
# under TSan, where they matter most (about two minutes in all). Under TSan the run must also
# reach CONNPOOL_STRESS_MIN_OPS operations in all (3 million; 0 elsewhere: no minimum). The
# libFuzzer run of ci-clang lasts CONNPOOL_FUZZ_SECONDS (default 30). Set any for a longer soak.
for preset in "${workflows[@]}"; do
  stress=${CONNPOOL_STRESS_SECONDS:-3}
  min_ops=0
  if [[ $preset == ci-tsan ]]; then
    stress=${CONNPOOL_STRESS_SECONDS:-20}
    min_ops=${CONNPOOL_STRESS_MIN_OPS:-3000000}
  fi
  run_step "$preset" env CONNPOOL_STRESS_SECONDS="$stress" CONNPOOL_STRESS_MIN_OPS="$min_ops" \
    CONNPOOL_FUZZ_SECONDS="${CONNPOOL_FUZZ_SECONDS:-30}" cmake --workflow --preset "$preset"
done

echo
echo "test-all: all steps passed (${done_steps[*]}) in $((SECONDS - start))s"
echo "test-all: $passed_tests passed, 0 failed"
