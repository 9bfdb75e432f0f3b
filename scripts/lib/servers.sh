# Sourced by the bench scripts (scripts/bench-load, scripts/bench-soak): a work directory removed
# on exit, and PostgreSQL (fsync on, synchronous_commit on — the durable defaults) and Redis
# started on loopback ports, stopped on exit with every process id the script adds to `pids`.
#
#   source scripts/lib/servers.sh
#   start_servers            # sets pg_bin, pg_port, redis_port, redis_url
#   db_url=$(database NAME)  # a fresh database
#   pids+=("$!")             # stopped on exit (TERM, then waited for)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
work=$(mktemp -d)
chmod 755 "$work"
pids=()
servers_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -d $work/pg ]] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap servers_cleanup EXIT

start_servers() {
  echo "==> PostgreSQL (fsync=on, synchronous_commit=on) and Redis"
  mkdir "$work/pg" && chown postgres:postgres "$work/pg"
  runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 >/dev/null
  pg_port=$(free_port)
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w start \
    -o "-c port=$pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work/pg -c fsync=on -c synchronous_commit=on -c max_connections=200" >/dev/null
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --daemonize yes \
    --pidfile "$work/redis.pid" --logfile "$work/redis.log"
  sleep 0.5
  pids+=("$(cat "$work/redis.pid")")
  redis_url="redis://127.0.0.1:$redis_port/"
}

psql_() { runuser -u postgres -- "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }

database() { # <name>: a fresh database; prints its URL
  local name=bench_${1//-/_}
  psql_ -c "CREATE DATABASE $name" >/dev/null
  echo "postgres://postgres@127.0.0.1:$pg_port/$name"
}
