#!/usr/bin/env bash
# connpool - a throwaway PostgreSQL primary with two streaming standbys on loopback ports, for
# the role-aware MultiHostPool's integration tests.
#
#   ./scripts/pg-cluster.sh start          initdb the primary (node 0), pg_basebackup -R two
#                                          standbys (nodes 1, 2) from it, start all three on
#                                          127.0.0.1:$PGCLUSTER_PORT + 0, 1, 2 (default 54331),
#                                          and print one conninfo per node, node 0 first (also
#                                          in build/pg-cluster/conninfo)
#   ./scripts/pg-cluster.sh stop-primary   stop the current primary at once (-m immediate)
#   ./scripts/pg-cluster.sh promote N      promote standby N; the other standby that still runs
#                                          follows it (primary_conninfo, reloaded)
#   ./scripts/pg-cluster.sh primary        print the current primary's node number
#   ./scripts/pg-cluster.sh stop           stop every node and remove the directories
#
# Each node lives in a temporary directory. The role and database `connpool` (superuser, so
# that tests may call pg_wal_replay_pause()) exist on all three. Replication is synchronous
# while the first primary runs (synchronous_standby_names = 'ANY 2 (node1, node2)', commits wait
# for both standbys' flush, not their replay): so every commit a client saw succeed is on the
# standby that a failover promotes, as the integration tests check. A promoted standby has no
# synchronous standby (it would wait for one that may never come). Needs Debian's postgresql
# package. As root, the servers run as the `postgres` user; otherwise as the calling user.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

base=${PGCLUSTER_PORT:-54331}
state=build/pg-cluster
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -n $bin && -x $bin/pg_ctl ]] ||
  { echo "pg-cluster: no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }

# From /, so that the postgres user need not be able to read the checkout's directory.
as_server_user() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

port_of() { echo $((base + $1)); }
dir_of() { sed -n "$(($1 + 1))p" "$state/datadirs"; }
psql_on() {
  local node=$1
  shift
  as_server_user "$bin/psql" -h 127.0.0.1 -p "$(port_of "$node")" -U postgres -qAt "$@"
}
start_node() {
  local node=$1 data
  data=$(dir_of "$node")
  as_server_user "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $(port_of "$node") -c unix_socket_directories= -c max_connections=100 -c fsync=off -c cluster_name=node$node" \
    start >/dev/null
}
conninfo_of() {
  echo "host=127.0.0.1 port=$(port_of "$1") user=connpool dbname=connpool connect_timeout=2"
}

case ${1:-} in
  start)
    mkdir -p "$state"
    : >"$state/datadirs"
    for node in 0 1 2; do
      data=$(mktemp -d /tmp/connpool-pgc$node.XXXXXX)
      if ((EUID == 0)); then
        chown postgres: "$data"
      fi
      chmod 700 "$data"
      echo "$data" >>"$state/datadirs"
    done
    primary=$(dir_of 0)
    as_server_user "$bin/initdb" -D "$primary" -U postgres --auth=trust --no-sync -E UTF8 \
      >"$state/initdb.log"
    # Streaming replication: WAL for two standbys, kept long enough for a paused one to catch up.
    cat >>"$primary/postgresql.conf" <<'EOF'
wal_level = replica
max_wal_senders = 8
wal_keep_size = 256MB
hot_standby = on
EOF
    start_node 0
    psql_on 0 -c "CREATE ROLE connpool LOGIN SUPERUSER;" >/dev/null
    psql_on 0 -c "CREATE DATABASE connpool OWNER connpool;" >/dev/null
    for node in 1 2; do
      data=$(dir_of "$node")
      # -R: standby.signal and primary_conninfo; the standby follows the newest timeline.
      as_server_user "$bin/pg_basebackup" -h 127.0.0.1 -p "$(port_of 0)" -U postgres -D "$data" \
        -R -X stream -c fast >/dev/null
      start_node "$node"
    done
    echo 0 >"$state/primary"
    : >"$state/conninfo"
    for node in 0 1 2; do
      conninfo_of "$node" | tee -a "$state/conninfo"
    done
    # Both standbys stream before this returns; then commits wait for both (set after the base
    # backups, so that the standbys do not inherit it). A standby's application_name is its
    # cluster_name.
    for _ in $(seq 1 100); do
      n=$(psql_on 0 -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
      if [[ $n == 2 ]]; then
        psql_on 0 -c "ALTER SYSTEM SET synchronous_standby_names = 'ANY 2 (node1, node2)'" >/dev/null
        psql_on 0 -c "SELECT pg_reload_conf()" >/dev/null
        for _ in $(seq 1 100); do
          n=$(psql_on 0 -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'")
          [[ $n == 2 ]] && exit 0
          sleep 0.1
        done
        echo "pg-cluster: the standbys did not become synchronous" >&2
        exit 1
      fi
      sleep 0.1
    done
    echo "pg-cluster: the standbys did not start streaming" >&2
    exit 1
    ;;
  primary)
    cat "$state/primary"
    ;;
  stop-primary)
    node=$(cat "$state/primary")
    as_server_user "$bin/pg_ctl" -D "$(dir_of "$node")" -w -t 60 -m immediate stop >/dev/null
    ;;
  promote)
    node=${2:?usage: pg-cluster.sh promote N}
    as_server_user "$bin/pg_ctl" -D "$(dir_of "$node")" -w -t 60 promote >/dev/null
    old=$(cat "$state/primary")
    echo "$node" >"$state/primary"
    # The other standby, if it runs, streams from the new primary from now on.
    for other in 0 1 2; do
      [[ $other == "$node" || $other == "$old" ]] && continue
      if psql_on "$other" -c "SELECT 1" >/dev/null 2>&1; then
        psql_on "$other" -c "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=$(port_of "$node") user=postgres'" >/dev/null
        psql_on "$other" -c "SELECT pg_reload_conf()" >/dev/null
      fi
    done
    ;;
  stop)
    if [[ -f $state/datadirs ]]; then
      while read -r data; do
        as_server_user "$bin/pg_ctl" -D "$data" -w -t 60 -m fast stop >/dev/null 2>&1 || true
        rm -rf "$data"
      done <"$state/datadirs"
      rm -f "$state/datadirs" "$state/conninfo" "$state/primary"
    fi
    ;;
  *)
    echo "usage: pg-cluster.sh start|stop|stop-primary|promote N|primary" >&2
    exit 2
    ;;
esac
