#!/usr/bin/env bash
# connpool - a throwaway PostgreSQL server on a loopback port, for the integration tests.
#
#   ./scripts/pg-server.sh start   initdb into a temporary directory, start on 127.0.0.1:$PGPORT
#                                  (default 54329), create the role and database `connpool`, and
#                                  print the conninfo to use (also written to build/pg/conninfo)
#   ./scripts/pg-server.sh stop    stop it and remove the directory
#
# Needs Debian's postgresql package (the server binaries in /usr/lib/postgresql/<version>/bin).
# As root, the server runs as the `postgres` user; otherwise as the calling user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port=${PGPORT:-54329}
state=build/pg
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -n $bin && -x $bin/pg_ctl ]] || { echo "pg-server: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }

# From /, so that the postgres user need not be able to read the checkout's directory.
as_server_user() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

case ${1:-} in
  start)
    mkdir -p "$state"
    data=$(mktemp -d /tmp/connpool-pg.XXXXXX)
    echo "$data" >"$state/datadir"
    if ((EUID == 0)); then
      chown postgres: "$data"
    fi
    as_server_user "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 >"$state/initdb.log"
    as_server_user "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=200 -c fsync=off" start \
      >/dev/null
    as_server_user "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt -c \
      "CREATE ROLE connpool LOGIN SUPERUSER; CREATE ROLE connpool_reader NOLOGIN;" >/dev/null
    as_server_user "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt -c \
      "CREATE DATABASE connpool OWNER connpool;" >/dev/null
    conninfo="host=127.0.0.1 port=$port user=connpool dbname=connpool connect_timeout=5"
    echo "$conninfo" >"$state/conninfo"
    echo "$conninfo"
    ;;
  restart)
    data=$(cat "$state/datadir")
    as_server_user "$bin/pg_ctl" -D "$data" -w -t 60 -m fast restart >/dev/null
    ;;
  stop)
    if [[ -f $state/datadir ]]; then
      data=$(cat "$state/datadir")
      as_server_user "$bin/pg_ctl" -D "$data" -w -t 60 -m fast stop >/dev/null 2>&1 || true
      rm -rf "$data" "$state/datadir" "$state/conninfo"
    fi
    ;;
  *)
    echo "usage: pg-server.sh start|stop|restart" >&2
    exit 2
    ;;
esac
