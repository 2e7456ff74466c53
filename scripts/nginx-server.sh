#!/usr/bin/env bash
# connpool - a throwaway nginx on a loopback port, for the HTTP integration tests.
#
#   ./scripts/nginx-server.sh start   start nginx on 127.0.0.1:$NGINX_PORT (default 58080), serving
#                                     the files below from a temporary directory, and print its
#                                     address (host:port)
#   ./scripts/nginx-server.sh stop    shut it down and remove its directory
#
# What tests/integration/http_test.cpp relies on (it knows these contents):
#   /hello.txt          the line "Hello from connpool's test nginx."
#   /big.txt            4000 lines "connpool line 00001" ... "connpool line 04000" (80,000 bytes)
#   /index.html         a small HTML page (examples/http_keepalive fetches /)
#   /ssi/page.html      "<p>before</p>", then /hello.txt included by SSI, then "<p>after</p>":
#                       its length is unknown in advance, so it is sent with chunked coding
#   /limited/hello.txt  as /hello.txt, under keepalive_requests 100: the 100th request of a
#                       connection is answered with "Connection: close" and the connection closed
#   keepalive_timeout 1s: an idle keep-alive connection is closed by the server after 1 s.
# Elsewhere keepalive_requests is 1,000,000, so that no other test sees a connection closed.
#
# Needs Debian's nginx package. Everything nginx writes (pid, error log, temporary files) stays
# in the temporary directory. As root, the worker runs as nobody, so the files are world-readable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port=${NGINX_PORT:-58080}
state=build/nginx
nginx=$(command -v nginx || echo /usr/sbin/nginx) # /usr/sbin is not on a user's PATH
[[ -x $nginx ]] || { echo "nginx-server.sh: no nginx (apt-get install nginx)" >&2; exit 1; }

# Whether pid $1 is the master process serving directory $2 (and not a recycled pid).
is_master() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ ! -r /proc/$1/cmdline ]] || tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"
}

# Stops the nginx serving directory $1 (if it runs) and removes the directory.
stop_dir() {
  local dir=$1 pid
  if [[ -f $dir/nginx.pid ]]; then
    pid=$(cat "$dir/nginx.pid")
    if is_master "$pid" "$dir"; then
      kill -QUIT "$pid" # graceful: idle keep-alive connections are closed at once
      for _ in $(seq 50); do
        is_master "$pid" "$dir" || break
        sleep 0.1
      done
      if is_master "$pid" "$dir"; then
        kill -TERM "$pid"
        for _ in $(seq 50); do
          is_master "$pid" "$dir" || break
          sleep 0.1
        done
      fi
    fi
  fi
  rm -rf "$dir"
}

# Whether the server answers GET /hello.txt with a 200 (no curl needed: bash's /dev/tcp).
answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /hello.txt HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3" \
    2>/dev/null | grep -q '^HTTP/1.1 200$'
}

case ${1:-} in
  start)
    mkdir -p "$state"
    if [[ -f $state/dir ]]; then
      old=$(cat "$state/dir")
      if [[ -f $old/nginx.pid ]] && is_master "$(cat "$old/nginx.pid")" "$old"; then
        echo "nginx-server.sh: already running from $old (nginx-server.sh stop first)" >&2
        exit 1
      fi
      rm -rf "$old" # left over from a run that was not stopped
    fi
    dir=$(mktemp -d /tmp/connpool-nginx.XXXXXX)
    chmod 755 "$dir" # mktemp makes it 700; the worker (nobody, as root) must read the files
    echo "$dir" >"$state/dir"
    echo "$port" >"$state/port"
    (
      umask 022
      mkdir -p "$dir/html/ssi" "$dir/html/limited" "$dir/temp"
      printf '%s\n' "Hello from connpool's test nginx." >"$dir/html/hello.txt"
      cp "$dir/html/hello.txt" "$dir/html/limited/hello.txt"
      printf 'connpool line %05d\n' $(seq 4000) >"$dir/html/big.txt"
      printf '%s\n' '<!doctype html>' '<title>connpool</title>' \
        '<p>Served by the nginx of connpool'"'"'s integration tests.</p>' >"$dir/html/index.html"
      printf '%s\n' '<p>before</p>' '<!--# include virtual="/hello.txt" -->' '<p>after</p>' \
        >"$dir/html/ssi/page.html"
    )
    user=""
    if ((EUID == 0)); then
      user="user nobody nogroup;"
    fi
    cat >"$dir/nginx.conf" <<EOF
$user
daemon on;
worker_processes 1;
pid $dir/nginx.pid;
lock_file $dir/nginx.lock;
error_log $dir/error.log warn;
events {
  worker_connections 256;
}
http {
  access_log off;
  types {
    text/html html;
    text/plain txt;
  }
  default_type application/octet-stream;
  client_body_temp_path $dir/temp/client_body;
  proxy_temp_path $dir/temp/proxy;
  fastcgi_temp_path $dir/temp/fastcgi;
  uwsgi_temp_path $dir/temp/uwsgi;
  scgi_temp_path $dir/temp/scgi;
  keepalive_timeout 1s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    root $dir/html;
    location / {
    }
    location /limited/ {
      keepalive_requests 100;
    }
    location /ssi/ {
      ssi on;
    }
  }
}
EOF
    if ! "$nginx" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/start.log"; then
      cat "$dir/start.log" "$dir/error.log" >&2 2>/dev/null || true
      stop_dir "$dir"
      rm -f "$state/dir" "$state/port"
      exit 1
    fi
    for _ in $(seq 100); do
      answers && break
      sleep 0.1
    done
    if ! answers; then
      echo "nginx-server.sh: nginx on 127.0.0.1:$port does not answer" >&2
      cat "$dir/error.log" >&2 2>/dev/null || true
      stop_dir "$dir"
      rm -f "$state/dir" "$state/port"
      exit 1
    fi
    echo "127.0.0.1:$port"
    ;;
  stop)
    if [[ -f $state/dir ]]; then
      stop_dir "$(cat "$state/dir")"
      rm -f "$state/dir" "$state/port"
    fi
    ;;
  *)
    echo "usage: nginx-server.sh start|stop" >&2
    exit 2
    ;;
esac
