#!/usr/bin/env bash
# connpool - a throwaway Redis server on a loopback port, for the integration tests.
#
#   ./scripts/redis-server.sh start   start redis-server on 127.0.0.1:$REDIS_PORT (default 63799),
#                                     without persistence, and print its address (host:port)
#   ./scripts/redis-server.sh stop    shut it down and remove its directory
#
# Needs Debian's redis-server package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port=${REDIS_PORT:-63799}
state=build/redis
command -v redis-server >/dev/null || { echo "redis-server.sh: no redis-server (apt-get install redis-server)" >&2; exit 1; }

case ${1:-} in
  start)
    mkdir -p "$state"
    dir=$(mktemp -d /tmp/connpool-redis.XXXXXX)
    echo "$dir" >"$state/dir"
    echo "$port" >"$state/port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$dir" \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null
    for _ in $(seq 100); do
      redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" ping | grep -q PONG
    echo "127.0.0.1:$port"
    ;;
  stop)
    if [[ -f $state/dir ]]; then
      redis-cli -h 127.0.0.1 -p "$(cat "$state/port")" shutdown nosave >/dev/null 2>&1 || true
      rm -rf "$(cat "$state/dir")" "$state/dir" "$state/port"
    fi
    ;;
  *)
    echo "usage: redis-server.sh start|stop" >&2
    exit 2
    ;;
esac
